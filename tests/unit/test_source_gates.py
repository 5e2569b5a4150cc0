"""The source gates' checkers on hand-made timelines, each both ways: PASS, FAIL with every
problem listed, ERROR when the fault did not take (the real-server proof is running the gates
on Cerbos, OPAL and the controls). Each gate's tests are a section of their own."""

from __future__ import annotations

from typing import Any

from harness.gates.bad_policy import BAD, BadPolicyGate
from harness.gates.bad_policy import Params as BadParams
from harness.gates.bad_policy import Thresholds as BadThresholds
from harness.gates.boot_dead_remote import SOURCE, BootDeadRemoteGate
from harness.gates.boot_dead_remote import Params as BootParams
from harness.gates.boot_dead_remote import Thresholds as BootThresholds
from harness.gates.boot_size import BootSizeGate
from harness.gates.boot_size import Params as SizeParams
from harness.gates.boot_size import Thresholds as SizeThresholds
from harness.gates.checkout_tampered import CheckoutTamperedGate
from harness.gates.checkout_tampered import Params as TamperParams
from harness.gates.checkout_tampered import Thresholds as TamperThresholds
from harness.gates.offline_remote import HANG, HANG_ON, HEAL, OfflineRemoteGate, offline_budget
from harness.gates.offline_remote import Params as OfflineRemoteParams
from harness.gates.offline_remote import Thresholds as OfflineRemoteThresholds
from harness.gates.sources import ANSWER
from harness.servers.base import ServerKnobs
from harness.timeline import FAULT_END, FAULT_START, Timeline

# -- offline-remote ------------------------------------------------------------------------

GOOD, NEW = "nonce-good", "nonce-new"


def _offline_timeline(*, requests: list[dict[str, Any]] | None = None,
                      answers: list[tuple[str | None, bool]] | None = None, served_s: float | None = 4.9,
                      last_nonce: str = GOOD) -> Timeline:
    """The remote hangs from t=10 to t=26; the commit at t=26.1; the front's requests as given
    (default: one for the source held 10→20 s, one held across the heal 21→31 s)."""
    tl = Timeline("offline-remote")
    tl.fact("budget", {"seconds": 16.0, "how": "16 s (poll 1 s + operation timeout 10 s + slack 5 s)"})
    tl.fact("hang_s", 16.0)
    tl.fact("good_nonce", GOOD)
    tl.events += [{"t": 2.0, "name": "served", "label": "attached", "nonce": GOOD, "seconds": 0.4, "budget": 16.0},
                  {"t": 9.9, "name": FAULT_START, "fault": "remote hangs"},
                  {"t": 10.0, "name": HANG_ON},
                  {"t": 26.0, "name": HEAL},
                  {"t": 26.1, "name": FAULT_END, "fault": "remote hangs", "lasted_s": 16.2},
                  {"t": 26.2, "name": "commit", "head": "abc", "nonce": NEW}]
    if served_s is not None:
        tl.events.append({"t": 26.2 + served_s, "name": "served", "label": "after the heal", "nonce": NEW,
                          "seconds": served_s, "budget": 16.0})
    else:
        tl.events.append({"t": 42.2, "name": "not_served", "label": "after the heal", "nonce": NEW, "seconds": None,
                          "budget": 16.0, "last": {"nonce": last_nonce, "status": 200, "healthy": True}})
    if requests is None:
        requests = [{"n": 5, "accepted_t": 10.5, "closed_t": 20.5, "repo": "/offline-remote.git"},
                    {"n": 6, "accepted_t": 21.5, "closed_t": 31.5, "repo": "/offline-remote.git"}]
    tl.fact("front_requests", requests)
    for i, (nonce, healthy) in enumerate(answers if answers is not None else [(GOOD, True)] * 30):
        tl.samples.append({"t": 10.1 + i * 0.5, "kind": ANSWER, "label": HANG, "nonce": nonce,
                           "status": 200 if nonce else None, "healthy": healthy, "seconds": 0.01, "error": ""})
    return tl


def _judge(tl: Timeline):
    return OfflineRemoteGate().check(tl, OfflineRemoteParams(), OfflineRemoteThresholds())


def test_offline_remote_passes_when_the_last_good_policy_is_kept_and_the_commit_followed():
    verdict = _judge(_offline_timeline())
    assert verdict.verdict == "pass", verdict.reason
    assert verdict.metrics["requests_held"] == 2 and verdict.metrics["held_at_heal"] == 1
    assert verdict.metrics["served_after_heal_s"] == 4.9 and verdict.metrics["answers_during_hang"] == 30
    assert verdict.metrics["longest_held_s"] == 10.0
    assert "2 requests held, 1 still held at the heal" in verdict.reason


def test_offline_remote_fails_when_an_answer_during_the_hang_is_not_the_last_good_policy():
    verdict = _judge(_offline_timeline(answers=[(GOOD, True)] * 10 + [(None, False)] * 2 + [(GOOD, True)] * 5))
    assert verdict.verdict == "fail" and verdict.category == "offline.not_kept"
    assert "2 of 17 answers" in verdict.reason and "no answer" in verdict.reason
    assert [p.category for p in verdict.problems] == ["offline.not_kept"]


def test_offline_remote_fails_when_unhealthy_with_the_right_nonce():
    verdict = _judge(_offline_timeline(answers=[(GOOD, False)] + [(GOOD, True)] * 5))
    assert verdict.verdict == "fail" and verdict.category == "offline.not_kept"
    assert "unhealthy" in verdict.reason


def test_offline_remote_fails_when_the_commit_after_the_heal_is_not_served_and_says_what_was_held():
    verdict = _judge(_offline_timeline(served_s=None, requests=[
        {"n": 5, "accepted_t": 10.5, "closed_t": None, "repo": "/offline-remote.git"}]))
    assert verdict.verdict == "fail" and verdict.category == "offline.not_followed"
    assert "not served within 16 s (poll 1 s + operation timeout 10 s + slack 5 s)" in verdict.reason
    assert f"it served {GOOD}" in verdict.reason and "1 of its requests were still held at the heal" in verdict.reason
    assert verdict.metrics["served_after_heal_s"] is None and verdict.metrics["held_at_heal"] == 1


def test_offline_remote_lists_every_problem_when_several():
    verdict = _judge(_offline_timeline(served_s=None, answers=[("nonce-other", True), (GOOD, True)]))
    assert verdict.verdict == "fail"
    assert [p.category for p in verdict.problems] == ["offline.not_kept", "offline.not_followed"]
    assert "1 of 2 answers" in verdict.reason and "not served within" in verdict.reason


def test_offline_remote_is_not_exercised_when_no_request_of_the_source_was_held():
    outside = [{"n": 4, "accepted_t": 5.0, "closed_t": 5.1, "repo": "/offline-remote.git"},  # before the hang
               {"n": 7, "accepted_t": 27.0, "closed_t": 27.1, "repo": "/offline-remote.git"},  # after the heal
               {"n": 6, "accepted_t": 12.0, "closed_t": None, "repo": "/cerbos-base.git"}]  # another repo
    for requests in ([], outside):
        verdict = _judge(_offline_timeline(requests=requests, served_s=None))
        assert verdict.verdict == "error" and verdict.category == "error.not_exercised", verdict.reason
        assert "no request for offline-remote" in verdict.reason


def test_offline_remote_is_not_exercised_without_answers_during_the_hang():
    verdict = _judge(_offline_timeline(answers=[]))
    assert verdict.verdict == "error" and verdict.category == "error.not_exercised"


def test_offline_remote_load_failure_is_an_error():
    tl = _offline_timeline()
    tl.fact("load_failure", "the attached source offline-remote was not served within 16 s")
    assert _judge(tl).category == "error.load"


def test_offline_remote_budget_comes_from_the_knobs_or_the_named_fallback():
    p = OfflineRemoteParams()
    hang, budget, how = offline_budget(ServerKnobs(git_timeout_s=10.0, poll_interval_s=1.0), p)
    assert (hang, budget) == (16.0, 16.0) and "operation timeout 10 s" in how
    hang, budget, how = offline_budget(ServerKnobs(git_timeout_s=None, poll_interval_s=5.0), p)
    assert (hang, budget) == (20.0, 20.0) and "the harness's fallback 10 s: this server has no operation timeout" in how


# -- what the bad-policy, checkout-tampered and boot-dead-remote sections share -------------

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


# -- boot-size ----------------------------------------------------------------------------------

def _boot_size(first: float | None, checkout_head: str = "h1") -> Timeline:
    tl = Timeline("boot-size")
    tl.facts.update(policies=2001, clone_s=0.3, compile_s=1.5, healthy_s=None if first is None else first - 0.05,
                    first_decision_s=first, checkout={"head": checkout_head, "packs": 1, "dirty": False}, head="h1")
    return tl


def _judge_size(tl: Timeline):
    return BootSizeGate().check(tl, SizeParams(), SizeThresholds())


def test_boot_size_passes_within_clone_plus_half_again_the_compile():
    verdict = _judge_size(_boot_size(2.4))  # bound 0.3 + 1.5 × 1.5 + 1 = 3.55 s
    assert verdict.verdict == "pass" and "bound 3.55 s" in verdict.reason


def test_boot_size_fails_a_boot_many_times_its_compile_and_one_that_never_serves():
    slow = _judge_size(_boot_size(9.2))
    assert (slow.verdict, slow.category) == ("fail", "boot_size.slow") and "6.1 × the compile" in slow.reason
    never = _judge_size(_boot_size(None))
    assert (never.verdict, never.category) == ("fail", "boot_size.not_served")


def test_a_boot_that_did_not_load_the_head_is_not_exercised():
    verdict = _judge_size(_boot_size(2.0, checkout_head="h0"))
    assert (verdict.verdict, verdict.category) == ("error", "error.not_exercised")


# -- the nudger: a server that does not poll is asked to fetch during a window ---------------

def _nudge_ctx(capabilities):
    from types import SimpleNamespace


    nudges: list[float] = []
    server = SimpleNamespace(nudge=lambda: nudges.append(1.0))
    ctx = SimpleNamespace(adapter=SimpleNamespace(capabilities=capabilities), stack=SimpleNamespace(server=server),
                          timeline=Timeline("x"))
    return ctx, nudges


def test_a_server_without_polling_is_nudged_through_the_window_and_the_count_recorded():
    import time

    from harness.gates.sources import Nudger
    from harness.servers.base import Capability
    ctx, nudges = _nudge_ctx(frozenset({Capability.SOURCE_CONTROL, Capability.REFRESH_CALL}))
    with Nudger(ctx, "auth", every_s=0.02):
        time.sleep(0.2)
    assert len(nudges) >= 3 and ctx.timeline.facts["nudges auth"] == len(nudges)


def test_a_polling_server_is_never_nudged():
    import time

    from harness.gates.sources import Nudger
    from harness.servers.base import Capability
    ctx, nudges = _nudge_ctx(frozenset({Capability.SOURCE_CONTROL, Capability.POLLING}))
    with Nudger(ctx, "auth", every_s=0.02):
        time.sleep(0.1)
    assert nudges == [] and "nudges auth" not in ctx.timeline.facts
