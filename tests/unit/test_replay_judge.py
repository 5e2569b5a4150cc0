"""The replay's one checker on hand-made timelines: bounds, freshness around fault windows,
faults that did not take, an interrupted run, the projection."""

from __future__ import annotations

import pytest

from harness.replay.judge import judge, lags
from harness.timeline import Timeline

FRESH = {"figure": "freshness", "bounds": {"within_s": 5}}
RSS = {"figure": "rss", "bounds": {"slope_per_hour_at_most": 50}}
FILES = {"figure": "files", "bounds": {"end_delta_at_most": 2}}


def _timeline(faults=(), rss_mb=(100, 100, 100, 100), files=(10, 10, 10, 10)) -> Timeline:
    tl = Timeline("replay")
    for i, (rss, open_files) in enumerate(zip(rss_mb, files, strict=True)):
        tl.samples.append({"t": 10.0 * i, "kind": "snapshot", "worker_rss_kb": rss * 1024, "worker_files": open_files})
    tl.fact("faults", [{"label": label, "start_t": a, "end_t": b, "took": took, "evidence": "e"}
                       for label, a, b, took in faults])
    return tl


def _commit(tl: Timeline, t: float, source: int, nonce: str, served_t: float | None) -> None:
    tl.samples.append({"t": t, "kind": "commit", "source": source, "nonce": nonce, "action": "commit"})
    if served_t is not None:
        tl.samples.append({"t": served_t, "kind": "served", "source": source, "nonce": nonce})


def test_every_bound_held_passes_and_says_each_figure():
    tl = _timeline()
    _commit(tl, 1.0, 0, "a", 2.0)
    verdict = judge(tl, [FRESH, RSS, FILES], speed=60, sources=1)
    assert verdict.verdict == "pass", verdict.reason
    assert "freshness 1 of 1 changes served, worst 1.0 s (bound 5 s)" in verdict.reason
    assert "rss +0.00 MB/h" in verdict.reason


def test_a_commit_in_a_fault_window_or_cut_by_one_is_timed_from_the_windows_end():
    tl = _timeline(faults=[("git-front error on all", 3.0, 10.0, True)])
    _commit(tl, 4.0, 0, "in", 11.0)     # made in the window
    _commit(tl, 2.9, 1, "cut", 12.0)    # made just before it, its fetch cut by it
    _commit(tl, 20.0, 0, "after", 22.0)
    assert [r["lag_s"] for r in sorted(lags(tl), key=lambda r: r["t"])] == [2.0, 1.0, 2.0]
    assert judge(tl, [FRESH], speed=60, sources=2).verdict == "pass"


def test_a_commit_superseded_before_it_was_served_counts_when_the_later_one_is():
    tl = _timeline()
    _commit(tl, 1.0, 0, "first", None)
    _commit(tl, 2.0, 0, "second", 3.0)
    assert [r["served_t"] for r in lags(tl)] == [3.0, 3.0]


def test_every_broken_bound_is_a_problem_naming_its_figure_and_the_events_around_it():
    tl = _timeline(faults=[("git-front error on all", 3.0, 10.0, True)], rss_mb=(100, 110, 120, 130),
                   files=(10, 12, 14, 16))
    _commit(tl, 12.0, 0, "late", 25.0)
    _commit(tl, 13.0, 1, "never", None)
    verdict = judge(tl, [FRESH, RSS, FILES], speed=60, sources=2)
    assert verdict.verdict == "fail"
    assert [p.category for p in verdict.problems] == ["replay.freshness.never_served", "replay.freshness.late",
                                                      "replay.rss.slope", "replay.files.end_delta"]
    rss = verdict.problems[2]
    assert rss.figures["per_hour"] == pytest.approx(60.0)  # 1 MB per harness second = 60 MB per production hour
    assert "faults: git-front error on all (3–10 s); 2 commits" in rss.text
    assert verdict.problems[1].figures["worst_s"] == 13.0


def test_a_fault_that_did_not_take_is_an_error_or_a_note_on_a_fail():
    tl = _timeline(faults=[("blackhole dead on offline", 3.0, 10.0, False)])
    _commit(tl, 1.0, 0, "a", 2.0)
    verdict = judge(tl, [FRESH], speed=60, sources=1)
    assert (verdict.verdict, verdict.category) == ("error", "error.not_exercised")
    assert "blackhole dead on offline: e" in verdict.reason
    _commit(tl, 11.0, 1, "never", None)
    failed = judge(tl, [FRESH], speed=60, sources=2)
    assert failed.verdict == "fail" and "did not take" in failed.reason


def test_an_interrupted_replay_is_judged_on_what_was_recorded():
    tl = _timeline()
    _commit(tl, 1.0, 0, "a", 2.0)
    tl.fact("interrupted_at_t", 31.0)
    verdict = judge(tl, [FRESH], speed=60, sources=1)
    assert (verdict.verdict, verdict.category) == ("error", "error.interrupted")


def test_freshness_without_a_commit_cannot_pass():
    verdict = judge(_timeline(), [FRESH], speed=60, sources=1)
    assert verdict.category == "replay.freshness.no_commits"


def test_the_projection_puts_the_compressed_rate_in_production_time_beside_the_reported_one():
    tl = _timeline(rss_mb=(100, 110, 120, 130))
    for i in range(4):
        _commit(tl, 1.0 + i, i, f"n{i}", 2.0 + i)
    verdict = judge(tl, [RSS], speed=60, sources=40,
                    reported={"figure": "rss", "per_hour": 129, "sources": 43026})
    [row] = verdict.metrics["projection"]["rows"]
    assert row["per_hour"] == pytest.approx(60.0) and row["per_source_per_hour"] == pytest.approx(1.5)
    assert row["per_fetch"] == pytest.approx(7.5)  # 30 MB over 4 served commits
    assert row["projected_to_reported_sources_per_hour"] == pytest.approx(1.5 * 43026)
    assert row["reported_per_hour"] == 129
    assert verdict.metrics["projection"]["assumptions"]


def test_an_interrupted_replay_too_short_to_judge_a_figure_is_an_error_not_a_fail():
    tl = _timeline(rss_mb=(100,), files=(10,))
    tl.fact("interrupted_at_t", 3.0)
    verdict = judge(tl, [FRESH, RSS], speed=60, sources=1)
    assert (verdict.verdict, verdict.category) == ("error", "error.interrupted"), verdict.reason


def test_the_warm_up_is_not_growth():
    tl = _timeline(files=(10, 14, 14, 14))  # the pools fill on the first changes
    _commit(tl, 1.0, 0, "a", 2.0)
    assert judge(tl, [FILES], speed=60, sources=1).category == "replay.files.end_delta"
    tl.fact("judged_from_t", 10.0)
    assert judge(tl, [FILES], speed=60, sources=1).verdict == "pass"


def test_a_verdict_so_far_lets_a_change_younger_than_its_bound_pend():
    tl = _timeline()
    _commit(tl, 1.0, 0, "a", 2.0)
    _commit(tl, 29.0, 1, "young", None)
    tl.fact("running_at_t", 30.0)
    assert judge(tl, [FRESH], speed=60, sources=2).verdict == "pass"
    tl.facts.pop("running_at_t")
    assert judge(tl, [FRESH], speed=60, sources=2).category == "replay.freshness.never_served"


def test_the_answers_p95_outside_fault_windows_is_bounded():
    tl = _timeline(faults=[("git-front hang on all", 3.0, 10.0, True)])
    for t, p95 in ((2.0, 0.01), (5.0, 2.5), (20.0, 0.02)):  # the slow one is in the fault window
        tl.samples.append({"t": t, "kind": "latency", "p95": p95, "max": p95 * 2, "n": 10})
    latency = {"figure": "latency", "bounds": {"p95_at_most_s": 0.5}}
    assert judge(tl, [latency], speed=60, sources=1).verdict == "pass"
    tl.samples.append({"t": 30.0, "kind": "latency", "p95": 0.9, "max": 1.0, "n": 10})
    verdict = judge(tl, [latency], speed=60, sources=1)
    assert verdict.category == "replay.latency.slow" and verdict.problems[0].figures["worst_s"] == 0.9


def test_an_fd_kind_is_a_figure_of_its_own():
    tl = _timeline()
    for i, snapshot in enumerate(tl.of_kind("snapshot")):
        snapshot["fds_by_kind"] = {"socket": 5 + 3 * i, "file": 10}
    sockets = {"figure": "fds.socket", "bounds": {"end_delta_at_most": 2}}
    files = {"figure": "fds.file", "bounds": {"end_delta_at_most": 2}}
    verdict = judge(tl, [sockets, files], speed=60, sources=1)
    assert [p.category for p in verdict.problems] == ["replay.fds.socket.end_delta"]
    assert "+9.00 fds" in verdict.reason


def test_a_schedule_the_server_held_back_is_said():
    tl = _timeline()
    _commit(tl, 1.0, 0, "a", 2.0)
    tl.fact("schedule_late_s", 12.5)
    verdict = judge(tl, [FRESH], speed=60, sources=1)
    assert verdict.verdict == "pass" and "the schedule ran up to 12.5 s late" in verdict.reason
