"""What the source gates share (gates that need Capability.SOURCE_CONTROL: one policy source
the adapter attaches and commits to, served content judged by its nonce).

A source gate drives the server only through its probe's SourceControl verbs
(harness.servers.base): new_source, attach, served, checkout, tamper — written once for
every server whose adapter has them. Budgets come from the server's own knobs: one poll
interval plus one operation timeout (a poll may be blocked for that long) plus slack.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any, cast

from harness.gates.base import GateContext
from harness.gates.settings import GateSettings
from harness.servers.base import Capability, PolicySource, ServerKnobs, SourceControl
from harness.timeline import Timeline
from harness.waiting import poll_until

ANSWER = "answer"  # the timeline kind of a watched answer


def control(ctx: GateContext) -> SourceControl:
    """The server probe's source verbs (the gate requires SOURCE_CONTROL, so it has them)."""
    return cast(SourceControl, ctx.stack.server)


@dataclass
class SlackParams(GateSettings):
    """A source gate's settings: the slack on top of what the server's settings allow. Each
    gate subclasses it (its Params class carries its gate id into error messages)."""

    slack_s: float = 5.0


@dataclass
class BudgetThresholds(GateSettings):
    pass  # judged against budgets derived from the server's settings


def record_budget(ctx: GateContext, slack_s: float) -> float:
    """The poll budget (below), recorded as the fact `budget` the checkers quote."""
    budget, how = poll_budget(ctx.knobs, slack_s)
    ctx.timeline.fact("budget", {"seconds": budget, "how": how})
    return budget


def operation_timeout(knobs: ServerKnobs, fallback_s: float | None = None) -> tuple[float, str]:
    """(seconds, how said) a fetch may take on this server: its own operation timeout, else
    the harness's fallback (said so: not a limit the server promises), else 0."""
    if knobs.git_timeout_s:
        return knobs.git_timeout_s, f"operation timeout {knobs.git_timeout_s:g} s"
    if fallback_s is not None:
        return fallback_s, f"the harness's fallback {fallback_s:g} s: this server has no operation timeout"
    return 0.0, "no operation timeout"


def poll_budget(knobs: ServerKnobs, slack_s: float, fallback_timeout_s: float | None = None) -> tuple[float, str]:
    """(seconds, how derived) for a change at the remote to be served: a poll interval (the
    next poll; none where a refresh call starts the fetch), an operation timeout (a fetch in
    flight may be stuck that long) and slack."""
    poll = knobs.poll_interval_s or 0.0
    timeout, said = operation_timeout(knobs, fallback_timeout_s)
    polled = f"poll {poll:g} s" if knobs.poll_interval_s else "no poll: its refresh call starts the fetch"
    budget = poll + timeout + slack_s
    return budget, f"{budget:g} s ({polled} + {said} + slack {slack_s:g} s)"


def attach_and_serve(ctx: GateContext, name: str, budget: float, policies: int = 0) -> PolicySource | None:
    """A new source attached and its first content served; None (and the load failure
    recorded) when it is not served within `budget`."""
    server = control(ctx)
    source = server.new_source(name, policies)
    server.attach(source)
    if served_within(ctx, source.nonce, budget, "attached") is None:  # type: ignore[attr-defined]
        ctx.timeline.fact("load_failure", f"the attached source {name} was not served within {budget:g} s")
        return None
    return source


def served_within(ctx: GateContext, nonce: str, budget: float, label: str) -> float | None:
    """Ask until the server's decision carries `nonce`; seconds it took, or None when the
    budget is spent (the mark keeps what it answered last)."""
    server = control(ctx)
    last: list[Any] = []

    def served() -> bool:
        last[:] = [server.served(timeout=min(5.0, max(budget, 0.5)))]
        return bool(last[0].nonce == nonce)
    seconds = poll_until(served, budget, interval=0.2)
    detail = {"last": asdict(last[0])} if seconds is None and last else {}
    ctx.timeline.mark("served" if seconds is not None else "not_served", label=label, nonce=nonce,
                      seconds=None if seconds is None else round(seconds, 2), budget=budget, **detail)
    return seconds


class Watch:
    """Asks the server for its content every `interval` on its own thread while a fault is on:
    each answer recorded (kind `answer`) with the window's label."""

    def __init__(self, ctx: GateContext, label: str, interval: float = 0.5):
        self.ctx, self.label, self.interval = ctx, label, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{label}", daemon=True)

    def _run(self) -> None:
        server = control(self.ctx)
        while not self._stop.is_set():
            answer = server.served(timeout=5.0)
            self.ctx.timeline.record(ANSWER, label=self.label, nonce=answer.nonce, status=answer.status,
                                     healthy=answer.healthy, seconds=round(answer.seconds, 3), error=answer.error)
            self._stop.wait(self.interval)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


class Nudger:
    """While a window is on, asks a server that does not poll its remote to fetch it every
    `every_s` (SourceControl.nudge: OPAL's refresh call, as a webhook's retry or a periodic
    pass would); a polling server polls on its own and nothing is sent. The requests sent are
    recorded as the fact `nudges <label>`."""

    def __init__(self, ctx: GateContext, label: str, every_s: float = 1.0):
        self.ctx, self.label, self.every_s = ctx, label, every_s
        self.active = Capability.POLLING not in ctx.adapter.capabilities
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"nudge-{label}", daemon=True)

    def _run(self) -> None:
        server = control(self.ctx)
        while not self._stop.wait(self.every_s):
            server.nudge()
            self.sent += 1

    def __enter__(self) -> Nudger:
        if self.active:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.active:
            self._stop.set()
            self._thread.join(timeout=30)
            self.ctx.timeline.fact(f"nudges {self.label}", self.sent)


def answers(timeline: Timeline, label: str) -> list[dict[str, Any]]:
    return [a for a in timeline.of_kind(ANSWER) if a.get("label") == label]


def describe_answer(answer: dict[str, Any]) -> str:
    if answer.get("status") is None:
        return f"no answer ({answer.get('error') or 'connection refused'})"
    return f"{answer['status']} with nonce {answer.get('nonce')}" + ("" if answer.get("healthy") else ", unhealthy")


def mark_of(timeline: Timeline, name: str, label: str) -> dict[str, Any] | None:
    return next((e for e in timeline.events if e["name"] == name and e.get("label") == label), None)


def served_mark(timeline: Timeline, label: str) -> dict[str, Any] | None:
    """The `served` or `not_served` mark of a step (None: the step never ran)."""
    return mark_of(timeline, "served", label) or mark_of(timeline, "not_served", label)
