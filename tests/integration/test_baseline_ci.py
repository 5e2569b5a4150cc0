"""Item 8 of issue 21: the example workflow is green when nothing regressed. Its `harness
gates` step runs as written, on the local backend with a cheap gate subset, the PR's tree
replaced by a release and its committed baseline by the shipped 0.9.9 one: on 0.9.9 every
failure is known (exit 0; JUnit shows it as an xfail skip, the job summary as known); 0.9.6
against the same baseline exits 1 and names its new failure (leak)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from harness import PROJECT_ROOT
from harness.baseline import shipped

pytestmark = pytest.mark.integration
EXPECTED_COST_S = 150  # two stacks, leak + repeat-sync each (tests/conftest.py orders by cost)
GATES = ("leak", "repeat-sync")


def workflow_gates_command() -> list[str]:
    steps = yaml.safe_load((PROJECT_ROOT / "examples" / "github-actions.yml").read_text())["jobs"]["gates"]["steps"]
    [command] = [step["run"].strip() for step in steps if step.get("run", "").startswith("harness gates")]
    return shlex.split(command.replace("${{ matrix.shard }}", "1"))  # GitHub fills it in before the shell


def as_run_here(argv: list[str], version: str, baseline: Path, out: Path) -> list[str]:
    """The workflow's command with a release for the PR's tree, the shipped baseline for its
    committed one, the cheap gate subset, and this test's report and JUnit paths."""
    replace = {"--opal-source": ["--opal-version", version], "--baseline": ["--baseline", str(baseline)],
               "--junitxml": ["--junitxml", str(out / "gates.xml")], "--gate": [],
               "--shard": ["--shard", "1/1"]}  # one machine here: the matrix's one shard
    done, args = [], iter(argv[1:])  # argv[0] is `harness`
    for arg in args:
        if arg in replace:
            next(args)
            done += replace[arg]
        else:
            done.append(arg)
    assert {"--opal-version", "--baseline", "--junitxml"} <= set(done), f"the workflow's command changed: {argv}"
    return [sys.executable, "-m", "harness", *done, *(a for g in GATES for a in ("--gate", g)),
            "--reports-dir", str(out / "reports")]


def run_step(version: str, tmp_path: Path, harness_settings) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / version
    out.mkdir()
    baseline = shipped("opal-server-0.9.9")
    assert baseline is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPAL_", "HARNESS_GATE_", "HARNESS_BASELINE"))}
    env.update(HARNESS_RUN_ROOT=str(harness_settings.run_root), HARNESS_CACHE_DIR=str(harness_settings.cache_dir),
               GITHUB_STEP_SUMMARY=str(out / "step-summary.md"))
    done = subprocess.run(as_run_here(workflow_gates_command(), version, baseline, out), cwd=out, env=env,
                          text=True, capture_output=True, timeout=900)
    return done, out


def junit_cases(path: Path) -> dict[str, ET.Element]:
    return {case.get("name"): case for case in ET.parse(path).getroot().iter("testcase")}


def test_the_workflow_step_is_green_on_0_9_9_with_its_baseline(tmp_path, harness_settings):
    done, out = run_step("0.9.9", tmp_path, harness_settings)
    said = done.stdout + done.stderr
    assert done.returncode == 0, said[-4000:]
    assert "[harness] baseline: " in said and "known failures (not failing the run): 1" in said
    cases = junit_cases(out / "gates.xml")
    assert cases["repeat-sync"].find("skipped").get("type") == "pytest.xfail"
    assert cases["repeat-sync"].find("skipped").get("message").startswith("known failure: repeat_sync.packs_grew")
    assert cases["leak"].find("failure") is None and cases["leak"].find("skipped") is None
    summary = (out / "step-summary.md").read_text()
    assert "**Known failures (do not fail the run)** (1)" in summary and "New failures" not in summary


def test_0_9_6_against_the_same_baseline_fails_naming_its_new_failures(tmp_path, harness_settings):
    done, out = run_step("0.9.6", tmp_path, harness_settings)
    said = done.stdout + done.stderr
    assert done.returncode == 1, said[-4000:]
    assert "new failures: 1" in said and "- leak: new failure leak.caches_kept" in said
    cases = junit_cases(out / "gates.xml")
    assert cases["leak"].find("failure").get("message").startswith("new failure leak.caches_kept")
    summary = (out / "step-summary.md").read_text()
    assert "**New failures (fail the run)** (1)" in summary and "- `leak`: new failure" in summary
