"""Gate `bad-policy`: a commit with a policy file that does not parse (named to sort before
every valid file) beside a valid change of the nonce's policy, then a valid commit to
another policy file, then the fix (the bad file removed, nothing else).

Passes when, while the bad file is at the head, the server keeps answering with good
content (the last good policy, or the valid change it applied beside the bad file — never
an error), and after the fix it serves the valid change made beside the bad file within one
poll budget (poll interval + operation timeout + slack, from the server's own settings):
every valid change is served once the tree parses. The commit elsewhere shows that a later
commit does not bring the lost change back either; its own content is not read.

A PASS claims the bad file was at the head while the server was asked: at least one answer
must have been taken in the bad window, else ERROR `error.not_exercised`.

What a served nonce vouches for depends on the server (PolicySource.nonce_names):
- `content` (Cerbos): the nonce lives in one policy. Serving the nonce committed beside the
  bad file means the server applied that valid change and dropped the bad file from what it
  evaluates: good content. The fix is followed when that nonce is served after the fix.
- `commit` (OPAL): the nonce is the commit the served bundle was built from, and OPAL serves
  rego bundles without compiling them. A bundle whose hash is a commit with the bad file at
  its head carries the unparsable module to every client: that is a bad policy served, not
  the last good one kept, so only the last good commit counts as good while the file is bad
  (FAIL `bad_policy.not_kept` otherwise). The adapter cannot tell a client-side rejection
  from here, and does not pretend to. The fix is followed when the fix commit is served (its
  tree holds the valid change made beside the bad file).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from harness.gates.base import Gate, GateContext
from harness.gates.proof import not_exercised
from harness.gates.sources import (
    BudgetThresholds,
    SlackParams,
    Watch,
    answers,
    attach_and_serve,
    control,
    describe_answer,
    record_budget,
    served_mark,
    served_within,
)
from harness.servers.base import Capability
from harness.timeline import Timeline
from harness.verdict import Problems, Verdict, load_failure

BAD = "bad"  # the window while the bad file is at the head


@dataclass
class Params(SlackParams):
    positive = ("polls_while_bad",)
    polls_while_bad: int = 3  # poll intervals (at least one operation timeout) watched while the file is bad
    bad_name: str = "aaa"  # sorts before every valid policy file
    other_name: str = "zzz_elsewhere"  # the valid commit elsewhere


@dataclass
class Thresholds(BudgetThresholds):
    pass


class BadPolicyGate(Gate, id="bad-policy", params=Params, thresholds=Thresholds,
                    title="a policy file that does not parse keeps the last good policy, and the fix is followed",
                    requires=(Capability.SOURCE_CONTROL,)):

    def scenario(self, ctx: GateContext) -> None:
        p: Params = ctx.params
        tl = ctx.timeline
        budget = record_budget(ctx, p.slack_s)
        source = attach_and_serve(ctx, "bad-policy", budget)
        if source is None:
            return
        tl.fact("good_nonce", source.nonce)
        tl.fact("nonce_names", source.nonce_names)
        bad_file, content = source.bad_file(p.bad_name)
        tl.fact("bad_file", bad_file)
        window = max(budget, (ctx.knobs.poll_interval_s or 1.0) * p.polls_while_bad)
        with ctx.fault("bad file at the head", start=lambda: None, heal=lambda: None), Watch(ctx, BAD):
            tl.fact("beside_bad_nonce", source.commit_files({bad_file: content}, f"harness: {bad_file} does not parse"))
            tl.mark("bad_commit", head=source.head())
            time.sleep(window / 2)
            other, other_content = source.other_file(p.other_name)
            tl.fact("elsewhere_nonce", source.commit_files({other: other_content}, f"harness: {other} changed",
                                                           new_nonce=False))
            tl.mark("elsewhere_commit", head=source.head())
            time.sleep(window / 2)
        fixed = source.commit_files({bad_file: None}, f"harness: {bad_file} removed", new_nonce=False)
        tl.fact("fix_nonce", fixed)
        tl.mark("fix_commit", head=source.head())
        served_within(ctx, fixed, budget, "after the fix")
        tl.fact("checkout", dict(control(ctx).checkout()))

    def check(self, timeline: Timeline, params: Params, thresholds: Thresholds) -> Verdict:
        if (failed := load_failure(timeline)) is not None:
            return failed
        facts = timeline.facts
        while_bad = answers(timeline, BAD)
        if not while_bad:
            return not_exercised("no answer was taken while the bad file was at the head")
        by_commit = facts.get("nonce_names", "content") == "commit"
        # a commit nonce names the whole tree: every commit with the bad file at its head is bad content
        bad_commits = {facts["beside_bad_nonce"], facts.get("elsewhere_nonce")} if by_commit else set()
        good = {facts["good_nonce"]} if by_commit else {facts["good_nonce"], facts["beside_bad_nonce"]}
        wrong = [a for a in while_bad if a.get("nonce") not in good or not a.get("healthy")]
        after = served_mark(timeline, "after the fix")
        problems = Problems()
        if wrong:
            carries = (f" (a commit with {facts['bad_file']} in its tree: the unparsable file served)"
                       if wrong[0].get("nonce") in bad_commits else "")
            problems.add("bad_policy.not_kept",
                         f"{len(wrong)} of {len(while_bad)} answers while {facts['bad_file']} was at the head were not "
                         f"good content, e.g. {describe_answer(wrong[0])}{carries}", wrong=len(wrong),
                         answers=len(while_bad))
        if after is None or after["name"] != "served":
            last = (after or {}).get("last") or {}
            kept = " (the last good policy before the bad commit)" if last.get("nonce") == facts["good_nonce"] else ""
            expected = (f"the fix commit ({facts.get('fix_nonce')}), which holds the valid change committed beside it,"
                        if by_commit else f"the valid change committed beside it ({facts['beside_bad_nonce']})")
            problems.add("bad_policy.fix_not_followed",
                         f"after {facts['bad_file']} was removed, {expected} was not served within "
                         f"{facts['budget']['how']}, nor after a commit elsewhere; it served {last.get('nonce')}{kept}",
                         budget_s=facts["budget"]["seconds"])
        applied = sum(1 for a in while_bad if a.get("nonce") == facts["beside_bad_nonce"])
        metrics = {"answers_while_bad": len(while_bad), "bad_answers": len(wrong),
                   "fix_served_s": (after or {}).get("seconds"), "change_applied_while_bad": applied}
        return problems.verdict(
            f"kept good content in {len(while_bad)} answers while {facts['bad_file']} was at the head "
            f"({'applied' if applied else 'did not apply'} the valid change beside it); the fix was followed in "
            f"{(after or {}).get('seconds')} s (budget {facts['budget']['how']})", metrics)
