"""The source gates' checkers on hand-made timelines (the real-server proof is running the
gates on Cerbos and its controls). Each gate's tests are a section of their own."""

from __future__ import annotations

from typing import Any

from harness.gates.offline_remote import HANG, HANG_ON, HEAL, OfflineRemoteGate, offline_budget
from harness.gates.offline_remote import Params as OfflineRemoteParams
from harness.gates.offline_remote import Thresholds as OfflineRemoteThresholds
from harness.gates.sources import ANSWER
from harness.servers.base import ServerKnobs
from harness.timeline import FAULT_END, FAULT_START, Timeline

# -- offline-remote ------------------------------------------------------------------------
# (imports above: harness.gates.offline_remote, sources.ANSWER, ServerKnobs, the timeline's marks)

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
