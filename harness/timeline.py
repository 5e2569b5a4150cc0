"""The recording a gate makes: samples, events and facts on one clock.

A gate records first and judges after (Jepsen's client/nemesis/checker split): the
timeline is saved with the report so a verdict can be re-judged or plotted later
without running the stack again.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FAULT_START = "fault_start"
FAULT_END = "fault_end"


@dataclass
class Timeline:
    gate: str
    started_at: float = field(default_factory=time.time)  # wall clock, for people
    samples: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._origin = time.monotonic()
        self._lock = threading.Lock()  # pollers record from their own threads

    def now(self) -> float:
        """Seconds since the gate started."""
        return round(time.monotonic() - self._origin, 3)

    def record(self, kind: str, **data: Any) -> dict[str, Any]:
        sample = {"t": self.now(), "kind": kind, **data}
        with self._lock:
            self.samples.append(sample)
        return sample

    def mark(self, name: str, **detail: Any) -> None:
        with self._lock:
            self.events.append({"t": self.now(), "name": name, **detail})

    def fact(self, key: str, value: Any) -> None:
        self.facts[key] = value

    # -- reading --------------------------------------------------------------------
    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [s for s in self.samples if s["kind"] == kind]

    def event(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e["name"] == name), None)

    def fault_windows(self) -> list[tuple[float, float]]:
        """(start, end) of each fault; an unhealed fault lasts to the last record."""
        last = max([s["t"] for s in self.samples] + [e["t"] for e in self.events] + [0.0])
        windows, open_since = [], {}  # faults may overlap (a replay's schedule): paired by name
        for event in self.events:
            if event["name"] == FAULT_START:
                open_since[event.get("fault")] = event["t"]
            elif event["name"] == FAULT_END and event.get("fault") in open_since:
                windows.append((open_since.pop(event.get("fault")), event["t"]))
        windows += [(start, last) for start in open_since.values()]
        return sorted(windows)

    # -- storage --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "started_at": self.started_at, "samples": self.samples,
                "events": self.events, "facts": self.facts}

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1, default=str))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Timeline:
        return cls(gate=data["gate"], started_at=data["started_at"], samples=data["samples"],
                   events=data["events"], facts=data["facts"])

    @classmethod
    def load(cls, path: Path) -> Timeline:
        return cls.from_dict(json.loads(path.read_text()))
