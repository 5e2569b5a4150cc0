"""`harness gates --jobs`: how gates are grouped and how the parts merge into one report."""

import json

import pytest

from harness.config import Settings, Target
from harness.gates.registry import GATES
from harness.report import RunReport, schema_errors
from harness.runinfo import settings_metadata
from harness.runner import parallel
from harness.runner.parallel import (
    CPU_HEADROOM,
    FLOOR_SLACK,
    LOAD,
    MEMORY_HEADROOM,
    SENSITIVE,
    TIMED,
    GateLoad,
    Machine,
    default_jobs,
    demand,
    expected_s,
    merge,
    most_groups_that_fit,
    plan,
)
from harness.verdict import GateResult


def test_groups_are_balanced_longest_first_and_timed_gates_run_alone():
    groups = plan(list(GATES), 2)
    assert groups[-1] == list(TIMED)
    concurrent = groups[:-1]
    assert len(concurrent) == 2 and sorted(g for group in concurrent for g in group) == sorted(set(GATES) - set(TIMED))
    assert "orphan-clones" in concurrent[0]  # the longest opens the first group
    assert plan(["leak"], 4) == [["leak"]]
    assert plan(["boot-timing"], 4) == [["boot-timing"]]


def test_default_jobs_never_exceeds_the_gates_that_may_run_together():
    assert default_jobs(["leak", "boot-timing"], Machine(64, 2**20)) == 1
    assert most_groups_that_fit([g for g in GATES if g not in TIMED], Machine(64, 2**20)) == len(GATES) - len(TIMED)
    assert 1 <= default_jobs(list(GATES)) <= len(GATES) - len(TIMED)  # this machine


def _longest(groups):
    return max(sum(expected_s(g) for g in group) for group in groups)


def test_auto_stops_adding_groups_once_the_run_is_down_to_its_longest_gate():
    concurrent = [g for g in GATES if g not in TIMED]
    jobs = default_jobs(list(GATES), Machine(64, 2**20))
    floor = max(expected_s(g) for g in concurrent)
    assert 1 < jobs < len(concurrent)  # a group per gate would only add load
    assert _longest(plan(concurrent, jobs)) <= floor * FLOOR_SLACK  # the run is at its floor
    assert _longest(plan(concurrent, jobs - 1)) > floor * FLOOR_SLACK  # one fewer group is not


def test_every_gate_has_a_measured_load():
    assert set(LOAD) == set(GATES)
    assert all(0 < load.cpu_s and 0 < load.wall_s and 0 < load.peak_mb for load in LOAD.values())


TWO_CORES = Machine(cores=2, memory_mb=24_000)


def test_on_two_cores_auto_runs_more_groups_than_cores_and_their_cpu_fits_with_headroom():
    jobs = default_jobs(list(GATES), TWO_CORES)
    assert jobs > TWO_CORES.cores  # the gates mostly wait: more stacks than cores
    cores, memory = demand(plan(list(GATES), jobs)[:-1])
    assert cores <= TWO_CORES.cores * CPU_HEADROOM and memory <= TWO_CORES.memory_mb * MEMORY_HEADROOM
    most = most_groups_that_fit([g for g in GATES if g not in TIMED], TWO_CORES)
    if most < len(GATES) - len(TIMED):  # one more group than the most would not have fit
        assert demand(plan(list(GATES), most + 1)[:-1])[0] > TWO_CORES.cores * CPU_HEADROOM


def test_memory_bounds_the_groups_when_it_is_short():
    small = Machine(cores=64, memory_mb=3_000)
    jobs = default_jobs(list(GATES), small)
    assert demand(plan(list(GATES), jobs)[:-1])[1] <= small.memory_mb * MEMORY_HEADROOM or jobs == 1
    assert jobs < default_jobs(list(GATES), Machine(cores=64, memory_mb=2**20))
    assert default_jobs(list(GATES), Machine(cores=64, memory_mb=500)) == 1  # not even one stack fits: serial


def test_more_cores_never_mean_fewer_groups():
    counts = [default_jobs(list(GATES), Machine(cores, 2**20)) for cores in (1, 2, 4, 8, 16)]
    assert counts == sorted(counts) and counts[0] >= 1


def test_groups_follow_a_fake_table(monkeypatch):
    table = {"idle-a": GateLoad(100, 5, 500), "idle-b": GateLoad(100, 5, 500), "idle-c": GateLoad(100, 5, 500),
             "busy": GateLoad(100, 95, 500), "busy-2": GateLoad(100, 95, 500)}
    monkeypatch.setattr(parallel, "LOAD", table)
    idle_and_busy = ["idle-a", "idle-b", "idle-c", "busy"]
    # idle gates: 0.05 core each; the busy one 0.95: all four fit 2 cores (1.1 ≤ 1.5)
    assert default_jobs(idle_and_busy, Machine(2, 24_000)) == 4
    # on 1 core (0.75 usable): the busy gate shares a group with an idle one (0.5 + 0.05 + 0.05)
    assert default_jobs(idle_and_busy, Machine(1, 24_000)) == 3
    assert default_jobs(["busy", "busy-2"], Machine(1, 24_000)) == 1  # two busy gates on one core: serial
    assert default_jobs(["busy", "busy-2"], Machine(2, 24_000)) == 1  # 1.9 cores > 1.5
    assert default_jobs(["busy", "busy-2"], Machine(3, 24_000)) == 2
    assert default_jobs(idle_and_busy, Machine(2, 1_000)) == 1  # two 500 MB stacks exceed 60% of 1 GB


def test_an_unknown_gate_counts_as_a_busy_core():
    cores, memory = demand([["no-such-gate"]])
    assert cores == pytest.approx(1.0) and memory >= max(load.peak_mb for load in LOAD.values())


@pytest.mark.parametrize("jobs", [3, 4, 6, 10])
def test_gates_sensitive_to_load_never_share_a_group(jobs):
    for group in plan(list(GATES), jobs):
        assert len(set(group) & set(SENSITIVE)) <= 1, group


def test_a_sensitive_gate_asks_for_more_than_its_average():
    gate = SENSITIVE[0]
    assert demand([[gate]])[0] > LOAD[gate].cores


def _part(tmp_path, name, gate_id, verdict):
    report = RunReport(tmp_path / name, f"part-{name}", "opal-server==0.9.9", "local", "quick",
                       meta=settings_metadata(Settings(target=Target(version="0.9.9")), "local"))
    report.add(GateResult(id=gate_id, verdict=verdict, reason="r", category="" if verdict == "pass" else "x.y",
                          duration_s=5.0, metrics={}, thresholds={}, params={}, server_settings={}))
    (report.dir / "logs").mkdir()
    (report.dir / "logs" / "server.log").write_text(f"log of {name}\n")
    return report.dir


def test_parts_merge_into_one_report_in_the_asked_order(tmp_path):
    parts = [_part(tmp_path, "a", "offline-repo", "pass"), _part(tmp_path, "b", "leak", "fail")]
    merged = merge(parts, ["leak", "offline-repo"], tmp_path / "run", "run-x")
    assert [g["id"] for g in merged["gates"]] == ["leak", "offline-repo"]
    assert merged["run_id"] == "run-x" and schema_errors(merged) == []
    on_disk = json.loads((tmp_path / "run" / "report.json").read_text())
    assert [p["gates"] for p in on_disk["parts"]] == [["offline-repo"], ["leak"]]
    assert (tmp_path / "run" / "logs" / "part-b" / "server.log").read_text() == "log of b\n"
    assert "| `leak` | **FAIL**" in (tmp_path / "run" / "summary.md").read_text()


def test_a_gate_s_time_splits_into_server_bound_waiting_and_the_harness_s_own():
    from harness.runner.run import time_split
    split = time_split({"fresh_server_s": 2.0, "scenario_s": 10.0, "sampling_s": 1.5, "teardown_s": 0.5}, 13.0)
    assert (split["server_s"], split["harness_s"]) == (8.5, 4.5)
    assert time_split({"fresh_server_s": 2.0}, 2.5)["server_s"] == 0.0  # the restart failed: all harness


def test_a_merge_of_shards_records_each_shard_and_is_no_shard_itself(tmp_path):
    from harness.baseline import Baseline, Outcome, annotate
    parts = [_part(tmp_path, "a", "offline-repo", "pass"), _part(tmp_path, "b", "leak", "fail")]
    for index, part in enumerate(parts, start=1):
        report = json.loads((part / "report.json").read_text())
        report["shard"] = {"index": index, "count": 2, "gates": [report["gates"][0]["id"]],
                           "selected": ["leak", "offline-repo"]}
        report = annotate(report, Baseline("opal-server==0.9.9", {"leak": (Outcome("x.y", None),)}))
        assert schema_errors(report) == []
        (part / "report.json").write_text(json.dumps(report))
    merged = merge(parts, ["leak", "offline-repo"], tmp_path / "run", "run-x")
    assert "shard" not in merged and [p["shard"] for p in merged["parts"]] == ["1/2", "2/2"]
    # merged without a baseline: the shards' judgements do not speak for it
    assert "baseline" not in merged and all("baseline" not in g for g in merged["gates"])
    assert schema_errors(merged) == []
