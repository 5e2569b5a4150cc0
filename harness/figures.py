"""The figures worth a trend, per gate: what JUnit properties, CI benchmarks and `harness
compare` report of a gate besides its verdict. Read from a gate's recorded metrics (the
report.json entry), so they come out the same from a live run and from a saved report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Metrics = Mapping[str, Any]


@dataclass(frozen=True)
class Figure:
    gate: str
    name: str  # e.g. "cache entries kept"
    unit: str
    value: float

    @property
    def label(self) -> str:
        return f"{self.gate}: {self.name}"


def _kept(metrics: Metrics, keys: tuple[str, ...]) -> float | None:
    """Entries above baseline after the last cycle, summed over `keys` (leak)."""
    base, after = metrics.get("baseline"), metrics.get("after_each_cycle")
    if not base or not after:
        return None
    return float(sum(after[k][-1] - base[k] for k in keys if k in after and after[k]))


def _per_fetch(key: str) -> Callable[[Metrics], float | None]:
    return lambda m: (m.get("per_scope_per_fetch") or {}).get(key)


def _leftover(key: str) -> Callable[[Metrics], float | None]:
    """The largest leftover of one kind over orphan-clones' phases."""
    def get(m: Metrics) -> float | None:
        phases = m.get("leftovers") or {}
        values = [phase.get(key) for phase in phases.values() if isinstance(phase, dict)]
        numbers = [float(v) for v in values if isinstance(v, int | float)]
        return max(numbers) if numbers else None
    return get


def _plain(key: str) -> Callable[[Metrics], float | None]:
    return lambda m: m.get(key)


# gate -> (name, unit, how to read it). Smaller is better for every one of them.
FIGURES: dict[str, list[tuple[str, str, Callable[[Metrics], float | None]]]] = {
    "leak": [("cache entries kept", "entries", lambda m: _kept(m, ("repo_locks", "repos", "repos_last_fetched"))),
             ("clone dirs kept", "dirs", lambda m: _kept(m, ("clone_dirs",))),
             ("open files kept", "files", lambda m: _kept(m, ("worker_files",)))],
    "repeat-sync": [("RSS per scope per fetch", "KB", _per_fetch("worker_rss_kb")),
                    ("open files per scope per fetch", "files", _per_fetch("worker_files")),
                    ("mapped packs per scope per fetch", "packs", _per_fetch("mapped_packs"))],
    "offline-repo": [("new scope served", "s", _plain("new_scope_served_s"))],
    "zombie-cap": [("new scope served", "s", _plain("new_scope_served_s"))],
    "boot-timing": [("boot ratio", "x serial", _plain("ratio")), ("boot", "s", _plain("boot_s"))],
    "boot-dead-scope": [("healthy scopes served", "s", _plain("served_s"))],
    "broker-bounce": [("scope after the bounce served", "s", _plain("after_served_s"))],
    "orphan-clones": [("clone dirs kept", "dirs", _leftover("clone_dirs")),
                      ("threads kept", "threads", _leftover("threads"))],
    "remote-transitions": [("slowest transition served", "s", _plain("slowest_transition_s"))],
    "remote-failures": [("slowest recovery", "s", _plain("slowest_recovery_s"))],
    "redis-outage": [("PUT after the outage served", "s", _plain("after_served_s"))],
    # the source gates
    "bad-policy": [("answers not good while the file was bad", "answers", _plain("bad_answers")),
                   ("fix served", "s", _plain("fix_served_s"))],
    "checkout-tampered": [("commit after a mode change served", "s", _plain("mode_served_s")),
                          ("commit after a content change served", "s", _plain("content_served_s"))],
    "boot-dead-remote": [("last good policy served after the restart", "s", _plain("served_s"))],
    "offline-remote": [("commit after the heal served", "s", _plain("served_after_heal_s"))],
    "boot-size": [("first decision", "s", _plain("first_decision_s")),
                  ("first decision over the compile", "x compile", _plain("boot_over_compile"))],
}


def figures(gate_id: str, metrics: Metrics) -> list[Figure]:
    """The gate's figures that this recording has (a failed load has none)."""
    found = []
    for name, unit, read in FIGURES.get(gate_id, []):
        try:
            value = read(metrics)
        except (KeyError, TypeError, ValueError, IndexError):
            value = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            found.append(Figure(gate_id, name, unit, round(float(value), 4)))
    return found
