"""The harness as a server's own repository uses it: the built wheel in a fresh virtualenv
outside this checkout, `harness gates` and the packaged pytest suite from an empty directory
(JUnit properties), `harness compare` of a fix against its base, `harness rerun` of a
recorded run on another target, a detached stack driven `--against`, and the report a stack
that fails to come up leaves behind. Real releases, real stacks (local backend)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import PROJECT_ROOT
from harness.report import schema_errors

pytestmark = pytest.mark.integration


def _env(tmp_path: Path, harness_settings, **extra: str) -> dict[str, str]:
    """A clean environment: no OPAL_*/HARNESS_GATE_* of the caller, our own run root, the
    shared server-venv cache (so the releases are not installed again)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPAL_", "HARNESS_GATE_", "GITHUB_"))}
    env.update(HARNESS_RUN_ROOT=str(tmp_path / "runs"), HARNESS_CACHE_DIR=str(harness_settings.cache_dir),
               BACKEND="local", **extra)
    env.pop("PYTHONPATH", None)
    return env


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, text=True, capture_output=True, timeout=timeout)


def _testcases(junit: Path) -> dict[str, dict[str, str]]:
    """testcase name -> its properties. Under pytest's default JUnit family (xunit2) the pytest
    route records a gate's properties on the testsuite, named `<gate>.<name>`: they are
    given to that gate's testcase (`test_gate[<gate>]`) here."""
    root = ET.parse(junit).getroot()
    cases = {case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
             for case in root.iter("testcase")}
    for suite in root.iter("testsuite"):
        for prop in suite.findall("properties/property"):
            gate, _, name = (prop.get("name") or "").partition(".")
            if name and (case := cases.get(f"test_gate[{gate}]")) is not None:
                case.setdefault(name, prop.get("value") or "")
    return cases


def _report(run_dir: Path) -> dict:
    report = json.loads((run_dir / "report.json").read_text())
    assert schema_errors(report) == []
    return report


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    """The project built as a wheel and installed into a fresh virtualenv outside the checkout."""
    work = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"),
                            str(PROJECT_ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    [wheel] = (work / "dist").glob("policy_harness-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                                str(wheel)], capture_output=True, text=True, timeout=900)
    assert installed.returncode == 0, installed.stderr[-2000:]
    return venv


def test_the_wheel_runs_gates_from_an_empty_directory(wheel_venv, tmp_path, harness_settings):
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    env = _env(tmp_path, harness_settings, OPAL_VERSION="0.9.9")
    where = _run([str(wheel_venv / "bin" / "python"), "-c", "import harness; print(harness.PROJECT_ROOT)"], empty, env)
    assert where.stdout.strip().endswith("site-packages/harness/_bundled"), where.stdout + where.stderr
    assert (Path(where.stdout.strip()) / "stacks" / "constraints" / "opal-server-0.9.9.txt").is_file()
    baseline = _run([str(wheel_venv / "bin" / "python"), "-c",
                     "from harness.baseline import shipped; print(shipped('opal-server-0.9.9'))"], empty, env)
    assert baseline.stdout.strip().endswith("site-packages/harness/baselines/opal-server-0.9.9.json"), baseline

    cli = _run([str(wheel_venv / "bin" / "harness"), "gates", "--gate", "leak", "--junitxml", "cli.xml"], empty, env)
    assert cli.returncode == 0, cli.stdout[-3000:] + cli.stderr[-2000:]
    props = _testcases(empty / "cli.xml")["leak"]
    assert props["verdict"] == "pass" and props["figure.cache entries kept [entries]"] == "0"
    report = _report((empty / props["report"]).parent)
    assert report["server_version"] == "0.9.9" and report["target_spec"]["version"] == "0.9.9"

    suite = _run([str(wheel_venv / "bin" / "python"), "-m", "pytest", "--pyargs", "harness.gates.suite", "-m", "leak",
                  "--strict-markers", "--junitxml", "pytest.xml", "-p", "no:cacheprovider"], empty, env)
    assert suite.returncode == 0, suite.stdout[-3000:] + suite.stderr[-2000:]
    cases = _testcases(empty / "pytest.xml")
    [(name, props)] = cases.items()
    assert name == "test_gate[leak]", cases
    assert props["verdict"] == "pass" and props["category"] == "none"
    assert float(props["figure.clone dirs kept [dirs]"]) == 0
    assert Path(props["report"]).is_absolute() or (empty / props["report"]).is_file()
    assert not list(empty.glob("*.py")), "nothing was copied into the directory"


@pytest.fixture(scope="module")
def compared(tmp_path_factory, harness_settings):
    """`harness compare 0.9.6 0.9.9 --gate leak`, with a non-default gate setting and an
    OPAL_* setting in its environment (so a rerun of its reports can show they carry over)."""
    work = tmp_path_factory.mktemp("compare")
    env = _env(work, harness_settings, HARNESS_GATE_LEAK_CYCLES="2", OPAL_SCOPES_POLICY_CLONE_WAIT_SECONDS="19")
    done = _run([sys.executable, "-m", "harness", "compare", "0.9.6", "0.9.9", "--gate", "leak",
                 "--reports-dir", str(work / "reports")], work, env, timeout=900)
    [out_dir] = (work / "reports").glob("compare-*")
    return done, out_dir, work


def test_compare_judges_a_fix_against_its_base(compared):
    done, out_dir, _ = compared
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    result = json.loads((out_dir / "compare.json").read_text())
    [row] = result["gates"]
    assert (row["id"], row["a"], row["a_category"], row["b"]) == ("leak", "fail", "leak.caches_kept", "pass")
    assert row["b_worse"] is False and result["exit_status"] == 0
    kept = {f["name"]: f for f in row["figures"]}["cache entries kept"]
    assert kept["a"] == 3 * 2 * 10 and kept["b"] == 0 and kept["ratio_b_over_a"] == 0  # 3 caches × 2 cycles × 10
    table = (out_dir / "compare.md").read_text()
    assert "| `leak` | **FAIL** leak.caches_kept | **PASS**" in table
    assert (out_dir / "plots" / "leak.png").stat().st_size > 10_000
    for side in ("A", "B"):
        assert _report((out_dir / side / "latest").resolve())["gates"][0]["params"]["cycles"] == 2


def test_rerun_repeats_a_recorded_run_on_another_target(compared, harness_settings, tmp_path):
    _, out_dir, _ = compared
    recorded = (out_dir / "A" / "latest").resolve()  # 0.9.6: leak FAIL, cycles=2
    env = _env(tmp_path, harness_settings)  # neither the gate setting nor the OPAL_* one is set here
    done = _run([sys.executable, "-m", "harness", "rerun", str(recorded), "--opal-version", "0.9.9",
                 "--reports-dir", str(tmp_path / "reports")], tmp_path, env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "recorded fail leak.caches_kept -> now pass" in done.stdout
    new = _report((tmp_path / "reports" / "latest").resolve())
    [gate] = new["gates"]
    assert gate["params"]["cycles"] == 2 and gate["verdict"] == "pass"
    assert gate["server_settings"]["OPAL_SCOPES_POLICY_CLONE_WAIT_SECONDS"] == "19"
    assert new["target_spec"]["version"] == "0.9.9"


def test_gates_run_against_a_detached_stack(tmp_path, harness_settings):
    env = _env(tmp_path, harness_settings, OPAL_VERSION="0.9.9")
    up = _run([sys.executable, "-m", "harness", "up", "--detach", "--json", "--repos", "40"], tmp_path, env)
    assert up.returncode == 0, up.stdout + up.stderr
    described = json.loads(up.stdout.strip().splitlines()[-1])
    run_id = described["run_id"]
    try:
        gates = _run([sys.executable, "-m", "harness", "gates", "--against", run_id, "--gate", "leak",
                      "--reports-dir", str(tmp_path / "reports")], tmp_path, env)
        assert gates.returncode == 0, gates.stdout[-3000:] + gates.stderr[-2000:]
        assert _report(tmp_path / "reports" / run_id)["gates"][0]["verdict"] == "pass"
        import requests
        assert requests.get(f"{described['endpoints']['server']}/healthcheck", timeout=10).status_code == 200
    finally:
        down = _run([sys.executable, "-m", "harness", "down", run_id], tmp_path, env)
    assert down.returncode == 0, down.stderr
    assert not (tmp_path / "runs" / run_id).exists()
    status = _run([sys.executable, "-m", "harness", "status"], tmp_path, env)
    assert "no runs under" in status.stdout


def test_a_stack_that_fails_to_come_up_leaves_its_logs_and_the_failed_service(tmp_path, harness_settings):
    env = _env(tmp_path, harness_settings, OPAL_VERSION="0.9.9", OPAL_POLICY_REFRESH_INTERVAL="not-a-number")
    done = _run([sys.executable, "-m", "harness", "gates", "--gate", "leak", "--reports-dir", str(tmp_path / "r"),
                 "--junitxml", "gates.xml"], tmp_path, env)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    [run_dir] = [p for p in (tmp_path / "r").iterdir() if p.name != "latest"]
    report = _report(run_dir)
    assert report["error"]["service"] == "server" and "exited" in report["error"]["message"]
    assert "not-a-number" in (run_dir / "logs" / "server.log").read_text()
    assert {"redis.log", "postgres.log", "githost.log"} <= {p.name for p in (run_dir / "logs").iterdir()}
    assert not list((tmp_path / "runs").iterdir()), "the run dir itself is removed"
    error = ET.parse(tmp_path / "gates.xml").getroot().find("testcase/error")
    assert error is not None and error.get("type") == "service server"
