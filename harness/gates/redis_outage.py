"""Gate `redis-outage`: the scope store (Redis) stops for `outage_s`, then returns — with
what it held (`mode=keep`: SAVE before the stop, loaded at start) or empty (`mode=empty`:
FLUSHALL and SAVE first, as after a restart without persistence).

Before: `stored` scopes PUT and served. During the outage the harness polls a stored
scope's GET policy and /healthcheck, and PUTs one scope (`during`); after, it PUTs one more
(`after`). Passes when:
- every request during the outage is answered within `answer_budget_s` (an error status
  is a clear answer; a request that hangs is not) — `redis.hung`;
- `keep`: every stored scope is served again within the sync budget — `redis.stored_not_served`;
  `empty`: every lost scope is answered as this server answered a scope it never had, asked
  before the fault (`unknown_answer`: 404 on 0.9.9; 0.9.6 answers 500 to any unknown scope,
  outage or not, so its 500 is no outage finding) — `redis.lost_unclear`;
- the PUT during the outage was refused with an error status, or, accepted, is served after
  — `redis.put_during_lost`;
- the scope PUT once the store is back is served within the sync budget — `redis.put_after_not_served`.
The sync budget is the server's git fetch timeout plus slack (a fallback, said so, for a
server without one). The stop's proof is that the store no longer answers PING; the return's,
that it does, with what the mode says: `keep` — every stored scope's key is back, `empty` —
none is (`stored_keys_after`, with the store's total `keys_after`). A store that returned with
anything else is ERROR `error.fault`: the outage was not the one the mode names.

0.9.6 and 0.9.9 lose the first sync after the store returns: the leader's scope store
client keeps a pooled connection Redis closed when it stopped, the webhook trigger's first
read on it raises "Connection closed by server", and the trigger task dies silently — so the
PUT after the outage is accepted (201) and never cloned. The control
(tests/integration/redis_outage_control.py) retries a command once on such a connection.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from harness import redisdb
from harness.gates.base import Gate, GateContext, fetch_timeout_budget
from harness.gates.settings import GateSettings
from harness.seed import policy_repo_name
from harness.servers.base import Capability, PolicyResult
from harness.timeline import Timeline
from harness.verdict import ERROR, Problems, Verdict, load_failure

MODES = ("keep", "empty")
NEVER_STORED = "never-stored"  # a scope id no gate PUTs: the server's answer for a scope it does not know


@dataclass
class Params(GateSettings):
    positive = ("outage_s", "stored", "answer_budget_s", "serve_budget_s", "fallback_budget_s", "poll_interval_s")
    mode: str = "keep"
    outage_s: float = 8.0
    stored: int = 3
    first_repo: int = 620  # policy-0620..: repos no other gate changes
    answer_budget_s: float = 5.0  # each request during the outage
    serve_budget_s: float = 60.0  # the first load
    slack_s: float = 10.0
    fallback_budget_s: float = 30.0  # the sync budget for a server without a git fetch timeout
    poll_interval_s: float = 0.5

    def validate(self) -> None:
        if self.mode not in MODES:
            self.refuse("mode", " or ".join(MODES))


@dataclass
class Thresholds(GateSettings):
    """No tunable bound: every answer during the outage within its budget, every scope the
    store kept or took after served."""


class RedisOutageGate(Gate, id="redis-outage", params=Params, thresholds=Thresholds,
                      title="the scope store stops and returns: clear answers, stored scopes and new PUTs served",
                      requires=(Capability.RUNTIME_SOURCES, Capability.SCOPE_STORE)):

    # -- scenario ---------------------------------------------------------------------------
    def scenario(self, ctx: GateContext) -> None:
        p: Params = ctx.params
        stack, tl, client = ctx.stack, ctx.timeline, ctx.client
        stack.ensure_repos(p.first_repo + p.stored + 2)
        budget, how = fetch_timeout_budget(ctx.knobs, p.slack_s, p.fallback_budget_s)
        stored = [f"stored-{i}" for i in range(p.stored)]
        tl.fact("derived", {"sync_budget_s": budget, "budget_how": how, "stored": stored})
        for i, scope in enumerate(stored):
            client.put_scope(scope, stack.repo_url(policy_repo_name(p.first_repo + i)))
        if pending := ctx.all_served_within(stored, p.serve_budget_s, "initial load"):
            tl.fact("load_failure", f"{len(pending)} of {p.stored} scopes were not served within "
                                    f"{p.serve_budget_s:g} s")
            return
        # The same server's answer for a scope it never had, before any fault: what "gone" looks like here
        tl.fact("unknown_answer", _answer(client.get_policy(NEVER_STORED, timeout=p.answer_budget_s)))
        ctx.observe("loaded")  # caches, clone dirs and the worker, for the plot
        store = stack.published("redis").url
        redisdb.snapshot(store, empty=p.mode == "empty")
        redis = stack.service("redis")
        with ctx.fault(f"redis {p.mode}", start=redis.stop, heal=redis.start,
                       proof=lambda: not redisdb.ping(store)):
            self._during(ctx, stored[0], stack.repo_url(policy_repo_name(p.first_repo + p.stored)))
        tl.fact("keys_after", redisdb.key_count(store))
        kept = stack.server.stored_scope_ids(stored)
        tl.fact("stored_keys_after", None if kept is None else len(kept))
        self._after(ctx, stored, stack.repo_url(policy_repo_name(p.first_repo + p.stored + 1)), budget)

    def _during(self, ctx: GateContext, stored_scope: str, during_url: str) -> None:
        p: Params = ctx.params
        deadline = time.monotonic() + p.outage_s
        put_done = False
        while time.monotonic() < deadline:
            answer = ctx.client.get_policy(stored_scope, timeout=p.answer_budget_s)
            started = time.monotonic()
            healthy = ctx.client.healthy(timeout=p.answer_budget_s)
            ctx.timeline.record("outage_poll", status=answer.status, error=answer.error,
                                seconds=round(answer.seconds, 3), healthy=healthy,
                                health_s=round(time.monotonic() - started, 3))
            if not put_done:
                ctx.timeline.fact("put_during", _timed_put(ctx, "during", during_url, p.answer_budget_s))
                put_done = True
            time.sleep(p.poll_interval_s)

    def _after(self, ctx: GateContext, stored: list[str], after_url: str, budget: float) -> None:
        p: Params = ctx.params
        tl, client = ctx.timeline, ctx.client
        if p.mode == "keep":
            tl.fact("stored_pending", ctx.all_served_within(stored, budget, "stored scopes after the outage"))
        else:
            tl.fact("lost_answers", {scope: _answer(client.get_policy(scope, timeout=p.answer_budget_s))
                                     for scope in stored})
        if 200 <= (tl.facts["put_during"].get("status") or 0) < 300:
            tl.fact("during_served_s", ctx.served_within("during", budget, "the PUT during the outage"))
        tl.fact("put_after", _timed_put(ctx, "after", after_url, p.answer_budget_s))
        tl.fact("after_served_s", ctx.served_within("after", budget, "a PUT after the store returned"))
        ctx.observe("after the outage")

    # -- checker ----------------------------------------------------------------------------
    def check(self, timeline: Timeline, params: Params, thresholds: Thresholds) -> Verdict:
        if (failed := load_failure(timeline)) is not None:
            return failed
        facts = timeline.facts
        derived = facts["derived"]
        if facts.get(f"fault redis {params.mode} took effect") is False:
            return Verdict(ERROR, "the store still answered PING after it was stopped: the outage did not take "
                                  "effect", "error.fault")
        polls = timeline.of_kind("outage_poll")
        metrics: dict[str, Any] = {"mode": params.mode, "outage_polls": len(polls),
                                   "keys_after": facts.get("keys_after"),
                                   "stored_keys_after": facts.get("stored_keys_after"),
                                   "unknown_answer": facts.get("unknown_answer"),
                                   "statuses_during": sorted({str(p["status"]) for p in polls}),
                                   "put_during": facts.get("put_during"), "put_after": facts.get("put_after"),
                                   "after_served_s": facts.get("after_served_s"), **derived}
        if not polls:
            return Verdict(ERROR, "no request was made during the outage", "error.no_data", metrics)
        if (wrong := _store_returned_wrong(facts, params, derived)) is not None:
            return Verdict(ERROR, wrong, "error.fault", metrics)
        problems = Problems()
        _judge_during(polls, facts, params, problems)
        _judge_stored(facts, params, derived, problems)
        _judge_puts(facts, derived, problems)
        if problems:
            return problems.verdict("", metrics)
        return problems.verdict(
            f"{len(polls)} requests during the {params.outage_s:g} s outage all answered within "
            f"{params.answer_budget_s:g} s ({'/'.join(metrics['statuses_during'])}); "
            + ("the stored scopes served again" if params.mode == "keep"
               else f"the lost scopes answered {_gone_answer(facts)}, as a scope this server never had")
            + f"; a PUT after the store returned served in {facts.get('after_served_s'):.1f} s", metrics)


def _timed_put(ctx: GateContext, scope: str, url: str, budget: float) -> dict[str, Any]:
    started = time.monotonic()
    try:
        status: int | None = ctx.client.put_scope(scope, url)
        error = ""
    except Exception as exc:  # a timeout or a dropped connection is the answer being judged
        status, error = None, type(exc).__name__
    return {"status": status, "error": error, "seconds": round(time.monotonic() - started, 3)}


def _answer(result: PolicyResult) -> str:
    return str(result.status) if result.status is not None else result.error


def _judge_during(polls: list[dict[str, Any]], facts: dict[str, Any], p: Params, problems: Problems) -> None:
    hung = [x for x in polls if x["status"] is None or not x["healthy"] and x["health_s"] >= p.answer_budget_s]
    put = facts.get("put_during") or {}
    if hung or put.get("status") is None:
        what = [f"GET policy {x['error'] or x['status']} after {x['seconds']:g} s" for x in hung[:3]]
        if put.get("status") is None:
            what.append(f"the PUT got no answer ({put.get('error')}, {put.get('seconds')} s)")
        problems.add("redis.hung", f"during the outage {len(hung)} of {len(polls)} requests were not answered within "
                                   f"{p.answer_budget_s:g} s: " + "; ".join(what))


def _judge_stored(facts: dict[str, Any], p: Params, derived: dict[str, Any], problems: Problems) -> None:
    if p.mode == "keep" and facts.get("stored_pending"):
        problems.add("redis.stored_not_served",
                     f"{len(facts['stored_pending'])} of {len(derived['stored'])} stored scopes were not served within "
                     f"{derived['budget_how']} after the store returned with {facts.get('keys_after')} keys")
    if p.mode == "empty":
        gone = _gone_answer(facts)
        unclear = {s: a for s, a in (facts.get("lost_answers") or {}).items() if a != gone}
        if unclear:
            problems.add("redis.lost_unclear", "scopes the store lost were answered "
                         + ", ".join(f"{s}: {a}" for s, a in unclear.items())
                         + f", not {gone} as this server answered a scope it never had before the outage",
                         lost_answers=unclear, unknown_answer=gone)


def _gone_answer(facts: dict[str, Any]) -> str:
    """What a scope the server does not know answers on this server: asked before the fault
    (`unknown_answer`); 404 for a recording from before that fact."""
    return str(facts.get("unknown_answer") or "404")


def _store_returned_wrong(facts: dict[str, Any], p: Params, derived: dict[str, Any]) -> str | None:
    """Why the store's return was not the mode's (keep: every stored scope's key back; empty:
    none), or None. Recordings from before `stored_keys_after` are not judged on it."""
    if "stored_keys_after" not in facts:
        return None
    kept, stored = facts["stored_keys_after"], len(derived["stored"])
    if kept is None:
        return "the store did not answer when asked which keys it came back with"
    if p.mode == "keep" and kept != stored:
        return (f"the store came back with {kept} of the {stored} stored scopes' keys ({facts.get('keys_after')} keys "
                "in all), not all of them: the SAVE before the stop did not hold (mode keep)")
    if p.mode == "empty" and kept:
        return (f"the store came back with {kept} of the {stored} stored scopes' keys ({facts.get('keys_after')} keys "
                "in all), not none: the FLUSHALL before the stop did not hold (mode empty)")
    return None


def _judge_puts(facts: dict[str, Any], derived: dict[str, Any], problems: Problems) -> None:
    put = facts.get("put_during") or {}
    if 200 <= (put.get("status") or 0) < 300 and facts.get("during_served_s") is None:
        problems.add("redis.put_during_lost", f"the PUT during the outage was accepted ({put['status']}) and never "
                                              f"served within {derived['budget_how']} after")
    after = facts.get("put_after") or {}
    if facts.get("after_served_s") is None:
        problems.add("redis.put_after_not_served",
                     f"a scope PUT after the store returned was answered {after.get('status') or after.get('error')} "
                     f"and not served within {derived['budget_how']}")
