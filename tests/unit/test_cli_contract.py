"""The CLI contract, per command: exit 0 = every judged gate passed (or only baselined
failures), 1 = a gate failed or B regressed, 2 = the harness could not judge (usage, bad
input, a stack that did not come up, an ERROR verdict). No stack runs here: a fake stack
and fake gate results stand in for them."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness import cli, runs
from harness.config import Settings
from harness.errors import HarnessError, ServiceFailed
from harness.report import point_latest
from harness.stack.base import Stack
from harness.timeline import Timeline
from harness.verdict import GateResult, Verdict

CONTRACT_COMMANDS = ("gates", "compare", "rerun", "report", "scale")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith(("HARNESS_", "OPAL_")) or name in ("BACKEND", "GITHUB_STEP_SUMMARY"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HARNESS_RUN_ROOT", str(tmp_path / "runs"))
    monkeypatch.setenv("HARNESS_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.chdir(tmp_path)


class FakeStack(Stack):
    """Comes up (or not) without starting anything; records the keep decision it was torn down with."""

    backend = "fake"
    fail_up = False
    last: FakeStack | None = None

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.kept_at_exit: bool | None = None
        FakeStack.last = self

    def up(self) -> None:
        self.run_dir.mkdir(parents=True)
        if self.fail_up:
            raise ServiceFailed("redis exited with code 1 while starting", service="redis")

    def down(self) -> None:
        self.kept_at_exit = False

    def __exit__(self, *exc_info) -> None:
        if self.keep:
            self.kept_at_exit = True
        super().__exit__(*exc_info)

    def service(self, name):
        raise NotImplementedError

    def address(self, name):
        return None

    @property
    def server(self):
        raise NotImplementedError

    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    def repo_url(self, repo, via_latency=False, via_front=False):
        return ""

    def dead_url(self, index, kind="blackhole"):
        return ""

    def ensure_repos(self, count):
        pass

    def rename_repo(self, repo, new_name):
        pass

    def run_metadata(self, run_env=None) -> dict[str, Any]:
        return {}


def _result(gate_id: str, verdict: str) -> GateResult:
    return GateResult(id=gate_id, verdict=verdict, reason=f"{verdict} on purpose",
                      category="" if verdict == "pass" else f"{verdict}.test", duration_s=1.0, metrics={},
                      thresholds={}, params={}, server_settings={})


def _fake_gates(monkeypatch, verdicts: dict[str, str], fail_up: bool = False) -> None:
    monkeypatch.setattr(FakeStack, "fail_up", fail_up)
    monkeypatch.setattr("harness.runner.batch.make_stack", FakeStack)
    monkeypatch.setattr("harness.runner.batch.run_gate",
                        lambda gate_id, stack, profile, overrides=None, server_env=None:
                        _result(gate_id, verdicts[gate_id]))


def _gate_flags(verdicts: dict[str, str]) -> list[str]:
    return [arg for gate_id in verdicts for arg in ("--gate", gate_id)]


# -- --help documents the contract --------------------------------------------------------

@pytest.mark.parametrize("command", CONTRACT_COMMANDS)
def test_each_command_s_help_states_its_exit_statuses(command, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "exit status" in out.lower()
    for status in ("0 ", "1 ", "2 "):
        assert f"\n  {status}" in out, f"`harness {command} --help` does not explain exit {status.strip()}"


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("harness ")


def test_an_unexpected_crash_is_exit_2_not_1(monkeypatch, capsys):
    def crash(args):
        raise RuntimeError("a bug")
    monkeypatch.setattr("harness.cli.cmd_status", crash)
    assert cli.main(["status"]) == 2
    assert "RuntimeError: a bug" in capsys.readouterr().err


# -- gates --------------------------------------------------------------------------------

@pytest.mark.parametrize(("verdicts", "status"), [
    ({"zombie-cap": "pass", "offline-repo": "pass"}, 0),
    ({"zombie-cap": "fail", "offline-repo": "pass"}, 1),
    ({"zombie-cap": "error", "offline-repo": "pass"}, 2),
    ({"zombie-cap": "error", "offline-repo": "fail"}, 1),
])
def test_gates_exit_status_follows_the_verdicts(monkeypatch, verdicts, status):
    _fake_gates(monkeypatch, verdicts)
    assert cli.main(["gates", "--backend", "local", *_gate_flags(verdicts)]) == status


def test_gates_exit_2_when_the_stack_did_not_come_up(monkeypatch):
    _fake_gates(monkeypatch, {"zombie-cap": "pass"}, fail_up=True)
    assert cli.main(["gates", "--backend", "local", "--gate", "zombie-cap"]) == 2


def test_gates_input_error_is_exit_2_and_leaves_nothing(tmp_path, capsys):
    assert cli.main(["gates", "--backend", "local", "--gate", "leek"]) == 2
    assert "unknown gate leek" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists() and not (tmp_path / "runs").exists()


def test_gates_honours_harness_keep_stack(monkeypatch):
    _fake_gates(monkeypatch, {"zombie-cap": "pass"})
    monkeypatch.setenv("HARNESS_KEEP_STACK", "1")
    assert cli.main(["gates", "--backend", "local", "--gate", "zombie-cap"]) == 0
    assert FakeStack.last is not None and FakeStack.last.kept_at_exit is True


def test_an_explicit_keep_stack_flag_wins_over_the_variable(monkeypatch):
    _fake_gates(monkeypatch, {"zombie-cap": "pass"})
    monkeypatch.setenv("HARNESS_KEEP_STACK", "1")
    assert cli.main(["gates", "--backend", "local", "--gate", "zombie-cap", "--keep-stack", "never"]) == 0
    assert FakeStack.last is not None and FakeStack.last.kept_at_exit is False


@pytest.mark.parametrize("flag", [[], ["--keep-stack", "never"]])
def test_gates_jobs_refuses_harness_keep_stack(monkeypatch, capsys, flag):
    monkeypatch.setenv("HARNESS_KEEP_STACK", "1")
    assert cli.main(["gates", "--backend", "local", "--jobs", "2", "--gate", "zombie-cap", "--gate", "leak",
                     *flag]) == 2
    assert "HARNESS_KEEP_STACK=1" in capsys.readouterr().err


# -- rerun --------------------------------------------------------------------------------

def _recorded_run(tmp_path: Path, verdicts: dict[str, str]) -> Path:
    run = tmp_path / "recorded"
    (run / "timelines").mkdir(parents=True)
    gates = []
    for gate_id, verdict in verdicts.items():
        Timeline(gate_id).save(run / "timelines" / f"{gate_id}.json")
        gates.append({**_result(gate_id, verdict).to_json(), "timeline": f"timelines/{gate_id}.json"})
    report = {"run_id": "recorded", "target": "opal-server==0.9.9", "backend": "local",
              "target_spec": {"version": "0.9.9", "source": None, "image": None}, "gates": gates}
    (run / "report.json").write_text(json.dumps(report))
    return run


@pytest.mark.parametrize(("verdicts", "status"), [
    ({"zombie-cap": "pass"}, 0), ({"zombie-cap": "fail"}, 1), ({"zombie-cap": "error"}, 2),
])
def test_rerun_exit_status_follows_the_verdicts(monkeypatch, tmp_path, verdicts, status):
    run = _recorded_run(tmp_path, {"zombie-cap": "pass"})
    _fake_gates(monkeypatch, verdicts)
    assert cli.main(["rerun", str(run), "--backend", "local"]) == status


def test_rerun_of_no_report_is_exit_2(tmp_path):
    assert cli.main(["rerun", str(tmp_path / "nothing")]) == 2


def test_rerun_honours_harness_keep_stack(monkeypatch, tmp_path):
    run = _recorded_run(tmp_path, {"zombie-cap": "pass"})
    _fake_gates(monkeypatch, {"zombie-cap": "pass"})
    monkeypatch.setenv("HARNESS_KEEP_STACK", "1")
    assert cli.main(["rerun", str(run), "--backend", "local"]) == 0
    assert FakeStack.last is not None and FakeStack.last.kept_at_exit is True


# -- report -------------------------------------------------------------------------------

def _rejudged_as(monkeypatch, verdicts: dict[str, str]) -> None:
    monkeypatch.setattr("harness.runner.rejudge.judge",
                        lambda g, timeline, params, thresholds: Verdict(verdicts[g.id], "on purpose", "x.y"))


@pytest.mark.parametrize(("verdicts", "status"), [
    ({"zombie-cap": "pass", "offline-repo": "pass"}, 0),
    ({"zombie-cap": "fail", "offline-repo": "pass"}, 1),
    ({"zombie-cap": "error", "offline-repo": "pass"}, 2),
    ({"zombie-cap": "error", "offline-repo": "fail"}, 1),
])
def test_report_exit_status_is_the_same_as_gates(monkeypatch, tmp_path, verdicts, status):
    run = _recorded_run(tmp_path, dict.fromkeys(verdicts, "pass"))
    _rejudged_as(monkeypatch, verdicts)
    assert cli.main(["report", str(run)]) == status


def test_report_judged_against_a_baseline_exits_0_on_only_known_failures(monkeypatch, tmp_path):
    run = _recorded_run(tmp_path, {"zombie-cap": "pass", "offline-repo": "pass"})
    _rejudged_as(monkeypatch, {"zombie-cap": "fail", "offline-repo": "pass"})
    baseline = tmp_path / "known.json"
    baseline.write_text(json.dumps({"schema_version": 1, "target": "opal-server==0.9.9", "known_failures": {
        "zombie-cap": [{"category": "x.y", "problems": None}]}}))
    assert cli.main(["report", str(run), "--baseline", str(baseline)]) == 0
    monkeypatch.setenv("HARNESS_BASELINE", str(baseline))
    assert cli.main(["report", str(run)]) == 0
    assert cli.main(["report", str(run), "--baseline", "none"]) == 1
    _rejudged_as(monkeypatch, {"zombie-cap": "pass", "offline-repo": "pass"})
    assert cli.main(["report", str(run), "--strict"]) == 1  # fixed, and strict


def test_report_of_a_run_whose_stack_did_not_come_up_is_exit_2(tmp_path):
    run = _recorded_run(tmp_path, {})
    data = json.loads((run / "report.json").read_text())
    (run / "report.json").write_text(json.dumps({**data, "error": {"service": "redis", "message": "exited"}}))
    assert cli.main(["report", str(run)]) == 2


@pytest.mark.parametrize("damage", ["timeline", "json"])
def test_report_of_a_damaged_run_is_exit_2_with_one_line(tmp_path, capsys, damage):
    run = _recorded_run(tmp_path, {"zombie-cap": "pass"})
    if damage == "timeline":
        (run / "timelines" / "zombie-cap.json").unlink()
    else:
        (run / "report.json").write_text("{not json")
    assert cli.main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_report_with_a_bad_threshold_is_exit_2(tmp_path):
    run = _recorded_run(tmp_path, {"zombie-cap": "pass"})
    assert cli.main(["report", str(run), "--threshold", "zombie-cap"]) == 2


# -- compare ------------------------------------------------------------------------------

def _side_report(out_dir: Path, side: str, verdicts: dict[str, str], error: bool = False) -> None:
    run = out_dir / side / "run"
    run.mkdir(parents=True)
    report: dict[str, Any] = {"target": f"target-{side}",
                              "gates": [{**_result(g, v).to_json(), "figures": []} for g, v in verdicts.items()]}
    if error:
        report["error"] = {"service": "redis", "message": "exited"}
    (run / "report.json").write_text(json.dumps(report))
    (out_dir / side / "latest").symlink_to("run")


def _fake_sides(monkeypatch, a: dict[str, str], b: dict[str, str], b_error: bool = False) -> list[Path]:
    made: list[Path] = []

    def run_sides(specs, gates, out_dir, extra, server="opal"):
        made.append(out_dir)
        _side_report(out_dir, "A", a)
        _side_report(out_dir, "B", b, error=b_error)
        return {"A": 0, "B": 0}
    monkeypatch.setattr("harness.compare.run_sides", run_sides)
    monkeypatch.setattr("harness.compare.overlay_plot", lambda *args, **kwargs: None)
    return made


@pytest.mark.parametrize(("a", "b", "status"), [
    ({"leak": "pass", "zombie-cap": "pass"}, {"leak": "pass", "zombie-cap": "pass"}, 0),
    ({"leak": "pass", "zombie-cap": "pass"}, {"leak": "fail", "zombie-cap": "pass"}, 1),
    ({"leak": "pass", "zombie-cap": "pass"}, {"leak": "error", "zombie-cap": "pass"}, 2),
    ({"leak": "pass", "zombie-cap": "pass"}, {"leak": "error", "zombie-cap": "fail"}, 1),
    ({"leak": "fail", "zombie-cap": "pass"}, {"leak": "fail", "zombie-cap": "pass"}, 0),
    ({"leak": "error", "zombie-cap": "pass"}, {"leak": "fail", "zombie-cap": "pass"}, 2),
    ({"leak": "pass", "zombie-cap": "pass"}, {"leak": "pass"}, 2),
])
def test_compare_exit_status(monkeypatch, tmp_path, a, b, status):
    _fake_sides(monkeypatch, a, b)
    assert cli.main(["compare", "0.9.6", "0.9.9"]) == status
    [out] = (tmp_path / "reports").glob("compare-*")
    assert json.loads((out / "compare.json").read_text())["exit_status"] == status


def test_compare_error_on_b_is_not_a_regression(monkeypatch, tmp_path):
    _fake_sides(monkeypatch, {"leak": "pass"}, {"leak": "error"})
    cli.main(["compare", "0.9.6", "0.9.9"])
    [out] = (tmp_path / "reports").glob("compare-*")
    data = json.loads((out / "compare.json").read_text())
    assert data["b_worse"] == [] and data["b_error"] == ["leak"]


def test_compare_exit_2_when_a_side_s_stack_did_not_come_up(monkeypatch):
    _fake_sides(monkeypatch, {"leak": "pass"}, {}, b_error=True)
    assert cli.main(["compare", "0.9.6", "0.9.9"]) == 2


def test_two_compares_in_the_same_second_get_two_folders(monkeypatch, tmp_path):
    made = _fake_sides(monkeypatch, {"leak": "pass"}, {"leak": "pass"})
    monkeypatch.setattr("harness.compare.time.strftime", lambda fmt, *args: "20260101-000000")
    assert cli.main(["compare", "0.9.6", "0.9.9"]) == 0
    assert cli.main(["compare", "0.9.6", "0.9.9"]) == 0
    assert len(set(made)) == 2 and all((d / "compare.json").is_file() for d in made)


@pytest.mark.parametrize("argv", [
    ["compare", "0.9.6", "no-such-thing"],
    ["compare", "0.9.6", "0.9.9", "--gate", "leek"],
    ["compare", "0.9.6", "0.9.9", "--backend", "podman"],
])
def test_compare_input_errors_are_exit_2_and_leave_no_folder(monkeypatch, tmp_path, argv):
    made = _fake_sides(monkeypatch, {"leak": "pass"}, {"leak": "pass"})
    assert cli.main(argv) == 2
    assert made == [] and list((tmp_path / "reports").glob("compare-*")) == []


def test_compare_gate_variable_typo_is_exit_2_and_leaves_no_folder(monkeypatch, tmp_path, capsys):
    made = _fake_sides(monkeypatch, {"leak": "pass"}, {"leak": "pass"})
    monkeypatch.setenv("HARNESS_GATE_LEEK_CYCLES", "5")
    assert cli.main(["compare", "0.9.6", "0.9.9", "--gate", "leak"]) == 2
    assert "HARNESS_GATE_LEEK_CYCLES" in capsys.readouterr().err
    assert made == [] and list((tmp_path / "reports").glob("compare-*")) == []


def test_compare_sides_without_reports_leave_no_folder(monkeypatch, tmp_path):
    monkeypatch.setattr("harness.compare.run_sides", lambda specs, gates, out_dir, extra, server="opal": {"A": 2,
                                                                                                           "B": 2})
    assert cli.main(["compare", "0.9.6", "0.9.9"]) == 2
    assert list((tmp_path / "reports").glob("compare-*")) == []


# -- scale --------------------------------------------------------------------------------

def _fake_scale(monkeypatch, measured: bool) -> list[Settings]:
    from harness import scale
    seen: list[Settings] = []

    def run_release(settings, scopes):
        seen.append(settings)
        if not measured:
            raise HarnessError("the stack did not come up")
        return scale.Curve(settings.target.label, points=[object()])  # type: ignore[list-item]

    def write(out_dir, curves, scopes):
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "scale.md").write_text("# scale\n")
        return {}
    monkeypatch.setattr("harness.scale.run_release", run_release)
    monkeypatch.setattr("harness.scale.write", write)
    return seen


@pytest.mark.parametrize(("measured", "status"), [(True, 0), (False, 2)])
def test_scale_exit_status(monkeypatch, measured, status):
    _fake_scale(monkeypatch, measured)
    assert cli.main(["scale", "--scopes", "10", "--opal-version", "0.9.9", "--backend", "local"]) == status


def test_scale_bad_input_is_exit_2_and_leaves_nothing(monkeypatch, tmp_path):
    _fake_scale(monkeypatch, True)
    assert cli.main(["scale", "--scopes", "ten"]) == 2
    assert not (tmp_path / "reports").exists()


def test_scale_honours_harness_keep_stack(monkeypatch):
    seen = _fake_scale(monkeypatch, True)
    monkeypatch.setenv("HARNESS_KEEP_STACK", "1")
    assert cli.main(["scale", "--scopes", "10", "--opal-version", "0.9.9", "--backend", "local"]) == 0
    assert [s.keep_stack for s in seen] == [True]  # run_release's make_stack keeps a stack that says so


# -- reports/latest -----------------------------------------------------------------------

def test_latest_is_swapped_atomically_under_racing_writers(tmp_path):
    reports = tmp_path / "reports"
    dirs = [reports / f"run-{i}" for i in range(8)]
    for d in dirs:
        d.mkdir(parents=True)
    errors: list[BaseException] = []

    def point(d: Path) -> None:
        for _ in range(200):
            try:
                point_latest(reports, d)
            except BaseException as exc:  # noqa: BLE001 - any error is the finding
                errors.append(exc)

    threads = [threading.Thread(target=point, args=(d,)) for d in dirs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    latest = reports / "latest"
    assert latest.is_symlink() and latest.resolve() in {d.resolve() for d in dirs}
    assert sorted(p.name for p in reports.iterdir()) == sorted(["latest", *(d.name for d in dirs)])


def test_latest_is_swapped_atomically_under_racing_processes(tmp_path):
    import subprocess
    import sys
    reports = tmp_path / "reports"
    for name in ("run-a", "run-b"):
        (reports / name).mkdir(parents=True)
    # both start their loops at the same moment: interpreter start-up must not keep them apart
    loop = ("import sys, time; from pathlib import Path; from harness.report import point_latest\n"
            "time.sleep(max(0.0, float(sys.argv[3]) - time.time()))\n"
            "for _ in range(1000): point_latest(Path(sys.argv[1]), Path(sys.argv[1]) / sys.argv[2])")
    start = str(time.time() + 3)
    racers = [subprocess.Popen([sys.executable, "-c", loop, str(reports), name, start], stderr=subprocess.PIPE,
                               text=True) for name in ("run-a", "run-b")]
    errors = [racer.communicate(timeout=120)[1] for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], errors
    assert sorted(p.name for p in reports.iterdir()) == ["latest", "run-a", "run-b"]


# -- down ---------------------------------------------------------------------------------

def _run_from(run_root: Path, name: str, cwd: Path | None) -> Path:
    run = run_root / name
    run.mkdir(parents=True)
    state = {"run_id": name, "owner_pid": 999999999, "owner_create_time": 1.0, "target": "t"}
    if cwd is not None:
        state["owner_cwd"] = str(cwd)
    (run / "stack.json").write_text(json.dumps(state))
    return run


def test_down_stops_only_the_runs_this_checkout_started(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("harness.runs.remove_compose_resources", lambda *a, **k: [])
    here, elsewhere = tmp_path / "checkout", tmp_path / "other-checkout"
    for d in (here / ".git", here / "sub", elsewhere / ".git"):
        d.mkdir(parents=True)
    mine = _run_from(tmp_path / "runs", "20260101-000000-aaaaaa", here)
    from_sub = _run_from(tmp_path / "runs", "20260101-000000-bbbbbb", here / "sub")
    theirs = _run_from(tmp_path / "runs", "20260101-000000-cccccc", elsewhere)
    unknown = _run_from(tmp_path / "runs", "20260101-000000-dddddd", None)
    monkeypatch.chdir(here)

    assert cli.main(["down"]) == 0
    out = capsys.readouterr().out
    assert not mine.exists() and not from_sub.exists()
    assert theirs.exists() and unknown.exists()
    assert "harness down --all" in out

    assert cli.main(["down", "--all"]) == 0
    assert not theirs.exists() and not unknown.exists()


def test_down_with_nothing_of_this_checkout_names_all(tmp_path, monkeypatch, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    theirs = _run_from(tmp_path / "runs", "20260101-000000-cccccc", elsewhere)
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    assert cli.main(["down"]) == 0
    assert theirs.exists()
    assert "harness down --all" in capsys.readouterr().out


def test_a_run_records_the_checkout_it_was_started_from(tmp_path, monkeypatch):
    stack = FakeStack(replace(Settings(), run_root=tmp_path / "runs"))
    stack.run_dir.mkdir(parents=True)
    stack.write_state()
    state = json.loads((stack.run_dir / "stack.json").read_text())
    assert state["owner_cwd"] == str(tmp_path)
    [run] = runs.list_runs(tmp_path / "runs")
    assert runs.started_here(run, tmp_path)


def test_a_kept_stack_is_not_taken_for_a_crashed_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("harness.runs.remove_compose_resources", lambda *a, **k: [])
    stack = FakeStack(replace(Settings(), run_root=tmp_path / "runs", keep_stack=True))
    with stack:
        stack.write_state()  # what an up stack has written
    # its command finished (the owner, this test, would exit now)
    state = json.loads((stack.run_dir / "stack.json").read_text())
    (stack.run_dir / "stack.json").write_text(json.dumps({**state, "owner_pid": 999999999}))
    assert state["kept"] is True

    assert cli.main(["status"]) == 0
    assert f"kept (`harness down {stack.run_id}` stops it)" in capsys.readouterr().out
    assert cli.main(["clean"]) == 0
    assert stack.run_dir.exists()
    assert cli.main(["clean", "--all"]) == 0
    assert not stack.run_dir.exists()
