"""Gate `remote-transitions`: a loaded scope's remote changes under the server, one
transition after another, and the server must follow each.

In order, on one scope (policy-0050 by default, a repo no other gate changes):
1. `commit`: a new commit on top of the branch;
2. `force_push`: the last commit rewritten and force-pushed (the served head is no longer
   an ancestor: OPAL #99, "stops pulling after a force push");
3. the branch deleted on the host (`branch_deleted`, broken), then re-created with new
   content on a history of its own (`branch_recreated`);
4. the repository removed from the host (`repo_removed`, broken), then restored
   (`repo_restored`: the head it had);
5. `commit_after_restore`: a new commit on the restored repo.

After each transition the harness asks for a refresh and counts the transition only when
GET policy serves a bundle built from the remote's current commit (its `hash`) whose data
carries the nonce the harness committed — the content, not just a 200. The budget is the
server's own git fetch timeout plus slack (a fallback, said so, for a server without one).
While the remote is broken the scope must keep serving the last good commit and content:
the window is judged only once the git host has seen the server try the broken remote
(else nothing was tested, an ERROR). A failed fetch must leave nothing (a held lock, a
half-updated ref, a dropped clone) that stops the next sync: `branch_recreated` and
`commit_after_restore` are the first syncs after a broken remote.

The scenario stops at the first transition that is not served (its budget spent): the
later ones would only repeat it. Each transition not served is its own FAIL category,
`transitions.<name>_not_served`; a broken window that lost the last good content is
`transitions.last_good_lost`; a served commit with other content `transitions.wrong_content`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from harness.gates.base import Fault, Gate, GateContext, ServerKnobs, fetch_timeout_budget
from harness.gates.settings import GateSettings
from harness.gitops import GitOpError, WorkingClones, push_base_url
from harness.seed import policy_repo_name
from harness.servers.base import Capability
from harness.servers.opal import PolicyResult
from harness.timeline import Timeline
from harness.verdict import ERROR, Problems, Verdict, load_failure
from harness.waiting import poll_until

SCOPE = "transitions"
# transition -> what it is, for the reasons; in the order the scenario makes them
TRANSITIONS = {
    "commit": "a new commit",
    "force_push": "a force-pushed rewrite of the last commit",
    "branch_recreated": "the branch re-created with new content after it was deleted",
    "repo_restored": "the repository restored after it was removed",
    "commit_after_restore": "a new commit on the restored repository",
}
BROKEN = {"branch_deleted": "the branch deleted on the host", "repo_removed": "the repository removed from the host"}
# the first syncs after a broken remote: what a lock or state left by a failed fetch would stop
AFTER_BROKEN = {"branch_recreated": "branch_deleted", "commit_after_restore": "repo_removed"}
REMOVED_SUFFIX = "-removed-by-harness"


@dataclass
class Params(GateSettings):
    positive = ("serve_budget_s", "fallback_budget_s", "broken_observe_s", "git_timeout_s")
    repo_index: int = 50  # policy-0050: no other gate pushes to it or reads its content
    slack_s: float = 10.0
    serve_budget_s: float = 60.0  # the first load, before any transition
    # For a server without a git fetch timeout: nothing of its own bounds a fetch.
    fallback_budget_s: float = 30.0
    # how long the scope is polled while the remote is broken, once the server has tried it
    broken_observe_s: float = 3.0
    git_timeout_s: float = 30.0  # each git operation of the harness


@dataclass
class Thresholds(GateSettings):
    """No tunable bound: every transition must be served, every broken window must keep
    the last good content."""


def sync_budget(knobs: ServerKnobs, p: Params) -> tuple[float, str]:
    """(seconds, how they were derived) for one transition to be served after a refresh."""
    return fetch_timeout_budget(knobs, p.slack_s, p.fallback_budget_s)


def _short(sha: str | None) -> str:
    return sha[:10] if sha else "none"


class RemoteTransitionsGate(Gate, id="remote-transitions", params=Params, thresholds=Thresholds,
                            title="commits, force-pushes, a re-created branch and a restored repo are followed",
                            requires=(Capability.RUNTIME_SOURCES, Capability.REFRESH_CALL)):

    # -- scenario ---------------------------------------------------------------------------
    def scenario(self, ctx: GateContext) -> None:
        p: Params = ctx.params
        stack, tl = ctx.stack, ctx.timeline
        stack.ensure_repos(p.repo_index + 1)
        repo = policy_repo_name(p.repo_index)
        clones = WorkingClones(stack.run_dir / "gitops-transitions", push_base_url(stack.published("githost").url),
                               timeout_s=p.git_timeout_s)
        budget, how = sync_budget(ctx.knobs, p)
        tl.fact("derived", {"repo": repo, "sync_budget_s": budget, "budget_how": how})
        ctx.client.put_scope(SCOPE, stack.repo_url(repo))
        if ctx.served_within(SCOPE, p.serve_budget_s, "initial load") is None:
            tl.fact("load_failure", f"the scope was not served within {p.serve_budget_s:g} s")
            return
        ctx.observe("loaded")  # caches, clone dirs and the worker, for the plot: one per step
        try:
            self._run(ctx, clones, repo, budget)
        except GitOpError as exc:
            tl.fact("load_failure", f"changing the remote failed: {exc}")

    def _run(self, ctx: GateContext, clones: WorkingClones, repo: str, budget: float) -> None:
        stack = ctx.stack
        if not self._followed(ctx, "commit", clones.push_new_commit(repo), clones.nonces[repo], budget):
            return
        if not self._followed(ctx, "force_push", clones.force_push_rewrite(repo), clones.nonces[repo], budget):
            return
        recreated: list[str] = []
        good = (clones.pushed[repo][0], clones.nonces[repo])  # what the force-push made the remote
        with ctx.fault("branch_deleted", start=lambda: clones.delete_branch(repo),
                       heal=lambda: recreated.append(clones.recreate_branch(repo)),
                       proof=lambda: _host_head(clones, repo) is None) as fault:
            self._while_broken(ctx, fault, budget, good)
        if not self._followed(ctx, "branch_recreated", recreated[0], clones.nonces[repo], budget):
            return
        good = (recreated[0], clones.nonces[repo])
        removed = f"{repo}{REMOVED_SUFFIX}"
        with ctx.fault("repo_removed", start=lambda: stack.rename_repo(repo, removed),
                       heal=lambda: stack.rename_repo(removed, repo),
                       proof=lambda: _host_head(clones, repo) is None) as fault:
            self._while_broken(ctx, fault, budget, good)
        if not self._followed(ctx, "repo_restored", recreated[0], clones.nonces[repo], budget):
            return
        self._followed(ctx, "commit_after_restore", clones.push_new_commit(repo), clones.nonces[repo], budget)

    def _followed(self, ctx: GateContext, name: str, sha: str, nonce: str, budget: float) -> bool:
        """Refresh, then poll until the served bundle is `sha`; record the transition and
        whether its data is the content committed with `nonce`. False: not served in budget."""
        before = ctx.client.policy_hash(SCOPE, timeout=5.0).hash
        refresh = ctx.client.refresh(SCOPE)
        last: list[PolicyResult] = []
        started = time.monotonic()

        def served() -> bool:
            last[:] = [ctx.client.policy_hash(SCOPE, timeout=5.0)]
            return last[0].hash == sha
        ok = poll_until(served, budget, interval=0.3) is not None
        answer = last[0]
        ctx.timeline.record("transition", name=name, pushed=sha, before=before, served=answer.hash,
                            status=answer.status, error=answer.error, refresh=refresh,
                            content_ok=_carries(answer, nonce), budget_s=budget,
                            seconds=round(time.monotonic() - started, 2) if ok else None)
        ctx.observe(f"after {name}")
        return ok

    def _while_broken(self, ctx: GateContext, fault: Fault, budget: float, good: tuple[str, str]) -> None:
        """Refresh while the remote is broken, wait for the server to try it, then poll:
        every answer must be the last good commit and content (`good`: its SHA and nonce)."""
        p: Params = ctx.params
        good_sha, good_nonce = good
        githost = ctx.stack.service("githost")
        before = githost.accepted_connections()
        refresh = ctx.client.refresh(SCOPE)
        answers: list[PolicyResult] = []

        def tried() -> bool:
            answers.append(ctx.client.policy_hash(SCOPE, timeout=5.0))
            return githost.accepted_connections() > before
        tried_s = poll_until(tried, budget, interval=0.3)
        deadline = time.monotonic() + p.broken_observe_s
        while tried_s is not None and time.monotonic() < deadline:
            answers.append(ctx.client.policy_hash(SCOPE, timeout=5.0))
            time.sleep(0.3)

        def last_good(a: PolicyResult) -> bool:
            return a.hash == good_sha and _carries(a, good_nonce)
        others = [f"{a.status if a.status is not None else a.error} {_short(a.hash)}".strip()
                  for a in answers if not last_good(a)]
        ctx.timeline.record("broken", name=fault.name, proof=fault.took_effect, refresh=refresh,
                            last_good=good_sha, tried_s=None if tried_s is None else round(tried_s, 2),
                            connections=githost.accepted_connections() - before, polls=len(answers),
                            kept=len(answers) - len(others), others=others[:5])

    # -- checker ----------------------------------------------------------------------------
    def check(self, timeline: Timeline, params: Params, thresholds: Thresholds) -> Verdict:
        if (failed := load_failure(timeline)) is not None:
            return failed
        derived = timeline.facts["derived"]
        steps = [r for r in timeline.samples if r["kind"] in ("transition", "broken")]
        if (error := _not_exercised(steps)) is not None:
            return error
        problems = Problems()
        for step in steps:
            (_judge_transition if step["kind"] == "transition" else _judge_broken)(step, problems)
        followed = {s["name"]: s["seconds"] for s in steps if s["kind"] == "transition"}
        metrics: dict[str, Any] = {
            "transitions_s": followed, "sync_budget_s": derived["sync_budget_s"], "budget_how": derived["budget_how"],
            "slowest_transition_s": max((s for s in followed.values() if s is not None), default=None),
            "broken": {s["name"]: {k: s[k] for k in ("polls", "kept", "connections", "tried_s")}
                       for s in steps if s["kind"] == "broken"}}
        if not problems and set(followed) != set(TRANSITIONS):
            return Verdict(ERROR, f"the scenario ended after {', '.join(followed) or 'no transition'}, "
                                  "with nothing wrong recorded", "error.no_data", metrics)
        return problems.verdict(
            f"all {len(TRANSITIONS)} transitions served with their content, slowest in "
            f"{metrics['slowest_transition_s']:.1f} s (budget {derived['budget_how']}); the last good content "
            f"kept while {' and while '.join(BROKEN.values())}", metrics)


def _not_exercised(steps: list[dict[str, Any]]) -> Verdict | None:
    """An ERROR when a broken window did not test anything: the fault did not take effect,
    or the server never tried the broken remote."""
    for step in steps:
        if step["kind"] != "broken":
            continue
        what = BROKEN[step["name"]]
        if step["proof"] is False:
            return Verdict(ERROR, f"{what}, but the host still answered for the branch: the fault did not take "
                                  "effect", "error.fault")
        if step["tried_s"] is None:
            return Verdict(ERROR, f"{what}, and the server never tried the remote after the refresh "
                                  f"(answered {step['refresh']}): keeping the last good content proves nothing",
                           "error.not_exercised")
    return None


def _judge_transition(step: dict[str, Any], problems: Problems) -> None:
    name, what = step["name"], TRANSITIONS[step["name"]]
    if step["seconds"] is None:
        if step["served"]:
            kept = " (what it served before)" if step["served"] == step.get("before") else ""
            answer = f"served {_short(step['served'])}{kept}"
        else:
            answer = f"answered {step['status'] if step['status'] is not None else step['error']}"
        after = (f" — the first sync after {BROKEN[AFTER_BROKEN[name]]}: what the failed fetch left blocks it"
                 if name in AFTER_BROKEN else "")
        problems.add(f"transitions.{name}_not_served",
                     f"{what} ({_short(step['pushed'])}) was not served within {step['budget_s']:g} s of the "
                     f"refresh (answered {step['refresh']}): the scope {answer}{after}")
    elif not step["content_ok"]:
        problems.add("transitions.wrong_content", f"after {what} the served bundle named commit "
                                                  f"{_short(step['served'])} but its data is not that commit's")


def _judge_broken(step: dict[str, Any], problems: Problems) -> None:
    if step["kept"] < step["polls"]:
        problems.add("transitions.last_good_lost",
                     f"while {BROKEN[step['name']]}, {step['polls'] - step['kept']} of {step['polls']} answers were "
                     f"not the last good commit {_short(step['last_good'])} with its content: "
                     + ", ".join(step["others"]))


def _host_head(clones: WorkingClones, repo: str) -> str | None:
    """The host's branch head, or None when the branch or the repository is gone."""
    try:
        return clones.head(repo)
    except GitOpError:
        return None


def _carries(answer: PolicyResult, nonce: str) -> bool:
    return any(nonce in data for data in answer.data)

