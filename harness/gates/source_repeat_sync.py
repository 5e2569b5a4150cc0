"""Gate `source-repeat-sync`: repeat-sync with one policy source, for any server with source
control — a commit per cycle, each served, and what the server keeps per fetch.

A source gate (harness.gates.sources): one source attached fresh; each cycle commits to it
and waits until the server serves the commit's nonce (one poll budget: poll interval +
operation timeout + slack, from the server's own settings). Then the server's figures are
read as the lowest each takes over `quiet_s` (GateContext.observe_lowest): a server that
polls on its own schedule has a poll in flight now and then, and its connection, thread or
pack is not a leftover. The checkout's pack files on disk (a KEPT_CHECKOUT server's) and the
packs mapped into the process are recorded per fetch and reported, not judged: how a server
keeps its objects is its business, what it holds open is not.

Judged after `warmup_cycles`, per fetch (one commit fetched per cycle), with a Theil–Sen
slope (harness.gates.repeat_sync.theil_sen_slope): open files, all fds, threads and RSS,
each against its bound. A figure that grew and then stopped — flat for at least the last
`tail_share` of the cycles — is bounded: the report says at what value and from which
cycle, and the slope is not carried past it (a pool that fills, a cache at its cap). Only a
figure still growing at the end fails, `source_sync.<figure>_grew`. A commit not served
within its budget is `source_sync.not_served` (the cycles stop there).

The scope form (`repeat-sync`) loads many scopes at once on a server with runtime sources;
this one needs only SOURCE_CONTROL, so the same gate runs on OPAL (local backend; a refresh
call after each push, as a webhook would) and on Cerbos (its poll). On OPAL 0.9.9 one
source shows the packs leak repeat-sync finds at scale (open files per fetch); on Cerbos
the checkout gains one pack per fetch (neither version repacks), recorded.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from harness.gates.base import Gate, GateContext
from harness.gates.repeat_sync import theil_sen_slope
from harness.gates.settings import GateSettings
from harness.gates.sources import SlackParams, attach_and_serve, control, record_budget, served_mark, served_within
from harness.probes import mapped_pack_files
from harness.servers.base import Capability
from harness.timeline import Timeline
from harness.verdict import ERROR, FAIL, Problems, Verdict, load_failure

log = logging.getLogger(__name__)

SOURCE = "source-repeat-sync"
# snapshot key -> (threshold, failure category, what one unit is): judged per fetch
JUDGED = {
    "worker_files": ("files_per_fetch", "source_sync.files_grew", "open file"),
    "worker_fds": ("fds_per_fetch", "source_sync.fds_grew", "fd"),
    "worker_threads": ("threads_per_fetch", "source_sync.threads_grew", "thread"),
    "worker_rss_kb": ("rss_kb_per_fetch", "source_sync.rss_grew", "KB of RSS"),
}
# recorded per fetch and reported, never judged
RECORDED = {"packs": "pack files in the checkout", "mapped_packs": "pack files mapped by the server"}
MIN_MEASURED = 6
MIN_TAIL = 5


@dataclass
class Params(SlackParams):
    positive = ("cycles", "quiet_s")
    cycles: int = 30
    warmup_cycles: int = 5
    quiet_s: float = 1.5  # each cycle's figures are their lowest over this window

    def validate(self) -> None:
        if self.cycles < self.warmup_cycles + MIN_MEASURED:
            self.refuse("cycles", f"≥ warmup_cycles + {MIN_MEASURED} = {self.warmup_cycles + MIN_MEASURED}")


@dataclass
class Thresholds(GateSettings):
    """Bounds per fetch, after warm-up. A server that keeps one more pack open per fetch
    shows 1.0 open file and 1.0 fd per fetch; a flat count has a slope of exactly 0. RSS is
    looser: a Go server's heap grows towards its collector's target for hundreds of changes
    (Cerbos's disk driver, which keeps no pack: 167 and 234 KB per change over 35 and 25
    changes, 2026-12), so 512 KB per fetch — twice that noise — flags only a gross retention
    over a short run; a long run (cycles=300) shows the rest (0.55.0's git driver: 54 KB)."""

    positive = ("tail_share",)
    files_per_fetch: float = 0.1
    fds_per_fetch: float = 0.1
    threads_per_fetch: float = 0.05
    rss_kb_per_fetch: float = 512.0
    # a figure that grew and then stood still for at least this share of the measured cycles
    # (and MIN_TAIL of them) at the end is bounded, not growing: Cerbos 0.55.0's open packs
    # stop at 260 from the 257th fetch (go-git's cap of open pack files, 2026-12)
    tail_share: float = 0.1

    def validate(self) -> None:
        if self.tail_share >= 1:
            self.refuse("tail_share", "a share < 1")


@dataclass(frozen=True)
class Trend:
    """One figure over the measured cycles: its slope per fetch over all of them and over the
    tail, and — when it grew and then stood still — the value it stopped at and the first
    cycle it reached it."""

    per_fetch: float
    tail_per_fetch: float
    first: int
    last: int
    bounded_at: int | None = None
    bounded_from: int | None = None

    def grows(self, bound: float) -> bool:
        return self.per_fetch > bound and self.bounded_at is None


def trend(cycles: list[int], values: list[int], tail_share: float, bound: float) -> Trend:
    """The slope per fetch of `values` (one per cycle), and the bound it stopped at. A figure
    over `bound` per fetch that stood still at the end — its last values within a hundredth
    of its range (at least 1) of the final one, for at least `tail_share` of the cycles and
    MIN_TAIL of them — is bounded: at the top of that stretch, from the cycle it began."""
    xs = [float(c) for c in cycles]
    ys = [float(v) for v in values]
    slope = theil_sen_slope(xs, ys)
    need = max(MIN_TAIL, math.ceil(tail_share * len(ys)))
    band = max(1, (max(values) - min(values)) // 100)
    start = len(values)
    while start > 0 and abs(values[start - 1] - values[-1]) <= band:
        start -= 1
    if slope > bound and len(values) - start >= need and start > 0:
        flat = theil_sen_slope(xs[start:], ys[start:])
        top = max(values[start:])
        reached = next(c for c, v in zip(cycles[start:], values[start:], strict=True) if v == top)
        return Trend(round(slope, 3), round(flat, 3), values[0], values[-1], top, reached)
    tail_slope = theil_sen_slope(xs[-need:], ys[-need:])
    return Trend(round(slope, 3), round(tail_slope, 3), values[0], values[-1])


class SourceRepeatSyncGate(Gate, id="source-repeat-sync", params=Params, thresholds=Thresholds,
                           title="a commit per cycle on one source, each served; what the server keeps per fetch",
                           requires=(Capability.SOURCE_CONTROL,)):

    def scenario(self, ctx: GateContext) -> None:
        p: Params = ctx.params
        tl = ctx.timeline
        budget = record_budget(ctx, p.slack_s)
        source = attach_and_serve(ctx, SOURCE, budget)
        if source is None:
            return
        server = control(ctx)
        for cycle in range(1, p.cycles + 1):
            nonce = source.commit()
            if served_within(ctx, nonce, budget, f"cycle {cycle}") is None:
                tl.fact("not_served", {"cycle": cycle, "nonce": nonce})
                return
            snapshot = ctx.observe_lowest(f"cycle {cycle}", tuple(JUDGED), p.quiet_s, cycle=cycle,
                                          packs=server.checkout().get("packs"))
            snapshot["mapped_packs"] = (mapped_pack_files(snapshot["worker_pid"])
                                        if snapshot.get("worker_pid") else None)
            if cycle % 10 == 0 or cycle == p.cycles:
                log.info(f"[gate {self.id}] cycle {cycle}/{p.cycles}: served; " + ", ".join(
                    f"{key} {snapshot.get(key)}" for key in (*JUDGED, *RECORDED)))

    def check(self, timeline: Timeline, params: Params, thresholds: Thresholds) -> Verdict:
        if (failed := load_failure(timeline)) is not None:
            return failed
        budget = timeline.facts["budget"]
        if (missed := timeline.facts.get("not_served")) is not None:
            last = ((served_mark(timeline, f"cycle {missed['cycle']}") or {}).get("last") or {})
            return Verdict(FAIL, f"cycle {missed['cycle']}: the commit was not served within {budget['how']}; the "
                                 f"server answered {last.get('nonce')}", "source_sync.not_served",
                           {"cycle": missed["cycle"]})
        measured = [s for s in timeline.of_kind("snapshot") if s.get("cycle", 0) > params.warmup_cycles]
        if len(measured) < MIN_MEASURED:
            return Verdict(ERROR, f"only {len(measured)} served cycles after {params.warmup_cycles} warm-up cycles "
                                  f"(at least {MIN_MEASURED} are needed for a slope)", "error.no_data")
        missing = [key for key in JUDGED if any(s.get(key) is None for s in measured)]
        if missing:
            return Verdict(ERROR, f"{', '.join(missing)} not recorded for every cycle (the server's process "
                                  "could not be read)", "error.no_data")
        cycles = [int(s["cycle"]) for s in measured]
        span = f"cycles {cycles[0]}–{cycles[-1]}"
        trends = {key: trend(cycles, [s[key] for s in measured], thresholds.tail_share,
                             getattr(thresholds, bound)) for key, (bound, _, _) in JUDGED.items()}
        recorded = {key: trend(cycles, [s[key] for s in measured], thresholds.tail_share, 0.0)
                    for key in RECORDED if all(s.get(key) is not None for s in measured)}
        problems = Problems()
        for key, (bound_name, category, unit) in JUDGED.items():
            t, bound = trends[key], getattr(thresholds, bound_name)
            if t.grows(bound):
                problems.add(category, f"the server keeps {t.per_fetch:g} more {_plural(unit)} per fetch: "
                                       f"{t.first} → {t.last} over {span} (bound {bound:g}; still "
                                       f"{t.tail_per_fetch:g} per fetch over the last cycles)",
                             per_fetch=t.per_fetch)
        bounded = [_bounded(key, t) for key, t in {**trends, **recorded}.items() if t.bounded_at is not None]
        for text in bounded:
            problems.note(text)
        metrics: dict[str, Any] = {
            "cycles": cycles, "per_fetch": {k: t.per_fetch for k, t in {**trends, **recorded}.items()},
            "bounded": {k: {"at": t.bounded_at, "from_cycle": t.bounded_from}
                        for k, t in {**trends, **recorded}.items() if t.bounded_at is not None},
            "series": {k: [s.get(k) for s in measured] for k in (*JUDGED, *RECORDED)},
            "served_s": [m["seconds"] for m in timeline.events if m["name"] == "served"
                         and str(m.get("label", "")).startswith("cycle ")]}
        per_fetch = ", ".join(f"{_short_name(k)} {t.per_fetch:+g}" for k, t in trends.items())
        kept = ", ".join(f"{RECORDED[k]} {t.per_fetch:+g}" for k, t in recorded.items())
        return problems.verdict(
            f"{len(cycles) + params.warmup_cycles} commits, each served within {budget['how']}; per fetch over "
            f"{span}: {per_fetch}" + (f"; recorded: {kept}" if kept else "")
            + (f"; {'; '.join(bounded)}" if bounded else ""), metrics)


def _plural(unit: str) -> str:
    return unit if unit.startswith("KB") else f"{unit}s"


def _short_name(key: str) -> str:
    return {"worker_files": "open files", "worker_fds": "fds", "worker_threads": "threads",
            "worker_rss_kb": "RSS KB"}.get(key, key)


def _bounded(key: str, t: Trend) -> str:
    name = RECORDED.get(key) or _short_name(key)
    return (f"{name} grew {t.first} → {t.bounded_at} by cycle {t.bounded_from}, then stayed there: bounded "
            f"at {t.bounded_at}, its slope not carried past it")
