"""Settling: observe until the judged figures are back at their target or stop changing,
within a budget — never a fixed wait whose end reads whatever is left as "kept".

A settle ends when every figure is at most its target ("target"), when the last
STABLE_SNAPSHOTS snapshots agree on every figure ("stable"), when a figure cannot be counted
("uncountable"), or when the budget is spent ("budget"). Each settle is recorded (kind
"settle") with how it ended and every figure's series, so the checker can tell a figure
still falling when the budget ran out (its own problem, "still falling") from one that
stayed where it was (kept).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from harness.timeline import Timeline
from harness.waiting import poll_until

STABLE_SNAPSHOTS = 3


def settle(timeline: Timeline, label: str, figures: Callable[[], Mapping[str, int | None]], budget: float,
           target: dict[str, int] | None = None, interval: float = 1.0) -> dict[str, Any]:
    """Take `figures()` every `interval` s until the settle ends; the "settle" record."""
    series: dict[str, list[int | None]] = {}
    ended = "budget"
    started = time.monotonic()

    def done() -> bool:
        nonlocal ended
        for key, value in figures().items():
            series.setdefault(key, []).append(value)
        if any(values[-1] is None for values in series.values()):
            ended = "uncountable"
        elif target and all(series[k][-1] <= v for k, v in target.items() if k in series):  # type: ignore[operator]
            ended = "target"
        elif all(_flat(values) for values in series.values()):
            ended = "stable"
        else:
            return False
        return True
    poll_until(done, budget, interval=interval)
    return timeline.record("settle", label=label, ended=ended, seconds=round(time.monotonic() - started, 2),
                           budget_s=budget, series=series)


def _flat(values: list[int | None]) -> bool:
    tail = values[-STABLE_SNAPSHOTS:]
    return len(tail) == STABLE_SNAPSHOTS and len(set(tail)) == 1


def still_falling(record: dict[str, Any] | None, keys: list[str] | None = None) -> dict[str, list[int]]:
    """Figures whose value was still going down when the settle's budget ran out: figure ->
    its last STABLE_SNAPSHOTS values. Empty for a settle that reached its target or stood still."""
    if record is None or record.get("ended") != "budget":
        return {}
    falling = {}
    for key, values in record["series"].items():
        tail = [v for v in values[-STABLE_SNAPSHOTS:] if v is not None]
        if (keys is None or key in keys) and len(tail) >= 2 and tail[-1] < tail[0]:
            falling[key] = tail
    return falling


def settle_record(timeline: Timeline, label: str) -> dict[str, Any] | None:
    """The last settle recorded under `label`."""
    return next((r for r in reversed(timeline.of_kind("settle")) if r["label"] == label), None)
