"""What every gate shares: verdicts, budgets from the server's settings, observing, running.

A gate is a scenario (workload + faults) that records a Timeline, and a checker that
judges the timeline against thresholds. Checkers are pure: `harness report` re-runs
them on a saved timeline.
"""

from __future__ import annotations

import math
import os
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Mapping

from harness.probes import sample_server
from harness.servers.opal import OpalClient
from harness.stack.base import Stack
from harness.timeline import Timeline
from harness.waiting import poll_until

PASS, FAIL, ERROR = "pass", "fail", "error"

# The gates' default server profile: a short git fetch timeout keeps the suite quick.
# HARNESS_SERVER_PROFILE=defaults runs with the server's own defaults instead.
QUICK_PROFILE = {"OPAL_SCOPES_GIT_FETCH_TIMEOUT": "10"}
PROFILES = {"quick": QUICK_PROFILE, "defaults": {}}

# The server's own defaults (0.9.9), used to derive budgets when a knob is not set.
OPAL_DEFAULTS = {
    "OPAL_SCOPES_GIT_FETCH_TIMEOUT": 120.0,
    "OPAL_SCOPES_GIT_MAX_WORKERS": 10,
    "OPAL_SCOPES_GIT_MAX_ZOMBIES": 40,
    "OPAL_SCOPES_GIT_PRELOAD_DRAIN_TIMEOUT": 10.0,
}


@dataclass
class Verdict:
    verdict: str  # pass | fail | error
    reason: str
    category: str = ""  # stable id of the failure kind, e.g. "leak.caches_kept"
    metrics: dict[str, Any] = field(default_factory=dict)


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

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("timeline")
        return data


@dataclass(frozen=True)
class ServerKnobs:
    """The settings a gate's budgets derive from (what a correct server promises)."""

    git_timeout_s: float
    git_workers: int
    max_zombies: int
    preload_drain_s: float

    @classmethod
    def from_settings(cls, settings: Mapping[str, str]) -> "ServerKnobs":
        def get(name: str, kind: type):
            return kind(settings.get(name, OPAL_DEFAULTS[name]))
        return cls(get("OPAL_SCOPES_GIT_FETCH_TIMEOUT", float), get("OPAL_SCOPES_GIT_MAX_WORKERS", int),
                   get("OPAL_SCOPES_GIT_MAX_ZOMBIES", int),
                   get("OPAL_SCOPES_GIT_PRELOAD_DRAIN_TIMEOUT", float))


def pre_fix_executor_size(cpus: int) -> int:
    """Python's default ThreadPoolExecutor size, which pre-fix releases run git ops on."""
    return min(32, cpus + 4)


def batches(count: int, concurrency: int) -> int:
    return math.ceil(count / max(1, concurrency))


class GateContext:
    """What a scenario works with: the stack, a client, the timeline, its parameters."""

    def __init__(self, stack: Stack, timeline: Timeline, params: Any):
        self.stack = stack
        self.timeline = timeline
        self.params = params
        self.client: OpalClient = stack.client
        self.knobs = ServerKnobs.from_settings(stack.server_settings())

    def observe(self, label: str, **extra: Any) -> dict[str, Any]:
        """One snapshot: cache stats, server processes, clone dirs."""
        snapshot: dict[str, Any] = {"label": label, **extra}
        try:
            stats = self.client.cache_stats()
            snapshot.update(stats.sizes(), worker_pid=stats.pid, stats_rss_kb=stats.rss_kb)
        except Exception as exc:  # a jammed or dead server is something to record
            snapshot["stats_error"] = f"{type(exc).__name__}: {exc}"[:200]
        master, workers = self.stack.server_pids()
        processes = sample_server(master, workers)
        snapshot["processes"] = [asdict(p) for p in processes]
        worker = next((p for p in processes if p.role == "worker"), None)
        if worker:
            snapshot.update(worker_rss_kb=worker.rss_kb, worker_fds=worker.open_fds,
                            worker_files=worker.open_files, worker_threads=worker.threads)
        snapshot["clone_dirs"] = len(self.stack.clone_dirs())
        return self.timeline.record("snapshot", **snapshot)

    def served_within(self, scope_id: str, budget: float, label: str) -> float | None:
        """Poll GET policy until 200; seconds it took, or None when the budget is spent."""
        def served() -> bool:
            result = self.client.get_policy(scope_id, timeout=min(5.0, max(budget, 0.5)))
            return result.served
        seconds = poll_until(served, budget, interval=0.3)
        self.timeline.mark("served" if seconds is not None else "not_served",
                           scope=scope_id, label=label, seconds=seconds, budget=budget)
        return seconds

    def all_served_within(self, scope_ids: list[str], budget: float, label: str) -> list[str]:
        """Scopes still not served when `budget` is spent (empty: all served). Each request
        is bounded by what is left of the budget, so a stalled server cannot stretch it."""
        deadline = time.monotonic() + budget
        pending = list(scope_ids)

        def all_served() -> bool:
            nonlocal pending
            still = []
            for scope in pending:
                left = deadline - time.monotonic()
                if left <= 0 or not self.client.get_policy(scope, timeout=max(0.5, min(5.0, left))).served:
                    still.append(scope)
            pending = still
            return not pending
        poll_until(all_served, budget, interval=0.3)
        self.timeline.mark("all_served" if not pending else "not_all_served", label=label,
                           pending=len(pending), total=len(scope_ids))
        return pending


class Poller:
    """Polls a scope's policy (and health) on its own thread while a fault is on."""

    def __init__(self, ctx: GateContext, scope_id: str, interval: float, timeout: float):
        self.ctx, self.scope_id, self.interval, self.timeout = ctx, scope_id, interval, timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"poll-{scope_id}", daemon=True)

    def _run(self) -> None:
        client = OpalClient(self.ctx.client.base_url)
        while not self._stop.is_set():
            result = client.get_policy(self.scope_id, timeout=self.timeout)
            self.ctx.timeline.record("poll", scope=self.scope_id, ok=result.served, status=result.status,
                                     seconds=round(result.seconds, 3), healthy=client.healthy(timeout=2))
            self._stop.wait(self.interval)

    def __enter__(self) -> "Poller":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 5)


class Gate(ABC):
    """A regression gate. Subclasses define the ids, parameters, scenario and checker."""

    id: ClassVar[str]
    marker: ClassVar[str]
    title: ClassVar[str]
    Params: ClassVar[type]
    Thresholds: ClassVar[type]

    def server_profile(self, profile: str) -> dict[str, str]:
        """OPAL_* settings this gate adds to the profile (quick profile only by default)."""
        return {}

    @abstractmethod
    def scenario(self, ctx: GateContext) -> None:
        """Drive the workload and faults, recording everything into ctx.timeline."""

    @abstractmethod
    def check(self, timeline: Timeline, thresholds: Any) -> Verdict:
        """Judge a recorded timeline. Pure: no stack, no clock."""


def env_overrides(gate_id: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """HARNESS_GATE_<ID>_<NAME>=value, e.g. HARNESS_GATE_LEAK_CYCLES=5."""
    env = os.environ if env is None else env
    prefix = f"HARNESS_GATE_{gate_id.upper().replace('-', '_')}_"
    return {k[len(prefix):].lower(): v for k, v in env.items() if k.startswith(prefix)}
