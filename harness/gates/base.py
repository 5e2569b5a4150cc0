"""What every gate shares: verdicts, budgets from the server's settings, observing, running.

A gate is a scenario (workload + faults) that records a Timeline, and a checker that
judges the timeline against thresholds. Checkers are pure: `harness report` re-runs
them on a saved timeline.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from harness.errors import HarnessError
from harness.gates.settle import settle
from harness.heads import FOREIGN, Judgement
from harness.probes import CountUnavailable, sample_server
from harness.seed import PROBE_REPOS, probe_repo_name
from harness.servers.base import Capability, PolicyResult, ScopeClient, ServerKnobs
from harness.servers.registry import DEFAULT_SERVER, SERVERS
from harness.stack.base import Stack
from harness.timeline import FAULT_END, FAULT_START, Timeline
from harness.verdict import Verdict
from harness.waiting import poll_until

# HARNESS_DEFAULT_SCOPE=1 stores a scope named `default` before every gate (the self-test's
# proof that no gate passes on the server's fallback answer). Its repo is the last probe repo:
# no gate stores a scope on it (boot-timing only times clones of probes 1-3), so its bundle is
# nobody else's own content.
DEFAULT_SCOPE = "default"
DEFAULT_SCOPE_REPO = probe_repo_name(PROBE_REPOS - 1)
DEFAULT_SCOPE_BUDGET_S = 60.0
UNKNOWN_SCOPE_PROBE = "never-stored-by-the-harness"


def pre_fix_executor_size(cpus: int) -> int:
    """Python's default ThreadPoolExecutor size, which pre-fix releases run git ops on."""
    return min(32, cpus + 4)


def fetch_timeout_budget(knobs: ServerKnobs, slack_s: float, fallback_s: float) -> tuple[float, str]:
    """(seconds, how they were derived) for one fetch of a reachable remote to be done: the
    server's git fetch timeout + slack, or — a server without one — the harness's fallback,
    said so."""
    if knobs.git_timeout_s is None:
        return fallback_s, f"{fallback_s:g} s (the harness's fallback: this server has no git fetch timeout)"
    budget = knobs.git_timeout_s + slack_s
    return budget, f"{budget:g} s ({knobs.git_timeout_s:g} s git fetch timeout + {slack_s:g} s slack)"


def cache_names(timeline: Timeline, on_load: bool = False) -> tuple[str, ...]:
    """The caches a timeline's server reported sizes of (its adapter's `caches`, or with
    `on_load` its `caches_on_load`). A timeline recorded before these facts existed (before
    2026-12) is the default server's: no other server had cache stats then."""
    key = "caches_on_load" if on_load else "caches"
    return tuple(timeline.facts.get(key, getattr(SERVERS[DEFAULT_SERVER], key)))


def _pick(sample: dict[str, Any], keys: tuple[str, ...]) -> dict[str, int | None]:
    return {key: sample.get(key) for key in keys}


def batches(count: int, concurrency: int) -> int:
    return math.ceil(count / max(1, concurrency))


@dataclass
class Fault:
    """A fault in effect: whether its proof held when it started (None: no proof given)."""

    name: str
    took_effect: bool | None = None


class GateContext:
    """What a scenario works with: the stack, a client, the timeline, its parameters, and
    the server's own settings (read once, recorded as the fact `server_knobs`)."""

    def __init__(self, stack: Stack, timeline: Timeline, params: Any):
        self.stack = stack
        self.timeline = timeline
        self.params = params
        self.client: ScopeClient = stack.client
        self.adapter = SERVERS[stack.settings.server]
        # the caches the checkers judge, named by the server's adapter (cache_names reads them back)
        timeline.fact("caches", list(self.adapter.caches))
        timeline.fact("caches_on_load", list(self.adapter.caches_on_load))
        self.book = stack.book
        self.book.forget()  # a fresh server: what each scope must serve is what this gate gives it
        self.sampling_s = 0.0  # time spent taking snapshots: the harness's, not the server's
        self.knobs = stack.server.knobs()
        timeline.fact("server_knobs", self.knobs.raw)

    @contextmanager
    def fault(self, name: str, start: Callable[[], None], heal: Callable[[], None],
              proof: Callable[[], bool] | None = None) -> Iterator[Fault]:
        """`with ctx.fault(...)`: start the fault, mark it on the timeline, record whether
        `proof` shows it took effect, and heal it in `finally` — a scenario that fails or
        crashes mid-outage still leaves the service up for the next gate."""
        fault = Fault(name)
        self.timeline.mark(FAULT_START, fault=name)
        started = time.monotonic()
        try:
            start()
            fault.took_effect = proof() if proof is not None else None
            self.timeline.fact(f"fault {name} took effect", fault.took_effect)
            yield fault
        finally:
            try:
                heal()
            finally:  # a heal that raises still closes the fault's window on the timeline
                self.timeline.mark(FAULT_END, fault=name, lasted_s=round(time.monotonic() - started, 2))

    def require_one_worker(self) -> None:
        """Cache gates read per-process caches through an endpoint that any worker may
        answer: with more than one, sizes of different processes would be compared."""
        _, workers = self.stack.server.pids()
        if len(workers) != 1:
            raise HarnessError(
                f"gate {self.timeline.gate} judges per-process caches, but the server runs "
                f"{len(workers)} workers (PIDs {workers}): the stats endpoint answers from whichever "
                "worker takes the request. Run it with HARNESS_WORKERS=1")

    def observe(self, label: str, **extra: Any) -> dict[str, Any]:
        """One snapshot: cache stats, server processes, clone dirs. The answering worker is
        the stats' own `pid`, or — for a stats route without one (OPAL's debug_stats) — the
        server's only worker."""
        started = time.monotonic()
        try:
            return self._observe(label, **extra)
        finally:
            self.sampling_s += time.monotonic() - started

    def observe_settled(self, label: str, keys: tuple[str, ...], budget: float, interval: float = 0.5,
                        **extra: Any) -> dict[str, Any]:
        """One snapshot taken once the `keys` of the server's sample stop changing (harness.
        gates.settle, recorded under `label`): what work still in flight holds — a fetch's
        thread, its pack — is not read as kept. The snapshot names how its settle ended."""
        started = time.monotonic()
        try:
            record = settle(self.timeline, label, lambda: _pick(self._sample(label), keys), budget, interval=interval)
            return self.timeline.record("snapshot", **self._sample(label, settled=record["ended"], **extra))
        finally:
            self.sampling_s += time.monotonic() - started

    def observe_lowest(self, label: str, keys: tuple[str, ...], over_s: float, interval: float = 0.25,
                       more: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                       **extra: Any) -> dict[str, Any]:
        """One snapshot whose `keys` are the lowest each took over `over_s`: for a server
        that works on its own schedule (a poll every second), what a poll in flight holds
        — its connection, its thread, its pack — comes and goes, and only what stays is
        read. `more(sample)` adds the gate's own figures to each sample; `lowest_of` says
        how many samples the lows are of."""
        started = time.monotonic()

        def sample() -> dict[str, Any]:
            taken = self._sample(label, **extra)
            return {**taken, **more(taken)} if more is not None else taken
        try:
            samples = [sample()]
            while time.monotonic() - started < over_s:
                time.sleep(interval)
                samples.append(sample())
            lowest = dict(samples[-1], lowest_of=len(samples))
            for key in keys:
                values = [s[key] for s in samples if s.get(key) is not None]
                lowest[key] = min(values) if values else None
            return self.timeline.record("snapshot", **lowest)
        finally:
            self.sampling_s += time.monotonic() - started

    def _observe(self, label: str, **extra: Any) -> dict[str, Any]:
        return self.timeline.record("snapshot", **self._sample(label, **extra))

    def _sample(self, label: str, **extra: Any) -> dict[str, Any]:
        snapshot: dict[str, Any] = {"label": label, **extra}
        master, workers = self.stack.server.pids()
        snapshot["worker_pids"] = workers
        worker_pid = workers[0] if len(workers) == 1 else None
        if Capability.CACHE_STATS in self.adapter.capabilities:
            worker_pid = self._sample_stats(snapshot, worker_pid)
        elif worker_pid is not None:
            snapshot["worker_pid"] = worker_pid  # the one process that answers
        processes = sample_server(master, workers)
        snapshot["processes"] = [asdict(p) for p in processes]
        worker = next((p for p in processes if p.pid == worker_pid), None) or next(
            (p for p in processes if p.role == "worker"), None)
        if worker:
            snapshot.update(worker_rss_kb=worker.rss_kb, worker_fds=worker.open_fds,
                            worker_files=worker.open_files, worker_threads=worker.threads)
        try:
            snapshot["clone_dirs"] = len(self.stack.server.clone_dirs())
        except CountUnavailable as exc:  # recorded as not taken: a checker judging it is an ERROR
            snapshot["clone_dirs"], snapshot["clone_dirs_error"] = None, str(exc)[:300]
        return snapshot

    def _sample_stats(self, snapshot: dict[str, Any], only_worker: int | None) -> int | None:
        """The cache sizes into `snapshot`; the PID of the worker that answered."""
        try:
            stats = self.client.cache_stats()
        except Exception as exc:  # a jammed or dead server is something to record
            snapshot["stats_error"] = f"{type(exc).__name__}: {exc}"[:300]
            return None
        worker_pid = stats.pid if stats.pid is not None else only_worker
        snapshot.update(stats.sizes(), worker_pid=worker_pid, stats_rss_kb=stats.rss_kb)
        if stats.missing_fields:
            snapshot["stats_missing"] = stats.missing_fields
        return worker_pid

    def judge(self, scope_id: str, result: PolicyResult) -> Judgement:
        """Whether an answer is the scope's own bundle (harness.heads): the one place every
        gate's "served" is decided. A 200 with another scope's bundle is not served."""
        return self.book.judge(scope_id, result.status, result.hash)

    def answer(self, scope_id: str, timeout: float) -> Judgement:
        """GET policy of `scope_id`, judged."""
        return self.judge(scope_id, self.client.get_policy(scope_id, timeout=timeout))

    def served_within(self, scope_id: str, budget: float, label: str) -> float | None:
        """Poll GET policy until the scope serves its own bundle; seconds it took, or None when
        the budget is spent (the mark says what it answered last: a foreign bundle by name)."""
        last: list[Judgement] = []

        def served() -> bool:
            last[:] = [self.answer(scope_id, timeout=min(5.0, max(budget, 0.5)))]
            return last[0].served
        seconds = poll_until(served, budget, interval=0.3)
        detail: dict[str, Any] = {}
        if seconds is None and last:
            detail = _not_served_detail(last[0])
        self.timeline.mark("served" if seconds is not None else "not_served",
                           scope=scope_id, label=label, seconds=seconds, budget=budget, **detail)
        return seconds

    def all_served_within(self, scope_ids: list[str], budget: float, label: str) -> list[str]:
        """Scopes still not serving their own bundle when `budget` is spent (empty: all
        served). Each request is bounded by what is left of the budget, so a stalled server
        cannot stretch it."""
        deadline = time.monotonic() + budget
        pending = list(scope_ids)
        last: dict[str, Judgement] = {}

        def all_served() -> bool:
            nonlocal pending
            still = []
            for scope in pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    still.append(scope)
                    continue
                last[scope] = self.answer(scope, timeout=max(0.5, min(5.0, left)))
                if not last[scope].served:
                    still.append(scope)
            pending = still
            return not pending
        poll_until(all_served, budget, interval=0.3)
        foreign = {s: _not_served_detail(last[s]) for s in pending if s in last and last[s].kind == FOREIGN}
        self.timeline.mark("all_served" if not pending else "not_all_served", label=label,
                           pending=len(pending), total=len(scope_ids),
                           **({"wrong_content": dict(list(foreign.items())[:20]), "wrong_content_count": len(foreign)}
                              if foreign else {}))
        return pending

    def store_default_scope(self) -> None:
        """Store a scope named `default` on a repo of its own and wait until it serves its own
        bundle, recorded as the fact `default_scope`: from now on the server may answer 200
        with this bundle for any scope it does not know, and no gate may read that as served."""
        url = self.stack.repo_url(DEFAULT_SCOPE_REPO)
        status = self.client.put_scope(DEFAULT_SCOPE, url)
        seconds = self.served_within(DEFAULT_SCOPE, DEFAULT_SCOPE_BUDGET_S, "the default scope")
        # What the server now answers for a scope nobody stored: the proof the fallback is live
        # (0.9.9: 200 with the default's bundle), never "served" for that scope.
        unknown = self.client.get_policy(UNKNOWN_SCOPE_PROBE, timeout=10.0)
        self.timeline.fact("default_scope", {
            "scope": DEFAULT_SCOPE, "repo": DEFAULT_SCOPE_REPO, "put_status": status,
            "head": self.book.heads.head(DEFAULT_SCOPE_REPO),
            "served_s": None if seconds is None else round(seconds, 2),
            "unknown_scope_status": unknown.status, "unknown_scope_hash": unknown.hash})
        if seconds is None:
            raise HarnessError(f"the `default` scope (repo {DEFAULT_SCOPE_REPO}, PUT answered {status}) was not "
                               f"served within {DEFAULT_SCOPE_BUDGET_S:g} s, so the gate would not run with it")


def _not_served_detail(last: Judgement) -> dict[str, Any]:
    """What a scope answered last when it was not served, for the timeline: the status, and for
    a 200 with a bundle that is not its own, the hash seen and whose it is."""
    detail: dict[str, Any] = {"answer": last.describe()}
    if last.kind == FOREIGN:
        detail.update(wrong_content=last.seen, bundle_of=last.bundle_of)
    return detail


def foreign_answers(timeline: Timeline) -> list[str]:
    """Scopes judged not served whose last answer was a 200 with another bundle, each with
    whose — the sentence a FAIL needs beside its own reason ("answered 200 with another
    bundle (the default scope's)")."""
    found: list[str] = []
    for event in timeline.events:
        if event["name"] == "not_served" and event.get("wrong_content"):
            found.append(f"{event['scope']} ({event['label']}): {event['answer']}")
        elif event["name"] == "not_all_served" and event.get("wrong_content"):
            first = next(iter(event["wrong_content"].items()))
            found.append(f"{event['wrong_content_count']} of {event['pending']} not served ({event['label']}), e.g. "
                         f"{first[0]}: {first[1]['answer']}")
    polls = [p for p in timeline.of_kind("poll") if p.get("wrong_content")]
    if polls:
        found.append(f"{len(polls)} polls of {polls[0]['scope']}: {polls[0]['answer']}")
    return found


@dataclass
class BootResult:
    """A cold boot, timed from launch: until /healthcheck answered, and until every staged
    scope served its own bundle — "healthy" alone does not mean the boot is done."""

    healthy_s: float | None
    served_s: float | None
    not_served: int


def cold_boot(ctx: GateContext, scopes: list[str], budget: float, label: str) -> BootResult:
    """Stop the server, launch it cold with whatever Redis holds, and time the boot."""
    ctx.stack.server.stop()
    ctx.timeline.mark("server_launch", label=label, scopes=len(scopes))
    started = time.monotonic()
    ctx.stack.server.restart(fresh_state=False, wait_healthy=False)
    healthy_s = poll_until(lambda: ctx.client.healthy(timeout=2), budget, interval=0.1)
    ctx.timeline.mark("server_healthy" if healthy_s is not None else "server_not_healthy", label=label,
                      seconds=None if healthy_s is None else round(healthy_s, 2))
    if healthy_s is None:
        return BootResult(None, None, len(scopes))
    pending = ctx.all_served_within(scopes, max(1.0, budget - (time.monotonic() - started)), label)
    served_s = None if pending else time.monotonic() - started
    return BootResult(round(healthy_s, 3), None if served_s is None else round(served_s, 3), len(pending))


class Poller:
    """Polls a scope's policy (and health) on its own thread while a fault is on."""

    def __init__(self, ctx: GateContext, scope_id: str, interval: float, timeout: float, label: str = ""):
        self.ctx, self.scope_id, self.interval, self.timeout = ctx, scope_id, interval, timeout
        self.label = label  # recorded with every poll: which fault window it belongs to
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"poll-{scope_id}", daemon=True)

    def _run(self) -> None:
        client = self.ctx.client.fresh()
        while not self._stop.is_set():
            result = client.get_policy(self.scope_id, timeout=self.timeout)
            judged = self.ctx.judge(self.scope_id, result)  # ok: its own bundle, not any 200
            self.ctx.timeline.record("poll", scope=self.scope_id, label=self.label, ok=judged.served,
                                     status=result.status, seconds=round(result.seconds, 3),
                                     healthy=client.healthy(timeout=2),
                                     **(_not_served_detail(judged) if judged.kind == FOREIGN else {}))
            self._stop.wait(self.interval)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 5)


class Gate(ABC):
    """A regression gate: a scenario and a checker. A subclass names itself in its class
    statement, e.g. `class LeakGate(Gate, id="leak", title="...", params=Params,
    thresholds=Thresholds, requires=(Capability.RUNTIME_SOURCES,))`; `workers` is the
    gunicorn worker count it needs (None: the stack's HARNESS_WORKERS)."""

    id: ClassVar[str]
    title: ClassVar[str]
    params_type: ClassVar[type]
    thresholds_type: ClassVar[type]
    workers: ClassVar[int | None] = None
    #: what the gate needs of the server (harness.servers.base): a server without one of
    #: them skips the gate with the reason, listed under `skipped` in the report
    requires: ClassVar[frozenset[Capability]]

    def __init_subclass__(cls, *, id: str, title: str, params: type, thresholds: type,
                          requires: tuple[Capability, ...], workers: int | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.id, cls.title, cls.params_type, cls.thresholds_type, cls.workers = id, title, params, thresholds, workers
        cls.requires = frozenset(requires)
        params.gate_id = thresholds.gate_id = id  # type: ignore[attr-defined]  # named in their errors

    def server_profile(self, profile: str) -> dict[str, str]:
        """OPAL_* settings this gate adds to the profile (quick profile only by default)."""
        return {}

    def scaled(self, scopes: int) -> dict[str, str]:
        """The settings this gate takes under the scale profile (HARNESS_SCALE=N, `--scale
        N`): N live scopes. {} for a gate whose load does not grow with N (a fault gate
        needs a handful of scopes to show its fault)."""
        return {}

    def load(self, params: Any) -> Any:
        """The gate's load (harness.gates.load.Load) with these params, or None for a small
        fixed one: it sizes the gate's time limit and the machine limits checked before."""
        return None

    @abstractmethod
    def scenario(self, ctx: GateContext) -> None:
        """Drive the workload and faults, recording everything into ctx.timeline."""

    @abstractmethod
    def check(self, timeline: Timeline, params: Any, thresholds: Any) -> Verdict:
        """Judge a recorded timeline against the parameters it was recorded with and the
        thresholds. Pure: no stack, no clock (`harness report` re-judges saved timelines)."""
