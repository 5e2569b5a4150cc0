"""The source gates' checkers on hand-made timelines, each both ways: PASS, FAIL with every
problem listed, ERROR when the fault did not take (harness/gates/bad_policy.py,
checkout_tampered.py, boot_dead_remote.py)."""

from __future__ import annotations

from harness.gates.bad_policy import BAD, BadPolicyGate
from harness.gates.bad_policy import Params as BadParams
from harness.gates.bad_policy import Thresholds as BadThresholds
from harness.gates.boot_dead_remote import SOURCE, BootDeadRemoteGate
from harness.gates.boot_dead_remote import Params as BootParams
from harness.gates.boot_dead_remote import Thresholds as BootThresholds
from harness.gates.checkout_tampered import CheckoutTamperedGate
from harness.gates.checkout_tampered import Params as TamperParams
from harness.gates.checkout_tampered import Thresholds as TamperThresholds
from harness.gates.sources import ANSWER
from harness.timeline import Timeline

BUDGET = {"seconds": 16.0, "how": "16 s (poll 1 s + operation timeout 10 s + slack 5 s)"}


def _served(tl: Timeline, label: str, nonce: str, seconds: float | None, last_nonce: str | None = None) -> None:
    if seconds is not None:
        tl.mark("served", label=label, nonce=nonce, seconds=seconds, budget=16.0)
    else:
        tl.mark("not_served", label=label, nonce=nonce, seconds=None, budget=16.0,
                last={"nonce": last_nonce, "status": 200, "healthy": True, "seconds": 0.01, "error": ""})


# -- bad-policy -------------------------------------------------------------------------------

def _bad_policy(answers: list[tuple[str | None, bool]], fixed_s: float | None, last: str = "good") -> Timeline:
    tl = Timeline("bad-policy")
    tl.facts.update(budget=BUDGET, good_nonce="good", beside_bad_nonce="beside", bad_file="aaa.yaml")
    _served(tl, "attached", "good", 0.2)
    for nonce, healthy in answers:
        tl.record(ANSWER, label=BAD, nonce=nonce, status=200 if nonce else None, healthy=healthy, seconds=0.01,
                  error="" if nonce else "connection refused")
    _served(tl, "after the fix", "beside", fixed_s, last)
    return tl


def _judge_bad(tl: Timeline):
    return BadPolicyGate().check(tl, BadParams(), BadThresholds())


def test_bad_policy_passes_when_good_content_is_kept_and_the_fix_followed():
    verdict = _judge_bad(_bad_policy([("good", True), ("beside", True)], fixed_s=0.5))
    assert verdict.verdict == "pass" and "applied the valid change beside it" in verdict.reason


def test_bad_policy_names_the_lost_change_and_every_bad_answer():
    verdict = _judge_bad(_bad_policy([("good", True), (None, False), ("other", True)], fixed_s=None))
    assert verdict.verdict == "fail"
    assert [p.category for p in verdict.problems] == ["bad_policy.not_kept", "bad_policy.fix_not_followed"]
    assert "2 of 3 answers" in verdict.reason and "(the last good policy before the bad commit)" in verdict.reason


def test_bad_policy_without_an_answer_in_the_bad_window_is_not_exercised():
    verdict = _judge_bad(_bad_policy([], fixed_s=0.5))
    assert (verdict.verdict, verdict.category) == ("error", "error.not_exercised")


# -- checkout-tampered ------------------------------------------------------------------------

def _tampered(dirty: tuple[bool, bool], served: tuple[float | None, float | None]) -> Timeline:
    tl = Timeline("checkout-tampered")
    tl.facts["budget"] = BUDGET
    for kind, is_dirty, seconds in zip(("mode", "content"), dirty, served, strict=True):
        tl.mark("tampered", kind=kind, what=f"policies/harness_doc.yaml: {kind}", checkout={"dirty": is_dirty})
        _served(tl, f"after the {kind} change", f"n-{kind}", seconds, "n-before")
    return tl


def _judge_tampered(tl: Timeline):
    return CheckoutTamperedGate().check(tl, TamperParams(), TamperThresholds())


def test_checkout_tampered_passes_when_each_commit_is_followed():
    verdict = _judge_tampered(_tampered((True, True), (4.1, 3.9)))
    assert verdict.verdict == "pass" and "mode in 4.1 s, content in 3.9 s" in verdict.reason


def test_checkout_tampered_lists_each_change_the_server_stopped_following_after():
    verdict = _judge_tampered(_tampered((True, True), (None, None)))
    assert [p.category for p in verdict.problems] == ["tampered.mode_not_followed", "tampered.content_not_followed"]
    one = _judge_tampered(_tampered((True, True), (2.0, None)))
    assert [p.category for p in one.problems] == ["tampered.content_not_followed"]


def test_a_tamper_that_left_the_checkout_clean_is_not_exercised():
    verdict = _judge_tampered(_tampered((True, False), (2.0, 2.0)))
    assert (verdict.verdict, verdict.category) == ("error", "error.not_exercised")
    assert "after the content change" in verdict.reason


# -- boot-dead-remote -------------------------------------------------------------------------

def _boot(repos: list[str], served_s: float | None, exit_code: int | None = None) -> Timeline:
    tl = Timeline("boot-dead-remote")
    tl.facts.update(budget={"seconds": 15.0, "how": "15 s (operation timeout 10 s + slack 5 s)"},
                    last_good_nonce="good", exit_code=exit_code,
                    front_requests=[{"n": i, "accepted_t": 1.0, "closed_t": None, "repo": f"/{repo}.git"}
                                    for i, repo in enumerate(repos)])
    _served(tl, "attached", "good", 0.2)
    _served(tl, "boot", "good", served_s, None)
    return tl


def _judge_boot(tl: Timeline):
    return BootDeadRemoteGate().check(tl, BootParams(), BootThresholds())


def test_boot_dead_remote_passes_when_the_kept_checkout_is_served():
    verdict = _judge_boot(_boot([SOURCE], 0.21))
    assert verdict.verdict == "pass" and "0.21 s after a restart" in verdict.reason


def test_boot_dead_remote_fails_naming_the_exit():
    verdict = _judge_boot(_boot([SOURCE, SOURCE], None, exit_code=1))
    assert (verdict.verdict, verdict.category) == ("fail", "boot_dead.not_serving")
    assert "it exited with code 1" in verdict.reason and verdict.problems[0].figures["exit_code"] == 1


def test_a_boot_that_never_asked_the_hung_remote_is_not_exercised():
    for repos in ([], ["cerbos-base"]):
        verdict = _judge_boot(_boot(repos, 0.2))
        assert (verdict.verdict, verdict.category) == ("error", "error.not_exercised")
