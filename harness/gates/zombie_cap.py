"""Gate `zombie-cap`: enough dead remotes that timed-out git ops pile up past the
server's cap on lingering ("zombie") git threads, then a new healthy scope.

Passes when the new healthy scope is still served within budget. 0.9.9 fails: at the
cap it refuses every new git op, healthy ones included — an open bug the gate shows.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.gates.base import ERROR, FAIL, PASS, Gate, GateContext, Verdict, batches
from harness.seed import policy_repo_name
from harness.timeline import FAULT_START, Timeline
from harness.waiting import poll_until

# A lower cap than the server's default (40) keeps the pile-up short in the quick profile;
# it stays well above the git worker count (10), as OPAL's docs advise.
QUICK_ZOMBIE_CAP = "20"


@dataclass
class Params:
    extra_dead: int = 0  # dead remotes beyond cap + git workers
    slack_s: float = 10.0
    serve_budget_s: float = 30.0


@dataclass
class Thresholds:
    pass  # the verdict is the served/not-served fact against the derived budget


class ZombieCapGate(Gate):
    id = "zombie-cap"
    marker = "zombie_cap"
    title = "timed-out git ops piling up do not block healthy scopes"
    Params = Params
    Thresholds = Thresholds

    def server_profile(self, profile: str) -> dict[str, str]:
        return {"OPAL_SCOPES_GIT_MAX_ZOMBIES": QUICK_ZOMBIE_CAP} if profile == "quick" else {}

    def scenario(self, ctx: GateContext) -> None:
        p: Params = ctx.params
        tl, client, knobs = ctx.timeline, ctx.client, ctx.knobs
        dead = knobs.max_zombies + knobs.git_workers + p.extra_dead
        pile_up_s = batches(dead, knobs.git_workers) * knobs.git_timeout_s + 3.0
        budget = knobs.git_timeout_s + p.slack_s
        tl.fact("derived", {"dead_remotes": dead, "zombie_cap": knobs.max_zombies, "pile_up_s": pile_up_s,
                            "new_scope_budget_s": budget, "git_timeout_s": knobs.git_timeout_s,
                            "git_workers": knobs.git_workers})
        accepted_before = ctx.stack.accepted_connections("blackhole")
        tl.mark(FAULT_START, fault="blackhole", dead_remotes=dead)
        tl.record("dead_puts", statuses=[client.put_scope(f"zombie-{i}", ctx.stack.dead_url(1000 + i))
                                         for i in range(dead)])
        # Wait out the timeouts so the timed-out ops linger as zombies (bounded: pile_up_s).
        poll_until(lambda: ctx.stack.accepted_connections("blackhole") - accepted_before >= dead,
                   pile_up_s, interval=1.0)
        ctx.observe("piled up")
        tl.fact("blackhole_connections", ctx.stack.accepted_connections("blackhole") - accepted_before)
        client.put_scope("healthy", ctx.stack.repo_url(policy_repo_name(2)))
        tl.mark("new_scope_put")
        tl.fact("new_scope_served_s", ctx.served_within("healthy", budget, "healthy scope past the cap"))
        ctx.observe("end")

    def check(self, timeline: Timeline, thresholds: Thresholds) -> Verdict:
        facts = timeline.facts
        derived = facts["derived"]
        if not facts.get("blackhole_connections"):
            return Verdict(ERROR, "the blackhole accepted no connection: the fault did not take effect",
                           "error.fault")
        served_s = facts.get("new_scope_served_s")
        metrics = {**derived, "blackhole_connections": facts["blackhole_connections"],
                   "new_scope_served_s": served_s}
        if served_s is None:
            hung, dead, cap = facts["blackhole_connections"], derived["dead_remotes"], derived["zombie_cap"]
            if hung < cap:
                why = (f"only {hung} of {dead} dead remotes were even attempted: git ops stalled before "
                       f"the zombie cap of {cap} was reached (a jammed git thread pool)")
            else:
                why = (f"{hung} dead-remote git ops piled up past the zombie cap of {cap}: new git ops "
                       "are refused for healthy scopes too (raise OPAL_SCOPES_GIT_MAX_ZOMBIES or set 0)")
            return Verdict(FAIL, f"a new healthy scope was not served within {derived['new_scope_budget_s']:g} s; "
                                 f"{why}", "zombie.new_scope_not_served", metrics)
        return Verdict(PASS, f"new healthy scope served in {served_s:.1f} s with {derived['dead_remotes']} "
                             f"dead remotes past the cap of {derived['zombie_cap']}", "", metrics)
