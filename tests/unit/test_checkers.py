"""The checkers' own logic on synthetic timelines (the real-server proof is the self-test)."""

from harness.gates.boot_dead_scope import BootDeadScopeGate
from harness.gates.boot_dead_scope import Thresholds as BootDeadThresholds
from harness.gates.boot_timing import BootTimingGate
from harness.gates.boot_timing import Thresholds as BootThresholds
from harness.gates.broker_bounce import BrokerBounceGate
from harness.gates.broker_bounce import Thresholds as BounceThresholds
from harness.gates.leak import LeakGate
from harness.gates.leak import Thresholds as LeakThresholds
from harness.gates.offline_repo import OfflineRepoGate
from harness.gates.offline_repo import Thresholds as OfflineThresholds
from harness.gates.repeat_sync import Params as RepeatSyncParams
from harness.gates.repeat_sync import RepeatSyncGate, theil_sen_slope
from harness.gates.repeat_sync import Thresholds as SyncThresholds
from harness.gates.zombie_cap import Thresholds as ZombieThresholds
from harness.gates.zombie_cap import ZombieCapGate
from harness.runner.run import build_settings
from harness.seed import dead_repo_name, policy_repo_name
from harness.servers.opal import PolicyResult
from harness.timeline import FAULT_END, FAULT_START, Timeline
from tests.unit.proof_records import conns


def check(gate, timeline, thresholds):
    """Judge as the runner does: with the parameters the timeline was recorded with."""
    return gate.check(timeline, build_settings(gate.params_type, timeline.facts.get("params", {}), gate.id),
                      thresholds)


def _snap(tl, label, locks, fds=40, dirs=None, pid=7, **extra):
    tl.record("snapshot", label=label, repo_locks=locks, repos=locks, repos_last_fetched=locks,
              clone_dirs=locks if dirs is None else dirs, worker_files=fds, worker_pid=pid, **extra)


def _leak_timeline(after_locks, fds=(40, 40, 40), pids=(7, 7, 7), loaded=11):
    tl = Timeline("leak")
    tl.fact("params", {"scopes": 10})
    _snap(tl, "baseline", 1)
    for i, (locks, fd, pid) in enumerate(zip(after_locks, fds, pids, strict=False), 1):
        _snap(tl, f"loaded {i}", (locks if loaded is None else loaded + locks - 1), fds=fd + 10, pid=pid)
        tl.record("deletes", cycle=i, statuses=[204] * 10)
        _snap(tl, f"after {i}", locks, fds=fd, pid=pid)
    return tl


def test_leak_fails_on_kept_cache_entries_and_names_them():
    verdict = check(LeakGate(), _leak_timeline([11, 21, 31], fds=(58, 80, 66)), LeakThresholds())
    assert verdict.verdict == "fail" and verdict.category == "leak.caches_kept"
    assert "repo_locks 11/21/31" in verdict.reason and "42" not in verdict.reason
    assert "files 40→58→80→66" in verdict.reason


def test_leak_passes_when_everything_returns_to_baseline_within_tolerance():
    verdict = check(LeakGate(), _leak_timeline([1, 1, 1], fds=(41, 42, 40)), LeakThresholds())
    assert verdict.verdict == "pass", verdict.reason


def test_leak_open_file_growth_alone_is_its_own_category():
    verdict = check(LeakGate(), _leak_timeline([1, 1, 1], fds=(50, 60, 70)), LeakThresholds())
    assert (verdict.verdict, verdict.category) == ("fail", "leak.files_grew")


def test_leak_is_an_error_not_a_failure_when_the_load_phase_failed():
    tl = _leak_timeline([1])
    tl.fact("load_failure", "cycle 1: 3 of 10 scopes were not served within 60 s")
    verdict = check(LeakGate(), tl, LeakThresholds())
    assert (verdict.verdict, verdict.category) == ("error", "error.load")


def test_leak_is_an_error_when_the_stats_never_showed_the_load():
    """A stats endpoint blind to the caches would pass every cycle: that is no verdict."""
    tl = _leak_timeline([1, 1, 1], loaded=None)
    verdict = check(LeakGate(), tl, LeakThresholds())
    assert (verdict.verdict, verdict.category) == ("error", "error.caches_not_filled")
    assert "repo_locks 1 (baseline 1)" in verdict.reason and "baseline + 10" in verdict.reason


def test_leak_is_an_error_when_deletes_failed():
    tl = _leak_timeline([11])
    tl.samples[-2]["statuses"] = [204] * 8 + [500, 500]
    verdict = check(LeakGate(), tl, LeakThresholds())
    assert (verdict.verdict, verdict.category) == ("error", "error.delete_failed")
    assert "2 of 10 DELETEs failed (statuses [500])" in verdict.reason


def test_leak_names_a_missing_stats_field():
    tl = _leak_timeline([1])
    tl.record("snapshot", label="after 2", stats_error="StatsContractError: stats endpoint lacks the field(s) repos",
              clone_dirs=1)
    verdict = check(LeakGate(), tl, LeakThresholds())
    assert verdict.category == "error.no_stats" and "lacks the field(s) repos" in verdict.reason


def test_leak_is_void_when_the_worker_restarted():
    verdict = check(LeakGate(), _leak_timeline([1, 1, 1], pids=(7, 8, 8)), LeakThresholds())
    assert (verdict.verdict, verdict.category) == ("error", "error.restart")


def test_theil_sen_ignores_one_outlier():
    assert theil_sen_slope([1, 2, 3, 4, 5], [10, 20, 30, 1000, 50]) == 10


def _sync_timeline(cycles=9, packs=0.0, files=0.0, rss_kb=0.0, locks=10, scopes=10, warmup=1, **extra):
    """Snapshots as the scenario records them: cycle 0 after the initial load, then one per
    served cycle; each series grows by the given amount per cycle (one fetch per scope)."""
    tl = Timeline("repeat-sync")
    tl.fact("params", {"warmup_cycles": warmup, "scopes": scopes})
    for cycle in range(cycles + 1):
        value = locks if isinstance(locks, int) else locks[cycle]
        tl.record("sync", cycle=cycle, seconds=0.3)
        _snap(tl, f"cycle {cycle}", value, fds=int(15 + files * cycle), cycle=cycle,
              worker_rss_kb=int(90_000 + rss_kb * cycle), mapped_packs=int(20 + packs * cycle), **extra)
    return tl


def test_repeat_sync_passes_when_files_packs_and_rss_stay_flat_per_fetch():
    tl = _sync_timeline()
    tl.samples[5]["worker_rss_kb"] += 50_000  # one odd cycle does not tilt a Theil–Sen fit
    verdict = check(RepeatSyncGate(), tl, SyncThresholds())
    assert verdict.verdict == "pass", verdict.reason
    assert "+0.00 mapped packs" in verdict.reason and "cycles 2–9 of 10 scopes" in verdict.reason


def test_repeat_sync_names_the_mapped_packs_each_fetch_keeps_per_scope():
    """What 0.9.6 and 0.9.9 do: 2 mapped pack files and 1 open file more per scope per fetch."""
    verdict = check(RepeatSyncGate(), _sync_timeline(packs=20, files=10, rss_kb=100), SyncThresholds())
    assert (verdict.verdict, verdict.category) == ("fail", "repeat_sync.packs_grew")
    assert "worker keeps 2.0 more mapped pack files per scope per fetch: 60 → 200 over cycles 2–9" in verdict.reason
    assert "1.0 more open files per scope per fetch: 35 → 105" in verdict.reason
    assert verdict.metrics["per_scope_per_fetch"]["mapped_packs"] == 2.0


def test_repeat_sync_open_files_alone_are_their_own_category():
    verdict = check(RepeatSyncGate(), _sync_timeline(files=5), SyncThresholds())
    assert (verdict.verdict, verdict.category) == ("fail", "repeat_sync.files_grew")
    assert "0.5 more open files per scope per fetch" in verdict.reason


def test_repeat_sync_rss_bound_is_per_scope_per_fetch():
    # 400 KB per cycle is 40 KB per scope per fetch with 10 scopes, but 8 with 50
    assert check(RepeatSyncGate(), _sync_timeline(rss_kb=400), SyncThresholds()).category == "repeat_sync.rss_slope"
    assert check(RepeatSyncGate(), _sync_timeline(rss_kb=400, scopes=50), SyncThresholds()).verdict == "pass"


def test_repeat_sync_fails_on_cache_drift():
    verdict = check(RepeatSyncGate(), _sync_timeline(cycles=5, locks=[10, 10, 10, 11, 12, 13]), SyncThresholds())
    assert (verdict.verdict, verdict.category) == ("fail", "repeat_sync.caches_grew")
    assert "repo_locks 10 → 13" in verdict.reason


def _unsynced(status, served_hash, refresh=200, error=""):
    """The scenario's reading of a cycle whose new commits were not all served."""
    tl = _sync_timeline(cycles=2)
    p = RepeatSyncParams()
    pushed = {"sync-0": "b" * 40, "sync-1": "d" * 40}
    before = {"sync-0": "a" * 40, "sync-1": "c" * 40}
    unsynced = {"sync-0": PolicyResult(status, 0.1, error, hash=served_hash)}
    refreshes = {"sync-0": refresh, "sync-1": 200}
    RepeatSyncGate()._record_unsynced(tl, 3, p, p.sync_budget_s, pushed, before, refreshes, unsynced)
    return check(RepeatSyncGate(), tl, SyncThresholds())


def test_repeat_sync_fails_when_a_scope_keeps_serving_the_old_commit():
    """The server answers, accepted the refresh, but never serves the pushed commit."""
    verdict = _unsynced(200, "a" * 40)
    assert (verdict.verdict, verdict.category) == ("fail", "repeat_sync.stale_commit")
    assert "sync-0 still served aaaaaaaaaa (the commit it served before the push)" in verdict.reason
    assert "after bbbbbbbbbb was pushed" in verdict.reason


def test_repeat_sync_is_an_error_when_the_new_commit_is_never_served_at_all():
    no_answer = _unsynced(None, None, error="ReadTimeout")
    assert (no_answer.verdict, no_answer.category) == ("error", "error.load")
    assert "1 of 10 scopes did not serve the new commit within 30 s, no bundle served" in no_answer.reason
    assert "sync-0: ReadTimeout" in no_answer.reason
    refused = _unsynced(200, "a" * 40, refresh=404)
    assert (refused.verdict, refused.category) == ("error", "error.load")
    assert "refresh refused (sync-0: 404)" in refused.reason


def test_repeat_sync_without_mapped_pack_counts_is_no_verdict():
    tl = _sync_timeline()
    tl.samples[-1]["mapped_packs"] = None
    verdict = check(RepeatSyncGate(), tl, SyncThresholds())
    assert (verdict.verdict, verdict.category) == ("error", "error.no_data")
    assert "mapped_packs" in verdict.reason and "/proc/<worker pid>/maps" in verdict.reason


def _offline_timeline(ok_polls, total, served_s):
    tl = Timeline("offline-repo")
    tl.fact("derived", {"executor_pool": 6, "dead_remotes": 12, "new_scope_budget_s": 40.0,
                        "budget_how": "40 s ((ceil(12/10) + 1) × 10 s git timeout + 10 s slack)",
                        "git_timeout_s": 10.0, "git_workers": 10})
    tl.fact("blackhole_connections", 6)
    tl.fact("new_scope_served_s", served_s)
    tl.fact("blackhole_connection_times", conns([dead_repo_name(i) for i in range(12)]))
    for i in range(total):
        tl.record("poll", ok=i < ok_polls, status=200 if i < ok_polls else None, seconds=0.1, healthy=True)
    return tl


def test_offline_fails_on_a_stalled_loaded_scope_even_if_healthcheck_says_200():
    verdict = check(OfflineRepoGate(), _offline_timeline(1, 10, None), OfflineThresholds())
    assert (verdict.verdict, verdict.category) == ("fail", "offline.loaded_scope_stalled")
    assert "1 of 10" in verdict.reason and "200 in 10 of 10" in verdict.reason
    assert "not served within its budget of 40 s ((ceil(12/10) + 1) × 10 s" in verdict.reason


def test_offline_passes_when_both_hold_and_errors_without_proof_of_the_fault():
    assert check(OfflineRepoGate(), _offline_timeline(10, 10, 1.2), OfflineThresholds()).verdict == "pass"
    tl = _offline_timeline(10, 10, 1.2)
    tl.fact("blackhole_connections", 0)
    assert check(OfflineRepoGate(), tl, OfflineThresholds()).category == "error.fault"


def test_zombie_reason_tells_a_stalled_pool_from_a_reached_cap():
    def timeline(hung):
        tl = Timeline("zombie-cap")
        tl.fact("derived", {"dead_remotes": 30, "zombie_cap": 20, "new_scope_budget_s": 20.0})
        tl.fact("blackhole_connections", hung)
        tl.fact("new_scope_served_s", None)
        return tl
    assert "stalled before" in check(ZombieCapGate(), timeline(6), ZombieThresholds()).reason
    assert "MAX_ZOMBIES" in check(ZombieCapGate(), timeline(20), ZombieThresholds()).reason


def test_zombie_passes_when_the_healthy_scope_is_served_and_says_the_cap_was_off():
    tl = Timeline("zombie-cap")
    tl.fact("derived", {"dead_remotes": 30, "zombie_cap": 0, "new_scope_budget_s": 20.0, "git_timeout_s": 10.0})
    tl.fact("blackhole_connections", 30)
    tl.fact("new_scope_served_s", 2.5)
    tl.events.append({"t": 40.0, "name": "new_scope_put"})
    tl.fact("blackhole_connection_times", conns([dead_repo_name(1000 + i) for i in range(30)], accepted_t=5.0))
    verdict = check(ZombieCapGate(), tl, ZombieThresholds())
    assert verdict.verdict == "pass" and "the cap off" in verdict.reason


def test_budgets_of_a_pre_fix_server_say_which_settings_it_lacks():
    from harness.gates.base import ServerKnobs
    from harness.gates.boot_dead_scope import Params as DeadParams
    from harness.gates.boot_dead_scope import boot_budget
    from harness.gates.offline_repo import Params as OfflineParams
    from harness.gates.offline_repo import new_scope_budget
    from harness.gates.zombie_cap import Params as ZombieParams
    from harness.gates.zombie_cap import plan
    pre_fix = ServerKnobs()
    fixed = ServerKnobs(git_timeout_s=10, git_workers=10, max_zombies=20, preload_drain_s=10)
    assert "no git fetch timeout and no preload drain" in boot_budget(pre_fix, DeadParams())[1]
    assert boot_budget(fixed, DeadParams())[0] == 35.0
    assert "no git fetch timeout" in new_scope_budget(pre_fix, 8, 6, OfflineParams())[1]
    assert new_scope_budget(fixed, 12, 6, OfflineParams())[0] == 40.0
    steps = plan(pre_fix, 6, ZombieParams())
    assert steps.dead == 26 and "no zombie cap, no git worker pool, no git fetch timeout" in steps.how
    assert plan(fixed, 6, ZombieParams()).dead == 30
    # The control (cap off) faces the same pile as the capped cell.
    assert plan(ServerKnobs(git_timeout_s=10, git_workers=10, max_zombies=0), 6, ZombieParams()).dead == 30


def _dead_boot_timeline(healthy_s, served_s, new_scope_s):
    tl = Timeline("boot-dead-scope")
    tl.fact("derived", {"budget_s": 35.0, "budget_how": "35 s (git timeout 10 s + preload drain 10 s + slack 15 s)",
                        "healthy_scopes": 5})
    tl.fact("boot", {"healthy_s": healthy_s, "served_s": served_s, "not_served": 0 if served_s else 5})
    tl.fact("new_scope_served_s", new_scope_s)
    tl.events.append({"t": 20.0, "name": "boot_end"})
    tl.fact("dead_connections_at_boot", 1)
    tl.fact("blackhole_connection_times", conns([dead_repo_name(2000)], accepted_t=3.0))
    return tl


def test_boot_dead_scope_both_ways():
    gate, th = BootDeadScopeGate(), BootDeadThresholds()
    assert check(gate, _dead_boot_timeline(11.0, 11.4, 0.8), th).verdict == "pass"
    assert check(gate, _dead_boot_timeline(None, None, None), th).category == "boot_dead.never_healthy"
    not_served = check(gate, _dead_boot_timeline(1.2, None, None), th)
    assert not_served.category == "boot_dead.scopes_not_served" and "5 of 5" in not_served.reason
    assert check(gate, _dead_boot_timeline(1.2, 1.5, None), th).category == "boot_dead.new_scope_not_served"


def _boot_timeline(served_s, one_clone=0.76, scopes=20, empty_s=1.2, new_scope_s=1.0, healthy_s=1.0):
    tl = Timeline("boot-timing")
    tl.fact("derived", {"one_clone_s": one_clone, "scopes": scopes, "serial_estimate_s": one_clone * scopes,
                        "boot_budget_s": 60, "new_scope_budget_s": 30})
    tl.fact("empty_boot", {"healthy_s": empty_s, "served_s": empty_s, "not_served": 0})
    tl.fact("boot", {"healthy_s": healthy_s, "served_s": served_s, "not_served": 0 if served_s else scopes})
    tl.fact("new_scope_served_s", new_scope_s)
    tl.fact("proxy_connection_times", conns([policy_repo_name(i) for i in range(scopes)], closed_t=2.0))
    return tl


def test_boot_ratio_subtracts_the_zero_scope_boot_and_tells_serial_from_parallel():
    serial = check(BootTimingGate(), _boot_timeline(16.7), BootThresholds(max_ratio=0.5))
    assert (serial.verdict, serial.category) == ("fail", "boot.serial")
    assert "16.7 s − 1.2 s zero-scope boot = 15.5 s = 1.02 ×" in serial.reason
    assert check(BootTimingGate(), _boot_timeline(4.1), BootThresholds(max_ratio=0.5)).verdict == "pass"


def test_boot_is_not_done_when_merely_healthy():
    verdict = check(BootTimingGate(), _boot_timeline(None, healthy_s=1.3), BootThresholds())
    assert (verdict.verdict, verdict.category) == ("fail", "boot.not_served")
    assert "healthy after 1.3 s but 20 of 20 stored scopes were still not served" in verdict.reason


def test_boot_fails_when_the_booted_worker_no_longer_runs_git():
    verdict = check(BootTimingGate(), _boot_timeline(4.1, new_scope_s=None), BootThresholds())
    assert (verdict.verdict, verdict.category) == ("fail", "boot.new_scope_not_served")


def test_boot_without_a_zero_scope_baseline_is_an_error():
    verdict = check(BootTimingGate(), _boot_timeline(4.1, empty_s=None), BootThresholds())
    assert (verdict.verdict, verdict.category) == ("error", "error.no_baseline")


def test_bounce_names_the_put_after_the_outage_first():
    tl = Timeline("broker-bounce")
    tl.fact("params", {"budget_s": 30})
    tl.fact("postgres_down_confirmed", True)
    tl.fact("healthy_after_s", 0.5)
    tl.fact("put_after_status", 201)
    tl.fact("after_served_s", None)
    tl.fact("during_served_s", None)
    tl.fact("worker_pids_before", [11, 12])
    tl.fact("worker_pids_after", [11, 13])
    tl.fact("recovery", "respawn")
    verdict = check(BrokerBounceGate(), tl, BounceThresholds())
    assert (verdict.verdict, verdict.category) == ("fail", "bounce.put_after_not_served")
    assert "answered 201" in verdict.reason and "workers [11, 12] → [11, 13] (respawn)" in verdict.reason
    tl.fact("after_served_s", 1.1)
    tl.fact("during_served_s", 1.3)
    tl.fact("recovery", "in place")
    passed = check(BrokerBounceGate(), tl, BounceThresholds())
    assert passed.verdict == "pass" and "(in place)" in passed.reason


def test_recovery_kind_tells_in_place_from_respawn():
    from harness.gates.broker_bounce import recovery_kind
    assert recovery_kind([1, 2], [2, 1]) == "in place"
    assert recovery_kind([1, 2], [1, 3]) == "respawn"
    assert recovery_kind([1, 2], []) == "no workers"


def test_fault_windows_close_at_heal_or_run_to_the_end():
    tl = Timeline("x")
    tl.events = [{"t": 1.0, "name": FAULT_START}, {"t": 3.0, "name": FAULT_END}, {"t": 5.0, "name": FAULT_START}]
    tl.samples = [{"t": 9.0, "kind": "poll"}]
    assert tl.fault_windows() == [(1.0, 3.0), (5.0, 9.0)]


def test_the_put_after_a_bounce_waits_out_the_servers_own_reconnect_backoff():
    from harness.gates.base import ServerKnobs
    from harness.gates.broker_bounce import Params as BounceParams
    from harness.gates.broker_bounce import after_put_delay
    fixed = ServerKnobs(reconnect_backoff_max_s=30.0, resync_settle_s=2.0)
    assert after_put_delay(fixed, BounceParams(outage_s=5.0))[0] == 12.0
    assert after_put_delay(fixed, BounceParams(outage_s=60.0))[0] == 32.0
    seconds, how = after_put_delay(ServerKnobs(), BounceParams())
    assert seconds == 5.0 and "no reconnect backoff setting" in how
    assert after_put_delay(fixed, BounceParams(after_put_delay_s=3.0))[0] == 3.0


def test_a_broker_fault_without_its_proof_is_an_error_naming_the_mode():
    tl = Timeline("broker-bounce")
    tl.fact("params", {"mode": "pause"})
    tl.fact("broker_fault_confirmed", False)
    verdict = check(BrokerBounceGate(), tl, BounceThresholds())
    assert (verdict.verdict, verdict.category) == ("error", "error.fault")
    assert "(pause) did not take effect: Postgres still answered the protocol while paused" in verdict.reason



def test_the_per_fetch_costs_are_carried_onto_the_production_incident():
    """Measured on 0.9.9 at 1,000 scopes × 18 cycles: 9.534 KB RSS, 1 open file and 2 mapped
    packs per scope per fetch."""
    from harness.gates.repeat_sync import production_projection
    projection = production_projection({"worker_rss_kb": 9.534, "worker_files": 1.0, "mapped_packs": 2.0})
    assert projection["rss_mb_per_fetch_of_every_scope"] == 400.6
    assert projection["open_files_per_fetch_of_every_scope"] == 43_026
    assert projection["fetches_of_every_scope_per_hour_for_129_mb"] == 0.32
    assert "one new commit per scope every 3.1 h" in projection["sentence"]
    flat = production_projection({"worker_rss_kb": 0.0})
    assert flat["fetches_of_every_scope_per_hour_for_129_mb"] is None
    assert "fetches alone do not explain" in flat["sentence"]
