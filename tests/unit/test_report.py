import json
from pathlib import Path

import pytest

from harness import cli
from harness.errors import HarnessError
from harness.report import RunReport
from harness.runner.rejudge import parse_threshold_args, rejudge
from harness.runner.run import configure, gate
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


def test_a_checker_lists_every_problem_with_its_figures_and_the_first_names_the_category():
    from harness.verdict import Problems
    problems = Problems()
    problems.add("orphan.clone_dirs_kept", "burst: 22 of 500 clone dirs stayed", clone_dirs_kept=22)
    problems.add("orphan.fds_kept", "burst: fds kept socket +412", socket_kept=412)
    problems.note("the server said: nothing")
    verdict = problems.verdict("fine", {})
    assert verdict.verdict == "fail" and verdict.category == "orphan.clone_dirs_kept"
    assert [p.category for p in verdict.problems] == ["orphan.clone_dirs_kept", "orphan.fds_kept"]
    assert verdict.problems[1].figures == {"socket_kept": 412}
    assert "socket +412" in verdict.reason and "the server said" in verdict.reason


def test_junit_and_summary_list_every_problem():
    from harness.ci_outputs import step_summary, write_junit
    from harness.report import summary_markdown
    gate = {"id": "orphan-clones", "verdict": "fail", "reason": "r", "category": "orphan.clone_dirs_kept",
            "duration_s": 3.0, "problems": [{"category": "orphan.clone_dirs_kept", "text": "dirs kept"},
                                            {"category": "orphan.fds_kept", "text": "sockets kept"}]}
    report = {"run_id": "x", "target": "opal-server==0.9.9", "backend": "local", "server_profile": "quick",
              "started_at": "a", "ended_at": "b", "gates": [gate]}
    assert "`orphan.fds_kept` sockets kept" in summary_markdown(report)
    assert "`orphan.fds_kept` sockets kept" in step_summary(report, Path("r"))
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        text = write_junit(report, Path(tmp), Path(tmp) / "j.xml").read_text()
    assert "orphan.fds_kept: sockets kept" in text and 'name="problems"' in text
