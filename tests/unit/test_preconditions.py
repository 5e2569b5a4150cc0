"""Every PASS proves its fault took: hand-made timelines where it did not (ERROR
`error.not_exercised`, naming what was missing and the figure seen) and where it did (PASS),
for zombie-cap, offline-repo, boot-dead-scope, boot-timing and orphan-clones mid-sync (its
race; remote-failures' are in test_remote_failures.py). Then the settle rule (until stable,
"still falling" its own problem) and counts that could not be taken (an ERROR, never 0)."""

from pathlib import Path

import pytest

from harness.gates.boot_dead_scope import BootDeadScopeGate
from harness.gates.boot_dead_scope import Thresholds as DeadThresholds
from harness.gates.boot_timing import BootTimingGate
from harness.gates.boot_timing import Thresholds as BootThresholds
from harness.gates.leak import LeakGate
from harness.gates.leak import Thresholds as LeakThresholds
from harness.gates.offline_repo import OfflineRepoGate
from harness.gates.offline_repo import Thresholds as OfflineThresholds
from harness.gates.orphan_clones import OrphanClonesGate, in_flight_at_delete
from harness.gates.orphan_clones import Thresholds as OrphanThresholds
from harness.gates.settle import settle, still_falling
from harness.gates.zombie_cap import Thresholds as ZombieThresholds
from harness.gates.zombie_cap import ZombieCapGate
from harness.probes import CountUnavailable, clone_dirs
from harness.runner.run import build_settings
from harness.seed import dead_repo_name, policy_repo_name
from harness.tcplisteners import parse_connections
from harness.timeline import Timeline
from tests.unit.proof_records import conns

NOT_EXERCISED = ("error", "error.not_exercised")


def check(gate, timeline, thresholds):
    return gate.check(timeline, build_settings(gate.params_type, timeline.facts.get("params", {}), gate.id),
                      thresholds)


# -- zombie-cap: the pile reached the cap --------------------------------------------------
def _zombie(cap=20, held=20, accepted_t=5.0, closed_t=None, reported=None, served_s=2.0, put_t=40.0):
    tl = Timeline("zombie-cap")
    tl.fact("derived", {"dead_remotes": 30, "zombie_cap": cap, "new_scope_budget_s": 20.0, "git_timeout_s": 10.0,
                        "budget_how": "20 s"})
    tl.fact("blackhole_connections", held)
    tl.fact("new_scope_served_s", served_s)
    tl.events.append({"t": put_t, "name": "new_scope_put"})
    tl.fact("blackhole_connection_times", conns([dead_repo_name(1000 + i) for i in range(held)],
                                                accepted_t=accepted_t, closed_t=closed_t))
    tl.fact("server_reported_in_flight", reported)
    return tl


def test_zombie_one_blackhole_connection_is_not_a_pile_past_the_cap():
    verdict = check(ZombieCapGate(), _zombie(held=1), ZombieThresholds())
    assert (verdict.verdict, verdict.category) == NOT_EXERCISED
    assert "only 1 timed-out git ops" in verdict.reason and "the cap of 20" in verdict.reason
    assert "blackhole connections held" in verdict.reason  # the source is named


def test_zombie_counts_only_ops_held_past_the_git_timeout_and_still_open():
    # 20 connections, but accepted 35 s into the gate: 5 s before the PUT, not yet timed out
    assert check(ZombieCapGate(), _zombie(accepted_t=35.0), ZombieThresholds()).category == "error.not_exercised"
    # 20 connections the server closed before the PUT: not in flight
    assert check(ZombieCapGate(), _zombie(closed_t=20.0), ZombieThresholds()).category == "error.not_exercised"


def test_zombie_passes_at_the_cap_and_says_where_the_count_came_from():
    verdict = check(ZombieCapGate(), _zombie(), ZombieThresholds())
    assert verdict.verdict == "pass", verdict.reason
    assert "20 timed-out git ops in flight (the cap of 20; blackhole connections held" in verdict.reason
    assert verdict.metrics["zombies_source"].startswith("blackhole")


def test_zombie_prefers_the_servers_own_count():
    verdict = check(ZombieCapGate(), _zombie(held=3, reported=20), ZombieThresholds())
    assert verdict.verdict == "pass" and "the server's log reported" in verdict.reason
    low = check(ZombieCapGate(), _zombie(held=30, reported=12), ZombieThresholds())
    assert (low.verdict, low.category) == NOT_EXERCISED and "only 12" in low.reason


def test_zombie_cap_off_needs_the_capped_cells_pile():
    assert check(ZombieCapGate(), _zombie(cap=0, held=19), ZombieThresholds()).category == "error.not_exercised"
    verdict = check(ZombieCapGate(), _zombie(cap=0, held=30), ZombieThresholds())
    assert verdict.verdict == "pass" and "the cap off" in verdict.reason


def test_zombie_reported_count_is_read_from_the_servers_refusal_line():
    from harness.gates.zombie_cap import _reported_in_flight
    line = ("2026-12-06T02:00:00 | 4242 | opal_server.git_fetcher | ERROR | Refusing new scope git op: 20 "
            "in-flight at/over SCOPES_GIT_MAX_ZOMBIES=20; remotes appear stuck.")
    assert _reported_in_flight(["noise", line]) == 20
    assert _reported_in_flight(["noise"]) is None


# -- offline-repo: every dead remote connected, polls present ------------------------------
def _offline(connected=12, polls=10):
    tl = Timeline("offline-repo")
    tl.fact("derived", {"executor_pool": 6, "dead_remotes": 12, "new_scope_budget_s": 40.0, "budget_how": "40 s",
                        "git_timeout_s": 10.0, "git_workers": 10})
    tl.fact("blackhole_connections", connected)
    tl.fact("new_scope_served_s", 1.5)
    tl.fact("blackhole_connection_times", conns([dead_repo_name(i) for i in range(connected)]))
    for _ in range(polls):
        tl.record("poll", ok=True, status=200, seconds=0.1, healthy=True)
    return tl


def test_offline_one_of_twelve_dead_remotes_is_not_the_load():
    verdict = check(OfflineRepoGate(), _offline(connected=1), OfflineThresholds())
    assert (verdict.verdict, verdict.category) == NOT_EXERCISED
    assert "only 1 of 12 dead remotes were ever connected" in verdict.reason and "dead-0001" in verdict.reason


def test_offline_zero_polls_is_an_error_not_0_of_0():
    verdict = check(OfflineRepoGate(), _offline(polls=0), OfflineThresholds())
    assert (verdict.verdict, verdict.category) == NOT_EXERCISED and "never polled" in verdict.reason


def test_offline_passes_with_every_dead_remote_tried():
    assert check(OfflineRepoGate(), _offline(), OfflineThresholds()).verdict == "pass"


# -- boot-dead-scope: the dead remote connected during the boot ----------------------------
def _dead_boot(at_boot=1, accepted_t=3.0):
    tl = Timeline("boot-dead-scope")
    tl.fact("derived", {"budget_s": 35.0, "budget_how": "35 s", "healthy_scopes": 5})
    tl.fact("boot", {"healthy_s": 11.0, "served_s": 11.4, "not_served": 0})
    tl.fact("new_scope_served_s", 0.8)
    tl.events.append({"t": 20.0, "name": "boot_end"})
    tl.fact("dead_connections_at_boot", at_boot)
    tl.fact("dead_connections", 1)
    tl.fact("blackhole_connection_times", conns([dead_repo_name(2000)], accepted_t=accepted_t))
    return tl


def test_boot_dead_scope_a_lazy_preload_that_never_tried_the_dead_remote_is_not_exercised():
    verdict = check(BootDeadScopeGate(), _dead_boot(at_boot=0, accepted_t=25.0), DeadThresholds())
    assert (verdict.verdict, verdict.category) == NOT_EXERCISED
    assert "never connected during the boot (0 blackhole connections" in verdict.reason


def test_boot_dead_scope_passes_when_the_boot_faced_the_dead_remote():
    verdict = check(BootDeadScopeGate(), _dead_boot(), DeadThresholds())
    assert verdict.verdict == "pass" and "connected 1× during the boot" in verdict.reason


# -- boot-timing: the boot's clones went through the latency proxy -------------------------
def _boot(through=20):
    tl = Timeline("boot-timing")
    tl.fact("derived", {"one_clone_s": 0.76, "scopes": 20, "serial_estimate_s": 15.2, "boot_budget_s": 60,
                        "new_scope_budget_s": 30})
    tl.fact("empty_boot", {"healthy_s": 1.2, "served_s": 1.2, "not_served": 0})
    tl.fact("boot", {"healthy_s": 1.0, "served_s": 4.1, "not_served": 0})
    tl.fact("new_scope_served_s", 1.0)
    tl.fact("proxy_connection_times", conns([policy_repo_name(i) for i in range(through)], closed_t=2.0))
    return tl


def test_boot_timing_clones_that_bypassed_the_proxy_are_not_exercised():
    verdict = check(BootTimingGate(), _boot(through=3), BootThresholds())
    assert (verdict.verdict, verdict.category) == NOT_EXERCISED
    assert "only 3 of 20 stored scopes' repos were fetched through the latency proxy" in verdict.reason


def test_boot_timing_passes_when_every_clone_went_through_the_proxy():
    assert check(BootTimingGate(), _boot(), BootThresholds()).verdict == "pass"


# -- orphan-clones mid-sync: fetches in flight when the DELETEs went out --------------------
def test_a_fetch_counts_as_raced_only_when_open_at_its_scopes_delete():
    deletes = {"repos": {"a": "policy-0001", "b": "policy-0002", "c": "policy-0003"},
               "delete_sent_t": {"a": 10.0, "b": 10.0, "c": 10.0},
               "connections": [
                   {"n": 1, "accepted_t": 9.5, "closed_t": 10.4, "repo": "/policy-0001.git"},  # in flight
                   {"n": 2, "accepted_t": 8.0, "closed_t": 9.0, "repo": "/policy-0002.git"},  # done before
                   {"n": 3, "accepted_t": 10.2, "closed_t": 11.0, "repo": "/policy-0003.git"},  # after
                   {"n": 4, "accepted_t": 9.0, "closed_t": None, "repo": "/policy-0009.git"}]}  # another repo
    assert in_flight_at_delete(deletes) == 1


def test_orphan_mid_sync_with_fetches_accepted_before_but_not_in_flight_is_not_exercised():
    from tests.unit.test_orphan_clones import _phase
    tl = Timeline("orphan-clones")
    _phase(tl, "burst", 500)
    _phase(tl, "mid-sync", 50, raced=24)
    verdict = check(OrphanClonesGate(), tl, OrphanThresholds())
    assert (verdict.verdict, verdict.category) == NOT_EXERCISED
    assert "only 24 of 50 scopes had a fetch in flight" in verdict.reason
    tl = Timeline("orphan-clones")
    _phase(tl, "burst", 500)
    _phase(tl, "mid-sync", 50, raced=25)
    assert check(OrphanClonesGate(), tl, OrphanThresholds()).verdict == "pass"


# -- the listeners' records ----------------------------------------------------------------
def test_listener_lines_parse_into_connections_with_their_times_and_repos():
    text = ("accepted 1 at=100.5\nrepo 1 /dead-0001.git\naccepted 2 at=101.0\nclosed 1 at=102.25\n"
            "2026-12-06T02:00:00.1Z accepted 3 at=103.0\n"  # a container log's timestamp prefix
            "accepted 4\n"  # an older listener: counted, no time
            "127.0.0.1 \"GET /policy-0600.git/info/refs HTTP/1.1\" 200 - mode=ok\n")
    found = {c.number: c for c in parse_connections(text)}
    assert sorted(found) == [1, 2, 3, 4]
    assert (found[1].accepted_at, found[1].closed_at, found[1].repo) == (100.5, 102.25, "/dead-0001.git")
    assert found[2].closed_at is None and found[4].accepted_at is None


# -- settle: until the figures stop changing; still falling is its own problem -------------
def test_settle_ends_on_three_equal_snapshots_without_spending_its_budget():
    values = iter([9, 7, 5, 5, 5, 5, 5])
    record = settle(Timeline("t"), "after", lambda: {"clone_dirs": next(values)}, budget=30, target={"clone_dirs": 0},
                    interval=0.01)
    assert record["ended"] == "stable" and record["series"]["clone_dirs"] == [9, 7, 5, 5, 5]
    assert still_falling(record) == {}


def test_settle_ends_at_its_target_and_says_when_the_budget_ran_out_mid_fall():
    assert settle(Timeline("t"), "x", lambda: {"n": 0}, 5, {"n": 0}, interval=0.01)["ended"] == "target"
    values = iter(range(1000, 0, -1))
    record = settle(Timeline("t"), "x", lambda: {"n": next(values)}, budget=0.2, target={"n": 0}, interval=0.01)
    assert record["ended"] == "budget"
    assert list(still_falling(record)) == ["n"]


def test_settle_stops_at_a_figure_it_cannot_count():
    record = settle(Timeline("t"), "x", lambda: {"clone_dirs": None}, 5, {"clone_dirs": 0}, interval=0.01)
    assert record["ended"] == "uncountable"


def _leak(after_dirs, settle_series):
    from tests.unit.test_checkers import _leak_timeline
    tl = _leak_timeline([1, 1, 1])
    for i, snap in enumerate(s for s in tl.samples if s.get("label", "").startswith("after ")):
        snap["clone_dirs"] = after_dirs[i]
    tl.record("settle", label="after 1", ended="budget", seconds=10, budget_s=10,
              series={"clone_dirs": settle_series})
    return tl


def test_leak_a_figure_still_falling_when_the_settle_ran_out_is_not_kept():
    verdict = check(LeakGate(), _leak([40, 1, 1], [90, 70, 55, 40]), LeakThresholds())
    assert (verdict.verdict, verdict.category) == ("fail", "leak.still_falling")
    assert "clone_dirs still falling when the after 1 settle ran out (70→55→40" in verdict.reason
    assert [p.category for p in verdict.problems] == ["leak.still_falling"]
    stuck = check(LeakGate(), _leak([40, 1, 1], [40, 40, 40, 40]), LeakThresholds())
    assert stuck.category == "leak.clone_dirs_kept"


def test_orphan_a_leftover_still_falling_is_its_own_problem():
    from tests.unit.test_orphan_clones import _phase
    tl = Timeline("orphan-clones")
    _phase(tl, "burst", 500, after_dirs=120)
    tl.record("settle", label="burst", ended="budget", seconds=30, budget_s=30,
              series={"clone_dirs": [300, 200, 120]})
    verdict = check(OrphanClonesGate(), tl, OrphanThresholds())
    assert [p.category for p in verdict.problems] == ["orphan.still_falling"]
    assert "clone_dirs 300→200→120" in verdict.reason


# -- counts that cannot be taken: an ERROR, never 0 -----------------------------------------
def test_clone_dirs_of_a_missing_base_dir_cannot_be_counted(tmp_path: Path):
    with pytest.raises(CountUnavailable, match="base dir .* is missing"):
        clone_dirs(tmp_path / "gone" / "git_sources")
    (tmp_path / "base").mkdir()
    assert clone_dirs(tmp_path / "base" / "git_sources") == []  # nothing cloned yet
    (tmp_path / "base" / "git_sources" / "abc").mkdir(parents=True)
    assert clone_dirs(tmp_path / "base" / "git_sources") == ["abc"]


def test_clone_dirs_whose_exec_fails_on_compose_cannot_be_counted():
    from harness.errors import HarnessError
    from harness.servers.opal.compose import OpalComposeProbe as ComposeServerProbe

    class FailingStack:
        def exec_in(self, service, argv, timeout=120):
            raise HarnessError("`sh -c ...` in server exited 126: container not running")
    probe = ComposeServerProbe.__new__(ComposeServerProbe)
    probe.stack = FailingStack()  # type: ignore[assignment]
    with pytest.raises(CountUnavailable, match="container not running"):
        probe.clone_dirs()


def test_a_snapshot_without_its_clone_dir_count_makes_leak_and_orphan_clones_errors():
    from tests.unit.test_checkers import _leak_timeline
    from tests.unit.test_orphan_clones import _phase
    tl = _leak_timeline([1, 1, 1])
    tl.samples[-1].update(clone_dirs=None, clone_dirs_error="the server's base dir /x is missing")
    verdict = check(LeakGate(), tl, LeakThresholds())
    assert (verdict.verdict, verdict.category) == ("error", "error.count_unavailable")
    assert "/x is missing" in verdict.reason
    tl = Timeline("orphan-clones")
    _phase(tl, "burst", 500)
    next(s for s in tl.samples if s.get("label") == "burst after").update(clone_dirs=None,
                                                                          clone_dirs_error="exec failed")
    assert check(OrphanClonesGate(), tl, OrphanThresholds()).category == "error.count_unavailable"


def test_orphan_a_clone_dir_count_that_never_saw_the_load_is_an_error():
    from tests.unit.test_orphan_clones import _phase
    tl = Timeline("orphan-clones")
    _phase(tl, "burst", 500)
    next(s for s in tl.samples if s.get("label") == "burst loaded")["clone_dirs"] = 0
    verdict = check(OrphanClonesGate(), tl, OrphanThresholds())
    assert verdict.category == "error.count_unavailable" and "does not see the server's clones" in verdict.reason


def test_records_of_a_listener_that_predates_them_say_to_rebuild_the_tools_image():
    tl = _offline()
    tl.fact("blackhole_connection_times", [{"n": i, "accepted_t": None, "closed_t": None, "repo": None}
                                           for i in range(1, 13)])
    verdict = check(OfflineRepoGate(), tl, OfflineThresholds())
    assert (verdict.verdict, verdict.category) == NOT_EXERCISED and "make images-offline" in verdict.reason


def test_orphan_a_burst_failure_stands_when_mid_sync_did_not_race_and_says_so():
    from tests.unit.test_orphan_clones import _phase
    tl = Timeline("orphan-clones")
    _phase(tl, "burst", 500, after_caches=500)
    _phase(tl, "mid-sync", 50, raced=3)
    verdict = check(OrphanClonesGate(), tl, OrphanThresholds())
    assert (verdict.verdict, verdict.category) == ("fail", "orphan.caches_kept")
    assert "only 3 of 50 scopes had a fetch in flight" in verdict.reason
    assert verdict.metrics["deletes"]["mid-sync"]["in_flight_at_delete"] == 3


def test_connections_to_a_port_are_read_from_the_process_own_network_tables():
    """What source-remote-failures counts as connections to the git front: this process's
    own sockets to a listener, established or not, read from /proc/<pid>/net (a container's
    process is seen in its namespace)."""
    import os
    import socket

    from harness.probes import connections_to_port
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            found = connections_to_port(os.getpid(), port, prefix="front")
            assert found["front_established"] == 3 and found["front_other"] == 0
            assert connections_to_port(os.getpid(), None, prefix="front") == {}
        finally:
            for client in clients:
                client.close()
