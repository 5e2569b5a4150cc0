"""`harness gates --jobs`: how gates are grouped and how the parts merge into one report."""

import json

from harness.config import Settings, Target
from harness.gates.parallel import TIMED, default_jobs, merge, plan
from harness.gates.registry import GATES
from harness.report import RunReport, schema_errors
from harness.runinfo import settings_metadata
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
    assert default_jobs(["leak", "boot-timing"]) == 1
    assert 1 <= default_jobs(list(GATES)) <= len(GATES) - len(TIMED)


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
    from harness.gates.runner import time_split
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
