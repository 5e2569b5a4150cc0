import json

import pytest

from harness import cli
from harness.errors import HarnessError
from harness.gates.rejudge import parse_threshold_args, rejudge
from harness.gates.runner import configure, gate
from harness.report import RunReport
from harness.timeline import FAULT_START, Timeline
from harness.verdict import GateResult


def _leak_result():
    tl = Timeline("leak")
    tl.fact("params", {"scopes": 10})
    for label, fds, locks in (("baseline", 40, 1), ("loaded 1", 56, 11), ("after 1", 46, 1),
                              ("loaded 2", 57, 11), ("after 2", 47, 1)):
        tl.record("snapshot", label=label, repo_locks=locks, repos=locks, repos_last_fetched=locks,
                  clone_dirs=locks, worker_files=fds, worker_pid=7, worker_rss_kb=90_000, worker_threads=20)
        if label.startswith("after"):
            tl.record("deletes", cycle=int(label.split()[1]), statuses=[204] * 10)
    tl.mark(FAULT_START)
    return GateResult(id="leak", verdict="fail", reason="fds grew", category="leak.files_grew", duration_s=3.0,
                      metrics={}, thresholds={"cache_tolerance": 0, "clone_dir_tolerance": 0, "open_file_tolerance": 4},
                      params={}, server_settings={"OPAL_SCOPES_GIT_FETCH_TIMEOUT": "10"}, timeline=tl)


@pytest.fixture
def run_dir(tmp_path):
    report = RunReport(tmp_path, "run-1", "opal-server==0.9.9", "local", "quick")
    report.add(_leak_result())
    return report.dir


def test_a_run_report_has_json_summary_plot_timeline_and_latest_link(run_dir, tmp_path):
    data = json.loads((run_dir / "report.json").read_text())
    assert data["run_id"] == "run-1" and data["backend"] == "local" and data["server_profile"] == "quick"
    [gate] = data["gates"]
    assert {"id", "verdict", "reason", "duration_s", "metrics", "thresholds"} <= set(gate)
    assert (run_dir / "plots" / "leak.png").stat().st_size > 1000
    assert (run_dir / "timelines" / "leak.json").exists()
    assert "| `leak` | **FAIL** |" in (run_dir / "summary.md").read_text()
    assert (tmp_path / "latest").resolve() == run_dir.resolve()


def test_rejudging_with_a_looser_threshold_changes_the_verdict(run_dir):
    assert rejudge(run_dir, {})[0]["verdict"] == "fail"
    [judged] = rejudge(run_dir, {"leak": {"open_file_tolerance": "10"}})
    assert judged["verdict"] == "pass" and judged["recorded_verdict"] == "fail"


def test_report_command_exit_status_follows_the_new_verdicts(run_dir, capsys):
    assert cli.main(["report", str(run_dir)]) == 1
    assert cli.main(["report", str(run_dir), "--threshold", "leak.open_file_tolerance=10"]) == 0
    assert "recorded fail, now pass" in capsys.readouterr().out


def test_bad_threshold_arguments_name_the_form(run_dir):
    with pytest.raises(HarnessError, match="GATE.NAME=VALUE"):
        parse_threshold_args(["open_file_tolerance=3"])
    with pytest.raises(HarnessError, match="no gate offline-repo"):
        rejudge(run_dir, {"offline-repo": {"min_loaded_success": "0.5"}})
    with pytest.raises(HarnessError, match="no setting bogus"):
        rejudge(run_dir, {"leak": {"bogus": "1"}})
    with pytest.raises(HarnessError, match="no setting nonsense"):
        configure(gate("leak"), {"nonsense": "1"})
