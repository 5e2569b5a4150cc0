"""Gate `zombie-cap`: enough dead remotes that timed-out git ops pile up past the
server's cap on lingering ("zombie") git threads, then a new healthy scope.

Passes when the new healthy scope is still served within budget. 0.9.9 fails: at the
cap it refuses every new git op, healthy ones included — an open bug the gate shows; the
same release with the cap off (OPAL_SCOPES_GIT_MAX_ZOMBIES=0) passes under the same load,
which is the gate's control. A server without a cap, a git worker pool or a git timeout (a
pre-fix tree) faces the same number of dead remotes; its budget is the harness's fallback,
and the reason says which of those settings it lacks.

A PASS claims the pile reached the cap (or, with the cap off or absent, the pile the capped
cell faces): the timed-out git ops in flight when the healthy scope is PUT are counted from
the server's own report where it gives one (0.9.9 logs "Refusing new scope git op: N
in-flight at/over SCOPES_GIT_MAX_ZOMBIES=C"), else from the blackhole: connections still
held then that had been open for at least the server's git timeout. Fewer is ERROR
`error.not_exercised`, naming the figure and its source.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from harness.gates.base import Gate, GateContext, ServerKnobs, batches, pre_fix_executor_size
from harness.gates.proof import (
    OLD_LISTENER,
    listener_connections,
    not_exercised,
    open_at,
    record_connections,
    without_detail,
)
from harness.gates.settings import GateSettings
from harness.seed import policy_repo_name
from harness.serverlog import read_slice
from harness.serverlog import size as log_size
from harness.servers.base import Capability
from harness.stack.base import ServiceHandle
from harness.timeline import FAULT_START, Timeline
from harness.verdict import ERROR, FAIL, PASS, Verdict
from harness.waiting import poll_until

# What 0.9.9 logs (once per episode) when it refuses a git op at the cap: its own count.
REFUSING = re.compile(r"Refusing new scope git op: (\d+) in-flight at/over SCOPES_GIT_MAX_ZOMBIES=(\d+)")

# A lower cap than the server's default (40) keeps the pile-up short in the quick profile;
# it stays well above the git worker count (10), as OPAL's docs advise.
QUICK_ZOMBIE_CAP = "20"


@dataclass
class Params(GateSettings):
    positive = ("serve_budget_s", "fallback_budget_s", "fallback_pile_up_s")
    extra_dead: int = 0  # dead remotes beyond cap + git workers
    slack_s: float = 10.0
    serve_budget_s: float = 30.0
    # Without a cap (absent, or 0 = off) the pile is as large as the quick profile's cap,
    # so a control runs under the same load as the cell it controls.
    pile_without_cap: int = int(QUICK_ZOMBIE_CAP)
    # Without a git timeout nothing of the server's bounds a dead clone: the harness's limits.
    fallback_budget_s: float = 20.0
    fallback_pile_up_s: float = 10.0


@dataclass(frozen=True)
class Plan:
    dead: int
    pile_up_s: float
    budget_s: float
    how: str


def plan(knobs: ServerKnobs, pool: int, p: Params) -> Plan:
    """How many dead remotes, how long they pile up, and the new scope's budget — from the
    server's own settings, saying which it lacks."""
    cap = knobs.max_zombies or p.pile_without_cap
    workers = knobs.git_workers or pool
    dead = cap + workers + p.extra_dead
    lacks = [name for name, value in (("zombie cap", knobs.max_zombies), ("git worker pool", knobs.git_workers),
                                      ("git fetch timeout", knobs.git_timeout_s)) if value is None]
    if knobs.git_timeout_s is None:
        how = f"{p.fallback_budget_s:g} s (the harness's fallback: this server has no {', no '.join(lacks)})"
        return Plan(dead, p.fallback_pile_up_s, p.fallback_budget_s, how)
    budget = knobs.git_timeout_s + p.slack_s
    how = f"{budget:g} s (git timeout {knobs.git_timeout_s:g} s + {p.slack_s:g} s slack)"
    if knobs.max_zombies == 0:
        how += "; zombie cap off (0)"
    return Plan(dead, batches(dead, workers) * knobs.git_timeout_s + 3.0, budget, how)


@dataclass
class Thresholds(GateSettings):
    pass  # the verdict is the served/not-served fact against the derived budget


class ZombieCapGate(Gate, id="zombie-cap", params=Params, thresholds=Thresholds,
                    title="timed-out git ops piling up do not block healthy scopes",
                    requires=(Capability.MANY_SOURCES, Capability.RUNTIME_SOURCES)):

    def server_profile(self, profile: str) -> dict[str, str]:
        return {"OPAL_SCOPES_GIT_MAX_ZOMBIES": QUICK_ZOMBIE_CAP} if profile == "quick" else {}

    def scenario(self, ctx: GateContext) -> None:
        p: Params = ctx.params
        tl, client, knobs = ctx.timeline, ctx.client, ctx.knobs
        steps = plan(knobs, pre_fix_executor_size(ctx.stack.server.cpu_count()), p)
        dead, pile_up_s, budget = steps.dead, steps.pile_up_s, steps.budget_s
        tl.fact("derived", {"dead_remotes": dead, "zombie_cap": knobs.max_zombies, "pile_up_s": pile_up_s,
                            "new_scope_budget_s": budget, "budget_how": steps.how,
                            "git_timeout_s": knobs.git_timeout_s, "git_workers": knobs.git_workers})
        blackhole = ctx.stack.service("blackhole")
        accepted_before = blackhole.accepted_connections()
        log_start = log_size(ctx.stack.server.log())
        tl.mark(FAULT_START, fault="blackhole", dead_remotes=dead)
        tl.record("dead_puts", statuses=[client.put_scope(f"zombie-{i}", ctx.stack.dead_url(1000 + i))
                                         for i in range(dead)])
        # Wait out the timeouts so the timed-out ops linger as zombies (bounded: pile_up_s).
        poll_until(lambda: ctx.stack.service("blackhole").accepted_connections() - accepted_before >= dead,
                   pile_up_s, interval=1.0)
        # Then until the claim's pile has timed out (not merely started): ops accepted in the
        # last round are live, not zombies, for one more git timeout.
        needed, _ = pile_needed(knobs.max_zombies, p)
        timeout = knobs.git_timeout_s or 0.0
        poll_until(lambda: _zombies_now(blackhole, accepted_before, timeout) >= needed, timeout + 3.0, interval=0.5)
        ctx.observe("piled up")
        tl.fact("blackhole_connections", ctx.stack.service("blackhole").accepted_connections() - accepted_before)
        client.put_scope("healthy", ctx.stack.repo_url(policy_repo_name(2)))
        tl.mark("new_scope_put")
        tl.fact("new_scope_served_s", ctx.served_within("healthy", budget, "healthy scope past the cap"))
        ctx.observe("end")
        record_connections(tl, blackhole, accepted_before, "blackhole_connection_times")
        tl.fact("server_reported_in_flight", _reported_in_flight(read_slice(ctx.stack.server.log(), log_start)))

    def check(self, timeline: Timeline, params: Params, thresholds: Thresholds) -> Verdict:
        facts = timeline.facts
        derived = facts["derived"]
        if not facts.get("blackhole_connections"):
            return Verdict(ERROR, "the blackhole accepted no connection: the fault did not take effect",
                           "error.fault")
        served_s = facts.get("new_scope_served_s")
        pile = zombie_pile(timeline, params)
        metrics = {**derived, "blackhole_connections": facts["blackhole_connections"],
                   "new_scope_served_s": served_s, "zombies": pile.count, "zombies_needed": pile.needed,
                   "zombies_source": pile.source}
        if served_s is None:
            # the pile as counted for the claim (the server's own report where it gives one)
            hung = pile.count if pile.count is not None else facts["blackhole_connections"]
            dead, cap = derived["dead_remotes"], derived["zombie_cap"]
            if cap is None:
                why = (f"{hung} of {dead} dead remotes were attempted; this server has no zombie cap, so its git "
                       "operations stalled on the dead remotes themselves (a jammed git thread pool)")
            elif cap and hung < cap:
                why = (f"only {hung} of {dead} dead remotes were even attempted: git ops stalled before "
                       f"the zombie cap of {cap} was reached (a jammed git thread pool)")
            elif cap:
                why = (f"{hung} dead-remote git ops piled up past the zombie cap of {cap} ({pile.source}): new "
                       "git ops are refused for healthy scopes too (raise OPAL_SCOPES_GIT_MAX_ZOMBIES or set 0)")
            else:
                why = f"{hung} of {dead} dead remotes were attempted with the zombie cap off"
            return Verdict(FAIL, f"a new healthy scope was not served within "
                                 f"{derived.get('budget_how', derived['new_scope_budget_s'])}; {why}",
                           "zombie.new_scope_not_served", metrics)
        if pile.count is None or pile.count < pile.needed:
            return not_exercised(f"the new healthy scope was served in {served_s:.1f} s, but only {pile.count or 0} "
                                 f"timed-out git ops were in flight when it was PUT ({pile.source}); the gate's "
                                 f"claim needs {pile.needed} ({pile.what}): the pile never reached it")
        return Verdict(PASS, f"new healthy scope served in {served_s:.1f} s with {derived['dead_remotes']} "
                             f"dead remotes and {pile.count} timed-out git ops in flight ({pile.what}; "
                             f"{pile.source})", "", metrics)


@dataclass(frozen=True)
class Pile:
    """The timed-out git ops in flight when the healthy scope was PUT, where the count came
    from, and how many the claim needs (the cap, or the capped cell's pile without one)."""

    count: int | None
    source: str
    needed: int
    what: str


def pile_needed(cap: int | None, params: Params) -> tuple[int, str]:
    """(timed-out ops in flight the claim needs, how to say it): the cap, or — cap off or
    absent — the pile the capped cell faces."""
    if cap:
        return cap, f"the cap of {cap}"
    return params.pile_without_cap, (f"{'the cap off' if cap == 0 else 'no cap'}: the capped cell's pile of "
                                     f"{params.pile_without_cap}")


def _zombies_now(blackhole: ServiceHandle, after: int, timeout: float) -> int:
    """Blackhole connections (numbered above `after`) open for at least `timeout` s now."""
    now = time.time()
    return sum(1 for c in listener_connections(blackhole) if c.number > after and c.closed_at is None
               and c.accepted_at is not None and c.accepted_at <= now - timeout)


def zombie_pile(timeline: Timeline, params: Params) -> Pile:
    derived, facts = timeline.facts["derived"], timeline.facts
    needed, what = pile_needed(derived["zombie_cap"], params)
    reported = facts.get("server_reported_in_flight")
    if reported is not None:
        return Pile(reported, f"as the server's log reported (\"{reported} in-flight at/over "
                              f"SCOPES_GIT_MAX_ZOMBIES\")", needed, what)
    put = timeline.event("new_scope_put")
    records = facts.get("blackhole_connection_times")
    if put is None or records is None:
        return Pile(None, "no record of the blackhole's connections", needed, what)
    if without_detail(records):
        return Pile(None, f"blackhole connections held at the PUT: {OLD_LISTENER}", needed, what)
    timeout = derived.get("git_timeout_s")
    held = open_at(records, put["t"], held_s=timeout or 0.0)
    how = (f"open ≥ the {timeout:g} s git timeout" if timeout else "no git timeout: every connection held")
    return Pile(len(held), f"blackhole connections held at the PUT, {how}", needed, what)


def _reported_in_flight(lines: list[str]) -> int | None:
    """The largest in-flight count the server's own refusal lines gave (None: none logged)."""
    counts = [int(m.group(1)) for line in lines if (m := REFUSING.search(line))]
    return max(counts) if counts else None
