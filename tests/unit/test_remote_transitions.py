"""remote-transitions' checker and budget on synthetic timelines (the real-server proof,
both ways, is the self-test: OPAL 0.9.6 and 0.9.9 pass, a fast-forward-only 0.9.9 fails at
the force-push; Cerbos 0.51.0 and 0.55.0 fail at the force-push, its disk-sync control
passes)."""

from harness.gates.remote_transitions import TRANSITIONS, Params, RemoteTransitionsGate, Thresholds, transition_budget
from harness.gates.sources import ANSWER
from harness.servers.base import ServerKnobs
from harness.timeline import Timeline

GOOD = "n-good"


def _timeline(fail_at=None, foreign=False, kept=11, requests=1, proof=True, healthy=True):
    """A recording of the whole scenario; `fail_at`: the transition not served (and the last)."""
    tl = Timeline("remote-transitions")
    tl.fact("budget", {"seconds": 21.0, "how": "21 s (poll 1 s + operation timeout 10 s + slack 10 s)"})
    broken_before = {"branch_recreated": "branch_deleted", "repo_restored": "repo_removed"}
    for i, name in enumerate(TRANSITIONS):
        if name in broken_before:
            window = broken_before[name]
            tl.record("broken", name=window, proof=proof, last_good=GOOD, started_t=1.0, ended_t=5.0,
                      tried_s=None if not requests else 0.4,
                      requests=[{"n": k, "accepted_t": 1.5 + k} for k in range(requests)])
            for k in range(11):
                ok = k < kept
                tl.record(ANSWER, label=window, nonce=GOOD if ok else None, status=200 if ok else 500,
                          healthy=healthy, seconds=0.01, error="")
        failed = name == fail_at
        served = f"n-{i - 1}" if not foreign else "n-stranger"
        tl.record("transition", name=name, nonce=f"n-{i}", before=f"n-{i - 1}",
                  served=served if failed else f"n-{i}", answer=f"200 with nonce {served}" if failed else "",
                  foreign=failed and foreign, budget_s=21.0, seconds=None if failed else 0.3)
        if failed:
            break
    return tl


def check(tl):
    return RemoteTransitionsGate().check(tl, Params(), Thresholds())


def test_every_transition_served_and_the_last_good_kept_passes():
    verdict = check(_timeline())
    assert verdict.verdict == "pass", verdict.reason
    assert verdict.metrics["slowest_transition_s"] == 0.3
    assert verdict.metrics["broken"]["repo_removed"] == {"polls": 11, "kept": 11, "requests": 1, "tried_s": 0.4}


def test_a_rewrite_not_followed_is_its_own_category_and_says_what_was_served():
    verdict = check(_timeline(fail_at="force_push"))
    assert (verdict.verdict, verdict.category) == ("fail", "transitions.force_push_not_served")
    assert "what it served before" in verdict.reason and "21 s" in verdict.reason


def test_the_first_sync_after_a_broken_remote_names_what_blocks_it():
    verdict = check(_timeline(fail_at="commit_after_restore"))
    assert verdict.category == "transitions.commit_after_restore_not_served"
    assert "the first sync after the repository removed from the host" in verdict.reason


def test_losing_the_last_good_content_while_the_remote_is_broken_fails():
    verdict = check(_timeline(kept=4))
    assert (verdict.verdict, verdict.category) == ("fail", "transitions.last_good_lost")
    assert "7 of 11 answers" in verdict.reason and "500" in verdict.reason


def test_the_last_good_content_from_an_unhealthy_server_is_not_kept():
    verdict = check(_timeline(healthy=False))
    assert verdict.category == "transitions.last_good_lost" and "unhealthy" in verdict.reason


def test_a_nonce_the_harness_never_pushed_is_wrong_content():
    verdict = check(_timeline(fail_at="branch_recreated", foreign=True))
    assert (verdict.verdict, verdict.category) == ("fail", "transitions.wrong_content")
    assert "never pushed" in verdict.reason


def test_a_broken_window_the_server_never_tried_is_an_error_not_a_pass():
    verdict = check(_timeline(requests=0))
    assert (verdict.verdict, verdict.category) == ("error", "error.not_exercised")
    assert "git front took no request" in verdict.reason


def test_a_fault_without_its_proof_is_an_error():
    verdict = check(_timeline(proof=False))
    assert (verdict.verdict, verdict.category) == ("error", "error.fault")


def test_a_scenario_that_ended_early_with_nothing_wrong_is_an_error():
    tl = _timeline()
    tl.samples = [s for s in tl.samples if s.get("name") != "commit_after_restore"]
    assert check(tl).category == "error.no_data"


def test_the_budget_is_poll_plus_operation_timeout_plus_slack_or_a_said_fallback():
    # OPAL: no poll (its refresh call starts the fetch), its git fetch timeout: the former budget
    budget, how = transition_budget(ServerKnobs(git_timeout_s=10), Params())
    assert budget == 20.0 and "refresh call" in how
    # Cerbos: its poll interval and operation timeout
    assert transition_budget(ServerKnobs(git_timeout_s=10, poll_interval_s=1), Params())[0] == 21.0
    budget, how = transition_budget(ServerKnobs(), Params())
    assert budget == 30.0 and "no operation timeout" in how
