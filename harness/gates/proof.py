"""Proof that a gate's fault took, as far as the claim needs it: the connections a fault
listener took (when, for how long, which repo) on the timeline's clock, and counts read
back from the timeline by the checkers.

Recorded by the scenarios, judged by the checkers: a PASS must rest on the fault having
reached the figure its reason names (every dead remote tried, the cap reached, fetches in
flight when the deletes went out), otherwise the gate is an ERROR `error.not_exercised`.
"""

from __future__ import annotations

from typing import Any

from harness.stack.base import ServiceHandle
from harness.tcplisteners import Connection, parse_connections
from harness.timeline import Timeline
from harness.verdict import ERROR, Verdict

NOT_EXERCISED = "error.not_exercised"


def not_exercised(what: str) -> Verdict:
    """The ERROR for a fault that did not reach what the gate's claim needs."""
    return Verdict(ERROR, what, NOT_EXERCISED)


def listener_connections(handle: ServiceHandle) -> list[Connection]:
    """Every connection the listener's log records so far (both backends write it)."""
    return parse_connections(handle.logs().read_text(errors="replace"))


def record_connections(timeline: Timeline, handle: ServiceHandle, after: int,
                       key: str | None = None) -> list[dict[str, Any]]:
    """The listener's connections numbered above `after` (those of this step), with their
    accept and close times on the timeline's clock (s since the gate started; None: not
    logged, or still open), saved as the fact `key` when given."""
    records = [{"n": c.number, "accepted_t": _on_timeline(timeline, c.accepted_at),
                "closed_t": _on_timeline(timeline, c.closed_at), "repo": c.repo}
               for c in listener_connections(handle) if c.number > after]
    if key is not None:
        timeline.fact(key, records)
    return records


# What a listener built before per-connection records (an old tools image on compose) gives.
OLD_LISTENER = ("the listener logged no per-connection times or repos (on compose: a tools image built before "
                "they were logged — rebuild it: `make images-offline`)")


def without_detail(records: list[dict[str, Any]]) -> bool:
    """Connections were counted but none carries a time or a repo: the listener predates them."""
    return bool(records) and all(r.get("accepted_t") is None and not r.get("repo") for r in records)


def _on_timeline(timeline: Timeline, unix_time: float | None) -> float | None:
    # The listener stamps unix time (a container shares the host's clock); the timeline
    # counts from its own start.
    return None if unix_time is None else round(unix_time - timeline.started_at, 3)


def open_at(records: list[dict[str, Any]], moment: float, held_s: float = 0.0) -> list[dict[str, Any]]:
    """Connections accepted at least `held_s` before `moment` and still open at it."""
    return [r for r in records if r.get("accepted_t") is not None and r["accepted_t"] <= moment - held_s
            and (r.get("closed_t") is None or r["closed_t"] > moment)]


def repos_of(records: list[dict[str, Any]]) -> set[str]:
    """The distinct repositories the connections asked for ("/dead-0001.git" → "dead-0001")."""
    return {r["repo"].strip("/").removesuffix(".git") for r in records if r.get("repo")}
