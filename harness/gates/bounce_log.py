"""What the server's own log says about a broadcaster bounce: which worker answered each
scope PUT, which worker is the leader (the one that syncs scopes), and when each worker's
broadcaster listener came back. The lines are OPAL's (OPAL_LOG_FORMAT_INCLUDE_PID=true), so
every fact carries the PID of the process that wrote it.

Messages read (0.9.6 and 0.9.9 both, unless said):
- `Sync scope: <id>` (INFO, scopes API): the worker that took the PUT, before it publishes;
- `leadership lock acquired, leader pid: <pid>`: the leader from then on;
- 0.9.9 `Broadcaster listener connected to channel '…'`: a worker's listener (re)subscribed;
- 0.9.6 `Listening for incoming events from broadcast channel (first listener started)`: a
  (respawned) worker started its listener — 0.9.6 logs no connect;
- 0.9.9 `Broadcast to backbone failed (…); buffered for replay` and
  `Replaying N buffered broadcast(s) after recovery`: a publish kept during the gap, and when
  that worker replayed it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.serverlog import TimedLine

PUT_LINE = re.compile(r"^Sync scope: (?P<scope>\S+)(?: \(force fetch\))?$")
LEADER_LINE = re.compile(r"leadership lock acquired, leader pid: (?P<pid>\d+)")
LISTENER_LINES = ("Broadcaster listener connected to channel",
                  "Listening for incoming events from broadcast channel")
BUFFERED_LINE = "buffered for replay"
REPLAY_LINE = re.compile(r"Replaying (?P<count>\d+) buffered broadcast")


@dataclass
class BounceLog:
    """The facts, in wall-clock seconds relative to `origin` (the moment Postgres returned)."""

    origin: float
    put_workers: dict[str, int] = field(default_factory=dict)  # scope -> PID that logged its PUT
    put_logged_s: dict[str, float] = field(default_factory=dict)
    leaders: list[tuple[float, int]] = field(default_factory=list)  # (since, PID), in order
    listeners_back_s: dict[int, float] = field(default_factory=dict)  # PID -> first listener line after the fault
    buffered: list[tuple[float, int]] = field(default_factory=list)
    replays: list[tuple[float, int, int]] = field(default_factory=list)  # (at, PID, count)

    def leader_at(self, at_s: float) -> int | None:
        """The leader at `at_s`: the last leadership line before it."""
        leader = None
        for since, pid in self.leaders:
            if since <= at_s:
                leader = pid
        return leader

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("leaders", "buffered", "replays"):  # as a recorded timeline reads back: lists
            data[key] = [list(item) for item in data[key]]
        data["listeners_back_s"] = {str(pid): s for pid, s in self.listeners_back_s.items()}
        return data


def read_bounce_log(lines: list[TimedLine], origin: float, fault_started: float, scopes: set[str]) -> BounceLog:
    """The bounce's facts among `lines` (the whole log: the leader was elected at boot).
    Only the leader lines are read from before `fault_started`: the rest before it are the
    boot's or an earlier run's."""
    log = BounceLog(origin)
    for line in lines:
        at = round(line.at - origin, 3)
        if leader := LEADER_LINE.search(line.message):
            log.leaders.append((at, int(leader["pid"])))
        elif line.at < fault_started:
            continue
        elif (put := PUT_LINE.match(line.message)) and put["scope"] in scopes:
            log.put_workers.setdefault(put["scope"], line.pid)
            log.put_logged_s.setdefault(put["scope"], at)
        elif any(message in line.message for message in LISTENER_LINES):
            log.listeners_back_s.setdefault(line.pid, at)
        elif BUFFERED_LINE in line.message:
            log.buffered.append((at, line.pid))
        elif replay := REPLAY_LINE.search(line.message):
            log.replays.append((at, line.pid, int(replay["count"])))
    return log
