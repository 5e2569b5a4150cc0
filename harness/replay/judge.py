"""The replay's one checker: every watched figure against its bounds, read back from the
timeline, each broken bound a problem naming its figure and the events around it; and the
projection of the rates measured at the compressed speed to production time.

Bounds (a [[watch]] table): `slope_per_hour_at_most` (Theil–Sen over the snapshots, per
production hour), `end_delta_at_most` (last snapshot less the first), `within_s` (freshness:
every commit served within that many harness seconds, counted from the end of any fault
window it fell in; every source's last commit served by the end), `at_most` (errors: failed
answers outside fault windows). A PASS also needs every fault to have taken (else ERROR
`error.not_exercised`) and the replay to have run to its end (else ERROR `error.interrupted`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.gates.proof import NOT_EXERCISED
from harness.gates.repeat_sync import theil_sen_slope
from harness.replay.scenario import ANSWER_FIGURES, FD_FIGURES, SNAPSHOT_FIGURES, UNITS
from harness.timeline import Timeline
from harness.verdict import ERROR, Problems, Verdict

PRODUCTION_HOUR = 3600.0
NOT_ENOUGH = (".no_data", ".no_commits")
LATE_S = 1.0  # a schedule later than this is said in the verdict  # problems of a run too short to judge a figure
ASSUMPTIONS = ("growth follows the events (commits, fetches, scope churn), which the schedule compresses by "
               "`speed`; the server's own timers (poll interval, timeouts, backoffs) run at real speed, so "
               "growth driven by them is under-projected by the same factor",
               "per source: the figure grows with the number of live sources (linear)",
               "per fetch: each served commit is one fetch")


@dataclass
class Series:
    figure: str
    t: list[float]  # harness seconds
    values: list[float]

    def slope_per_hour(self, speed: float) -> float | None:
        if len(self.t) < 3:
            return None
        return theil_sen_slope(self.t, self.values) * PRODUCTION_HOUR / speed

    def delta(self) -> float | None:
        return self.values[-1] - self.values[0] if len(self.values) >= 2 else None


def series(timeline: Timeline, figure: str, after_warmup: bool = True) -> Series:
    """A snapshot figure over the run (after its warm-up: what is judged), in its unit (RSS in MB)."""
    since = timeline.facts.get("judged_from_t", 0.0) if after_warmup else 0.0
    points = [(s["t"], value) for s in timeline.of_kind("snapshot")
              if (value := _value(s, figure)) is not None and s["t"] >= since]
    scale = 1 / 1024 if figure == "rss" else 1.0
    return Series(figure, [t for t, _ in points], [v * scale for _, v in points])


def _value(snapshot: dict[str, Any], figure: str) -> float | None:
    """A figure of one snapshot: its field (a cache's name is its own), or an fd kind's count."""
    if figure in FD_FIGURES:
        kinds = snapshot.get("fds_by_kind")
        return None if kinds is None else float(kinds.get(figure.removeprefix("fds."), 0))
    value = snapshot.get(SNAPSHOT_FIGURES.get(figure, figure))
    return None if value is None else float(value)


def windows(timeline: Timeline) -> list[tuple[float, float, str]]:
    return [(f["start_t"], f["end_t"], f["label"]) for f in timeline.facts.get("faults") or []]


def around(timeline: Timeline, start: float, end: float) -> str:
    """The events between two moments: the faults in force and the commits made."""
    faults = [f"{label} ({a:.0f}–{b:.0f} s)" for a, b, label in windows(timeline) if a <= end and b >= start]
    commits = sum(1 for c in timeline.of_kind("commit") if start <= c["t"] <= end)
    churn = sum(1 for c in timeline.of_kind("churn") if start <= c["t"] <= end)
    parts = [f"faults: {', '.join(faults)}" if faults else "no fault", f"{commits} commits"]
    if churn:
        parts.append(f"{churn} scope puts/deletes")
    return "; ".join(parts)


def lags(timeline: Timeline) -> list[dict[str, Any]]:
    """Each change a source must serve (a commit, a force-push, a scope put) with when it was
    served (harness seconds) and its lag (`_clock_start`); `served_t` None: never served. A
    change that a later one of the same source superseded before it was served counts as
    served when the later one is."""
    served: dict[int, list[tuple[float, str]]] = {}
    for s in timeline.of_kind("served"):
        served.setdefault(s["source"], []).append((s["t"], s["nonce"]))
    commits = sorted(timeline.of_kind("commit"), key=lambda c: c["t"])
    faults = windows(timeline)
    records = []
    for i, commit in enumerate(commits):
        if commit.get("detached"):
            continue
        later = {c["nonce"] for c in commits[i:] if c["source"] == commit["source"]}
        served_t = next((t for t, nonce in served.get(commit["source"], []) if t >= commit["t"] and nonce in later),
                        None)
        start = _clock_start(commit["t"], served_t, faults)
        lag = None if served_t is None else round(max(0.0, served_t - start), 2)
        records.append({"source": commit["source"], "t": commit["t"], "from_t": round(start, 2),
                        "served_t": served_t, "lag_s": lag})
    return records


def _clock_start(made: float, served_t: float | None, faults: list[tuple[float, float, str]]) -> float:
    """When a change's freshness clock starts: when it was made, or the end of the last fault
    window that began before it was served and ended after the clock's start (a fetch the
    fault cut is the fault's, not the server's)."""
    start = made
    for a, b, _ in sorted(faults):
        if a <= (served_t if served_t is not None else float("inf")) and b >= start:
            start = max(start, b)
    return start


def judge(timeline: Timeline, watches: list[dict[str, Any]], speed: float, sources: int,
          reported: dict[str, Any] | None = None) -> Verdict:
    problems = Problems()
    metrics: dict[str, Any] = {"speed": speed, "sources": sources, "watch": {}}
    for watch in watches:
        _judge_watch(timeline, watch, speed, problems, metrics["watch"])
    metrics["projection"] = projection(timeline, watches, speed, sources, reported or {})
    notes = [said] if (said := projected(metrics["projection"])) else []
    if (late := timeline.facts.get("schedule_late_s") or 0.0) > LATE_S:
        metrics["schedule_late_s"] = late
        notes.append(f"the schedule ran up to {late:.1f} s late (the server held the harness's calls): "
                     "production times are approximate")
    for note in notes:
        problems.note(note)
    faults = timeline.facts.get("faults") or []
    unproven = [f for f in faults if not f.get("took")]
    interrupted = timeline.facts.get("interrupted_at_t")
    if interrupted is not None:  # too little recorded is the interruption's, not the server's
        problems.items = [p for p in problems.items if not p.category.endswith(NOT_ENOUGH)]
    if problems:
        for fault in unproven:
            problems.note(f"the fault {fault['label']} did not take ({fault['evidence']})")
        if interrupted is not None:
            problems.note(f"interrupted at {interrupted:.0f} s of harness time: judged on what was recorded")
        return problems.verdict("", metrics)
    if unproven:
        return Verdict(ERROR, "every bound held, but not every fault took, so the incident was not reproduced: "
                       + "; ".join(f"{f['label']}: {f['evidence']}" for f in unproven), NOT_EXERCISED, metrics)
    if interrupted is not None:
        return Verdict(ERROR, f"interrupted at {interrupted:.0f} s of harness time; every bound held on what was "
                       "recorded", "error.interrupted", metrics)
    return problems.verdict("; ".join(["every bound held: " + "; ".join(
        f"{figure} {text}" for figure, text in metrics["watch"].items()), *notes]), metrics)


def _judge_watch(timeline: Timeline, watch: dict[str, Any], speed: float, problems: Problems,
                 said: dict[str, str]) -> None:
    figure, bounds = watch["figure"], watch.get("bounds") or {}
    if figure == "freshness":
        _judge_freshness(timeline, bounds, problems, said)
        return
    if figure == "errors":
        _judge_errors(timeline, bounds, problems, said)
        return
    if figure == "latency":
        _judge_latency(timeline, bounds, problems, said)
        return
    found = series(timeline, figure)
    unit = UNITS.get(figure, "entries")
    if len(found.t) < 3:
        problems.add(f"replay.{figure}.no_data", f"{figure}: {len(found.t)} snapshot(s) with it, 3 needed to judge")
        return
    slope, delta = found.slope_per_hour(speed), found.delta()
    said[figure] = f"{slope:+.2f} {unit}/h, {delta:+.2f} {unit} over the run"
    span = around(timeline, found.t[0], found.t[-1])
    if (bound := bounds.get("slope_per_hour_at_most")) is not None and slope is not None and slope > bound:
        problems.add(f"replay.{figure}.slope", f"{figure} grew {slope:+.2f} {unit} per production hour, bound "
                     f"{bound:g} (over {found.t[-1] - found.t[0]:.0f} s at speed {speed:g}; {span})",
                     per_hour=round(slope, 3), bound=bound)
    if (bound := bounds.get("end_delta_at_most")) is not None and delta is not None and delta > bound:
        problems.add(f"replay.{figure}.end_delta", f"{figure} ended {delta:+.2f} {unit} above where it started, "
                     f"bound {bound:g} ({span})", delta=round(delta, 3), bound=bound)


def _judge_freshness(timeline: Timeline, bounds: dict[str, float], problems: Problems, said: dict[str, str]) -> None:
    records = lags(timeline)
    if not records:
        problems.add("replay.freshness.no_commits", "freshness is watched but no change was made (no commit, "
                     "force-push or scope put)")
        return
    within = bounds.get("within_s")
    never = [r for r in records if r["served_t"] is None]
    if (running_at := timeline.facts.get("running_at_t")) is not None:  # a verdict so far: young changes pend
        never = [r for r in never if r["t"] < running_at - (within or 0.0)]
    late = [r for r in records if within is not None and r["lag_s"] is not None and r["lag_s"] > within]
    served = [r["lag_s"] for r in records if r["lag_s"] is not None]
    said["freshness"] = (f"{len(served)} of {len(records)} changes served, worst {max(served, default=0):.1f} s"
                         + (f" (bound {within:g} s)" if within is not None else ""))
    if never:
        sources = sorted({r["source"] for r in never})
        problems.add("replay.freshness.never_served",
                     f"{len(never)} of {len(records)} changes (commits, force-pushes, scope puts) never served, "
                     f"on {len(sources)} source(s) "
                     f"{sources[:10]}: the first at {never[0]['t']:.0f} s "
                     f"({around(timeline, never[0]['t'] - 5, never[0]['t'] + 5)})",
                     commits=len(never), sources=sources)
    if late:
        worst = max(late, key=lambda r: r["lag_s"])
        problems.add("replay.freshness.late",
                     f"{len(late)} of {len(records)} changes served later than {within:g} s after they were made "
                     f"(or the end of a fault window); worst {worst['lag_s']:.1f} s, source {worst['source']} "
                     f"at {worst['t']:.0f} s ({around(timeline, worst['t'], worst['served_t'])})",
                     commits=len(late), worst_s=worst["lag_s"], bound=within)


def _judge_errors(timeline: Timeline, bounds: dict[str, float], problems: Problems, said: dict[str, str]) -> None:
    faults = windows(timeline)
    outside = [a for a in timeline.of_kind("answers") if not any(s <= a["t"] <= e for s, e, _ in faults)]
    errors = sum(a["errors"] for a in outside)
    total = timeline.facts.get("answers_read", 0)
    said["errors"] = f"{errors} failed answers outside fault windows (of {total} read in all)"
    if (bound := bounds.get("at_most")) is not None and errors > bound:
        first = outside[0]
        problems.add("replay.errors.too_many", f"{errors} answers outside fault windows failed (of {total} read in "
                     f"all), bound {bound:g}; the first at {first['t']:.0f} s "
                     f"({around(timeline, first['t'] - 5, first['t'] + 5)})", errors=errors, bound=bound)


def projected(table: dict[str, Any]) -> str:
    """The projection of the reported figure in one sentence (empty without `[reported]`)."""
    row = next((r for r in table["rows"] if "reported_per_hour" in r), None)
    if row is None:
        return ""
    unit = row["unit"]
    said = (f"projection: {row['figure']} {row['per_hour']:+.2f} {unit}/h at {table['sources_live']} sources, "
            f"{row['per_source_per_hour']:+.4f} {unit}/h per source → "
            f"{row['projected_to_reported_sources_per_hour']:+,.0f} {unit}/h at {row['reported_sources']:,} sources; "
            f"reported {row['reported_per_hour']:g} {unit}/h")
    if row.get("fetches_per_hour_for_reported"):
        said += (f"; at {row['per_fetch']:.4f} {unit} per fetch the reported rate is "
                 f"{row['fetches_per_hour_for_reported']:,} fetches an hour")
    return said


def _judge_latency(timeline: Timeline, bounds: dict[str, float], problems: Problems, said: dict[str, str]) -> None:
    """The answers' p95 per snapshot interval, outside fault windows, against `p95_at_most_s`."""
    faults = windows(timeline)
    outside = [r for r in timeline.of_kind("latency") if not any(a <= r["t"] <= b for a, b, _ in faults)]
    if not outside:
        problems.add("replay.latency.no_data", "latency is watched but no answer was timed outside fault windows")
        return
    worst = max(outside, key=lambda r: r["p95"])
    slowest = max(r["max"] for r in outside)
    said["latency"] = f"p95 at most {worst['p95']:.3f} s outside fault windows (max {slowest:.3f} s)"
    if (bound := bounds.get("p95_at_most_s")) is not None and worst["p95"] > bound:
        slow = [r for r in outside if r["p95"] > bound]
        problems.add("replay.latency.slow", f"the answers' p95 was above {bound:g} s in {len(slow)} of {len(outside)} "
                     f"intervals outside fault windows, worst {worst['p95']:.3f} s at {worst['t']:.0f} s "
                     f"({around(timeline, worst['t'] - 5, worst['t'] + 5)})", worst_s=worst["p95"], bound=bound)


def projection(timeline: Timeline, watches: list[dict[str, Any]], speed: float, sources: int,
               reported: dict[str, Any]) -> dict[str, Any]:
    """Each snapshot figure's rate at production time: per hour, per source per hour, per
    fetch; beside a reported production rate (`[reported]`) scaled to its source count."""
    fetches = sum(1 for r in lags(timeline) if r["served_t"] is not None)
    rows = []
    for watch in watches:
        figure = watch["figure"]
        if figure in ANSWER_FIGURES:
            continue
        found = series(timeline, figure)
        per_hour, delta = found.slope_per_hour(speed), found.delta()
        if per_hour is None:
            continue
        row: dict[str, Any] = {"figure": figure, "unit": UNITS.get(figure, "entries"), "per_hour": round(per_hour, 3),
                               "per_source_per_hour": round(per_hour / max(1, sources), 5),
                               "per_fetch": round(delta / fetches, 5) if fetches and delta is not None else None}
        if reported.get("figure") == figure and reported.get("sources") and reported.get("per_hour") is not None:
            row["projected_to_reported_sources_per_hour"] = round(row["per_source_per_hour"] * reported["sources"], 2)
            row["reported_per_hour"] = reported["per_hour"]
            row["reported_sources"] = reported["sources"]
            if row["per_fetch"]:  # the production fetch rate that would give the reported rate
                row["fetches_per_hour_for_reported"] = round(reported["per_hour"] / row["per_fetch"])
        rows.append(row)
    return {"rows": rows, "fetches": fetches, "sources_live": sources, "assumptions": list(ASSUMPTIONS),
            "reported": reported or None}
