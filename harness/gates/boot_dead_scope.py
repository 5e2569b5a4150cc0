"""Gate `boot-dead-scope`: healthy scopes plus one dead-remote scope stored, server
restarted.

Passes when the server becomes healthy and serves the healthy scopes within a budget of
git timeout + preload drain timeout + slack.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from harness.gates.base import FAIL, PASS, Gate, GateContext, Verdict
from harness.seed import policy_repo_name
from harness.timeline import FAULT_START, Timeline
from harness.waiting import poll_until


@dataclass
class Params:
    healthy_scopes: int = 5
    slack_s: float = 15.0


@dataclass
class Thresholds:
    pass  # judged against the budget derived from the server's settings


class BootDeadScopeGate(Gate):
    id = "boot-dead-scope"
    marker = "boot_dead_scope"
    title = "one dead remote does not block boot"
    Params = Params
    Thresholds = Thresholds

    def scenario(self, ctx: GateContext) -> None:
        p: Params = ctx.params
        tl, stack, knobs = ctx.timeline, ctx.stack, ctx.knobs
        budget = knobs.git_timeout_s + knobs.preload_drain_s + p.slack_s
        healthy = {f"ok-{i}": stack.repo_url(policy_repo_name(20 + i)) for i in range(p.healthy_scopes)}
        tl.fact("derived", {"budget_s": budget, "git_timeout_s": knobs.git_timeout_s,
                            "preload_drain_s": knobs.preload_drain_s, "healthy_scopes": p.healthy_scopes})
        stack.stop("server")
        stack.stage_scopes({**healthy, "dead": stack.dead_url(2000)})
        tl.mark(FAULT_START, fault="dead remote stored")
        started = time.monotonic()
        stack.restart_server(fresh_state=False, wait_healthy=False)
        healthy_s = poll_until(lambda: ctx.client.healthy(timeout=2), budget, interval=0.3)
        tl.fact("healthy_s", healthy_s)
        if healthy_s is not None:
            remaining = max(1.0, budget - (time.monotonic() - started))
            pending = ctx.all_served_within(list(healthy), remaining, "healthy scopes after boot")
            tl.fact("not_served", len(pending))
        tl.fact("dead_connections", stack.accepted_connections("blackhole"))
        ctx.observe("end")

    def check(self, timeline: Timeline, thresholds: Thresholds) -> Verdict:
        facts, derived = timeline.facts, timeline.facts["derived"]
        metrics = {**derived, "healthy_s": facts.get("healthy_s"), "not_served": facts.get("not_served")}
        budget = (f"{derived['budget_s']:g} s (git timeout {derived['git_timeout_s']:g} s + preload drain "
                  f"{derived['preload_drain_s']:g} s + slack)")
        if facts.get("healthy_s") is None:
            return Verdict(FAIL, f"server not healthy within {budget} after a restart with one dead-remote "
                                 f"scope stored: the preload blocks boot", "boot_dead.never_healthy", metrics)
        if facts.get("not_served"):
            return Verdict(FAIL, f"healthy after {facts['healthy_s']:.1f} s, but {facts['not_served']} of "
                                 f"{derived['healthy_scopes']} healthy scopes were not served within {budget}",
                           "boot_dead.scopes_not_served", metrics)
        return Verdict(PASS, f"healthy after {facts['healthy_s']:.1f} s and all {derived['healthy_scopes']} "
                             f"healthy scopes served within {budget}", "", metrics)
