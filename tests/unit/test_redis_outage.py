"""redis-outage's checker on synthetic timelines (the real-server proof, both ways, is the
self-test: 0.9.6 and 0.9.9 lose the PUT after the outage, the retrying control serves it)."""

import pytest

from harness.errors import ConfigError
from harness.gates.redis_outage import Params, RedisOutageGate, Thresholds
from harness.runner.run import build_settings
from harness.timeline import Timeline


def _timeline(mode="keep", hung=False, stored_pending=(), lost="404", during=500, during_served=None,
              after_served=0.4, proof=True, unknown="404", stored_keys=None):
    tl = Timeline("redis-outage")
    tl.fact("unknown_answer", unknown)
    tl.fact("stored_keys_after", (2 if mode == "keep" else 0) if stored_keys is None else stored_keys)
    tl.fact("derived", {"sync_budget_s": 20.0, "budget_how": "20 s (10 s + 10 s)",
                        "stored": ["stored-0", "stored-1"]})
    tl.fact(f"fault redis {mode} took effect", proof)
    for i in range(8):
        stuck = hung and i == 3
        tl.record("outage_poll", status=None if stuck else 500, error="ReadTimeout" if stuck else "",
                  seconds=5.0 if stuck else 0.01, healthy=True, health_s=0.01)
    tl.fact("put_during", {"status": during, "error": "", "seconds": 0.01})
    tl.fact("keys_after", 2 if mode == "keep" else 0)
    if mode == "keep":
        tl.fact("stored_pending", list(stored_pending))
    else:
        tl.fact("lost_answers", {"stored-0": lost, "stored-1": lost})
    if during and 200 <= during < 300:
        tl.fact("during_served_s", during_served)
    tl.fact("put_after", {"status": 201, "error": "", "seconds": 0.01})
    tl.fact("after_served_s", after_served)
    return tl


def check(tl, mode="keep"):
    return RedisOutageGate().check(tl, Params(mode=mode), Thresholds())


def test_clear_answers_stored_scopes_and_a_put_after_served_passes():
    verdict = check(_timeline())
    assert verdict.verdict == "pass", verdict.reason
    assert verdict.metrics["statuses_during"] == ["500"]


def test_the_put_after_the_store_returned_never_served_fails():
    verdict = check(_timeline(after_served=None))
    assert (verdict.verdict, verdict.category) == ("fail", "redis.put_after_not_served")
    assert "answered 201" in verdict.reason


def test_a_request_that_hangs_during_the_outage_fails_first():
    verdict = check(_timeline(hung=True, after_served=None))
    assert verdict.category == "redis.hung" and "1 of 8 requests" in verdict.reason


def test_stored_scopes_not_served_again_fail():
    verdict = check(_timeline(stored_pending=["stored-1"]))
    assert verdict.category == "redis.stored_not_served" and "1 of 2 stored scopes" in verdict.reason


def test_an_empty_store_must_say_404_for_what_it_lost():
    assert check(_timeline(mode="empty"), mode="empty").verdict == "pass"
    verdict = check(_timeline(mode="empty", lost="500"), mode="empty")
    assert verdict.category == "redis.lost_unclear" and "stored-0: 500" in verdict.reason


def test_a_put_accepted_during_the_outage_must_be_served_after():
    assert check(_timeline(during=201, during_served=1.0)).verdict == "pass"
    assert check(_timeline(during=201, during_served=None)).category == "redis.put_during_lost"


def test_an_outage_without_its_proof_is_an_error():
    assert check(_timeline(proof=False)).category == "error.fault"


def test_an_unknown_mode_is_refused_before_a_stack():
    with pytest.raises(ConfigError, match="keep or empty"):
        build_settings(Params, {"mode": "sometimes"}, "redis-outage")


def test_a_lost_scope_answers_as_a_scope_this_server_never_had():
    """0.9.6 answers 500 to any unknown scope, outage or not: its 500 for a lost scope is not
    an outage finding; 0.9.9 answers 404 before the fault, so a 500 after it is."""
    assert check(_timeline(mode="empty", lost="500", unknown="500"), mode="empty").verdict == "pass"
    verdict = check(_timeline(mode="empty", lost="500", unknown="404"), mode="empty")
    assert verdict.category == "redis.lost_unclear"
    assert "not 404 as this server answered a scope it never had before the outage" in verdict.reason
    assert verdict.problems[0].figures == {"lost_answers": {"stored-0": "500", "stored-1": "500"},
                                           "unknown_answer": "404"}
    assert check(_timeline(mode="empty", lost="404", unknown="500"), mode="empty").category == "redis.lost_unclear"


def test_a_recording_without_the_unknown_answer_still_wants_404():
    tl = _timeline(mode="empty", lost="500")
    del tl.facts["unknown_answer"]
    assert check(tl, mode="empty").category == "redis.lost_unclear"


def test_the_store_must_return_with_what_the_mode_says():
    assert check(_timeline(stored_keys=2)).verdict == "pass"
    kept_too_few = check(_timeline(stored_keys=1, after_served=None))
    assert (kept_too_few.verdict, kept_too_few.category) == ("error", "error.fault")
    assert "1 of the 2 stored scopes' keys" in kept_too_few.reason and "mode keep" in kept_too_few.reason
    assert check(_timeline(mode="empty", stored_keys=0), mode="empty").verdict == "pass"
    not_emptied = check(_timeline(mode="empty", stored_keys=2), mode="empty")
    assert (not_emptied.verdict, not_emptied.category) == ("error", "error.fault")
    assert "not none" in not_emptied.reason


def test_a_store_that_does_not_say_what_it_came_back_with_is_an_error():
    tl = _timeline()
    tl.fact("stored_keys_after", None)
    verdict = check(tl)
    assert (verdict.verdict, verdict.category) == ("error", "error.fault")
    assert "did not answer" in verdict.reason
