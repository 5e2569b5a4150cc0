"""`harness gates --jobs`: groups on stacks of their own, side by side, one merged report."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from harness.report import schema_errors

pytestmark = pytest.mark.integration


def test_two_groups_run_side_by_side_and_merge_into_one_report(tmp_path, harness_settings):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPAL_", "HARNESS_GATE_"))}
    summary = tmp_path / "step-summary.md"
    env.update(HARNESS_RUN_ROOT=str(tmp_path / "runs"), HARNESS_CACHE_DIR=str(harness_settings.cache_dir),
               BACKEND="local", GITHUB_STEP_SUMMARY=str(summary))
    done = subprocess.run([sys.executable, "-m", "harness", "gates", "--opal-version", "0.9.9", "--jobs", "2",
                           "--gate", "leak", "--gate", "repeat-sync", "--reports-dir", str(tmp_path / "r"),
                           "--junitxml", str(tmp_path / "gates.xml")],
                          env=env, text=True, capture_output=True, timeout=600)
    # 0.9.9: leak passes, repeat-sync fails (its cached handle keeps every fetched pack): exit 1
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-2000:]
    [run_dir] = [p for p in (tmp_path / "r").iterdir() if p.name.endswith("-jobs2")]
    assert (tmp_path / "r" / "latest").resolve() == run_dir  # reports/latest is the merged run
    report = json.loads((run_dir / "report.json").read_text())
    assert schema_errors(report) == []
    assert [(g["id"], g["verdict"], g["category"]) for g in report["gates"]] == [
        ("leak", "pass", ""), ("repeat-sync", "fail", "repeat_sync.packs_grew")]
    parts = report["parts"]
    assert sorted(p["gates"] for p in parts) == [["leak"], ["repeat-sync"]]
    assert len({p["run_id"] for p in parts}) == 2  # two stacks
    for part in parts:
        assert (run_dir / "logs" / part["run_id"] / "server.log").is_file()
    assert {"leak.json", "repeat-sync.json"} <= {p.name for p in (run_dir / "timelines").iterdir()}
    assert all(g["timing"]["server_s"] > 0 and g["timing"]["harness_s"] > 0 for g in report["gates"])
    assert summary.read_text().count("### Gates on") == 1  # the merged report's, not each part's
    assert (tmp_path / "gates.xml").read_text().count("<testcase") == 2


def test_the_gate_suite_on_xdist_workers_merges_their_reports(tmp_path, harness_settings):
    """The pytest way: `pytest --pyargs harness.gates.suite -n 2`, one stack per worker, one
    merged report (reports/latest), the JUnit of both gates, the job summary written once."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPAL_", "HARNESS_GATE_", "PYTEST_"))}
    summary = tmp_path / "step-summary.md"
    reports = tmp_path / "reports"
    env.update(HARNESS_RUN_ROOT=str(tmp_path / "runs"), HARNESS_CACHE_DIR=str(harness_settings.cache_dir),
               HARNESS_REPORTS_DIR=str(reports), BACKEND="local", OPAL_VERSION="0.9.9",
               GITHUB_STEP_SUMMARY=str(summary))
    done = subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "harness.gates.suite", "-n", "2",
                           "-m", "leak or repeat_sync", "--junitxml", str(tmp_path / "gates.xml"),
                           "-p", "no:cacheprovider"],
                          cwd=tmp_path, env=env, text=True, capture_output=True, timeout=600)
    # 0.9.9: leak passes, repeat-sync fails: pytest exits 1
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-2000:]
    run_dir = (reports / "latest").resolve()
    assert run_dir.name.endswith("-xdist2"), sorted(p.name for p in reports.iterdir())
    report = json.loads((run_dir / "report.json").read_text())
    assert schema_errors(report) == []
    assert [(g["id"], g["verdict"], g["category"]) for g in report["gates"]] == [
        ("leak", "pass", ""), ("repeat-sync", "fail", "repeat_sync.packs_grew")]
    assert len({p["run_id"] for p in report["parts"]}) == 2  # a stack per worker
    assert sorted(p.name for p in (run_dir / "parts").iterdir()) == sorted(p["run_id"] for p in report["parts"])
    assert summary.read_text().count("### Gates on") == 1
    assert "gate verdicts: 2 xdist workers" in done.stdout
    assert (tmp_path / "gates.xml").read_text().count("<testcase") == 2
