"""Gate `broker-bounce`: the Postgres broadcaster fails for D ≥ 5 s, then comes back.

How it fails is the `mode` (HARNESS_GATE_BROKER_BOUNCE_MODE), each with its proof:
- `stop`: a clean shutdown (SIGINT, fast: clients disconnected; compose: docker stop), then a
  start; proof: its port closed.
- `kill`: SIGKILL of the postmaster and its backends (compose: docker kill), then a start;
  proof: its port closed.
- `pause`: frozen (SIGSTOP of its processes; compose: docker pause) for D, then resumed — the
  connections stay open and hang; proof: no answer to the protocol's SSLRequest in 1 s.
- `terminate`: a server-side disconnect — Postgres stays up and terminates the server's
  connections (pg_terminate_backend, its LISTEN connections too); proof: at least one
  terminated. D is then the time the server has to reconnect before "after".

The server runs two workers, so a scope PUT that one worker takes reaches the syncing one
(the leader) only through the broadcaster: delivery needs the backbone.

**Every PUT around the return is judged.** `spread_puts` (16) scope PUTs are spread over the
reconnect window: `spread_before` (4) during the outage (from 1 s after it began), then
`spread_burst` (3) at once at the moment Postgres accepts sessions again and 3 more 50 ms
later (concurrent, so both workers take some), the rest spreading out to `spread_after_s`
(3 s) — the seconds in which the workers' listeners re-subscribe. The return is that moment,
polled every 5 ms with a startup message (`accepts_sessions`), not the heal's own readiness
check, which lags it by up to 0.1 s. In `terminate` Postgres never leaves: all 16 PUTs come
`outage_s` after the cut — this mode does not exercise the reconnect race (measured on 0.9.9:
the listeners are back 0.2-0.5 s after the cut, about when the harness's terminate step
returns, so PUTs sent from then on are lost in some runs and not in others; the stop and kill
modes place them inside the window every time). For each the
timeline records when it was sent (relative to the return), its answer, and — from the
server's own log — the worker that took it, the leader then, when each worker's listener came
back and the buffered broadcasts each worker replayed (see harness/gates/bounce_log.py). A
PUT the server accepted (2xx) and never served within `window_budget_s` after the bounce is
`bounce.put_lost_in_reconnect`, with those facts.

**A PASS must have put the race to the test** (modes `stop` and `kill`, where Postgres leaves
and every listener reconnects): at least one accepted PUT was taken — the server's log says
by which worker and when — by a worker that is not the leader, at or after the return and
at least 0.1 s before the leader's listener line (`race_puts`: a PUT publishes after its log
line, so one logged just before the line can meet the LISTEN; a CI run passed with the line
+0.079 s after the return). On compose the leader's listener was back
0.000-5.5 s after the return in 16 bounces (local: 0.6-2.3 s), and a burst misses a window of a
few ms (4 of those 16; a CI run passed with 16 of 16 served and none in it): the bounce is then
repeated, up to `attempts` (5) times, and a run none of whose bounces put a PUT in the window is
ERROR `error.not_exercised`, naming when the listeners were back and who took the PUTs.
The bounces that missed are recorded as `unexercised_bounces`.

Passes when the server is healthy again (`bounce.unhealthy`), a scope PUT after the bounce is
served (`bounce.put_after_not_served`; "after" is once the server had time to reconnect: its
own reconnect backoff can have run out — min(BROADCAST_RECONNECT_BACKOFF_MAX_SECONDS,
2 × outage) + the resync settle; 5 s on a server without those settings), and every accepted
PUT of the spread is served (`bounce.put_lost_in_reconnect`); the problems are listed in that
order. The worker PIDs before and after are recorded, and whether recovery happened in place
(same workers) or by respawn.

Measured (local backend, 5 s outage; the README has the runs): 0.9.9 `stop` and `kill` lose
3-8 of 16 accepted PUTs in every run (10 of 10; `OPAL_BROADCAST_RESYNC_SETTLE_SECONDS=10` too,
3 of 3), `pause` and `terminate` none. Every lost PUT was taken by the worker that is not the
leader, after Postgres returned and before the leader's listener was back (+0.6 to +2.3 s):
that worker's publish reaches Postgres (`SELECT pg_notify` on a fresh connection per publish
succeeds, so nothing is buffered) while the leader is still in its reconnect backoff and not LISTENing, and Postgres
keeps no NOTIFY for a channel nobody listens on. A PUT during the outage is buffered and
replayed `BROADCAST_RESYNC_SETTLE_SECONDS` after its worker's own listener is back — lost only
when the leader is back later than that (not seen in these runs). 0.9.6 `stop` and `kill`: the
leader SIGTERMs itself, its respawn takes the leadership while Postgres is down and never
syncs again: every accepted PUT and the PUT after are lost.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.gates.base import Gate, GateContext, ServerKnobs
from harness.gates.bounce_log import BounceLog, read_bounce_log
from harness.gates.proof import not_exercised
from harness.gates.settings import GateSettings
from harness.seed import policy_repo_name
from harness.serverlog import read_slice, timed_lines
from harness.servers.base import Capability
from harness.services.postgres import accepts_sessions, answers
from harness.timeline import Timeline
from harness.verdict import ERROR, Problems, Verdict, load_failure
from harness.waiting import poll_until, port_open

progress = logging.getLogger(__name__)  # `log` is the server's log in this module

MIN_OUTAGE_S = 5.0
MODES = ("stop", "kill", "pause", "terminate")
RACE_MODES = ("stop", "kill")  # Postgres leaves: every worker's listener reconnects after the return
WINDOW_MARGIN_S = 0.1  # a PUT counts as in the window this long before the leader's listener line
# policy-0660..: one repo per PUT of the spread and one for the PUT after, repos no other gate
# changes; each bounce its own (`bounce_repos`).
FIRST_SPREAD_REPO = 660


@dataclass
class Params(GateSettings):
    positive = ("outage_s", "budget_s", "window_budget_s", "spread_puts", "spread_after_s", "attempts")
    mode: str = "stop"
    outage_s: float = 5.0
    budget_s: float = 30.0
    after_put_delay_s: float = 0.0  # 0: derived from the server's reconnect settings
    spread_puts: int = 16  # PUTs around the return, each judged
    spread_before: int = 4  # of them during the outage, from 1 s after it began
    spread_burst: int = 3  # PUTs sent at once at the return and again 50 ms after it
    spread_after_s: float = 3.0  # the rest over this long after Postgres returns
    window_budget_s: float = 10.0  # for the spread, once the PUT after the bounce was served
    attempts: int = 5  # bounces at most, until one puts a PUT in the reconnect window (stop, kill)

    def validate(self) -> None:
        if self.outage_s < MIN_OUTAGE_S:  # a sub-second restart races the respawn and hides the bug
            self.refuse("outage_s", f"≥ {MIN_OUTAGE_S:g} s")
        if self.mode not in MODES:
            self.refuse("mode", " | ".join(MODES))
        if not 0 <= self.spread_before < self.spread_puts:
            self.refuse("spread_before", f"0 … {self.spread_puts - 1} (fewer than spread_puts)")
        if not 1 <= self.spread_burst <= (self.spread_puts - self.spread_before) // 2:
            self.refuse("spread_burst", "1 … half the PUTs after the return")


@dataclass
class Thresholds(GateSettings):
    pass  # judged against budget_s


WORKERS = 2
NO_PROOF = {"stop": "Postgres still listened after stop", "kill": "Postgres still listened after SIGKILL",
            "pause": "Postgres still answered the protocol while paused",
            "terminate": "no connection of the server's was terminated"}


def bounce_repos(attempt: int, spread_puts: int) -> list[int]:
    """The repos of bounce `attempt` (from 1): one per PUT of the spread, the last for the PUT
    after. Never an earlier bounce's: the server keeps one clone per repo URL and serves any
    scope on that URL from it, so a new scope on a cloned repo reads as served without a sync
    (a second bounce on the first one's repos passed 16 of 16 with the leader back at +7.5 s)."""
    first = FIRST_SPREAD_REPO + (attempt - 1) * (spread_puts + 1)
    return list(range(first, first + spread_puts + 1))


def recovery_kind(before: list[int], after: list[int]) -> str:
    """'in place' when the same workers serve after the bounce, else 'respawn'."""
    if not after:
        return "no workers"
    return "in place" if set(after) == set(before) else "respawn"


def after_put_delay(knobs: ServerKnobs, p: Params) -> tuple[float, str]:
    """(seconds after Postgres returns, how derived) before the PUT 'after the bounce'."""
    if p.after_put_delay_s:
        return p.after_put_delay_s, f"{p.after_put_delay_s:g} s (set)"
    if knobs.reconnect_backoff_max_s is None:
        return 5.0, "5 s (the harness's fallback: this server has no reconnect backoff setting)"
    backoff = min(knobs.reconnect_backoff_max_s, 2 * p.outage_s)
    settle = knobs.resync_settle_s or 0.0
    return backoff + settle, (f"{backoff + settle:g} s (reconnect backoff min({knobs.reconnect_backoff_max_s:g}, "
                              f"2 × {p.outage_s:g}) + resync settle {settle:g} s)")


def spread_offsets(p: Params) -> tuple[list[float], list[float]]:
    """(seconds after the outage began, seconds after Postgres returned) of the spread's PUTs:
    evenly over the outage from 1 s in; after the return, `spread_burst` at once at the return
    and again 50 ms later — concurrent, so both workers take some (one PUT at a time may
    always find the same idle worker) while their listeners are still reconnecting (0.05-1.9 s
    measured on 0.9.9) — then the rest spreading out (quadratic spacing) from 0.15 s to
    `spread_after_s`. `terminate` has no outage to PUT into (Postgres stays up): all of its PUTs
    come after the outage's length, once the server had time to reconnect."""
    before_count = 0 if p.mode == "terminate" else p.spread_before
    before_span = max(0.0, p.outage_s - 1.0)
    before = [round(1.0 + i * before_span / before_count, 3) for i in range(before_count)]
    rest = p.spread_puts - before_count - 2 * p.spread_burst
    spaced = [round(0.15 + (p.spread_after_s - 0.15) * (i / max(1, rest - 1)) ** 2, 3) for i in range(rest)]
    return before, [0.0] * p.spread_burst + [0.05] * p.spread_burst + spaced


@dataclass
class SpreadPut:
    scope: str
    sent_at: float = 0.0  # wall clock, to compare with the server's log lines
    status: int | None = None
    error: str = ""
    answered_s: float | None = None


@dataclass
class PutSpread:
    """The spread's PUTs, each on its own thread at its own time, so a PUT the server holds
    (0.9.6 mid-outage) cannot delay the next one. The ones after the return start when Postgres
    accepts sessions again — polled every 5 ms from the end of the outage (`back`), since the
    heal's own readiness check lags it by up to 0.1 s, long enough for a worker's listener to
    be back before the first PUT — or when the heal is done, whichever is first."""

    client: Any
    urls: dict[str, str]
    before: list[float]
    after: list[float]
    back: Callable[[], bool]
    returned: threading.Event = field(default_factory=threading.Event)
    returned_at: float = 0.0
    puts: list[SpreadPut] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def mark_returned(self) -> None:
        with self._lock:
            if not self.returned.is_set():
                self.returned_at = time.time()
                self.returned.set()

    def start(self, fault_started: float, outage_s: float) -> threading.Thread:
        runner = threading.Thread(target=self._run, args=(fault_started, outage_s), daemon=True,
                                  name="bounce-spread")
        runner.start()
        return runner

    def _run(self, fault_started: float, outage_s: float) -> None:
        scopes = iter(self.urls)
        for offset in self.before:
            self._at(fault_started + offset, next(scopes))
        time.sleep(max(0.0, fault_started + outage_s - time.time()))
        while not self.returned.is_set() and time.time() < fault_started + outage_s + 600:
            if self.back():
                self.mark_returned()
            else:
                time.sleep(0.005)
        for offset in self.after:
            self._at(self.returned_at + offset, next(scopes))
        for thread in self._threads:
            thread.join()

    def _at(self, when: float, scope: str) -> None:
        time.sleep(max(0.0, when - time.time()))
        put = SpreadPut(scope)
        self.puts.append(put)
        thread = threading.Thread(target=self._put, args=(put,), daemon=True, name=f"put-{scope}")
        thread.start()
        self._threads.append(thread)

    def _put(self, put: SpreadPut) -> None:
        put.sent_at = time.time()
        try:
            put.status = self.client.put_scope(put.scope, self.urls[put.scope])
        except Exception as exc:  # the server may refuse or drop the request mid-outage: recorded
            put.error = type(exc).__name__
        put.answered_s = round(time.time() - put.sent_at, 3)


def spread_facts(spread: PutSpread, log: BounceLog, not_served: set[str]) -> list[dict[str, Any]]:
    """One record per PUT of the spread, times relative to the return."""
    records = []
    for put in spread.puts:
        at = round(put.sent_at - spread.returned_at, 3)
        records.append({"scope": put.scope, "at_s": at, "status": put.status, "error": put.error,
                        "answered_s": put.answered_s, "worker": log.put_workers.get(put.scope),
                        "leader": log.leader_at(at), "served": put.scope not in not_served})
    return records


class BrokerBounceGate(Gate, id="broker-bounce", params=Params, thresholds=Thresholds, workers=WORKERS,
                       title="the server recovers from a broadcaster outage",
                       requires=(Capability.RUNTIME_SOURCES, Capability.BROADCASTER, Capability.WORKERS,
                                 Capability.SERVER_PYTHON)):

    def scenario(self, ctx: GateContext) -> None:
        p: Params = ctx.params
        tl, stack, client = ctx.timeline, ctx.stack, ctx.client
        client.put_scope("before", stack.repo_url(policy_repo_name(30)))
        if ctx.served_within("before", p.budget_s, "before the outage") is None:
            tl.fact("load_failure", f"a scope was not served within {p.budget_s:g} s before any fault")
            return
        tl.fact("worker_pids_before", stack.server.pids()[1])
        ctx.observe("before")
        missed: list[dict[str, Any]] = []
        for attempt in range(1, p.attempts + 1):
            self._bounce(ctx, bounce_repos(attempt, p.spread_puts))
            spread, log = tl.facts["spread_puts"], tl.facts["bounce_log"]
            if p.mode not in RACE_MODES or lost_puts(spread) or race_puts(spread, log):
                break
            missed.append(bounce_summary(attempt, spread, log))
            tl.fact("unexercised_bounces", missed)
            progress.info(f"[gate {self.id}] bounce {attempt} of {p.attempts} put no PUT in the reconnect window "
                          f"(listeners back {log.get('listeners_back_s')} s after the return): bouncing again")
        ctx.observe("end")

    def _bounce(self, ctx: GateContext, repos: list[int]) -> None:
        """One outage with its spread of PUTs and the PUT after (on `repos`), recorded as facts."""
        p: Params = ctx.params
        tl, stack, client = ctx.timeline, ctx.stack, ctx.client
        stack.ensure_repos(repos[-1] + 1)  # policy-0000 … the last of them
        before, after = spread_offsets(p)
        run = uuid.uuid4().hex[:6]  # scope ids of this bounce only: an earlier PUT cannot read as served
        postgres = stack.published("postgres")
        user, database = postgres.userinfo.split(":")[0] or "opal", postgres.path.strip("/") or "postgres"
        spread = PutSpread(client, {f"spread-{run}-{i:02d}": stack.repo_url(policy_repo_name(repos[i]))
                                    for i in range(p.spread_puts)}, before, after,
                           back=lambda: accepts_sessions(postgres.port, postgres.host, user, database, timeout=0.5))
        name, start, heal, proof = self._fault(ctx, p.mode)
        fault_started = time.time()
        outage_started = time.monotonic()

        def heal_and_mark() -> None:  # "the return" is when the heal is done: Postgres answers again
            heal()
            spread.mark_returned()
        with ctx.fault(name, start, heal_and_mark, proof) as outage:
            tl.fact("broker_fault_confirmed", outage.took_effect)
            runner = spread.start(fault_started, p.outage_s)
            time.sleep(max(0.0, p.outage_s - (time.monotonic() - outage_started)))
        self._after(ctx, spread, runner, fault_started, run, repos[-1])

    def _after(self, ctx: GateContext, spread: PutSpread, runner: threading.Thread, fault_started: float,
               run: str, after_repo: int) -> None:
        p: Params = ctx.params
        tl, stack, client = ctx.timeline, ctx.stack, ctx.client
        delay, how = after_put_delay(ctx.knobs, p)
        tl.fact("after_put_delay", {"seconds": delay, "how": how})
        tl.fact("healthy_after_s", poll_until(lambda: client.healthy(timeout=2), p.budget_s))
        time.sleep(max(0.0, spread.returned_at + delay - time.time()))
        after_scope = f"after-{run}"
        tl.fact("put_after_status", self._put(client, after_scope, stack.repo_url(policy_repo_name(after_repo))))
        tl.fact("after_served_s", ctx.served_within(after_scope, p.budget_s, "scope PUT after the bounce"))
        runner.join(timeout=p.budget_s)
        accepted = [put.scope for put in spread.puts if 200 <= (put.status or 0) < 300]
        lost = set(ctx.all_served_within(accepted, p.window_budget_s, "PUTs around the return"))
        lines = timed_lines(read_slice(stack.server.log(), 0))
        log = read_bounce_log(lines, spread.returned_at, fault_started, {put.scope for put in spread.puts})
        tl.fact("postgres_returned_at", spread.returned_at)
        tl.fact("spread_puts", spread_facts(spread, log, lost | {s.scope for s in spread.puts} - set(accepted)))
        tl.fact("bounce_log", log.to_json())
        workers_after = stack.server.pids()[1]
        tl.fact("worker_pids_after", workers_after)
        tl.fact("recovery", recovery_kind(tl.facts["worker_pids_before"], workers_after))

    @staticmethod
    def _fault(ctx: GateContext, mode: str) -> tuple[str, Callable[[], None], Callable[[], None], Callable[[], bool]]:
        """(name, start, heal, proof) of the broadcaster fault `mode` (see the module docstring)."""
        postgres, address = ctx.stack.service("postgres"), ctx.stack.published("postgres")
        if mode == "terminate":
            terminated: list[int] = []

            def terminate() -> None:
                terminated.append(ctx.stack.server.disconnect_broadcaster())
                ctx.timeline.fact("terminated_connections", terminated[-1])
            return "postgres terminated the server's connections", terminate, lambda: None, lambda: terminated[-1] > 0
        if mode == "pause":
            return "postgres paused", postgres.pause, postgres.resume, lambda: not answers(address.port, address.host)
        start, name = (postgres.kill, "postgres killed") if mode == "kill" else (postgres.stop, "postgres stopped")
        return name, start, postgres.start, lambda: not port_open(address.port, address.host)

    @staticmethod
    def _put(client, scope: str, url: str) -> int | None:
        try:
            return client.put_scope(scope, url)
        except Exception:  # the server may refuse or drop the request mid-outage: recorded
            return None

    def check(self, timeline: Timeline, params: Params, thresholds: Thresholds) -> Verdict:
        f = timeline.facts
        if (failed := load_failure(timeline)) is not None:
            return failed
        # postgres_down_confirmed: recordings from before the modes (stop only)
        if not f.get("broker_fault_confirmed", f.get("postgres_down_confirmed")):
            return Verdict(ERROR, f"the broadcaster fault ({params.mode}) did not take effect: {NO_PROOF[params.mode]}",
                           "error.fault")
        budget = params.budget_s
        spread = f.get("spread_puts")
        metrics = {"mode": params.mode, **{k: f.get(k) for k in (
            "healthy_after_s", "put_after_status", "after_served_s", "worker_pids_before", "worker_pids_after",
            "recovery", "terminated_connections")}, **spread_summary(spread, f.get("bounce_log"))}
        workers = (f"workers {f.get('worker_pids_before')} → {f.get('worker_pids_after')} "
                   f"({f.get('recovery', 'not recorded')})")
        problems = Problems()
        if f.get("healthy_after_s") is None:
            problems.add("bounce.unhealthy",
                         f"/healthcheck did not return to 200 within {budget:g} s after Postgres came back")
        if f.get("after_served_s") is None:
            problems.add("bounce.put_after_not_served",
                         f"a scope PUT after the bounce (answered {f.get('put_after_status')}) was not served "
                         f"within {budget:g} s: the server stopped syncing")
        if spread is None:
            _judge_recorded_during(f, budget, problems)  # a recording from before the spread
        else:
            judge_spread(spread, f.get("bounce_log") or {}, params, problems)
        if problems:
            problems.note(workers)
            return problems.verdict("", metrics)
        if params.mode in RACE_MODES and spread is not None and not race_puts(spread, f.get("bounce_log") or {}):
            return _race_missed(spread, f.get("bounce_log") or {}, f.get("unexercised_bounces") or [], metrics)
        return problems.verdict(f"healthy {f['healthy_after_s']:.1f} s after the bounce; scope PUT after it "
                                f"served in {f['after_served_s']:.1f} s; "
                                f"{metrics.get('spread_accepted', 0)} of {len(spread or [])} PUTs around the return "
                                f"accepted, every one served; {workers}", metrics)


def lost_puts(spread: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The PUTs the server accepted (2xx) and never served."""
    return [put for put in spread if 200 <= (put.get("status") or 0) < 300 and not put.get("served")]


def race_puts(spread: list[dict[str, Any]], log: dict[str, Any]) -> list[dict[str, Any]]:
    """The accepted PUTs that put the reconnect race to the test: logged by a worker that is not
    the leader at or after the return and at least WINDOW_MARGIN_S before the leader's
    listener line (or with no listener line of the leader at all). By the server's log time,
    not the send time. The margin: a PUT publishes after its log line, on a fresh connection,
    so one logged just before the line can still meet the LISTEN — a CI run passed with the
    leader's listener back +0.079 s after the return. In the 12 bounces on compose with a PUT
    0.1 s or more before the line, every such PUT was lost; every non-leader PUT logged at or
    after the line was served."""
    listeners, logged = log.get("listeners_back_s") or {}, log.get("put_logged_s") or {}
    hits = []
    for put in spread:
        worker, leader = put.get("worker"), put.get("leader")
        at = logged.get(put["scope"], put.get("at_s"))
        if not 200 <= (put.get("status") or 0) < 300 or at is None or at < 0:
            continue
        if worker is None or leader is None or worker == leader:
            continue
        back = listeners.get(str(leader))
        if back is None or at <= back - WINDOW_MARGIN_S:
            hits.append(put)
    return hits


def bounce_summary(attempt: int, spread: list[dict[str, Any]], log: dict[str, Any]) -> dict[str, Any]:
    """What a bounce that missed the window saw: when the listeners were back, who took the PUTs."""
    after_return = [put for put in spread if (put.get("at_s") or -1) >= 0]
    return {"attempt": attempt, "listeners_back_s": log.get("listeners_back_s") or {},
            "leader": next((put.get("leader") for put in after_return if put.get("leader") is not None), None),
            "puts_after_return": [[put.get("at_s"), put.get("worker")] for put in after_return]}


def _race_missed(spread: list[dict[str, Any]], log: dict[str, Any], missed: list[dict[str, Any]],
                 metrics: dict[str, Any]) -> Verdict:
    last = bounce_summary(len(missed) + 1, spread, log)
    named = sum(1 for put in spread if put.get("worker") is not None)
    why = ("the server's log named the worker of none of them (no `Sync scope:` lines with PIDs: "
           "OPAL_LOG_FORMAT_INCLUDE_PID)" if not named else
           f"the leader {last['leader']}'s listener was back at {last['listeners_back_s']} s after the return; "
           f"PUTs after the return [s, worker]: {last['puts_after_return']}")
    verdict = not_exercised(f"every PUT was served, but in {len(missed) + 1} bounce(s) no accepted PUT was taken by a "
                            "worker other than the leader between the return of Postgres and the leader's listener "
                            f"being back, so the reconnect race was not put to the test: {why}")
    verdict.metrics = {**metrics, "unexercised_bounces": [*missed, last]}
    return verdict


def spread_summary(spread: list[dict[str, Any]] | None, log: dict[str, Any] | None) -> dict[str, Any]:
    """The spread's counts for the report: accepted, lost, by worker; the leader and the listeners."""
    if spread is None:
        return {}
    accepted = [put for put in spread if 200 <= (put.get("status") or 0) < 300]
    log = log or {}
    return {"spread_puts": len(spread), "spread_accepted": len(accepted), "spread_lost": len(lost_puts(spread)),
            "lost_workers": [put.get("worker") for put in lost_puts(spread)],
            "leaders": [pid for _, pid in log.get("leaders") or []][-2:],
            "listeners_back_s": log.get("listeners_back_s") or {}}


def _describe(put: dict[str, Any], listeners: dict[str, float]) -> str:
    worker, leader = put.get("worker"), put.get("leader")
    role = "the leader" if worker is not None and worker == leader else f"not the leader {leader}"
    back = listeners.get(str(leader)) if leader is not None else None
    leader_back = (f"the leader's listener back at {back:+.2f} s" if back is not None
                   else "no listener line of the leader")
    return f"{put['scope']} at {put['at_s']:+.2f} s, taken by worker {worker} ({role}; {leader_back})"


def judge_spread(spread: list[dict[str, Any]], log: dict[str, Any], p: Params, problems: Problems) -> None:
    """Every accepted PUT of the spread must be served; a lost one is named with who took it,
    who the leader was and when the listeners came back (times relative to the return)."""
    lost = lost_puts(spread)
    if not lost:
        return
    listeners = log.get("listeners_back_s") or {}
    accepted = sum(1 for put in spread if 200 <= (put.get("status") or 0) < 300)
    problems.add("bounce.put_lost_in_reconnect",
                 f"{len(lost)} of {accepted} scope PUTs accepted around the return of Postgres were never served "
                 f"within {p.window_budget_s:g} s: " + "; ".join(_describe(put, listeners) for put in lost[:6])
                 + (f"; … {len(lost) - 6} more" if len(lost) > 6 else ""),
                 accepted=accepted, lost=len(lost),
                 lost_puts=[{k: put.get(k) for k in ("scope", "at_s", "status", "worker", "leader")} for put in lost],
                 listeners_back_s=listeners, replays=log.get("replays") or [])


def _judge_recorded_during(f: dict[str, Any], budget: float, problems: Problems) -> None:
    if f.get("during_served_s") is None:
        problems.add("bounce.put_during_not_served",
                     f"a scope PUT during the outage (answered {f.get('put_during_status')}) was not "
                     f"served within {budget:g} s after it")
