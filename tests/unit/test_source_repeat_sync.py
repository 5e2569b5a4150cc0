"""source-repeat-sync's checker on synthetic timelines (the real-server proof, both ways, is in
tests/integration/test_cerbos_gates.py and test_opal_source.py): per-fetch growth fails, a
figure that grew and stopped is reported as bounded, a commit not served fails."""

import pytest

from harness.errors import ConfigError
from harness.gates.source_repeat_sync import Params, SourceRepeatSyncGate, Thresholds, trend
from harness.runner.run import build_settings
from harness.timeline import Timeline


def _timeline(cycles=20, files=lambda c: 10, fds=lambda c: 20, threads=lambda c: 8, rss=lambda c: 90_000,
              packs=lambda c: c + 1, not_served_at=None):
    tl = Timeline("source-repeat-sync")
    tl.fact("budget", {"seconds": 16.0, "how": "16 s (poll 1 s + operation timeout 10 s + slack 5 s)"})
    for cycle in range(1, cycles + 1):
        if cycle == not_served_at:
            tl.mark("not_served", label=f"cycle {cycle}", nonce="n", budget=16.0, last={"nonce": "old"})
            tl.fact("not_served", {"cycle": cycle, "nonce": "n"})
            break
        tl.mark("served", label=f"cycle {cycle}", nonce="n", seconds=0.6, budget=16.0)
        tl.record("snapshot", label=f"cycle {cycle}", cycle=cycle, worker_files=files(cycle), worker_fds=fds(cycle),
                  worker_threads=threads(cycle), worker_rss_kb=rss(cycle), packs=packs(cycle), mapped_packs=0)
    return tl


def check(tl, **thresholds):
    return SourceRepeatSyncGate().check(tl, Params(), Thresholds(**thresholds))


def test_flat_figures_pass_and_the_packs_on_disk_are_recorded_not_judged():
    verdict = check(_timeline())
    assert verdict.verdict == "pass", verdict.reason
    assert verdict.metrics["per_fetch"]["packs"] == 1.0
    assert "pack files in the checkout +1" in verdict.reason


def test_one_more_open_pack_per_fetch_fails_on_files_and_fds_naming_the_figures():
    verdict = check(_timeline(files=lambda c: 10 + c, fds=lambda c: 20 + c))
    assert verdict.verdict == "fail"
    assert verdict.category == "source_sync.files_grew"
    assert {p.category for p in verdict.problems} == {"source_sync.files_grew", "source_sync.fds_grew"}
    assert "16 → 30 over cycles 6–20" in verdict.reason


def test_a_figure_that_grows_then_stops_is_bounded_and_says_where():
    # fds grow one per fetch until 40, then stay: a pool at its cap, not a leak per fetch
    verdict = check(_timeline(cycles=40, fds=lambda c: min(20 + c, 40)))
    assert verdict.verdict == "pass", verdict.reason
    assert verdict.metrics["bounded"]["worker_fds"] == {"at": 40, "from_cycle": 20}
    assert "fds grew 26 → 40 by cycle 20, then stayed there: bounded at 40" in verdict.reason


def test_a_figure_still_rising_slowly_at_the_end_is_not_called_bounded():
    values = [int(1000 * c) for c in range(1, 41)]
    t = trend(list(range(1, 41)), values, 0.3, 64.0)
    assert t.bounded_at is None and t.grows(64.0)


def test_a_commit_not_served_fails_with_what_the_server_answered():
    verdict = check(_timeline(not_served_at=9))
    assert (verdict.verdict, verdict.category) == ("fail", "source_sync.not_served")
    assert "cycle 9" in verdict.reason and "answered old" in verdict.reason


def test_too_few_measured_cycles_is_an_error():
    assert check(_timeline(cycles=8)).category == "error.no_data"


def test_a_run_too_short_for_a_slope_is_refused_before_a_stack_is_touched():
    with pytest.raises(ConfigError, match="cycles"):
        build_settings(Params, {"cycles": "6"}, "source-repeat-sync")
