"""Gate `leak`: cycles of PUT S scopes on distinct repos -> served -> refreshed -> DELETE.

Passes when all three git-fetcher caches, the clone dirs and the worker's open files are
back to their baseline after every cycle. Open files, not all fds: a leaked cache entry
holds its clone's pack files open, while sockets come and go with connection pools on
every release (all fds are recorded and plotted). RSS is recorded, not judged
(allocator churn makes it grow on fixed servers too).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.gates.base import ERROR, FAIL, PASS, Gate, GateContext, Verdict, load_failure
from harness.probes import CACHES
from harness.seed import policy_repo_name, probe_repo_name
from harness.timeline import Timeline
from harness.waiting import poll_until


@dataclass
class Params:
    cycles: int = 3
    scopes: int = 10
    serve_budget_s: float = 60.0
    settle_s: float = 5.0  # how long a correct server may take to drop a deleted scope


@dataclass
class Thresholds:
    cache_tolerance: int = 0
    clone_dir_tolerance: int = 0
    open_file_tolerance: int = 2


def _counts(snapshot: dict) -> dict[str, int]:
    return {**{c: snapshot.get(c, -1) for c in CACHES}, "clone_dirs": snapshot["clone_dirs"],
            "worker_files": snapshot.get("worker_files", -1)}


def _settle(ctx: GateContext, label: str, budget: float, target: dict[str, int] | None = None) -> dict:
    """Observe until the counts reach `target` (or, without one, stop changing), at most
    `budget` s — a correct server may drop entries a moment after answering DELETE."""
    previous: list[dict[str, int]] = []

    def settled() -> bool:
        counts = _counts(ctx.observe(f"settling {label}"))
        done = (all(counts[k] <= target[k] for k in target) if target
                else bool(previous) and counts == previous[-1])
        previous.append(counts)
        return done
    poll_until(settled, budget, interval=0.5)
    return ctx.observe(label)


class LeakGate(Gate):
    id = "leak"
    marker = "leak"
    title = "memory leak under scope churn"
    Params = Params
    Thresholds = Thresholds

    def scenario(self, ctx: GateContext) -> None:
        p: Params = ctx.params
        tl, client = ctx.timeline, ctx.client
        self._warm_up(ctx)
        baseline = _counts(_settle(ctx, "baseline", p.settle_s))
        for cycle in range(1, p.cycles + 1):
            tl.mark("cycle_start", cycle=cycle)
            scopes = {f"leak-{cycle}-{i}": ctx.stack.repo_url(policy_repo_name((cycle - 1) * p.scopes + i))
                      for i in range(p.scopes)}
            puts = [client.put_scope(scope, url) for scope, url in scopes.items()]
            tl.record("puts", cycle=cycle, statuses=puts)
            pending = ctx.all_served_within(list(scopes), p.serve_budget_s, f"cycle {cycle}")
            if pending:
                tl.fact("load_failure", f"cycle {cycle}: {len(pending)} of {p.scopes} scopes were not "
                                        f"served within {p.serve_budget_s:g} s (PUT statuses {sorted(set(puts))})")
                return
            refreshes = [client.refresh(scope) for scope in scopes]
            tl.record("refreshes", cycle=cycle, statuses=refreshes)
            ctx.observe(f"loaded {cycle}")
            deletes = [client.delete_scope(scope) for scope in scopes]
            tl.record("deletes", cycle=cycle, statuses=deletes)
            _settle(ctx, f"after {cycle}", p.settle_s, target={k: baseline[k] for k in CACHES})
            tl.mark("cycle_end", cycle=cycle)

    def _warm_up(self, ctx: GateContext) -> None:
        """One probe scope through the whole cycle, so lazily made pools and connections
        are part of the baseline rather than counted as growth."""
        client = ctx.client
        client.put_scope("leak-warmup", ctx.stack.repo_url(probe_repo_name(0)))
        ctx.served_within("leak-warmup", ctx.params.serve_budget_s, "warm-up")
        client.refresh("leak-warmup")
        client.delete_scope("leak-warmup")

    def check(self, timeline: Timeline, thresholds: Thresholds) -> Verdict:
        if (failed := load_failure(timeline)) is not None:
            return failed
        snaps = {s["label"]: s for s in timeline.of_kind("snapshot")}
        if "baseline" not in snaps:
            return Verdict(ERROR, "no baseline snapshot was recorded", "error.no_data")
        base = _counts(snaps["baseline"])
        after = [_counts(snaps[label]) for label in sorted(l for l in snaps if l.startswith("after "))]
        pids = {s.get("worker_pid") for s in snaps.values() if s.get("worker_pid")}
        if any("stats_error" in s for s in snaps.values()) or -1 in base.values():
            return Verdict(ERROR, "the stats contract did not answer during the gate", "error.no_stats")
        if len(pids) > 1:
            return Verdict(ERROR, f"the worker restarted during the gate (pids {sorted(pids)}): "
                                  "cache sizes of different processes cannot be compared", "error.restart")
        series = {key: [a[key] for a in after] for key in base}
        metrics = {"baseline": base, "after_each_cycle": series,
                   "worker_rss_kb": [s.get("worker_rss_kb") for s in snaps.values()]}
        problems, category = [], ""
        tolerance = {**{c: thresholds.cache_tolerance for c in CACHES},
                     "clone_dirs": thresholds.clone_dir_tolerance, "worker_files": thresholds.open_file_tolerance}
        grew = {k: v for k, v in series.items() if any(x > base[k] + tolerance[k] for x in v)}
        cache_keys = [c for c in CACHES if c in grew]
        if cache_keys:
            category = "leak.caches_kept"
            kept = ", ".join(f"{c} {'/'.join(map(str, series[c]))}" for c in cache_keys)
            problems.append(f"caches kept entries after every DELETE: {kept} after cycles "
                            f"1..{len(after)} (baseline {'/'.join(str(base[c]) for c in CACHES)})")
        if "clone_dirs" in grew:
            category = category or "leak.clone_dirs_kept"
            problems.append(f"clone dirs on disk {'/'.join(map(str, series['clone_dirs']))} "
                            f"(baseline {base['clone_dirs']})")
        if "worker_files" in grew:
            category = category or "leak.files_grew"
            problems.append(f"worker open files {base['worker_files']}→"
                            f"{'→'.join(map(str, series['worker_files']))} "
                            f"(tolerance +{thresholds.open_file_tolerance})")
        if problems:
            return Verdict(FAIL, "; ".join(problems), category, metrics)
        return Verdict(PASS, f"caches, clone dirs and open files back to baseline after each of "
                             f"{len(after)} cycles of {timeline.facts.get('params', {}).get('scopes', '?')} scopes",
                       "", metrics)
