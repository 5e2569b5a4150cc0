"""Gate `offline-repo`: more distinct dead remotes than both the pre-fix default executor
(min(32, cpus + 4)) and the server's own git workers, then a never-cloned healthy scope.

With more dead remotes than git workers, every worker hangs on a dead clone, so a fixed
server can only serve the new scope by timing those out: that is what the budget is made
of, (ceil(dead / git workers) + 1) × git timeout + slack. A server without a git timeout
(pre-fix) gets the harness's fallback budget, and the reason says so. Passes when an
already-loaded scope keeps serving throughout (success ratio) and the new scope is served
within budget. The connections the blackhole and the git host accepted are recorded.

A PASS claims the server faced every dead remote: each of them (by its repo path on the
blackhole) must have been connected at least once by the end of the window, else ERROR
`error.not_exercised` naming the ones never tried. No poll of the loaded scope at all is an
ERROR too: a success ratio of 0 of 0 judges nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from harness.gates.base import Gate, GateContext, Poller, ServerKnobs, batches, pre_fix_executor_size
from harness.gates.proof import OLD_LISTENER, not_exercised, record_connections, repos_of, without_detail
from harness.gates.settings import GateSettings
from harness.seed import dead_repo_name, policy_repo_name
from harness.servers.base import Capability
from harness.timeline import FAULT_START, Timeline
from harness.verdict import ERROR, Problems, Verdict, load_failure


@dataclass
class Params(GateSettings):
    positive = ("poll_interval_s", "poll_timeout_s", "serve_budget_s", "fallback_budget_s")
    extra_dead: int = 2  # dead remotes beyond the pre-fix thread pool size
    slack_s: float = 10.0
    poll_interval_s: float = 1.0
    poll_timeout_s: float = 3.0
    serve_budget_s: float = 30.0  # for loading the first scope, before any fault
    # For a server without a git fetch timeout: nothing of its own bounds a dead clone.
    fallback_budget_s: float = 30.0


@dataclass
class Thresholds(GateSettings):
    positive = ("min_loaded_success",)
    min_loaded_success: float = 0.9

    def validate(self) -> None:
        if self.min_loaded_success > 1:
            self.refuse("min_loaded_success", "a share ≤ 1")


def new_scope_budget(knobs: ServerKnobs, dead: int, pool: int, p: Params) -> tuple[float, str]:
    """(seconds, how they were derived) for the new healthy scope to be served."""
    if knobs.git_timeout_s is None:
        return p.fallback_budget_s, (f"{p.fallback_budget_s:g} s (the harness's fallback: this server has no git "
                                     "fetch timeout, so nothing of its own bounds a dead clone)")
    workers = knobs.git_workers or pool
    rounds = batches(dead, workers) + 1
    budget = rounds * knobs.git_timeout_s + p.slack_s
    return budget, (f"{budget:g} s ((ceil({dead}/{workers}) + 1) × {knobs.git_timeout_s:g} s git timeout + "
                    f"{p.slack_s:g} s slack)")


class OfflineRepoGate(Gate, id="offline-repo", params=Params, thresholds=Thresholds,
                      title="dead remotes do not stall loaded or new scopes",
                      requires=(Capability.MANY_SOURCES, Capability.RUNTIME_SOURCES)):

    def scenario(self, ctx: GateContext) -> None:
        p: Params = ctx.params
        tl, client, knobs = ctx.timeline, ctx.client, ctx.knobs
        pool = pre_fix_executor_size(ctx.stack.server.cpu_count())
        dead = max(pool, knobs.git_workers or 0) + p.extra_dead
        budget, how = new_scope_budget(knobs, dead, pool, p)
        # "Throughout" covers at least the first round of dead clones timing out.
        observe_s = (knobs.git_timeout_s or p.fallback_budget_s) + p.slack_s
        tl.fact("derived", {"executor_pool": pool, "dead_remotes": dead, "new_scope_budget_s": budget,
                            "budget_how": how, "observe_s": observe_s, "git_timeout_s": knobs.git_timeout_s,
                            "git_workers": knobs.git_workers})

        client.put_scope("loaded", ctx.stack.repo_url(policy_repo_name(0)))
        if ctx.served_within("loaded", p.serve_budget_s, "before the fault") is None:
            tl.fact("load_failure", f"the first scope was not served within {p.serve_budget_s:g} s")
            return
        ctx.observe("before")
        accepted_before = ctx.stack.service("blackhole").accepted_connections()
        git_before = ctx.stack.service("githost").accepted_connections()
        with Poller(ctx, "loaded", p.poll_interval_s, p.poll_timeout_s):
            fault_started = time.monotonic()
            tl.mark(FAULT_START, fault="blackhole", dead_remotes=dead)
            statuses = [client.put_scope(f"dead-{i}", ctx.stack.dead_url(i)) for i in range(dead)]
            tl.record("dead_puts", statuses=statuses)
            time.sleep(2.0)  # let the dead clones take their threads
            tl.fact("blackhole_connections", ctx.stack.service("blackhole").accepted_connections() - accepted_before)
            client.put_scope("new", ctx.stack.repo_url(policy_repo_name(1)))
            tl.mark("new_scope_put")
            tl.fact("new_scope_served_s", ctx.served_within("new", budget, "new scope while remotes are dead"))
            time.sleep(max(0.0, observe_s - (time.monotonic() - fault_started)))
            ctx.observe("end")
        tl.fact("githost_connections", ctx.stack.service("githost").accepted_connections() - git_before)
        tl.fact("blackhole_connections_total", ctx.stack.service("blackhole").accepted_connections() - accepted_before)
        record_connections(tl, ctx.stack.service("blackhole"), accepted_before, "blackhole_connection_times")

    def check(self, timeline: Timeline, params: Params, thresholds: Thresholds) -> Verdict:
        facts = timeline.facts
        if (failed := load_failure(timeline)) is not None:
            return failed
        derived = facts["derived"]
        if not facts.get("blackhole_connections"):
            return Verdict(ERROR, "the blackhole accepted no connection: the fault did not take effect",
                           "error.fault")
        polls = timeline.of_kind("poll")
        if not polls:
            return not_exercised("the loaded scope was never polled while the remotes were dead: no answer to judge")
        ok = sum(1 for s in polls if s["ok"])
        ratio = ok / len(polls)
        healthy = sum(1 for s in polls if s["healthy"])
        served_s = facts.get("new_scope_served_s")
        metrics = {"loaded_success_ratio": round(ratio, 3), "loaded_polls": len(polls),
                   "healthcheck_ok": healthy, "new_scope_served_s": served_s, **derived,
                   "blackhole_connections": facts["blackhole_connections"],
                   "blackhole_connections_total": facts.get("blackhole_connections_total"),
                   "githost_connections": facts.get("githost_connections")}
        problems = Problems()
        if ratio < thresholds.min_loaded_success:
            problems.add("offline.loaded_scope_stalled",
                         f"an already-loaded scope answered {ok} of {len(polls)} policy requests "
                         f"({ratio:.0%}, need {thresholds.min_loaded_success:.0%}) while "
                         f"{derived['dead_remotes']} dead remotes hung; /healthcheck said 200 in "
                         f"{healthy} of {len(polls)} checks")
        if served_s is None:
            budget = derived.get("budget_how", derived["new_scope_budget_s"])
            problems.add("offline.new_scope_not_served",
                         f"a new healthy scope was not served within its budget of {budget}")
        if (untried := untried_dead(timeline)) is not None:
            if not problems:
                return untried
            problems.note(f"{untried.reason} (a stalled server may never reach them)")
        if served_s is None:
            return problems.verdict("", metrics)
        return problems.verdict(f"loaded scope served {ratio:.0%} of {len(polls)} requests; new scope served "
                                f"in {served_s:.1f} s (budget {derived['new_scope_budget_s']:g} s) with "
                                f"{derived['dead_remotes']} dead remotes, each connected at least once", metrics)


def untried_dead(timeline: Timeline) -> Verdict | None:
    """ERROR when a dead remote was never connected: the PASS would claim a load the server
    never faced (a server that tries one and skips the rest is not under the fault)."""
    dead = timeline.facts["derived"]["dead_remotes"]
    records = timeline.facts.get("blackhole_connection_times")
    if records is None:
        return not_exercised("no record of which dead remotes the blackhole saw: the load is unproven")
    if without_detail(records):
        return not_exercised(f"which of the {dead} dead remotes were connected is unknown: {OLD_LISTENER}")
    wanted = {dead_repo_name(i) for i in range(dead)}
    missing = sorted(wanted - repos_of(records))
    if missing:
        return not_exercised(f"only {dead - len(missing)} of {dead} dead remotes were ever connected "
                             f"({len(records)} blackhole connections; never: {', '.join(missing[:5])}"
                             f"{', ...' if len(missing) > 5 else ''}): the server never faced them all")
    return None
