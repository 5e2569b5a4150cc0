"""`harness gates --shard I/N` on two "machines" (here one after the other: one stack at a
time on a shared box) and `harness merge` of their reports: the same verdicts and categories
as one serial run of the same gates, with GitHub annotations from the shards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.report import schema_errors

pytestmark = pytest.mark.integration
EXPECTED_COST_S = 400  # three stacks: the gates serially, then each shard
GATES = ("leak", "repeat-sync", "remote-transitions")


def _env(harness_settings, summary: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPAL_", "HARNESS_GATE_", "HARNESS_BASELINE"))}
    env.update(HARNESS_RUN_ROOT=str(harness_settings.run_root), HARNESS_CACHE_DIR=str(harness_settings.cache_dir),
               BACKEND="local", GITHUB_ACTIONS="true", GITHUB_STEP_SUMMARY=str(summary))
    return env


def _harness(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "harness", *args], env=env, text=True, capture_output=True,
                          timeout=900)
    return done, time.monotonic() - started


def _gates(env: dict[str, str], reports: Path, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
    return _harness(env, "gates", "--opal-version", "0.9.9", *(a for g in GATES for a in ("--gate", g)),
                    "--reports-dir", str(reports), *extra)


def _outcomes(run_dir: Path) -> list[tuple[str, str, str]]:
    report = json.loads((run_dir / "report.json").read_text())
    assert schema_errors(report) == []
    return [(g["id"], g["verdict"], g["category"]) for g in report["gates"]]


def test_two_shards_merged_give_the_serial_verdicts(tmp_path, harness_settings):
    env = _env(harness_settings, tmp_path / "step-summary.md")
    serial, serial_s = _gates(env, tmp_path / "serial")
    assert serial.returncode in (0, 1), serial.stdout[-3000:] + serial.stderr[-2000:]
    expected = _outcomes((tmp_path / "serial" / "latest").resolve())

    shards = []
    for index in (1, 2):
        done, took = _gates(env, tmp_path / f"shard{index}", "--shard", f"{index}/2")
        assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-2000:]
        shard_dir = (tmp_path / f"shard{index}" / "latest").resolve()
        report = json.loads((shard_dir / "report.json").read_text())
        assert report["shard"]["index"] == index and report["shard"]["selected"] == list(GATES)
        failed = [g for g in report["gates"] if g["verdict"] == "fail"]
        for gate in failed:  # GITHUB_ACTIONS=true: the PR page shows each failed gate and why
            assert f"::error title={gate['id']}::" in done.stdout
        shards.append((report["shard"]["gates"], took, shard_dir))
    assert sorted(g for gates, _, _ in shards for g in gates) == sorted(GATES)

    merged, merge_s = _harness(env, "merge", *(str(d) for _, _, d in shards), "--reports-dir",
                               str(tmp_path / "merged"), "--junitxml", str(tmp_path / "gates.xml"))
    assert merged.returncode == serial.returncode, merged.stdout[-3000:] + merged.stderr[-2000:]
    merged_dir = (tmp_path / "merged" / "latest").resolve()
    assert _outcomes(merged_dir) == expected
    assert {c.get("name") for c in ET.parse(tmp_path / "gates.xml").getroot().iter("testcase")} == set(GATES)
    assert json.loads((merged_dir / "benchmark.json").read_text())  # the figures of every gate
    print(f"serial {serial_s:.0f} s; " + "; ".join(f"shard {i} ({', '.join(g)}) {s:.0f} s"
                                                    for i, (g, s, _) in enumerate(shards, start=1))
          + f"; merge {merge_s:.1f} s; verdicts {expected}")
