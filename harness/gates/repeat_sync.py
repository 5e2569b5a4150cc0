"""Gate `repeat-sync`: re-sync the same scopes R times.

Passes when the cache sizes stay constant after warm-up and the worker's RSS slope
(a Theil–Sen fit over the measured cycles, robust to single outliers) is under a bound.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from itertools import combinations

from harness.gates.base import ERROR, FAIL, PASS, Gate, GateContext, Verdict, load_failure
from harness.probes import CACHES
from harness.seed import policy_repo_name
from harness.timeline import Timeline


@dataclass
class Params:
    scopes: int = 10
    cycles: int = 12
    warmup_cycles: int = 3
    serve_budget_s: float = 60.0


@dataclass
class Thresholds:
    cache_tolerance: int = 0
    rss_slope_kb_per_cycle: float = 256.0


def theil_sen_slope(xs: list[float], ys: list[float]) -> float:
    """Median of pairwise slopes: one outlier cycle does not tilt the fit."""
    slopes = [(y2 - y1) / (x2 - x1) for (x1, y1), (x2, y2) in combinations(zip(xs, ys), 2) if x2 != x1]
    return statistics.median(slopes) if slopes else 0.0


class RepeatSyncGate(Gate):
    id = "repeat-sync"
    marker = "repeat_sync"
    title = "re-syncing the same scopes keeps caches and memory flat"
    Params = Params
    Thresholds = Thresholds

    def scenario(self, ctx: GateContext) -> None:
        p: Params = ctx.params
        scopes = {f"sync-{i}": ctx.stack.repo_url(policy_repo_name(i)) for i in range(p.scopes)}
        for scope, url in scopes.items():
            ctx.client.put_scope(scope, url)
        pending = ctx.all_served_within(list(scopes), p.serve_budget_s, "initial load")
        if pending:
            ctx.timeline.fact("load_failure", f"{len(pending)} of {p.scopes} scopes were not served "
                                              f"within {p.serve_budget_s:g} s")
            return
        for cycle in range(1, p.cycles + 1):
            statuses = [ctx.client.refresh(scope) for scope in scopes]
            ctx.timeline.record("refreshes", cycle=cycle, statuses=statuses)
            pending = ctx.all_served_within(list(scopes), p.serve_budget_s, f"cycle {cycle}")
            ctx.observe(f"cycle {cycle}", cycle=cycle)
            if pending:
                ctx.timeline.fact("load_failure", f"cycle {cycle}: {len(pending)} scopes stopped being served")
                return

    def check(self, timeline: Timeline, thresholds: Thresholds) -> Verdict:
        if (failed := load_failure(timeline)) is not None:
            return failed
        warmup = timeline.facts.get("params", {}).get("warmup_cycles", 3)
        measured = [s for s in timeline.of_kind("snapshot") if s.get("cycle", 0) > warmup]
        if len(measured) < 3 or any("stats_error" in s for s in measured):
            return Verdict(ERROR, f"only {len(measured)} usable cycles after warm-up", "error.no_data")
        sizes = {c: [s[c] for s in measured] for c in CACHES}
        xs = [float(s["cycle"]) for s in measured]
        rss = [float(s.get("worker_rss_kb", 0)) for s in measured]
        slope = theil_sen_slope(xs, rss)
        metrics = {"cache_sizes": sizes, "rss_kb": rss, "rss_slope_kb_per_cycle": round(slope, 1)}
        drift = {c: v for c, v in sizes.items() if max(v) - min(v) > thresholds.cache_tolerance}
        if drift:
            detail = ", ".join(f"{c} {min(v)}→{max(v)}" for c, v in drift.items())
            return Verdict(FAIL, f"cache sizes changed while re-syncing the same scopes: {detail}",
                           "repeat_sync.caches_grew", metrics)
        if slope > thresholds.rss_slope_kb_per_cycle:
            return Verdict(FAIL, f"worker RSS grows {slope:.0f} KB per re-sync cycle (bound "
                                 f"{thresholds.rss_slope_kb_per_cycle:g} KB) over {len(measured)} cycles",
                           "repeat_sync.rss_slope", metrics)
        return Verdict(PASS, f"caches constant ({', '.join(f'{c}={v[0]}' for c, v in sizes.items())}); "
                             f"RSS slope {slope:.0f} KB/cycle over {len(measured)} cycles", "", metrics)
