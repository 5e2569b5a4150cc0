"""Gate `offline-remote`: the remote hangs at run time (the git front accepts every git
request and never answers) for longer than the server's operation timeout, then heals, and
a commit follows.

Passes when, while the remote hangs, every answer is healthy and carries the last good
policy's nonce, and the commit made right after the heal is served within one poll budget
(poll interval + operation timeout + slack, from the server's own settings). The front keeps
a request that was stuck when the remote healed stuck until the client gives up (a healed
partition does not rescue a connection already in it; harness/gitfront.py), so the claim
"served within the budget after the heal" rests on the server's own operation timeout. A
server with no operation timeout gets the harness's `fallback_timeout_s` in its place, for
the hang's length and the budget, and the reason says so.

A PASS claims the server faced the hung remote: the git front must have taken at least one
request for the source's repo while it hung (every such request is held unanswered), else
ERROR `error.not_exercised`.

A server that does not poll its remote (OPAL) is asked to fetch it every `nudge_every_s`
while it hangs (its refresh call, as a webhook's retry would make it: harness.gates.sources.
Nudger); after the heal the commit's own push tells it, as the git host's webhook does.

Controls: Cerbos 0.51.0 and 0.55.0 (git driver) and CERBOS_STORE=disk-sync PASS. The FAIL
control is CERBOS_STORE=disk-sync-untimed (harness/servers/cerbos/disk_sync.py): the same
fetch-and-reset loop with no timeout on its git commands, so its fetch stuck in the hang
stays stuck after the heal and the commit is never served — what a client without an
operation timeout does. Cerbos itself cannot show it: `storage.git.operationTimeout=0s` is
not "no timeout" but a deadline already passed (it never boots: `context deadline
exceeded` on the first clone), and a large value is a large budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from harness.gates.base import Gate, GateContext
from harness.gates.proof import not_exercised, open_at, record_connections
from harness.gates.settings import GateSettings
from harness.gates.sources import (
    Nudger,
    Watch,
    answers,
    attach_and_serve,
    describe_answer,
    operation_timeout,
    poll_budget,
    served_mark,
    served_within,
)
from harness.gitfront import set_mode
from harness.servers.base import Capability, ServerKnobs
from harness.timeline import Timeline
from harness.verdict import Problems, Verdict, load_failure

SOURCE = "offline-remote"
HANG = "hang"  # the window while the remote hangs
HANG_ON, HEAL = "hang_on", "heal"  # marks: the front hangs (its mode set) / the heal is about to be sent


@dataclass
class Params(GateSettings):
    positive = ("hang_timeouts", "fallback_timeout_s", "watch_interval_s", "nudge_every_s")
    slack_s: float = 5.0
    # the hang lasts operation timeout × hang_timeouts + one poll interval: longer than a poll
    # blocked for a whole timeout, so at least one poll times out and another is stuck at the heal
    hang_timeouts: float = 1.5
    # stands in for the operation timeout of a server that has none (the hang's length and the
    # budget after the heal): the harness's own limit, not one the server promises
    fallback_timeout_s: float = 10.0
    watch_interval_s: float = 0.5
    # a server that does not poll (OPAL) is asked to fetch this often while the remote hangs
    nudge_every_s: float = 2.0


@dataclass
class Thresholds(GateSettings):
    pass  # judged against the budget derived from the server's settings


def offline_budget(knobs: ServerKnobs, p: Params) -> tuple[float, float, str]:
    """(hang seconds, budget seconds, how the budget was derived) from the server's knobs."""
    timeout, _ = operation_timeout(knobs, p.fallback_timeout_s)
    budget, how = poll_budget(knobs, p.slack_s, p.fallback_timeout_s)
    return timeout * p.hang_timeouts + (knobs.poll_interval_s or 0.0), budget, how


class OfflineRemoteGate(Gate, id="offline-remote", params=Params, thresholds=Thresholds,
                        title="a remote that hangs at run time keeps the last good policy, and the next commit "
                              "is served after the heal",
                        requires=(Capability.SOURCE_CONTROL,)):

    def scenario(self, ctx: GateContext) -> None:
        p: Params = ctx.params
        tl = ctx.timeline
        hang_s, budget, how = offline_budget(ctx.knobs, p)
        tl.fact("budget", {"seconds": budget, "how": how})
        tl.fact("hang_s", hang_s)
        source = attach_and_serve(ctx, SOURCE, budget)
        if source is None:
            return
        tl.fact("good_nonce", source.nonce)
        front, front_url = ctx.stack.service("gitfront"), ctx.stack.published("gitfront").url
        before = front.accepted_connections()

        def hang() -> None:
            set_mode(front_url, "hang")
            tl.mark(HANG_ON)  # every request accepted from here until HEAL is held

        def heal() -> None:
            tl.mark(HEAL)
            set_mode(front_url, "ok")

        with ctx.fault("remote hangs", start=hang, heal=heal), Watch(ctx, HANG, p.watch_interval_s), \
                Nudger(ctx, HANG, p.nudge_every_s):
            time.sleep(hang_s)
        nonce = source.commit()
        tl.mark("commit", head=source.head(), nonce=nonce)
        served_within(ctx, nonce, budget, "after the heal")
        record_connections(tl, front, before, key="front_requests")

    def check(self, timeline: Timeline, params: Params, thresholds: Thresholds) -> Verdict:
        if (failed := load_failure(timeline)) is not None:
            return failed
        facts = timeline.facts
        held = held_requests(timeline)
        if not held:
            return not_exercised(f"the git front took no request for {SOURCE} while it hung: the server never "
                                 "faced the hung remote")
        during = answers(timeline, HANG)
        if not during:
            return not_exercised("no answer was taken while the remote hung")
        heal_t = _mark_t(timeline, HEAL)
        stuck = open_at(held, heal_t) if heal_t is not None else []
        wrong = [a for a in during if a.get("nonce") != facts["good_nonce"] or not a.get("healthy")]
        after = served_mark(timeline, "after the heal")
        budget = facts["budget"]
        problems = Problems()
        if wrong:
            problems.add("offline.not_kept",
                         f"{len(wrong)} of {len(during)} answers while the remote hung were not the last good "
                         f"policy ({facts['good_nonce']}), e.g. {describe_answer(wrong[0])}",
                         wrong=len(wrong), answers=len(during))
        if after is None or after["name"] != "served":
            last = (after or {}).get("last") or {}
            problems.add("offline.not_followed",
                         f"the commit made after the remote healed was not served within {budget['how']}; it served "
                         f"{last.get('nonce')}" + (f" ({len(stuck)} of its requests were still held at the heal)"
                                                   if stuck else ""),
                         budget_s=budget["seconds"], held_at_heal=len(stuck))
        metrics: dict[str, Any] = {
            "answers_during_hang": len(during), "wrong_answers": len(wrong), "requests_held": len(held),
            "held_at_heal": len(stuck), "longest_held_s": _longest_held(held, timeline),
            "served_after_heal_s": (after or {}).get("seconds"), "hang_s": facts.get("hang_s")}
        return problems.verdict(
            f"kept the last good policy in {len(during)} answers while the remote hung {facts['hang_s']:g} s "
            f"({len(held)} requests held, {len(stuck)} still held at the heal); the next commit was served "
            f"{metrics['served_after_heal_s']} s after the heal (budget {budget['how']})", metrics)


def held_requests(timeline: Timeline) -> list[dict[str, Any]]:
    """The source's requests the git front accepted while it hung (each was held unanswered)."""
    start, end = _mark_t(timeline, HANG_ON), _mark_t(timeline, HEAL)
    if start is None or end is None:
        return []
    return [r for r in timeline.facts.get("front_requests", [])
            if (r.get("repo") or "").strip("/").removesuffix(".git") == SOURCE
            and r.get("accepted_t") is not None and start <= r["accepted_t"] <= end]


def _mark_t(timeline: Timeline, name: str) -> float | None:
    event = timeline.event(name)
    return None if event is None else float(event["t"])


def _longest_held(held: list[dict[str, Any]], timeline: Timeline) -> float | None:
    """Seconds the longest-held request was held (to its close, or to the end of the record
    when it was still held)."""
    end = max([e["t"] for e in timeline.events] + [0.0])
    spans = [(r["closed_t"] if r.get("closed_t") is not None else end) - r["accepted_t"] for r in held]
    return round(max(spans), 1) if spans else None
