"""The checkers' own logic on synthetic timelines (the real-server proof is the self-test)."""

from harness.gates.boot_timing import BootTimingGate, Thresholds as BootThresholds
from harness.gates.broker_bounce import BrokerBounceGate, Thresholds as BounceThresholds
from harness.gates.leak import LeakGate, Thresholds as LeakThresholds
from harness.gates.offline_repo import OfflineRepoGate, Thresholds as OfflineThresholds
from harness.gates.repeat_sync import RepeatSyncGate, Thresholds as SyncThresholds, theil_sen_slope
from harness.gates.zombie_cap import ZombieCapGate, Thresholds as ZombieThresholds
from harness.timeline import FAULT_END, FAULT_START, Timeline


def _snap(tl, label, locks, fds=40, dirs=None, pid=7, **extra):
    tl.record("snapshot", label=label, repo_locks=locks, repos=locks, repos_last_fetched=locks,
              clone_dirs=locks if dirs is None else dirs, worker_files=fds, worker_pid=pid, **extra)


def _leak_timeline(after_locks, fds=(40, 40, 40), pids=(7, 7, 7)):
    tl = Timeline("leak")
    _snap(tl, "baseline", 1)
    for i, (locks, fd, pid) in enumerate(zip(after_locks, fds, pids), 1):
        _snap(tl, f"after {i}", locks, fds=fd, pid=pid)
    return tl


def test_leak_fails_on_kept_cache_entries_and_names_them():
    verdict = LeakGate().check(_leak_timeline([11, 21, 31], fds=(58, 80, 66)), LeakThresholds())
    assert verdict.verdict == "fail" and verdict.category == "leak.caches_kept"
    assert "repo_locks 11/21/31" in verdict.reason and "42" not in verdict.reason
    assert "files 40→58→80→66" in verdict.reason


def test_leak_passes_when_everything_returns_to_baseline_within_tolerance():
    verdict = LeakGate().check(_leak_timeline([1, 1, 1], fds=(41, 42, 40)), LeakThresholds())
    assert verdict.verdict == "pass", verdict.reason


def test_leak_open_file_growth_alone_is_its_own_category():
    verdict = LeakGate().check(_leak_timeline([1, 1, 1], fds=(50, 60, 70)), LeakThresholds())
    assert (verdict.verdict, verdict.category) == ("fail", "leak.files_grew")


def test_leak_is_an_error_not_a_failure_when_the_load_phase_failed():
    tl = _leak_timeline([1])
    tl.fact("load_failure", "cycle 1: 3 of 10 scopes were not served within 60 s")
    verdict = LeakGate().check(tl, LeakThresholds())
    assert (verdict.verdict, verdict.category) == ("error", "error.load")


def test_leak_is_void_when_the_worker_restarted():
    verdict = LeakGate().check(_leak_timeline([1, 1, 1], pids=(7, 8, 8)), LeakThresholds())
    assert (verdict.verdict, verdict.category) == ("error", "error.restart")


def test_theil_sen_ignores_one_outlier():
    assert theil_sen_slope([1, 2, 3, 4, 5], [10, 20, 30, 1000, 50]) == 10


def _sync_timeline(rss, locks=10):
    tl = Timeline("repeat-sync")
    tl.fact("params", {"warmup_cycles": 1})
    for cycle, value in enumerate(rss, 1):
        _snap(tl, f"cycle {cycle}", locks if isinstance(locks, int) else locks[cycle - 1],
              cycle=cycle, worker_rss_kb=value)
    return tl


def test_repeat_sync_judges_rss_slope_after_warm_up():
    flat = RepeatSyncGate().check(_sync_timeline([50_000] + [90_000 + i for i in range(8)]), SyncThresholds())
    assert flat.verdict == "pass", flat.reason
    growing = RepeatSyncGate().check(_sync_timeline([90_000 + 1000 * i for i in range(9)]), SyncThresholds())
    assert (growing.verdict, growing.category) == ("fail", "repeat_sync.rss_slope")
    assert "1000 KB per re-sync cycle" in growing.reason


def test_repeat_sync_fails_on_cache_drift():
    verdict = RepeatSyncGate().check(_sync_timeline([1] * 6, locks=[10, 10, 10, 11, 12, 13]), SyncThresholds())
    assert (verdict.verdict, verdict.category) == ("fail", "repeat_sync.caches_grew")


def _offline_timeline(ok_polls, total, served_s):
    tl = Timeline("offline-repo")
    tl.fact("derived", {"executor_pool": 6, "dead_remotes": 8, "new_scope_budget_s": 30.0,
                        "git_timeout_s": 10.0, "git_workers": 10})
    tl.fact("blackhole_connections", 6)
    tl.fact("new_scope_served_s", served_s)
    for i in range(total):
        tl.record("poll", ok=i < ok_polls, status=200 if i < ok_polls else None, seconds=0.1, healthy=True)
    return tl


def test_offline_fails_on_a_stalled_loaded_scope_even_if_healthcheck_says_200():
    verdict = OfflineRepoGate().check(_offline_timeline(1, 10, None), OfflineThresholds())
    assert (verdict.verdict, verdict.category) == ("fail", "offline.loaded_scope_stalled")
    assert "1 of 10" in verdict.reason and "200 in 10 of 10" in verdict.reason
    assert "not served within its 30 s budget" in verdict.reason


def test_offline_passes_when_both_hold_and_errors_without_proof_of_the_fault():
    assert OfflineRepoGate().check(_offline_timeline(10, 10, 1.2), OfflineThresholds()).verdict == "pass"
    tl = _offline_timeline(10, 10, 1.2)
    tl.fact("blackhole_connections", 0)
    assert OfflineRepoGate().check(tl, OfflineThresholds()).category == "error.fault"


def test_zombie_reason_tells_a_stalled_pool_from_a_reached_cap():
    def timeline(hung):
        tl = Timeline("zombie-cap")
        tl.fact("derived", {"dead_remotes": 30, "zombie_cap": 20, "new_scope_budget_s": 20.0})
        tl.fact("blackhole_connections", hung)
        tl.fact("new_scope_served_s", None)
        return tl
    assert "stalled before" in ZombieCapGate().check(timeline(6), ZombieThresholds()).reason
    assert "MAX_ZOMBIES" in ZombieCapGate().check(timeline(20), ZombieThresholds()).reason


def _boot_timeline(boot_s, one_clone=0.76, scopes=20):
    tl = Timeline("boot-timing")
    tl.fact("derived", {"one_clone_s": one_clone, "scopes": scopes, "serial_estimate_s": one_clone * scopes,
                        "boot_budget_s": 60})
    tl.fact("boot_s", boot_s)
    return tl


def test_boot_ratio_tells_serial_from_parallel():
    serial = BootTimingGate().check(_boot_timeline(15.5), BootThresholds(max_ratio=0.5))
    assert (serial.verdict, serial.category) == ("fail", "boot.serial")
    assert "1.02 ×" in serial.reason
    assert BootTimingGate().check(_boot_timeline(2.9), BootThresholds(max_ratio=0.5)).verdict == "pass"
    assert BootTimingGate().check(_boot_timeline(None), BootThresholds()).category == "boot.never_healthy"


def test_bounce_names_the_put_after_the_outage_first():
    tl = Timeline("broker-bounce")
    tl.fact("params", {"budget_s": 30})
    tl.fact("postgres_down_confirmed", True)
    tl.fact("healthy_after_s", 0.5)
    tl.fact("put_after_status", 201)
    tl.fact("after_served_s", None)
    tl.fact("during_served_s", None)
    verdict = BrokerBounceGate().check(tl, BounceThresholds())
    assert (verdict.verdict, verdict.category) == ("fail", "bounce.put_after_not_served")
    assert "answered 201" in verdict.reason


def test_fault_windows_close_at_heal_or_run_to_the_end():
    tl = Timeline("x")
    tl.events = [{"t": 1.0, "name": FAULT_START}, {"t": 3.0, "name": FAULT_END}, {"t": 5.0, "name": FAULT_START}]
    tl.samples = [{"t": 9.0, "kind": "poll"}]
    assert tl.fault_windows() == [(1.0, 3.0), (5.0, 9.0)]
