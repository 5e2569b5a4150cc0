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

The server runs two workers, so a scope PUT that one worker takes reaches the syncing
one only through the broadcaster: delivery needs the backbone. Passes when the server is
healthy again, a scope PUT after the bounce is served, and a scope PUT during the outage
is served after it. The worker PIDs before and after are recorded, and whether recovery
happened in place (same workers) or by respawn.

"After the bounce" is once the server had time to reconnect: its own reconnect backoff can
have run out (min(BROADCAST_RECONNECT_BACKOFF_MAX_SECONDS, 2 × outage) + the resync settle;
5 s on a server without those settings). PUTs made in the first second — while the
workers' listeners may still be reconnecting — are a different fault with a
timing-dependent outcome: they are recorded (`reconnect_window`: how many were served), not
judged. Measured on 0.9.9 with two workers: an event a non-leader worker publishes while
the leader's listener is still reconnecting (up to one backoff interval after Postgres
returns; 5.3 s in one run under load) is neither delivered nor replayed, so that scope is
never served.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from harness.gates.base import Gate, GateContext, ServerKnobs
from harness.gates.settings import GateSettings
from harness.seed import policy_repo_name
from harness.services.postgres import answers
from harness.timeline import Timeline
from harness.verdict import ERROR, Problems, Verdict, load_failure
from harness.waiting import poll_until, port_open

MIN_OUTAGE_S = 5.0
MODES = ("stop", "kill", "pause", "terminate")


@dataclass
class Params(GateSettings):
    positive = ("outage_s", "budget_s", "window_budget_s")
    mode: str = "stop"
    outage_s: float = 5.0
    budget_s: float = 30.0
    after_put_delay_s: float = 0.0  # 0: derived from the server's reconnect settings
    window_puts: int = 4  # recorded, not judged: PUTs in the first second after the bounce
    window_budget_s: float = 10.0

    def validate(self) -> None:
        if self.outage_s < MIN_OUTAGE_S:  # a sub-second restart races the respawn and hides the bug
            self.refuse("outage_s", f"≥ {MIN_OUTAGE_S:g} s")
        if self.mode not in MODES:
            self.refuse("mode", " | ".join(MODES))


@dataclass
class Thresholds(GateSettings):
    pass  # judged against budget_s


WORKERS = 2
NO_PROOF = {"stop": "Postgres still listened after stop", "kill": "Postgres still listened after SIGKILL",
            "pause": "Postgres still answered the protocol while paused",
            "terminate": "no connection of the server's was terminated"}


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


class BrokerBounceGate(Gate, id="broker-bounce", params=Params, thresholds=Thresholds, workers=WORKERS,
                       title="the server recovers from a broadcaster outage"):

    def scenario(self, ctx: GateContext) -> None:
        p: Params = ctx.params
        tl, stack, client = ctx.timeline, ctx.stack, ctx.client
        client.put_scope("before", stack.repo_url(policy_repo_name(30)))
        if ctx.served_within("before", p.budget_s, "before the outage") is None:
            tl.fact("load_failure", f"a scope was not served within {p.budget_s:g} s before any fault")
            return
        workers_before = stack.server.pids()[1]
        tl.fact("worker_pids_before", workers_before)
        ctx.observe("before")
        outage_started = time.monotonic()
        with ctx.fault(*self._fault(ctx, p.mode)) as outage:
            tl.fact("broker_fault_confirmed", outage.took_effect)
            time.sleep(1.0)
            tl.fact("put_during_status", self._put(client, "during", stack.repo_url(policy_repo_name(31))))
            time.sleep(max(0.0, p.outage_s - (time.monotonic() - outage_started)))
        back = time.monotonic()
        delay, how = after_put_delay(ctx.knobs, p)
        tl.fact("after_put_delay", {"seconds": delay, "how": how})
        window = {f"window-{i}": stack.repo_url(policy_repo_name(33 + i)) for i in range(p.window_puts)}
        for scope, url in window.items():  # the reconnect window: recorded, not judged
            self._put(client, scope, url)
            time.sleep(1.0 / max(1, p.window_puts))
        tl.fact("healthy_after_s", poll_until(lambda: client.healthy(timeout=2), p.budget_s))
        time.sleep(max(0.0, delay - (time.monotonic() - back)))
        tl.fact("put_after_status", self._put(client, "after", stack.repo_url(policy_repo_name(32))))
        tl.fact("after_served_s", ctx.served_within("after", p.budget_s, "scope PUT after the bounce"))
        tl.fact("during_served_s", ctx.served_within("during", p.budget_s, "scope PUT during the outage"))
        lost = ctx.all_served_within(list(window), p.window_budget_s, "PUTs in the reconnect window")
        tl.fact("reconnect_window", {"puts": len(window), "not_served": len(lost)})
        workers_after = stack.server.pids()[1]
        tl.fact("worker_pids_after", workers_after)
        tl.fact("recovery", recovery_kind(workers_before, workers_after))
        ctx.observe("end")

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
        metrics = {"mode": params.mode, **{k: f.get(k) for k in (
            "healthy_after_s", "put_after_status", "after_served_s", "put_during_status", "during_served_s",
            "worker_pids_before", "worker_pids_after", "recovery", "reconnect_window", "terminated_connections")}}
        workers = (f"workers {f.get('worker_pids_before')} → {f.get('worker_pids_after')} "
                   f"({f.get('recovery', 'not recorded')})")
        if window := f.get("reconnect_window"):
            workers += (f"; not judged: {window['not_served']} of {window['puts']} PUTs made in the first second "
                        "after Postgres returned were never served")
        problems = Problems()
        if f.get("healthy_after_s") is None:
            problems.add("bounce.unhealthy",
                         f"/healthcheck did not return to 200 within {budget:g} s after Postgres came back")
        if f.get("after_served_s") is None:
            problems.add("bounce.put_after_not_served",
                         f"a scope PUT after the bounce (answered {f.get('put_after_status')}) was not served "
                         f"within {budget:g} s: the server stopped syncing")
        if f.get("during_served_s") is None:
            problems.add("bounce.put_during_not_served",
                         f"a scope PUT during the outage (answered {f.get('put_during_status')}) was not "
                         f"served within {budget:g} s after it")
        if problems:
            problems.note(workers)
            return problems.verdict("", metrics)
        return problems.verdict(f"healthy {f['healthy_after_s']:.1f} s after the bounce; scope PUT after it "
                                f"served in {f['after_served_s']:.1f} s, scope PUT during it in "
                                f"{f['during_served_s']:.1f} s; {workers}", metrics)
