"""The shipped incidents (harness/incidents/), each replayed as a user runs it — `harness replay
NAME --version V` — on the real releases, with its one expected outcome; shown both ways
where a release or a control differs. Each run's report carries the plot, and nothing is
left running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.replay.scenario import shipped_names
from tests.integration.test_cerbos_gates import Cell, _mismatches

pytestmark = [pytest.mark.integration, pytest.mark.selftest]

PASSES = Cell("pass")
EXPECTED_COST_S = 80.0  # per replay: a local stack, 40-60 s of schedule, the settle (tests/conftest.py)


@dataclass(frozen=True)
class Target:
    version: str
    env: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        return " ".join([self.version, *(f"{k}={v}" for k, v in self.env)])


R096, R099 = Target("0.9.6"), Target("0.9.9")
C055 = Target("0.55.0")
DISK_SYNC = Target("0.55.0", (("CERBOS_STORE", "disk-sync"),))  # the git-sync sidecar pattern: follows a rewrite
NEVER = Cell("fail", ("replay.freshness.never_served",))

# (incident, target) -> its one outcome, measured here (the README's "Shipped incidents")
EXPECTED: dict[tuple[str, Target], Cell] = {
    # 24 commits, 8 of them in the outage: every one served after it (0.5 s worst on 0.9.9)
    ("git-host-outage", R099): PASSES,
    # 12 black-holed remotes: 0.9.6's git pool (6 threads here) hangs on them and no commit of
    # the 24 other scopes is ever served (168 of 168); 0.9.9 serves every one at once
    ("offline-repo-hang", R096): NEVER,
    ("offline-repo-hang", R099): PASSES,
    # Postgres stopped for 10 s of 40: 0.9.6 never syncs again (30 of 40 changes never served,
    # on every scope); 0.9.9 replays what it buffered (worst 1.3 s)
    ("broker-outage", R096): NEVER,
    ("broker-outage", R099): PASSES,
    # 300 fetches: +1 open file per fetch (+300 files/h) and +4.0 MB/h of RSS on 0.9.9 (0.9.6: the
    # same, +4.4 MB/h); no release or shipped control differs (the repeat-sync control tree is
    # the fix: tests/integration/repeat_sync_control.py)
    ("pr-950-memory-growth", R099): Cell("fail", ("replay.files.slope", "replay.rss.slope")),
    # A rewrite of a served commit: 0.55.0 (0.51.0 too, by hand) never serves it nor any commit
    # after it (5 of 9 changes); disk-sync's reset follows it (worst 5.9 s of a 15 s bound)
    ("force-push-not-followed", C055): NEVER,
    ("force-push-not-followed", DISK_SYNC): PASSES,
}


def replay(incident: str, target: Target, out: Path) -> tuple[subprocess.CompletedProcess, dict[str, Any], Path]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPAL_", "CERBOS_", "HARNESS_GATE_", "HARNESS_BASELINE", "SERVER", "BACKEND"))}
    env.update(dict(target.env))
    done = subprocess.run([sys.executable, "-m", "harness", "replay", incident, "--version", target.version,
                           "--backend", "local", "--reports-dir", str(out / "reports")],
                          cwd=out, env=env, text=True, capture_output=True, timeout=900)
    run_dir = (out / "reports" / "latest").resolve()
    return done, json.loads((run_dir / "report.json").read_text()), run_dir


def test_every_shipped_incident_has_an_expected_outcome():
    assert {incident for incident, _ in EXPECTED} == set(shipped_names())


def _check(incident: str, target: Target, tmp_path: Path) -> None:
    mine = {p.pid for p in psutil.Process().children(recursive=True)}
    done, report, run_dir = replay(incident, target, tmp_path)
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in mine]
    assert left == [], f"left running after `harness replay`: {left}"
    [gate] = report["gates"]
    expected = EXPECTED[(incident, target)]
    wrong = _mismatches(expected, gate)
    assert not wrong, f"{incident} on {target.name}: {'; '.join(wrong)}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    assert done.returncode == {"pass": 0, "fail": 1}[expected.verdict], done.stderr[-2000:]
    assert (run_dir / "plots" / "replay.png").stat().st_size > 10_000
    timeline = json.loads((run_dir / "timelines" / "replay.json").read_text())
    assert all(f["took"] for f in timeline["facts"]["faults"]), timeline["facts"]["faults"]
    if incident == "pr-950-memory-growth":
        [row] = [r for r in gate["metrics"]["projection"]["rows"] if r["figure"] == "rss"]
        assert row["reported_per_hour"] == 129 and row["reported_sources"] == 43026
        assert "projection: rss" in gate["reason"]


def _incident_class(incident: str) -> type:
    """A test class per incident: --dist loadscope gives each its own worker (tests/conftest.py)."""
    targets = [t for i, t in EXPECTED if i == incident]

    @pytest.mark.parametrize("target", targets, ids=[t.name.replace(" ", "-") for t in targets])
    def test_the_incident_gives_its_expected_outcome(self, target, tmp_path):
        _check(incident, target, tmp_path)
    return type(f"TestIncident_{incident.replace('-', '_')}", (),
                {"test_the_incident_gives_its_expected_outcome": test_the_incident_gives_its_expected_outcome})


for _incident in dict.fromkeys(i for i, _ in EXPECTED):
    _cls = _incident_class(_incident)
    globals()[_cls.__name__] = _cls
