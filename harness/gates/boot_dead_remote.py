"""Gate `boot-dead-remote`: the server restarted while its remote hangs (the git front holds
every request unanswered), with its checkout of the last good content kept.

Passes when the restarted server is healthy and serves the last good content within one
operation timeout + slack (from the server's own settings): a server that has its policies
on disk must not need the remote to boot.

A PASS claims the boot faced the dead remote: the git front must have taken a request for
the source's repo between the launch and the end of the boot, else ERROR
`error.not_exercised` — a server that never asks its remote at boot would pass without
facing it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from harness.gates.base import Gate, GateContext
from harness.gates.proof import not_exercised, record_connections, repos_of
from harness.gates.sources import (
    BudgetThresholds,
    SlackParams,
    attach_and_serve,
    control,
    poll_budget,
    served_mark,
    served_within,
)
from harness.gitfront import set_mode
from harness.servers.base import Capability
from harness.timeline import Timeline
from harness.verdict import Problems, Verdict, load_failure

SOURCE = "boot-dead-remote"


@dataclass
class Params(SlackParams):
    pass


@dataclass
class Thresholds(BudgetThresholds):
    pass


class BootDeadRemoteGate(Gate, id="boot-dead-remote", params=Params, thresholds=Thresholds,
                         title="a restart while the remote hangs serves the last good policy from the checkout",
                         requires=(Capability.SOURCE_CONTROL, Capability.KEPT_CHECKOUT)):

    def scenario(self, ctx: GateContext) -> None:
        p: Params = ctx.params
        tl = ctx.timeline
        attach_budget, _ = poll_budget(ctx.knobs, p.slack_s)
        source = attach_and_serve(ctx, SOURCE, attach_budget)
        if source is None:
            return
        timeout = ctx.knobs.git_timeout_s or 0.0
        budget = timeout + p.slack_s
        tl.fact("budget", {"seconds": budget, "how": f"{budget:g} s (operation timeout {timeout:g} s + slack "
                                                     f"{p.slack_s:g} s)"})
        tl.fact("last_good_nonce", source.nonce)
        server, front = control(ctx), ctx.stack.service("gitfront")
        front_url = ctx.stack.published("gitfront").url
        with ctx.fault("remote hangs", start=lambda: set_mode(front_url, "hang"),
                       heal=lambda: set_mode(front_url, "ok")):
            before = front.accepted_connections()
            tl.mark("server_launch")
            launched = time.monotonic()
            server.attach(source, fresh=False, wait_healthy=False)  # the checkout kept
            served_within(ctx, source.nonce, budget, "boot")
            tl.fact("boot_s", round(time.monotonic() - launched, 2))
            record_connections(tl, front, before, key="front_requests")
            tl.fact("exit_code", _exit_code(ctx))

    def check(self, timeline: Timeline, params: Params, thresholds: Thresholds) -> Verdict:
        if (failed := load_failure(timeline)) is not None:
            return failed
        facts = timeline.facts
        if SOURCE not in repos_of(facts.get("front_requests", [])):
            return not_exercised(f"the boot never asked the hung remote for {SOURCE}: nothing faced it")
        boot = served_mark(timeline, "boot")
        budget = facts["budget"]
        problems = Problems()
        if boot is None or boot["name"] != "served":
            last = (boot or {}).get("last") or {}
            exited = facts.get("exit_code")
            problems.add("boot_dead.not_serving",
                         f"restarted with its checkout kept while the remote hung, it did not serve the last good "
                         f"policy within {budget['how']}: "
                         + (f"it exited with code {exited}" if exited is not None else
                            f"it answered {last.get('status')} ({last.get('error') or last.get('nonce')})"),
                         exit_code=exited, budget_s=budget["seconds"])
        metrics = {"served_s": (boot or {}).get("seconds"), "front_requests": len(facts.get("front_requests", []))}
        return problems.verdict(f"served the last good policy {metrics['served_s']} s after a restart against a hung "
                                f"remote (budget {budget['how']}; {metrics['front_requests']} requests held)", metrics)


def _exit_code(ctx: GateContext) -> int | None:
    """The server's exit code if it exited (a boot that gave up), else None."""
    process = getattr(ctx.stack.service("server"), "process", None)
    if process is None or process.alive():
        return None
    return process.exit_code()
