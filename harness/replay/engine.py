"""The replay engine: a scenario's schedule driven against a running stack, as one gate
(`replay`) the runner runs like any other — a fresh server, a timeline in the report's
schema, one checker (harness/replay/judge.py) — but built from a file, never one of a full
run's gates.

The schedule's production times are divided by `speed`. Each tick (0.25 s) fires what is
due (commits, scope churn, refreshes, faults opening and closing), reads what every source
serves (recording each change and the failed answers), and takes a snapshot every
`sample_every`. After the schedule, `settle_s` harness seconds for every source to catch up.
Ctrl-C heals every fault, stops the loop and judges what was recorded (ERROR interrupted).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from harness.fds import fd_census
from harness.gates.base import Gate, GateContext
from harness.gates.settings import GateSettings
from harness.replay import faults as fault_kit
from harness.replay import plot  # noqa: F401 - registers the replay's plot with the report
from harness.replay.judge import judge
from harness.replay.scenario import FD_FIGURES, Event, Scenario, load
from harness.replay.sources import ReplaySources, needs, open_sources
from harness.timeline import Timeline
from harness.verdict import ERROR, Verdict

log = logging.getLogger(__name__)

TICK_S = 0.25
RUNNING = "replay-running.json"  # the verdict so far, beside the report
ATTACH_BUDGET_S = 120.0
MAX_ACTIONS = 200_000  # a bound on any schedule, whatever its rates and duration


@dataclass
class Params(GateSettings):
    scenario: str = ""  # a scenario file or a shipped incident's name
    duration: str = ""  # production time; a soak: the same schedule for longer ("" = the file's)


@dataclass
class Thresholds(GateSettings):
    pass  # the bounds are the scenario's [[watch]] tables


@dataclass
class Planned:
    at_h: float  # harness seconds from the start
    event: Event
    kind: str  # "action" | "open" | "close"


def plan(scenario: Scenario, duration_s: float) -> list[Planned]:
    """The schedule in harness seconds, in order; rates repeat until `until` (or the end).
    A soak longer than the file's duration repeats its faults with the file's period."""
    period = scenario.duration_s
    planned: list[Planned] = []
    for event in scenario.schedule:
        if event.action and event.every_s:
            until = duration_s if event.until_s is None or event.until_s >= period else event.until_s
            count = int((until - event.start_s) // event.every_s) + 1
            planned += [Planned(scenario.harness_s(event.start_s + k * event.every_s), event, "action")
                        for k in range(max(0, count)) if event.start_s + k * event.every_s < duration_s]
            continue
        for offset in _repeats(period, duration_s):
            at = (event.at_s or 0.0) + offset
            if at >= duration_s:
                continue
            if event.action:
                planned.append(Planned(scenario.harness_s(at), event, "action"))
            else:
                planned.append(Planned(scenario.harness_s(at), event, "open"))
                end = min(at + event.for_s, duration_s)  # a one-off (a restart) closes just after it opens
                planned.append(Planned(scenario.harness_s(end) + (0.001 if end <= at else 0.0), event, "close"))
    if len(planned) > MAX_ACTIONS:
        raise ValueError(f"the schedule makes {len(planned):,} steps; at most {MAX_ACTIONS:,}")
    return sorted(planned, key=lambda p: (p.at_h, p.kind != "close"))


def _repeats(period: float, duration_s: float) -> list[float]:
    return [k * period for k in range(max(1, int(duration_s // period) + (duration_s % period > 0)))]


class ReplayGate(Gate, id="replay", params=Params, thresholds=Thresholds, requires=(),
                 title="an incident replayed from a scenario file, its watched figures within their bounds"):
    """What the server must have depends on the scenario: checked when it is loaded."""

    def scenario(self, ctx: GateContext) -> None:
        p: Params = ctx.params
        scenario = load(p.scenario)
        duration_s = _duration(scenario, p.duration)
        tl = ctx.timeline
        tl.fact("scenario", scenario.to_json())
        tl.fact("duration_s", duration_s)
        if missing := ctx.adapter.lacks(needs(scenario.sources, scenario.repoints), ctx.stack.backend):
            raise_missing(scenario, missing, ctx.stack.backend)
        sources = open_sources(ctx.stack, scenario.sources, scenario.policies,
                               ctx.adapter.capabilities_on(ctx.stack.backend), ATTACH_BUDGET_S)
        Runner(ctx, scenario, sources, plan(scenario, duration_s), duration_s).run()

    def check(self, timeline: Timeline, params: Any, thresholds: Any) -> Verdict:
        recorded = timeline.facts.get("scenario")
        if recorded is None:
            return Verdict(ERROR, "the replay recorded no scenario: it stopped before it started", "error.no_data")
        return judge(timeline, recorded["watches"], recorded["speed"], recorded["sources"], recorded.get("reported"))


def raise_missing(scenario: Scenario, missing: list[Any], backend: str | None) -> None:
    from harness.errors import ConfigError
    from harness.servers.registry import SERVERS
    where = f" on the {backend} backend" if backend and set(missing) <= SERVERS[scenario.server].local_only else ""
    what = f"{scenario.sources} source(s)" + (" and a schedule that deletes, puts or black-holes them"
                                              if scenario.repoints else "")
    raise ConfigError(f"{scenario.path}: {what} on {scenario.server}{where} need "
                      f"{', '.join(c.value for c in missing)}, which it lacks"
                      + ("; use --backend local" if where else ""))


def _duration(scenario: Scenario, override: str) -> float:
    if not override:
        return scenario.duration_s
    from harness.replay.scenario import parse_duration
    return parse_duration(override)


class Runner:
    """One replay's loop: the plan fired on time, sources read, snapshots taken."""

    def __init__(self, ctx: GateContext, scenario: Scenario, sources: ReplaySources, planned: list[Planned],
                 duration_s: float):
        self.ctx, self.scenario, self.sources, self.planned = ctx, scenario, sources, planned
        self.end_h = scenario.harness_s(duration_s)
        self.open: dict[int, fault_kit.OpenFault] = {}  # id(event) -> fault in force
        self.closed: list[dict[str, Any]] = []
        self.last_served: list[str | None] = [None] * len(sources.sources)
        self.started = 0.0
        self.reads = 0
        self.latencies: list[float] = []  # the answers' seconds since the last snapshot
        self.fd_kinds = any(w.figure in FD_FIGURES for w in scenario.watches)
        self.late_s = 0.0  # how late the schedule ran at worst

    def run(self) -> None:
        tl = self.ctx.timeline
        self._snapshot("start")
        self.started = time.monotonic()
        # slopes and deltas skip the warm-up's snapshots (harness/replay/judge.py)
        tl.fact("judged_from_t", round(tl.now() + self.scenario.harness_s(self.scenario.warmup), 2))
        try:
            self._loop()
            self._settle()
        except KeyboardInterrupt:
            tl.fact("interrupted_at_t", round(tl.now(), 1))
            log.warning(f"[replay] interrupted at {self._elapsed():.0f} s: healing the faults, judging what was "
                        "recorded")
        finally:
            for fault in list(self.open.values()):
                self.closed.append(fault_kit.close_fault(self.ctx, fault))
            self.open.clear()
            tl.facts.pop("running_at_t", None)  # judged at its end from here on
            tl.fact("faults", sorted(self.closed, key=lambda f: f["start_t"]))
            tl.fact("answers_read", self.reads)
        self._snapshot("end")

    def _elapsed(self) -> float:
        return time.monotonic() - self.started

    def _loop(self) -> None:
        next_sample, next_say, queue = 0.0, 0.0, list(self.planned)
        sample_every = self.scenario.harness_s(self.scenario.sample_every_s)
        while self._elapsed() < self.end_h:
            while queue and queue[0].at_h <= self._elapsed():
                self._fire(queue.pop(0))
            self._read()
            if self._elapsed() >= next_sample:
                self._snapshot(f"{self._elapsed() * self.scenario.speed:.0f} s")
                self._record_latency()
                next_sample += sample_every
            if self._elapsed() >= next_say:
                self._say()
                next_say += max(10.0, self.end_h / 10)
            time.sleep(max(0.0, min(TICK_S, self.end_h - self._elapsed())))
        for step in queue:  # faults still to close at the very end
            if step.kind == "close":
                self._fire(step)

    def _snapshot(self, label: str) -> None:
        """GateContext.observe, plus the worker's fds by kind when a watch asks for one."""
        shot = self.ctx.observe(label)
        if self.fd_kinds and (pid := shot.get("worker_pid") or next(iter(shot.get("worker_pids") or []), None)):
            census = fd_census(pid)
            if census is not None:
                by_kind = dict(census.by_kind)
                by_kind["anon"] = sum(n for kind, n in by_kind.items() if kind.startswith("anon_inode:"))
                shot["fds_by_kind"] = by_kind

    def _record_latency(self) -> None:
        """The answers' times since the last snapshot: p95 and max (one record an interval)."""
        if self.latencies:
            times = sorted(self.latencies)
            self.ctx.timeline.record("latency", p95=round(times[int(0.95 * (len(times) - 1))], 4),
                                     max=round(times[-1], 4), n=len(times))
            self.latencies = []

    def _settle(self) -> None:
        """After the schedule: every source's last commit served, or the settle budget spent."""
        deadline = time.monotonic() + self.scenario.settle_s
        while time.monotonic() < deadline and self.sources.late():
            self._read()
            time.sleep(0.5)
        self._read()

    def _say(self) -> None:
        """Progress, and the verdict so far in the report's folder (replay-running.json): a
        soak left overnight can be read before it ends."""
        production = self._elapsed() * self.scenario.speed
        if len(self.ctx.timeline.of_kind("snapshot")) < 3:
            log.info(f"[replay] {production / 60:.0f} of {self.end_h * self.scenario.speed / 60:.0f} production "
                     f"minutes ({self._elapsed():.0f} s)")
            return
        # the faults so far, those in force up to now (taken as having taken: they are judged at their end)
        now = round(self.ctx.timeline.now(), 2)
        self.ctx.timeline.fact("running_at_t", now)
        self.ctx.timeline.fact("faults", self.closed + [
            {"label": f.event.label(), "start_t": round(f.started_t, 2), "end_t": now, "took": True,
             "evidence": "in force"} for f in self.open.values()])
        so_far = judge(self.ctx.timeline, [asdict(w) for w in self.scenario.watches], self.scenario.speed,
                       self.scenario.sources, self.scenario.reported)
        log.info(f"[replay] {production / 60:.0f} of {self.end_h * self.scenario.speed / 60:.0f} production minutes "
                 f"({self._elapsed():.0f} s); faults in force: "
                 f"{', '.join(f.event.label() for f in self.open.values()) or 'none'}; so far {so_far.verdict}: "
                 f"{so_far.reason[:160]}")
        folder = self.ctx.stack.settings.reports_dir / self.ctx.stack.run_id
        if folder.is_dir():
            (folder / RUNNING).write_text(json.dumps(
                {"production_s": round(production), "harness_s": round(self._elapsed()), "verdict": so_far.verdict,
                 "reason": so_far.reason, "metrics": so_far.metrics}, indent=2, default=str))

    def _fire(self, step: Planned) -> None:
        event, tl = step.event, self.ctx.timeline
        late = self._elapsed() - step.at_h  # the server held an earlier step's calls this long
        if late > self.late_s:
            self.late_s = round(late, 2)
            tl.fact("schedule_late_s", self.late_s)
        if step.kind == "open":
            self.open[id(event)] = fault_kit.open_fault(self.ctx, event, self.sources, self.scenario)
            return
        if step.kind == "close":
            if (fault := self.open.pop(id(event), None)) is not None:
                self.closed.append(fault_kit.close_fault(self.ctx, fault))
            return
        indexes = list(self.scenario.groups[event.group].indexes())
        if event.action in ("commit", "force-push"):
            for index, nonce in zip(indexes, self.sources.commit(indexes, force=event.action == "force-push"),
                                    strict=True):
                tl.record("commit", source=index, nonce=nonce, action=event.action,
                          detached=index in self.sources.detached)
        elif event.action == "refresh":
            for index in indexes:
                self.sources.refresh(index)
        elif event.action == "put":
            self.sources.side_by_side(self.sources.put, indexes)
            for index in indexes:
                self.last_served[index] = None  # read anew: what it serves after the put
                tl.record("churn", source=index, action="put")
                # a put is a change the server must serve: the source's content, anew
                tl.record("commit", source=index, nonce=self.sources.pushed[index], action="put", detached=False)
        else:
            self.sources.side_by_side(self.sources.delete, indexes)
            for index in indexes:
                self.last_served[index] = None  # its next put must be served again to count
                tl.record("churn", source=index, action="delete")

    def _read(self) -> None:
        """What every attached source serves now: each change recorded, the errors counted."""
        ok = errors = 0
        for index, answer in self.sources.read_all().items():
            errors += answer.failed
            ok += not answer.failed
            if not answer.failed and answer.seconds is not None:
                self.latencies.append(answer.seconds)
            if answer.nonce is not None and answer.nonce != self.last_served[index]:
                self.last_served[index] = answer.nonce
                self.ctx.timeline.record("served", source=index, nonce=answer.nonce)
        self.reads += ok + errors
        if errors:  # only the rounds with failures: a soak's timeline stays small
            self.ctx.timeline.record("answers", ok=ok, errors=errors)
