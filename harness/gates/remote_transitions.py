"""Gate `remote-transitions`: an attached policy source's remote changes under the server, one
transition after another, and the server must follow each.

A source gate (harness.gates.sources): it drives the server only through its probe's
SourceControl verbs and the source's own (harness.servers.base.PolicySource), so the same
gate runs on every server whose adapter has them (OPAL on the local backend, Cerbos). In
order, on one source attached fresh:
1. `commit`: a new commit on top of the branch;
2. `force_push`: the last commit rewritten and force-pushed (the served head is no longer
   an ancestor: OPAL #99, "stops pulling after a force push");
3. the branch deleted on the host (`branch_deleted`, broken), then re-created with new
   content on a history of its own, a root commit (`branch_recreated`);
4. the repository removed from the host (`repo_removed`, broken: the bare repo renamed
   away), then restored with the history it had (`repo_restored`);
5. `commit_after_restore`: a new commit on the restored repo.

A transition counts when the server's answer carries the nonce of the content the harness
pushed (`served_within`): OPAL's nonce is the commit its bundle was built from, Cerbos's the
main policy's content (PolicySource.nonce_names). A server with a refresh call learns of
each change by it (the OPAL source calls it after every push, branch deletion, removal and
restore, as a git host's webhook would); a polling server at its next poll.

The budget for each transition is one poll budget from the server's own settings: poll
interval + operation timeout + slack (harness.gates.sources.poll_budget's sum). It is the
one that generalizes: a server told by a refresh call has no poll interval (OPAL:
`poll_interval_s` None, counted 0 — the refresh starts the fetch) and its git fetch timeout
bounds the fetch, which is exactly the former fetch-timeout budget (timeout + slack); a
polling server (Cerbos) may see the change only at its next poll, and that poll may sit
behind one blocked for a whole operation timeout. A server with no operation timeout (a
pre-fix OPAL tree) gets the harness's `fallback_timeout_s` in its place, and the reason says so.

While the remote is broken, every answer must carry the last good nonce and the server must
say it is healthy (a Watch over the window). The window is judged only once the server has
tried the broken remote: the git front (the source's remote, over smart HTTP) must have
taken a request for the source's repo while the fault was on, else nothing was tested
(ERROR `error.not_exercised`); a fault whose proof (the host has no branch head) did not
hold is ERROR `error.fault`. A failed fetch must leave nothing (a held lock, a half-updated
ref, a dropped clone) that stops the next sync: `branch_recreated` and
`commit_after_restore` are the first syncs after a broken remote. `repo_restored` brings
back the content served before the removal: it is served at once unless the server dropped
it meanwhile (which the broken window shows first).

The scenario stops at the first transition that is not served (its budget spent): the
later ones would only repeat it. Each transition not served is its own FAIL category,
`transitions.<name>_not_served`; a broken window that lost the last good content (another
nonce, no answer, or unhealthy) is `transitions.last_good_lost`; a transition not served
while the server answered with a nonce the harness never pushed to the source is
`transitions.wrong_content` (content of no commit of the source). The former OPAL-only check
"the bundle names the commit but its data is another commit's" is not made any more: the
seam's nonce names the commit, and the OPAL adapter vouches that the bundle of a commit is
that commit's tree (PolicySource.nonce_names = "commit").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.gates.base import Gate, GateContext
from harness.gates.proof import not_exercised, record_connections, repos_of
from harness.gates.settings import GateSettings
from harness.gates.sources import (
    Watch,
    answers,
    attach_and_serve,
    describe_answer,
    poll_budget,
    served_mark,
    served_within,
)
from harness.servers.base import Capability, PolicySource, ServerKnobs
from harness.timeline import Timeline
from harness.verdict import ERROR, Problems, Verdict, load_failure
from harness.waiting import poll_until

SOURCE = "transitions"
# transition -> what it is, for the reasons; in the order the scenario makes them
TRANSITIONS = {
    "commit": "a new commit",
    "force_push": "a force-pushed rewrite of the last commit",
    "branch_recreated": "the branch re-created with new content on a history of its own after it was deleted",
    "repo_restored": "the repository restored after it was removed",
    "commit_after_restore": "a new commit on the restored repository",
}
BROKEN = {"branch_deleted": "the branch deleted on the host", "repo_removed": "the repository removed from the host"}
# the first syncs after a broken remote: what a lock or state left by a failed fetch would stop
AFTER_BROKEN = {"branch_recreated": "branch_deleted", "commit_after_restore": "repo_removed"}


@dataclass
class Params(GateSettings):
    positive = ("serve_budget_s", "fallback_timeout_s", "broken_observe_s", "watch_interval_s")
    slack_s: float = 10.0
    serve_budget_s: float = 60.0  # the first load, before any transition
    # stands in for the operation timeout of a server that has none: the harness's own limit
    fallback_timeout_s: float = 20.0
    # how long the broken window is watched once the server has tried the broken remote (at
    # least two poll intervals of a polling server)
    broken_observe_s: float = 3.0
    watch_interval_s: float = 0.3


@dataclass
class Thresholds(GateSettings):
    """No tunable bound: every transition must be served, every broken window must keep
    the last good content."""


def transition_budget(knobs: ServerKnobs, p: Params) -> tuple[float, str]:
    """(seconds, how they were derived) for one transition to be served: poll interval (0
    without one: a refresh call starts the fetch) + operation timeout (or the harness's
    fallback, said so) + slack."""
    return poll_budget(knobs, p.slack_s, p.fallback_timeout_s)


def _short(nonce: str | None) -> str:
    """A commit nonce (OPAL) to 10 hex digits; a content nonce (Cerbos) whole: its head is a
    timestamp that two nonces share."""
    if not nonce:
        return "none"
    return nonce[:10] if len(nonce) == 40 and all(c in "0123456789abcdef" for c in nonce) else nonce


class RemoteTransitionsGate(Gate, id="remote-transitions", params=Params, thresholds=Thresholds,
                            title="commits, force-pushes, a re-created branch and a restored repo are followed",
                            requires=(Capability.SOURCE_CONTROL,)):

    # -- scenario ---------------------------------------------------------------------------
    def scenario(self, ctx: GateContext) -> None:
        p: Params = ctx.params
        tl = ctx.timeline
        budget, how = transition_budget(ctx.knobs, p)
        tl.fact("budget", {"seconds": budget, "how": how})
        source = attach_and_serve(ctx, SOURCE, p.serve_budget_s)
        if source is None:
            return
        tl.fact("nonce_names", source.nonce_names)
        pushed = [source.nonce]  # every nonce the harness gave the source, oldest first
        self._run(ctx, source, pushed, budget)

    def _run(self, ctx: GateContext, source: PolicySource, pushed: list[str], budget: float) -> None:
        if not self._followed(ctx, "commit", source.commit, pushed, budget):
            return
        if not self._followed(ctx, "force_push", source.force_push, pushed, budget):
            return
        recreated: list[str] = []
        self._while_broken(ctx, source, "branch_deleted", source.delete_branch,
                           lambda: recreated.append(source.recreate_branch()), budget)
        if not self._followed(ctx, "branch_recreated", lambda: recreated[0], pushed, budget):
            return
        restored: list[str] = []
        self._while_broken(ctx, source, "repo_removed", source.remove,
                           lambda: restored.append(source.restore()), budget)
        if not self._followed(ctx, "repo_restored", lambda: restored[0], pushed, budget):
            return
        self._followed(ctx, "commit_after_restore", source.commit, pushed, budget)

    def _followed(self, ctx: GateContext, name: str, change: Callable[[], str], pushed: list[str],
                  budget: float) -> bool:
        """The change made (or, for a heal, already made: its nonce), then asked until it is
        served; the transition recorded. False: not served within `budget`."""
        before = pushed[-1]
        nonce = change()
        if nonce not in pushed:
            pushed.append(nonce)
        seconds = served_within(ctx, nonce, budget, name)
        last = (served_mark(ctx.timeline, name) or {}).get("last") or {}
        ctx.timeline.record("transition", name=name, nonce=nonce, before=before,
                            served=last.get("nonce") if seconds is None else nonce,
                            answer=describe_answer(last) if last else "", foreign=(
                                seconds is None and last.get("nonce") is not None and last["nonce"] not in pushed),
                            budget_s=budget, seconds=None if seconds is None else round(seconds, 2))
        return seconds is not None

    def _while_broken(self, ctx: GateContext, source: PolicySource, name: str, start: Callable[[], None],
                      heal: Callable[[], None], budget: float) -> None:
        """The remote broken by `start` and watched: every answer recorded (a Watch labelled
        `name`) until the git front has taken a request for the source's repo and
        `broken_observe_s` (at least two poll intervals) more; then healed by `heal`."""
        p: Params = ctx.params
        tl = ctx.timeline
        front = ctx.stack.service("gitfront")
        before = front.accepted_connections()
        good = source.nonce
        started = tl.now()
        observe = max(p.broken_observe_s, 2 * (ctx.knobs.poll_interval_s or 0.0))
        requests: list[dict[str, Any]] = []

        def tried() -> bool:
            requests[:] = [r for r in record_connections(tl, front, before)
                           if source.name in repos_of([r]) and (r.get("accepted_t") or 0.0) >= started]
            return bool(requests)
        with ctx.fault(name, start=start, heal=heal, proof=lambda: source.remote_head() is None) as fault, \
                Watch(ctx, name, p.watch_interval_s):
            tried_s = poll_until(tried, budget, interval=0.3)
            if tried_s is not None:
                time.sleep(observe)
            tried()
            ended = tl.now()
        tl.record("broken", name=name, proof=fault.took_effect, last_good=good, started_t=round(started, 3),
                  ended_t=round(ended, 3), tried_s=None if tried_s is None else round(tried_s, 2),
                  requests=[{"n": r["n"], "accepted_t": r["accepted_t"]} for r in requests])

    # -- checker ----------------------------------------------------------------------------
    def check(self, timeline: Timeline, params: Params, thresholds: Thresholds) -> Verdict:
        if (failed := load_failure(timeline)) is not None:
            return failed
        budget = timeline.facts["budget"]
        steps = [r for r in timeline.samples if r["kind"] in ("transition", "broken")]
        if (error := _not_exercised(timeline, steps)) is not None:
            return error
        problems = Problems()
        for step in steps:
            if step["kind"] == "transition":
                _judge_transition(step, problems)
            else:
                _judge_broken(step, answers(timeline, step["name"]), problems)
        followed = {s["name"]: s["seconds"] for s in steps if s["kind"] == "transition"}
        metrics: dict[str, Any] = {
            "transitions_s": followed, "sync_budget_s": budget["seconds"], "budget_how": budget["how"],
            "slowest_transition_s": max((s for s in followed.values() if s is not None), default=None),
            "broken": {s["name"]: _window(s, answers(timeline, s["name"])) for s in steps if s["kind"] == "broken"}}
        if not problems and set(followed) != set(TRANSITIONS):
            return Verdict(ERROR, f"the scenario ended after {', '.join(followed) or 'no transition'}, "
                                  "with nothing wrong recorded", "error.no_data", metrics)
        return problems.verdict(
            f"all {len(TRANSITIONS)} transitions served, slowest in {metrics['slowest_transition_s']:.1f} s "
            f"(budget {budget['how']}); the last good content kept, healthy, while "
            f"{' and while '.join(BROKEN.values())}", metrics)


def _window(step: dict[str, Any], watched: list[dict[str, Any]]) -> dict[str, Any]:
    kept = sum(1 for a in watched if _kept(a, step["last_good"]))
    return {"polls": len(watched), "kept": kept, "requests": len(step["requests"]), "tried_s": step["tried_s"]}


def _kept(answer: dict[str, Any], good: str) -> bool:
    return answer.get("nonce") == good and bool(answer.get("healthy"))


def _not_exercised(timeline: Timeline, steps: list[dict[str, Any]]) -> Verdict | None:
    """An ERROR when a broken window did not test anything: the fault did not take effect,
    the server never tried the broken remote, or nothing was asked while it was broken."""
    for step in steps:
        if step["kind"] != "broken":
            continue
        what = BROKEN[step["name"]]
        if step["proof"] is False:
            return Verdict(ERROR, f"{what}, but the host still had a head for the branch: the fault did not take "
                                  "effect", "error.fault")
        if not step["requests"]:
            return not_exercised(f"{what}, and the git front took no request for the source's repo in the "
                                 f"{step['ended_t'] - step['started_t']:.1f} s window: keeping the last good "
                                 "content proves nothing")
        if not answers(timeline, step["name"]):
            return not_exercised(f"{what}, and no answer was taken while it was")
    return None


def _judge_transition(step: dict[str, Any], problems: Problems) -> None:
    name, what = step["name"], TRANSITIONS[step["name"]]
    if step["seconds"] is not None:
        return
    after = (f" — the first sync after {BROKEN[AFTER_BROKEN[name]]}: what the failed fetch left blocks it"
             if name in AFTER_BROKEN else "")
    if step.get("foreign"):
        problems.add("transitions.wrong_content",
                     f"after {what} ({_short(step['nonce'])}) the server served {_short(step['served'])}, a nonce "
                     f"the harness never pushed to the source{after}", budget_s=step["budget_s"])
        return
    kept = " (what it served before)" if step["served"] and step["served"] == step.get("before") else ""
    answer = f"served {_short(step['served'])}{kept}" if step["served"] else f"answered {step['answer'] or 'nothing'}"
    problems.add(f"transitions.{name}_not_served",
                 f"{what} ({_short(step['nonce'])}) was not served within {step['budget_s']:g} s: the server "
                 f"{answer}{after}", budget_s=step["budget_s"])


def _judge_broken(step: dict[str, Any], watched: list[dict[str, Any]], problems: Problems) -> None:
    others = [a for a in watched if not _kept(a, step["last_good"])]
    if others:
        problems.add("transitions.last_good_lost",
                     f"while {BROKEN[step['name']]}, {len(others)} of {len(watched)} answers were not the last good "
                     f"content {_short(step['last_good'])}, healthy: "
                     + ", ".join(describe_answer(a) for a in others[:5]), wrong=len(others), answers=len(watched))
