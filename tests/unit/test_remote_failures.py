"""remote-failures' checker and budget on synthetic timelines (the real-server proof, both
ways, is the self-test: 0.9.6 stalls its healthy scopes behind throttled fetches, 0.9.9 not)."""

from harness.gates.base import ServerKnobs
from harness.gates.remote_failures import Params, RemoteFailuresGate, Thresholds, budgets
from harness.timeline import Timeline

MODES = ("auth", "error", "reset", "throttle")


FAILING = [f"policy-{600 + i:04d}" for i in range(12)]


def _timeline(healthy_ok=10, recovered=True, kept_files=0, requests=12, modes=MODES, tried=None,
              unpolled=(), settled="stable"):
    """`tried`: mode -> the failing repos the front saw in that window (default: all 12);
    `unpolled`: modes whose window has no healthy poll."""
    tl = Timeline("remote-failures")
    tl.fact("derived", {"failing_scopes": 12, "healthy_scopes": 2, "budget_s": 15.0,
                        "budget_how": "15 s (10 s + 5 s)", "git_workers": 10, "failing_repos": FAILING})
    for mode in modes:
        for i in range(0 if mode in unpolled else 10):
            tl.record("poll", scope="healthy-0", label=mode, ok=i < healthy_ok, status=200, seconds=0.01,
                      healthy=True)
        for attempt in ((1, 2) if mode != "throttle" else (1,)):
            tl.record("snapshot", label=f"{mode} attempt {attempt}", mode=mode, attempt=attempt, requests=requests,
                      tried=(tried or {}).get(mode, FAILING),
                      worker_files=20 + (kept_files if attempt == 2 else 0), worker_threads=6, clone_dirs=14,
                      settled=settled if mode != "throttle" else None)
        tl.record("recovery", mode=mode, seconds=0.5 if recovered else None, budget_s=15.0,
                  unrecovered=[] if recovered else ["failing-0"], not_recovered=0 if recovered else 12, scopes=12)
    return tl


def check(tl):
    return RemoteFailuresGate().check(tl, Params(), Thresholds())


def test_healthy_scopes_served_recovered_and_nothing_kept_passes():
    verdict = check(_timeline())
    assert verdict.verdict == "pass", verdict.reason
    assert verdict.metrics["kept_per_failure"]["auth"]["worker_files"] == 0
    assert verdict.metrics["slowest_recovery_s"] == 0.5


def test_healthy_scopes_stalled_behind_failing_fetches_fail_naming_the_mode():
    verdict = check(_timeline(healthy_ok=2))
    assert (verdict.verdict, verdict.category) == ("fail", "failures.healthy_stalled")
    assert "2 of 10" in verdict.reason and "credentials required" in verdict.reason


def test_a_failing_scope_that_never_recovers_is_its_modes_category():
    verdict = check(_timeline(recovered=False))
    assert verdict.category == "failures.auth_not_recovered"
    assert "12 of 12 failing scopes" in verdict.reason


def test_what_each_failed_attempt_keeps_beyond_tolerance_fails():
    verdict = check(_timeline(kept_files=12))
    assert verdict.category == "failures.files_kept" and "+12 open files" in verdict.reason
    assert check(_timeline(kept_files=1)).verdict == "pass"  # within the tolerance of 1


def test_a_kept_count_read_while_the_counts_still_moved_says_so():
    verdict = check(_timeline(kept_files=12, settled="budget"))
    assert verdict.category == "failures.files_kept"
    assert "still changing when attempt 1 was read" in verdict.reason
    assert "still changing" not in check(_timeline(kept_files=12)).reason


def test_a_window_whose_requests_never_reached_the_front_is_an_error():
    verdict = check(_timeline(requests=0))
    assert (verdict.verdict, verdict.category) == ("error", "error.not_exercised")


def test_a_mode_missing_from_the_recording_is_an_error():
    assert check(_timeline(modes=("auth", "error"))).category == "error.no_data"


def test_the_budget_is_the_git_timeout_plus_slack_or_a_said_fallback():
    assert budgets(ServerKnobs(git_timeout_s=10), Params())[0] == 15.0
    budget, how = budgets(ServerKnobs(), Params())
    assert budget == 30.0 and "no git fetch timeout" in how


def test_modes_are_validated_before_a_stack_is_touched():
    import pytest

    from harness.errors import ConfigError
    from harness.runner.run import build_settings
    with pytest.raises(ConfigError, match="modes"):
        build_settings(Params, {"modes": "auth,sideways"}, "remote-failures")


def test_twelve_requests_of_one_failing_scope_are_not_every_scope_tried():
    verdict = check(_timeline(tried={"reset": FAILING[:1]}))
    assert (verdict.verdict, verdict.category) == ("error", "error.not_exercised")
    assert "only 1 of 12 failing scopes reached the git front" in verdict.reason
    assert "policy-0601" in verdict.reason


def test_a_window_without_healthy_polls_is_not_exercised():
    verdict = check(_timeline(unpolled=("throttle",)))
    assert (verdict.verdict, verdict.category) == ("error", "error.not_exercised")
    assert "healthy scopes were never polled" in verdict.reason


def test_a_failure_stays_a_failure_and_notes_the_window_that_fell_short():
    verdict = check(_timeline(healthy_ok=2, tried={"throttle": FAILING[:6]}))
    assert (verdict.verdict, verdict.category) == ("fail", "failures.healthy_stalled")
    assert "not exercised: during a throttled link only 6 of 12" in verdict.reason


def test_a_clone_dir_count_that_could_not_be_taken_is_an_error_not_zero():
    tl = _timeline()
    tl.samples[-2].update(clone_dirs=None, clone_dirs_error="exec in the server's container failed")
    verdict = check(tl)
    assert (verdict.verdict, verdict.category) == ("error", "error.count_unavailable")
    assert "exec in the server's container failed" in verdict.reason


def test_the_pool_filling_first_attempt_is_not_what_a_failure_keeps():
    from harness.gates.remote_failures import _kept_per_failure
    shots = [{"mode": "auth", "attempt": n, "worker_files": 20, "worker_threads": threads, "clone_dirs": 14}
             for n, threads in ((1, 5), (2, 7), (3, 7))]
    assert _kept_per_failure(shots)["auth"]["worker_threads"] == 0  # 3 over 2 kept nothing
    assert _kept_per_failure(shots[:2])["auth"]["worker_threads"] == 2  # a recording of two: 2 over 1


def test_a_pool_filling_late_is_not_kept_but_a_leak_on_every_attempt_is():
    from harness.gates.remote_failures import _kept_per_failure

    def shots(threads: tuple[int, ...]) -> list[dict[str, object]]:
        return [{"mode": "auth", "attempt": n, "worker_files": 20, "worker_threads": count, "clone_dirs": 14}
                for n, count in enumerate(threads, start=1)]

    assert _kept_per_failure(shots((7, 7, 9)))["auth"]["worker_threads"] == 0  # serial bench, 0.9.9
    assert _kept_per_failure(shots((7, 9, 11)))["auth"]["worker_threads"] == 2
    unread = shots((7, 9, 11))
    unread[1]["worker_threads"] = None
    assert _kept_per_failure(unread)["auth"]["worker_threads"] is None
