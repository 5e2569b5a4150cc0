"""The verdict model: what a gate concludes and what a run reports. No stack, no clock —
the checkers, the report and re-judging all speak it, and it imports nothing of theirs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from harness.timeline import Timeline

PASS, FAIL, ERROR = "pass", "fail", "error"


@dataclass
class Verdict:
    verdict: str  # pass | fail | error
    reason: str
    category: str = ""  # stable id of the failure kind, e.g. "leak.caches_kept"
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Problems:
    """What a checker found wrong, in the order it looked: the first problem's category is
    the verdict's, every problem is in its reason."""

    items: list[str] = field(default_factory=list)
    category: str = ""

    def add(self, category: str, text: str) -> None:
        self.category = self.category or category
        self.items.append(text)

    def verdict(self, passed: str, metrics: dict[str, Any], separator: str = "; ") -> Verdict:
        if self.items:
            return Verdict(FAIL, separator.join(self.items), self.category, metrics)
        return Verdict(PASS, passed, "", metrics)


def load_failure(timeline: Timeline) -> Verdict | None:
    """An error verdict when the scenario recorded that its load phase failed: the server
    was never put under the condition the gate judges, so there is nothing to judge."""
    if "load_failure" not in timeline.facts:
        return None
    return Verdict(ERROR, f"load phase failed, nothing to judge: {timeline.facts['load_failure']}", "error.load")


@dataclass
class GateResult:
    id: str
    verdict: str
    reason: str
    category: str
    duration_s: float
    metrics: dict[str, Any]
    thresholds: dict[str, Any]
    params: dict[str, Any]
    server_settings: dict[str, str]
    timeline: Timeline | None = None
    # where the time went: server-bound waiting vs the harness's own (runner.time_split)
    timing: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("timeline")
        return data
