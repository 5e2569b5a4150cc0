"""Gate `leak`: cycles of PUT S scopes on distinct repos -> served -> refreshed -> DELETE.

Passes when all three git-fetcher caches, the clone dirs and the worker's open files are
back to their baseline after every cycle. Before any DELETE the caches must have reached
the load (each ≥ baseline + the scopes just loaded: a clone, the first GET policy and a
refresh fill them on every release measured) — a stats endpoint that does not see the
caches the server fills would otherwise pass every cycle for nothing: that is an ERROR.
Open files, not all fds: a leaked cache entry holds its clone's pack files open, while
sockets come and go with connection pools on every release (all fds are recorded and
plotted). RSS is recorded, not judged (allocator churn makes it grow on fixed servers too).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

from harness.gates.base import Gate, GateContext, cache_names
from harness.gates.load import Load, for_each_scope, scaled_budgets
from harness.gates.settings import GateSettings
from harness.gates.settle import settle, settle_record, still_falling
from harness.seed import policy_repo_name, probe_repo_name
from harness.servers.base import Capability, ScopeClient
from harness.timeline import Timeline
from harness.verdict import ERROR, Problems, Verdict, load_failure
from harness.waiting import poll_until

log = logging.getLogger(__name__)


@dataclass
class Params(GateSettings):
    positive = ("cycles", "scopes", "serve_budget_s", "fill_budget_s", "settle_s")
    cycles: int = 3
    scopes: int = 10
    serve_budget_s: float = 60.0
    fill_budget_s: float = 30.0  # how long the caches may take to show the load (refresh is async)
    settle_s: float = 10.0  # how long a correct server may take to drop a deleted scope
    settle_file_slack: int = 2  # open files above baseline that still count as settled
    # 0: every cycle loads repos no earlier cycle used (policy-0000.. in order); N ≥ scopes:
    # cycles take their repos from the first N, round robin (the scale profile reuses one
    # set of N repos: a correct server drops a deleted scope's clone whichever repo it was)
    repo_pool: int = 0

    def validate(self) -> None:
        if 0 < self.repo_pool < self.scopes:  # two live scopes on one repo share its cache entry
            self.refuse("repo_pool", f"0 (distinct repos per cycle) or ≥ scopes = {self.scopes}")

    @property
    def repos(self) -> int:
        return self.repo_pool or self.cycles * self.scopes

    def repo_index(self, cycle: int, scope: int) -> int:
        return ((cycle - 1) * self.scopes + scope) % self.repos


@dataclass
class Thresholds(GateSettings):
    cache_tolerance: int = 0
    clone_dir_tolerance: int = 0
    open_file_tolerance: int = 2


def _put(client: ScopeClient, urls: dict[str, str], scope: str) -> int:
    return client.put_scope(scope, urls[scope])


def _counts(snapshot: dict, caches: tuple[str, ...]) -> dict[str, int]:
    return {**{c: snapshot.get(c, -1) for c in caches}, "clone_dirs": snapshot["clone_dirs"],
            "worker_files": snapshot.get("worker_files", -1)}


def _settle(ctx: GateContext, label: str, budget: float, target: dict[str, int] | None = None) -> dict:
    """Observe until every count is at most its `target` or the counts stop changing, at
    most `budget` s — a correct server may drop entries, remove clone dirs and close files
    a moment after answering DELETE (harness.gates.settle)."""
    settle(ctx.timeline, label, lambda: _counts(ctx.observe(f"settling {label}"), ctx.adapter.caches), budget, target)
    return ctx.observe(label)


def _fill(ctx: GateContext, label: str, budget: float, floor: dict[str, int]) -> dict:
    """Observe until every cache holds at least `floor` entries, at most `budget` s."""
    def filled() -> bool:
        counts = _counts(ctx.observe(f"filling {label}"), ctx.adapter.caches)
        return all(counts[c] >= floor[c] for c in floor)
    poll_until(filled, budget, interval=0.5)
    return ctx.observe(label)


def _after_labels(snaps: dict[str, dict]) -> list[str]:
    return sorted((label for label in snaps if label.startswith("after ")), key=lambda label: int(label.split()[1]))


def _unfilled(snaps: dict[str, dict], base: dict[str, int], scopes: int,
              caches: tuple[str, ...]) -> Verdict | None:
    """ERROR when a cycle's caches never showed its load: a stats endpoint that does not see
    the caches the server fills would pass every cycle without having judged anything."""
    for after in _after_labels(snaps):
        label = after.replace("after", "loaded")
        if label not in snaps:
            return Verdict(ERROR, f"no snapshot of the caches under load before {after}: nothing shows the "
                                  "gate loaded them", "error.caches_not_filled")
        short = {c: snaps[label].get(c, -1) for c in caches if snaps[label].get(c, -1) < base[c] + scopes}
        if short:
            seen = ", ".join(f"{c} {v} (baseline {base[c]})" for c, v in short.items())
            return Verdict(ERROR, f"{label.replace('loaded', 'cycle')}: after {scopes} scopes were served and "
                                  f"refreshed the stats showed {seen}, not baseline + {scopes}: the stats endpoint "
                                  "does not see the caches the server fills, so their return to baseline "
                                  "would prove nothing", "error.caches_not_filled")
    return None


def _failed_deletes(timeline: Timeline) -> Verdict | None:
    """ERROR when DELETEs failed: what the server kept is then not a leak verdict."""
    for record in timeline.of_kind("deletes"):
        bad = [s for s in record["statuses"] if s not in (200, 202, 204)]
        if bad:
            return Verdict(ERROR, f"cycle {record['cycle']}: {len(bad)} of {len(record['statuses'])} DELETEs "
                                  f"failed (statuses {sorted(set(bad))}): the scopes were not deleted, so what "
                                  "the server kept says nothing about a leak", "error.delete_failed")
    return None


class LeakGate(Gate, id="leak", params=Params, thresholds=Thresholds,
               title="memory leak under scope churn",
               requires=(Capability.MANY_SOURCES, Capability.RUNTIME_SOURCES, Capability.REFRESH_CALL,
                         Capability.CACHE_STATS)):

    def scenario(self, ctx: GateContext) -> None:
        p: Params = ctx.params
        tl, client = ctx.timeline, ctx.client
        ctx.require_one_worker()
        ctx.stack.ensure_repos(p.repos)  # the load's repos, seeded on demand
        budgets = scaled_budgets(ctx, p.scopes, {"serve_budget_s": p.serve_budget_s, "fill_budget_s": p.fill_budget_s,
                                                 "settle_s": p.settle_s}, ctx.stack.repo_url(probe_repo_name(0)))
        self._warm_up(ctx)
        caches = ctx.adapter.caches
        baseline = _counts(_settle(ctx, "baseline", p.settle_s), caches)
        settled = {**{c: baseline[c] for c in caches}, "clone_dirs": baseline["clone_dirs"],
                   "worker_files": baseline["worker_files"] + p.settle_file_slack}
        for cycle in range(1, p.cycles + 1):
            tl.mark("cycle_start", cycle=cycle)
            scopes = {f"leak-{cycle}-{i}": ctx.stack.repo_url(policy_repo_name(p.repo_index(cycle, i)))
                      for i in range(p.scopes)}
            puts = for_each_scope(partial(_put, client, scopes), scopes)
            tl.record("puts", cycle=cycle, statuses=puts)
            pending = ctx.all_served_within(list(scopes), budgets["serve_budget_s"], f"cycle {cycle}")
            if pending:
                tl.fact("load_failure", f"cycle {cycle}: {len(pending)} of {p.scopes} scopes were not served "
                                        f"within {budgets['serve_budget_s']:g} s (PUT statuses {sorted(set(puts))})")
                return
            refreshes = for_each_scope(client.refresh, scopes)
            tl.record("refreshes", cycle=cycle, statuses=refreshes)
            _fill(ctx, f"loaded {cycle}", budgets["fill_budget_s"], {c: baseline[c] + p.scopes for c in caches})
            deletes = for_each_scope(client.delete_scope, scopes)
            tl.record("deletes", cycle=cycle, statuses=deletes)
            after = _counts(_settle(ctx, f"after {cycle}", budgets["settle_s"], target=settled), caches)
            tl.mark("cycle_end", cycle=cycle)
            log.info(f"[gate leak] cycle {cycle}/{p.cycles}: {p.scopes} scopes loaded, served and deleted; "
                     + ", ".join(f"{k} {after[k]} (baseline {baseline[k]})" for k in after))

    def scaled(self, scopes: int) -> dict[str, str]:
        return {"scopes": str(scopes), "repo_pool": str(scopes)}

    def load(self, params: Params) -> Load:
        return Load(scopes=params.scopes, repos=params.repos, fetches=2, rounds=params.cycles)

    def _warm_up(self, ctx: GateContext) -> None:
        """One probe scope through the whole cycle, so lazily made pools and connections
        are part of the baseline rather than counted as growth."""
        client = ctx.client
        client.put_scope("leak-warmup", ctx.stack.repo_url(probe_repo_name(0)))
        ctx.served_within("leak-warmup", ctx.params.serve_budget_s, "warm-up")
        client.refresh("leak-warmup")
        client.delete_scope("leak-warmup")

    def check(self, timeline: Timeline, params: Params, thresholds: Thresholds) -> Verdict:
        if (failed := load_failure(timeline)) is not None:
            return failed
        snaps = {s["label"]: s for s in timeline.of_kind("snapshot")}
        if "baseline" not in snaps:
            return Verdict(ERROR, "no baseline snapshot was recorded", "error.no_data")
        caches = cache_names(timeline)
        base = _counts(snaps["baseline"], caches)
        after = [_counts(snaps[label], caches) for label in _after_labels(snaps)]
        pids = {int(s["worker_pid"]) for s in snaps.values() if s.get("worker_pid")}
        if (stats_error := next((s["stats_error"] for s in snaps.values() if "stats_error" in s), None)):
            return Verdict(ERROR, f"the stats endpoint failed during the gate: {stats_error}", "error.no_stats")
        if -1 in base.values():
            missing = ", ".join(k for k, v in base.items() if v == -1)
            return Verdict(ERROR, f"the baseline lacks {missing}: nothing to compare against", "error.no_stats")
        if len(pids) > 1:
            return Verdict(ERROR, f"the worker restarted during the gate (pids {sorted(pids)}): "
                                  "cache sizes of different processes cannot be compared", "error.restart")
        if (uncounted := next((s for s in snaps.values() if s.get("clone_dirs_error")), None)) is not None:
            return Verdict(ERROR, f"the clone dirs could not be counted at {uncounted['label']}: "
                                  f"{uncounted['clone_dirs_error']}", "error.count_unavailable")
        if (unfilled := _unfilled(snaps, base, params.scopes, caches)) is not None:
            return unfilled
        if (failed_deletes := _failed_deletes(timeline)) is not None:
            return failed_deletes
        series = {key: [a[key] for a in after] for key in base}
        metrics = {"baseline": base, "after_each_cycle": series,
                   "worker_rss_kb": [s.get("worker_rss_kb") for s in snaps.values()]}
        problems = Problems()
        tolerance = {**{c: thresholds.cache_tolerance for c in caches},
                     "clone_dirs": thresholds.clone_dir_tolerance, "worker_files": thresholds.open_file_tolerance}
        over, falling = _over(timeline, series, {k: base[k] + tolerance[k] for k in base})
        grew = {k: series[k] for k in over}
        cache_keys = [c for c in caches if c in grew]
        if cache_keys:
            kept = ", ".join(f"{c} {'/'.join(map(str, series[c]))}" for c in cache_keys)
            problems.add("leak.caches_kept", f"caches kept entries after every DELETE: {kept} after cycles "
                                             f"1..{len(after)} (baseline {'/'.join(str(base[c]) for c in caches)})",
                         **{f"{c}_kept": series[c][-1] - base[c] for c in cache_keys})
        if "clone_dirs" in grew:
            problems.add("leak.clone_dirs_kept", f"clone dirs on disk {'/'.join(map(str, series['clone_dirs']))} "
                                                 f"(baseline {base['clone_dirs']})",
                         clone_dirs_kept=series["clone_dirs"][-1] - base["clone_dirs"])
        if "worker_files" in grew:
            problems.add("leak.files_grew", f"worker open files {base['worker_files']}→"
                                            f"{'→'.join(map(str, series['worker_files']))} "
                                            f"(tolerance +{thresholds.open_file_tolerance})",
                         files_grew=series["worker_files"][-1] - base["worker_files"])
        for key, (label, tail) in falling.items():
            problems.add("leak.still_falling", f"{key} still falling when the {label} settle ran out "
                                               f"({'→'.join(map(str, tail))}, baseline {base[key]}): not back yet, "
                                               "and not seen to stay", **{f"{key}_tail": tail})
        return problems.verdict(f"caches, clone dirs and open files back to baseline after each of "
                                f"{len(after)} cycles of {params.scopes} scopes", metrics)


def _over(timeline: Timeline, series: dict[str, list[int]],
          bound: dict[str, int]) -> tuple[list[str], dict[str, tuple[str, list[int]]]]:
    """(figures kept over their bound after some cycle, figures over it only while still
    falling when that cycle's settle ran out: figure -> (the settle, its last values))."""
    kept: list[str] = []
    falling: dict[str, tuple[str, list[int]]] = {}
    for index in range(len(next(iter(series.values()), []))):
        label = f"after {index + 1}"
        going_down = still_falling(settle_record(timeline, label))
        for key, values in series.items():
            if values[index] <= bound[key]:
                continue
            if key in going_down:
                falling.setdefault(key, (label, going_down[key]))
            elif key not in kept:
                kept.append(key)
    return kept, falling
