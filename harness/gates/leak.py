"""Gate `leak`: cycles of PUT S scopes on distinct repos -> served -> refreshed -> DELETE.

Passes when all three git-fetcher caches, the clone dirs and the worker's open fds are
back to their baseline after every cycle. RSS is recorded, not judged (allocator churn
makes it grow on fixed servers too).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.gates.base import ERROR, FAIL, PASS, Gate, GateContext, Verdict
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
    fd_tolerance: int = 4


def _counts(snapshot: dict) -> dict[str, int]:
    return {**{c: snapshot.get(c, -1) for c in CACHES}, "clone_dirs": snapshot["clone_dirs"],
            "worker_fds": snapshot.get("worker_fds", -1)}


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
        baseline = ctx.observe("baseline")
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
            # A correct server may drop entries asynchronously: give it `settle_s`.
            poll_until(lambda: _counts(ctx.observe(f"settling {cycle}"))["repo_locks"]
                       <= baseline.get("repo_locks", 0), p.settle_s, interval=0.5)
            ctx.observe(f"after {cycle}")
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
        if "load_failure" in timeline.facts:
            return Verdict(ERROR, f"load phase failed, nothing to judge: {timeline.facts['load_failure']}",
                           "error.load")
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
                     "clone_dirs": thresholds.clone_dir_tolerance, "worker_fds": thresholds.fd_tolerance}
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
        if "worker_fds" in grew:
            category = category or "leak.fds_grew"
            problems.append(f"worker open fds {base['worker_fds']}→{'→'.join(map(str, series['worker_fds']))} "
                            f"(tolerance +{thresholds.fd_tolerance})")
        if problems:
            return Verdict(FAIL, "; ".join(problems), category, metrics)
        return Verdict(PASS, f"caches, clone dirs and fds back to baseline after each of {len(after)} cycles",
                       "", metrics)
