"""Gate `boot-dead-scope`: healthy scopes plus one dead-remote scope stored, server
restarted.

Passes when every healthy stored scope is **served** within a budget derived from the
server's own settings (git timeout + preload drain + slack), and a never-cloned scope
PUT after boot is served too (the booted worker still runs git). A server without those
settings (a pre-fix tree) gets the harness's fallback budget, and the reason says so.

A PASS claims the boot faced the dead remote: the blackhole must have taken a connection for
the dead scope's repo between the launch and the end of the boot (every healthy scope served),
else ERROR `error.not_exercised` — a server whose preload skips or defers the dead scope
would pass without facing it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from harness.gates.base import Gate, GateContext, ServerKnobs, cold_boot
from harness.gates.proof import OLD_LISTENER, not_exercised, record_connections, repos_of, without_detail
from harness.gates.settings import GateSettings
from harness.seed import dead_repo_name, policy_repo_name
from harness.servers.base import Capability
from harness.timeline import FAULT_START, Timeline
from harness.verdict import FAIL, PASS, Verdict

DEAD_INDEX = 2000  # the dead scope's remote: Stack.dead_url(DEAD_INDEX)


@dataclass
class Params(GateSettings):
    positive = ("healthy_scopes", "fallback_budget_s")
    healthy_scopes: int = 5
    slack_s: float = 15.0
    # For a server with neither a git timeout nor a preload drain: nothing bounds a dead
    # clone there, so this is the harness's own limit, not one the server promises.
    fallback_budget_s: float = 35.0


@dataclass
class Thresholds(GateSettings):
    pass  # judged against the budget derived from the server's settings


def boot_budget(knobs: ServerKnobs, p: Params) -> tuple[float, str]:
    """(seconds, how they were derived) for the healthy scopes to be served after boot."""
    if knobs.git_timeout_s is None and knobs.preload_drain_s is None:
        return p.fallback_budget_s, (f"{p.fallback_budget_s:g} s (the harness's fallback: this server has no git "
                                     "fetch timeout and no preload drain setting)")
    timeout, drain = knobs.git_timeout_s or 0.0, knobs.preload_drain_s or 0.0
    budget = timeout + drain + p.slack_s
    return budget, (f"{budget:g} s (git timeout {timeout:g} s + preload drain {drain:g} s + slack "
                    f"{p.slack_s:g} s)")


class BootDeadScopeGate(Gate, id="boot-dead-scope", params=Params, thresholds=Thresholds,
                        title="one dead remote does not block boot",
                        requires=(Capability.MANY_SOURCES, Capability.RUNTIME_SOURCES, Capability.SCOPE_STORE)):

    def scenario(self, ctx: GateContext) -> None:
        p: Params = ctx.params
        tl, stack = ctx.timeline, ctx.stack
        budget, how = boot_budget(ctx.knobs, p)
        healthy = {f"ok-{i}": stack.repo_url(policy_repo_name(20 + i)) for i in range(p.healthy_scopes)}
        tl.fact("derived", {"budget_s": budget, "budget_how": how, "healthy_scopes": p.healthy_scopes})
        stack.server.stop()
        stack.server.stage_scopes({**healthy, "dead": stack.dead_url(DEAD_INDEX)})
        tl.mark(FAULT_START, fault="dead remote stored")
        accepted_before = stack.service("blackhole").accepted_connections()
        boot = cold_boot(ctx, list(healthy), budget, "boot with a dead-remote scope stored")
        tl.mark("boot_end")
        tl.fact("boot", asdict(boot))
        # Which dead connections happened during the boot (not the new scope's time after it).
        tl.fact("dead_connections_at_boot", stack.service("blackhole").accepted_connections() - accepted_before)
        if boot.served_s is not None:
            stack_url = stack.repo_url(policy_repo_name(20 + p.healthy_scopes))
            ctx.client.put_scope("after-boot", stack_url)
            tl.fact("new_scope_served_s", ctx.served_within("after-boot", budget, "new scope after boot"))
        tl.fact("dead_connections", stack.service("blackhole").accepted_connections() - accepted_before)
        record_connections(tl, stack.service("blackhole"), accepted_before, "blackhole_connection_times")
        ctx.observe("end")

    def check(self, timeline: Timeline, params: Params, thresholds: Thresholds) -> Verdict:
        facts, derived = timeline.facts, timeline.facts["derived"]
        boot = facts.get("boot") or {}
        metrics = {**derived, "healthy_s": boot.get("healthy_s"), "served_s": boot.get("served_s"),
                   "not_served": boot.get("not_served"), "new_scope_served_s": facts.get("new_scope_served_s"),
                   "dead_connections": facts.get("dead_connections"),
                   "dead_connections_at_boot": facts.get("dead_connections_at_boot")}
        budget, scopes = derived["budget_how"], derived["healthy_scopes"]
        if boot.get("healthy_s") is None:
            return Verdict(FAIL, f"server not healthy within {budget} after a restart with one dead-remote "
                                 "scope stored: the preload blocks boot", "boot_dead.never_healthy", metrics)
        if boot.get("served_s") is None:
            return Verdict(FAIL, f"healthy after {boot['healthy_s']:.1f} s, but {boot['not_served']} of {scopes} "
                                 f"healthy stored scopes were not served within {budget}",
                           "boot_dead.scopes_not_served", metrics)
        if facts.get("new_scope_served_s") is None:
            return Verdict(FAIL, f"all {scopes} healthy scopes served {boot['served_s']:.1f} s after launch, but a "
                                 f"new scope PUT after boot was not served within {budget}: the booted worker "
                                 "does not run git operations", "boot_dead.new_scope_not_served", metrics)
        if (untried := dead_untried_at_boot(timeline)) is not None:
            return untried
        return Verdict(PASS, f"all {scopes} healthy stored scopes served {boot['served_s']:.1f} s after launch "
                             f"(healthy at {boot['healthy_s']:.1f} s) and a new scope after boot in "
                             f"{facts['new_scope_served_s']:.1f} s, within {budget}, with the dead remote connected "
                             f"{facts['dead_connections_at_boot']}× during the boot", "", metrics)


def dead_untried_at_boot(timeline: Timeline) -> Verdict | None:
    """ERROR when the blackhole saw no connection for the dead scope's repo during the boot."""
    boot_end, records = timeline.event("boot_end"), timeline.facts.get("blackhole_connection_times")
    seen = timeline.facts.get("dead_connections_at_boot")
    if boot_end is None or records is None or seen is None:
        return not_exercised("no record of the blackhole's connections during the boot: the dead remote's "
                             "part in it is unproven")
    if without_detail(records):
        return not_exercised(f"whether the dead remote was connected during the boot is unknown: {OLD_LISTENER}")
    during = [r for r in records if r.get("accepted_t") is None or r["accepted_t"] <= boot_end["t"]]
    if not seen or dead_repo_name(DEAD_INDEX) not in repos_of(during):
        return not_exercised(f"the dead remote was never connected during the boot ({seen} blackhole connections "
                             f"between the launch and the end of the boot at {boot_end['t']:.1f} s, "
                             f"{len(records)} in all): the boot never faced it")
    return None
