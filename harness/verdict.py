"""The verdict model: what a gate concludes and what a run reports. No stack, no clock —
the checkers, the report and re-judging all speak it, and it imports nothing of theirs.

A checker returns **every** problem it found (Jepsen's checkers return every anomaly), each
with its category and the figures that prove it. The verdict's category is the first
problem's: checkers look in the order their module docstring documents (the README's gate
table lists the same), so the category is stable across runs while the problem set says
what else was wrong.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from harness.timeline import Timeline

PASS, FAIL, ERROR = "pass", "fail", "error"


@dataclass(frozen=True)
class Problem:
    """One thing a checker found wrong: a stable category (e.g. "leak.caches_kept"), the
    sentence a person acts on, and the figures behind it (what a self-test cell or a
    baseline can compare, e.g. {"redis_sockets_kept": 412})."""

    category: str
    text: str
    figures: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"category": self.category, "text": self.text, "figures": dict(self.figures)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Problem:
        return cls(data["category"], data.get("text", ""), dict(data.get("figures") or {}))


@dataclass
class Verdict:
    verdict: str  # pass | fail | error
    reason: str
    category: str = ""  # stable id of the (first) failure kind, e.g. "leak.caches_kept"
    metrics: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        # A verdict made without a problem list (an ERROR, a one-problem FAIL) still lists
        # itself: every non-PASS verdict has at least one problem, its own category first.
        if self.verdict != PASS and not self.problems and self.category:
            self.problems = [Problem(self.category, self.reason)]


@dataclass
class Problems:
    """What a checker found wrong, in the order it looked: the first problem's category is
    the verdict's, every problem is in its reason and in `Verdict.problems`."""

    items: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # context for the reason, not a problem

    @property
    def category(self) -> str:
        return self.items[0].category if self.items else ""

    def add(self, category: str, text: str, **figures: Any) -> None:
        self.items.append(Problem(category, text, figures))

    def note(self, text: str) -> None:
        """Context a person needs beside the problems (worker PIDs, a projection): in the
        reason after them, never a problem of its own."""
        self.notes.append(text)

    def __bool__(self) -> bool:
        return bool(self.items)

    def verdict(self, passed: str, metrics: dict[str, Any], separator: str = "; ") -> Verdict:
        if self.items:
            return Verdict(FAIL, separator.join([p.text for p in self.items] + self.notes), self.category, metrics,
                           list(self.items))
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
    # every problem the checker found, the verdict's category first (Problem.to_json)
    problems: list[dict[str, Any]] = field(default_factory=list)
    # where the time went: server-bound waiting vs the harness's own (runner.time_split)
    timing: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("timeline")
        return data
