"""remote-transitions' checker and budget on synthetic timelines (the real-server proof,
both ways, is the self-test: 0.9.6 and 0.9.9 pass, a fast-forward-only 0.9.9 fails)."""

from harness.gates.base import ServerKnobs
from harness.gates.remote_transitions import TRANSITIONS, Params, RemoteTransitionsGate, Thresholds, sync_budget
from harness.timeline import Timeline


def _timeline(fail_at=None, content_ok=True, kept=11, tried_s=0.1, proof=True):
    """A recording of the whole scenario; `fail_at`: the transition not served (and the last)."""
    tl = Timeline("remote-transitions")
    tl.fact("derived", {"repo": "policy-0050", "sync_budget_s": 20.0, "budget_how": "20 s (10 s + 10 s)"})
    broken_before = {"branch_recreated": "branch_deleted", "repo_restored": "repo_removed"}
    for i, name in enumerate(TRANSITIONS):
        if name in broken_before:
            tl.record("broken", name=broken_before[name], proof=proof, refresh=200, last_good="a" * 40,
                      tried_s=tried_s, connections=1 if tried_s is not None else 0, polls=11, kept=kept,
                      others=["500"] * (11 - kept))
        failed = name == fail_at
        tl.record("transition", name=name, pushed=f"{i:040d}", before=f"{i - 1:040d}",
                  served=f"{i - 1:040d}" if failed else f"{i:040d}", status=200, error="", refresh=200,
                  content_ok=content_ok, seconds=None if failed else 0.3, budget_s=20.0)
        if failed:
            break
    return tl


def check(tl):
    return RemoteTransitionsGate().check(tl, Params(), Thresholds())


def test_every_transition_served_with_its_content_passes():
    verdict = check(_timeline())
    assert verdict.verdict == "pass", verdict.reason
    assert verdict.metrics["slowest_transition_s"] == 0.3
    assert verdict.metrics["broken"]["repo_removed"]["kept"] == 11


def test_a_rewrite_not_followed_is_its_own_category_and_says_what_was_served():
    verdict = check(_timeline(fail_at="force_push"))
    assert (verdict.verdict, verdict.category) == ("fail", "transitions.force_push_not_served")
    assert "what it served before" in verdict.reason and "20 s" in verdict.reason


def test_the_first_sync_after_a_broken_remote_names_what_blocks_it():
    verdict = check(_timeline(fail_at="commit_after_restore"))
    assert verdict.category == "transitions.commit_after_restore_not_served"
    assert "the first sync after the repository removed from the host" in verdict.reason


def test_losing_the_last_good_content_while_the_remote_is_broken_fails():
    verdict = check(_timeline(kept=4))
    assert (verdict.verdict, verdict.category) == ("fail", "transitions.last_good_lost")
    assert "7 of 11 answers" in verdict.reason and "500" in verdict.reason


def test_the_right_commit_with_other_content_fails():
    verdict = check(_timeline(content_ok=False))
    assert verdict.category == "transitions.wrong_content"


def test_a_broken_window_the_server_never_tried_is_an_error_not_a_pass():
    verdict = check(_timeline(tried_s=None))
    assert (verdict.verdict, verdict.category) == ("error", "error.not_exercised")


def test_a_fault_without_its_proof_is_an_error():
    verdict = check(_timeline(proof=False))
    assert (verdict.verdict, verdict.category) == ("error", "error.fault")


def test_a_scenario_that_ended_early_with_nothing_wrong_is_an_error():
    tl = _timeline()
    tl.samples = [s for s in tl.samples if s.get("name") != "commit_after_restore"]
    assert check(tl).category == "error.no_data"


def test_the_budget_is_the_servers_git_timeout_plus_slack_or_a_said_fallback():
    assert sync_budget(ServerKnobs(git_timeout_s=10), Params())[0] == 20.0
    budget, how = sync_budget(ServerKnobs(), Params())
    assert budget == 30.0 and "no git fetch timeout" in how
