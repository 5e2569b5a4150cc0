"""Gate `checkout-tampered`: a file in the server's checkout changed behind its back (its
mode, then its content), each followed by a commit at the remote.

Passes when each commit is served within one poll budget (poll interval + operation
timeout + slack, from the server's own settings): a server that keeps a checkout of its
remote must follow the remote whatever happened to that checkout on disk.

A PASS claims each tamper took: the checkout must read dirty (`git status`) after it,
else ERROR `error.not_exercised`.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.gates.base import Gate, GateContext
from harness.gates.proof import not_exercised
from harness.gates.sources import (
    BudgetThresholds,
    SlackParams,
    attach_and_serve,
    control,
    record_budget,
    served_mark,
    served_within,
)
from harness.servers.base import Capability
from harness.timeline import Timeline
from harness.verdict import Problems, Verdict, load_failure

KINDS = ("mode", "content")


@dataclass
class Params(SlackParams):
    pass


@dataclass
class Thresholds(BudgetThresholds):
    pass


class CheckoutTamperedGate(Gate, id="checkout-tampered", params=Params, thresholds=Thresholds,
                           title="a checkout changed on disk does not stop the server following its remote",
                           requires=(Capability.SOURCE_CONTROL, Capability.KEPT_CHECKOUT)):

    def scenario(self, ctx: GateContext) -> None:
        p: Params = ctx.params
        tl = ctx.timeline
        budget = record_budget(ctx, p.slack_s)
        source = attach_and_serve(ctx, "checkout-tampered", budget)
        if source is None:
            return
        server = control(ctx)
        for kind in KINDS:
            with ctx.fault(f"checkout {kind} changed", start=lambda: None, heal=lambda: None):
                changed = server.tamper(kind)
                tl.mark("tampered", kind=kind, what=changed, checkout=dict(server.checkout()))
                nonce = source.commit()
                tl.mark("commit", kind=kind, head=source.head(), nonce=nonce)
                served_within(ctx, nonce, budget, f"after the {kind} change")

    def check(self, timeline: Timeline, params: Params, thresholds: Thresholds) -> Verdict:
        if (failed := load_failure(timeline)) is not None:
            return failed
        tampers = [e for e in timeline.events if e["name"] == "tampered"]
        if len(tampers) < len(KINDS) or not all((t.get("checkout") or {}).get("dirty") for t in tampers):
            clean = [t["kind"] for t in tampers if not (t.get("checkout") or {}).get("dirty")]
            return not_exercised(f"the checkout did not read dirty after the {', '.join(clean) or 'missing'} change: "
                                 "the tamper did not take")
        budget = timeline.facts["budget"]
        problems = Problems()
        seconds = {}
        for tamper in tampers:
            mark = served_mark(timeline, f"after the {tamper['kind']} change")
            seconds[tamper["kind"]] = (mark or {}).get("seconds")
            if mark is None or mark["name"] != "served":
                last = (mark or {}).get("last") or {}
                problems.add(f"tampered.{tamper['kind']}_not_followed",
                             f"after {tamper['what']} in the checkout, the next commit was not served within "
                             f"{budget['how']} (it served {last.get('nonce')})", budget_s=budget["seconds"])
        metrics = {f"{kind}_served_s": value for kind, value in seconds.items()}
        return problems.verdict("after each change in the checkout the next commit was served: "
                                + ", ".join(f"{kind} in {value} s" for kind, value in seconds.items())
                                + f" (budget {budget['how']})", metrics)
