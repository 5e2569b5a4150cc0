"""A replay's faults, from the harness's catalogue: each opened with GateContext.fault (the
timeline's fault window, healed on any exit) and closed with the evidence that it took.

- `git-front` (error | auth | reset | hang): the git front's mode (harness.gitfront); every
  source is reached through the one front. Took: the front answered a ref advertisement in
  that mode during the window.
- `blackhole` (dead): the group's sources repointed to the blackhole listener and back.
  Took: the blackhole accepted a connection during the window.
- `latency` (slow): the group's sources repointed through the latency proxy (HARNESS_LATENCY_MS
  each way) and back. Took: the proxy accepted a connection during the window.
- `service` (stop | kill | pause): a stack service stopped or SIGKILLed, then started — took:
  its published port closed; or paused, then resumed — took: no answer to its own protocol.
- `server` (restart | kill): the server restarted in place (its state kept), or SIGKILLed and
  started again. Took: new PIDs.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from harness import redisdb
from harness.errors import ConfigError
from harness.gates.base import GateContext
from harness.gitfront import set_mode
from harness.replay.scenario import Event, Scenario
from harness.replay.sources import ReplaySources
from harness.services.postgres import answers
from harness.waiting import port_open

# (start, heal, evidence): how a fault is made, undone, and told to have taken (took, how)
Verbs = tuple[Callable[[], None], Callable[[], None], Callable[[], tuple[bool, str]]]


@dataclass
class OpenFault:
    """A fault in force: its window on the timeline and how to tell afterwards that it took."""

    event: Event
    window: AbstractContextManager[Any]
    evidence: Callable[[], tuple[bool, str]]
    started_t: float
    record: dict[str, Any] = field(default_factory=dict)


def check_faults(scenario: Scenario) -> None:
    """Refused before any stack comes up: a fault on a service the server's stack does not have."""
    from harness.servers.registry import SERVERS
    services = SERVERS[scenario.server].dependencies
    for event in scenario.schedule:
        if event.fault == "service" and event.service not in services:
            raise ConfigError(f"{scenario.path}:{event.line or '?'}: schedule: service {event.service!r} is not in "
                              f"a {scenario.server} stack; its services: {', '.join(services) or 'none'}")
        if event.fault == "service" and event.mode == "pause" and event.service not in PAUSE_PROBES:
            raise ConfigError(f"{scenario.path}:{event.line or '?'}: schedule: pausing {event.service} cannot be "
                              f"proven (no probe of its protocol); pause one of {', '.join(PAUSE_PROBES)}")


def open_fault(ctx: GateContext, event: Event, sources: ReplaySources, scenario: Scenario) -> OpenFault:
    start, heal, evidence = _verbs(ctx, event, sources, scenario)
    window = ctx.fault(event.label(), start, heal)
    window.__enter__()
    return OpenFault(event, window, evidence, ctx.timeline.now())


def close_fault(ctx: GateContext, fault: OpenFault) -> dict[str, Any]:
    """Heal it; the record of its window: label, when, and whether (and how) it took."""
    fault.window.__exit__(None, None, None)
    took, how = fault.evidence()
    fault.record = {"label": fault.event.label(), "start_t": round(fault.started_t, 2),
                    "end_t": round(ctx.timeline.now(), 2), "took": took, "evidence": how}
    return fault.record


def _verbs(ctx: GateContext, event: Event, sources: ReplaySources, scenario: Scenario) -> Verbs:
    """(start, heal, evidence) of a fault."""
    stack = ctx.stack
    if event.fault == "git-front":
        front, url, mode = stack.service("gitfront"), stack.published("gitfront").url, event.mode or "error"
        before = _lines(front)
        return (lambda: set_mode(url, mode), lambda: set_mode(url, "ok"),
                lambda: _front_evidence(front, before, mode))
    if event.fault in ("blackhole", "latency"):
        return _repointed(stack, sources, list(scenario.groups[event.group].indexes()), event.fault)
    if event.fault == "service":
        return _service(stack, event.service or "", event.mode or "stop")
    return _server(stack, event.mode or "restart")


def _server(stack: Any, mode: str) -> Verbs:
    """`restart`: stopped and started in place, its state kept; `kill`: SIGKILLed first (an OOM
    kill, a node loss), then started the same way."""
    pids_before: list[list[int]] = []

    def restart() -> None:
        pids_before.append(_pids(stack))
        if mode == "kill":
            stack.service("server").kill()
        stack.server.restart(fresh_state=False)
    return restart, lambda: None, lambda: _restart_evidence(stack, pids_before)


def _repointed(stack: Any, sources: ReplaySources, indexes: list[int], fault: str) -> Verbs:
    """The group's sources repointed to a listener for the window — the blackhole (never
    answers) or the latency proxy (a slow link to their repos) — and back to the front."""
    listener, via = ("blackhole", "dead") if fault == "blackhole" else ("latency", "slow")
    handle = stack.service(listener)
    accepted = handle.accepted_connections()

    def repoint(to: str) -> Callable[[], None]:
        def run() -> None:
            for index in indexes:
                sources.repoint(index, to)
        return run
    said = "the latency proxy" if listener == "latency" else "the blackhole"
    return repoint(via), repoint("front"), lambda: _accepted_evidence(handle, said, accepted)


def _service(stack: Any, name: str, mode: str) -> Verbs:
    """stop | kill: down, then started; took: its port closed. pause: frozen with its
    connections open (SIGSTOP; compose: docker pause), then resumed; took: no answer to its
    own protocol (the kernel still accepts TCP, so a port check cannot tell)."""
    handle, address = stack.service(name), stack.published(name)
    down_seen: list[bool] = []

    def down() -> None:
        if mode == "pause":
            handle.pause()
            down_seen.append(not PAUSE_PROBES[name](address))
            return
        (handle.kill if mode == "kill" else handle.stop)()
        down_seen.append(not port_open(address.port, address.host))

    def evidence() -> tuple[bool, str]:
        took = bool(down_seen) and down_seen[0]
        if mode == "pause":
            return took, f"{name} {'did not answer' if took else 'still answered'} its protocol while paused"
        return took, f"{name}'s port {'closed' if took else 'still open'} after the {mode}"
    return down, handle.resume if mode == "pause" else handle.start, evidence


# How a paused service is told from a running one: its own protocol, within a second or two.
PAUSE_PROBES: dict[str, Callable[[Any], bool]] = {
    "postgres": lambda address: answers(address.port, address.host),
    "redis": lambda address: redisdb.ping(address.url),
}


def _lines(handle: Any) -> int:
    return len(handle.logs().read_text(errors="replace").splitlines())


def _front_evidence(front: Any, before: int, mode: str) -> tuple[bool, str]:
    lines = front.logs().read_text(errors="replace").splitlines()[before:]
    answered = sum(1 for line in lines if "info/refs" in line and f"mode={mode}" in line)
    return answered > 0, f"the git front answered {answered} ref advertisement(s) with {mode}"


def _accepted_evidence(handle: Any, name: str, before: int) -> tuple[bool, str]:
    taken = handle.accepted_connections() - before
    return taken > 0, f"{name} accepted {taken} connection(s)"


def _pids(stack: Any) -> list[int]:
    master, workers = stack.server.pids()
    return ([master] if master else []) + list(workers)


def _restart_evidence(stack: Any, before: list[list[int]]) -> tuple[bool, str]:
    after = _pids(stack)
    changed = bool(before) and bool(after) and not set(before[0]) & set(after)
    return changed, f"server PIDs {before[0] if before else '?'} → {after}"
