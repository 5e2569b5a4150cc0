"""source-remote-failures' checker on synthetic timelines (the real-server proof, both ways, is in
tests/integration/test_cerbos_gates.py): what failed polls keep fails by figure, a lost last
good policy and a window that never recovered fail, a window short of its polls is ERROR."""

import pytest

from harness.errors import ConfigError
from harness.gates.source_remote_failures import MODES, Params, SourceRemoteFailuresGate, Thresholds
from harness.runner.run import build_settings
from harness.timeline import Timeline


def _timeline(kept=None, polls=12, wrong_in=None, unrecovered=None):
    """`kept`: mode -> {figure: growth late − early}; `wrong_in`: a mode with a foreign answer."""
    tl = Timeline("source-remote-failures")
    tl.fact("budget", {"seconds": 16.0, "how": "16 s (poll 1 s + operation timeout 10 s + slack 5 s)"})
    good = "n0"
    for i, mode in enumerate(MODES, 1):
        pending = f"n{i}"
        for k in range(6):
            nonce = "other" if mode == wrong_in and k == 3 else good
            tl.record("answer", label=mode, nonce=nonce, status=200, healthy=True, seconds=0.01, error="")
        for reading in ("early", "late"):
            grew = (kept or {}).get(mode, {}) if reading == "late" else {}
            tl.record("snapshot", label=f"{mode} {reading}", mode=mode, reading=reading,
                      worker_fds=20 + grew.get("worker_fds", 0), front_connections=grew.get("front_connections", 0),
                      worker_files=8 + grew.get("worker_files", 0), worker_threads=9)
        served = mode != unrecovered
        tl.mark("served" if served else "not_served", label=f"{mode} healed", nonce=pending,
                seconds=1.2 if served else None, budget=16.0, **({} if served else {"last": {"nonce": good,
                                                                                            "status": 200,
                                                                                            "healthy": True}}))
        tl.record("window", mode=mode, good=good, pending=pending, early_polls=2, late_polls=polls, polls=polls)
        good = pending if served else good
    return tl


def check(tl):
    return SourceRemoteFailuresGate().check(tl, Params(modes=",".join(MODES)), Thresholds())  # throttle asked for


def test_the_default_modes_leave_the_throttle_to_be_asked_for():
    assert Params().mode_list() == ["auth", "error", "reset"]


def test_nothing_kept_the_last_good_kept_and_every_window_recovered_passes():
    verdict = check(_timeline())
    assert verdict.verdict == "pass", verdict.reason
    assert verdict.metrics["polls"] == {"auth": 12, "error": 12, "reset": 12, "throttle": 12}


def test_fds_and_front_connections_kept_per_failed_poll_fail_naming_mode_and_rate():
    verdict = check(_timeline(kept={"reset": {"worker_fds": 10, "front_connections": 10}}))
    assert verdict.verdict == "fail"
    assert {p.category for p in verdict.problems} == {"source_failures.fds_kept",
                                                     "source_failures.front_connections_kept"}
    assert "10 failed polls of a connection reset mid-pack kept +10 fds (1.00 per poll" in verdict.reason


def test_regular_files_alone_are_not_the_only_figure_judged():
    verdict = check(_timeline(kept={"auth": {"worker_fds": 3}}))
    assert verdict.category == "source_failures.fds_kept"
    assert check(_timeline(kept={"auth": {"worker_fds": 1}})).verdict == "pass"  # within the tolerance


def test_an_answer_that_is_neither_the_last_good_nor_the_new_commit_fails():
    verdict = check(_timeline(wrong_in="error"))
    assert verdict.category == "source_failures.last_good_lost"
    assert "1 of 6 answers" in verdict.reason


def test_a_window_whose_commit_is_not_served_after_the_heal_is_its_modes_category():
    verdict = check(_timeline(unrecovered="throttle"))
    assert verdict.category == "source_failures.throttle_not_recovered"


def test_a_window_short_of_its_polls_is_not_exercised_and_a_note_on_a_fail():
    verdict = check(_timeline(polls=4))
    assert (verdict.verdict, verdict.category) == ("error", "error.not_exercised")
    failing = check(_timeline(polls=4, unrecovered="auth"))
    assert failing.verdict == "fail" and "not exercised" in failing.reason


def test_modes_and_readings_are_validated_before_a_stack_is_touched():
    with pytest.raises(ConfigError, match="modes"):
        build_settings(Params, {"modes": "auth,sideways"}, "source-remote-failures")
    with pytest.raises(ConfigError, match="early_polls"):
        build_settings(Params, {"early_polls": "10"}, "source-remote-failures")
