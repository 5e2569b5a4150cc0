import json
import sys

from harness import cli, procs


def test_unknown_release_is_one_line_and_exit_2(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_RUN_ROOT", str(tmp_path))
    assert cli.main(["up", "--opal-version", "9.9.9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: OPAL_VERSION=9.9.9 is not on the package index") and "Traceback" not in err


def test_clean_stops_processes_of_a_run_whose_owner_is_gone(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_RUN_ROOT", str(tmp_path))
    # The compose sweep has its own integration test; this one is about local processes.
    monkeypatch.setattr("harness.runs.remove_compose_resources", lambda **_: [])
    run = tmp_path / "20260101-000000-abcdef"
    run.mkdir()
    (run / "stack.json").write_text(json.dumps({"run_id": run.name, "owner_pid": 999999999,
                                                "owner_create_time": 1.0, "target": "t"}))
    orphan = procs.start("redis", [sys.executable, "-c", "import time; time.sleep(600)"], run, run / "r.log")

    assert cli.main(["status"]) == 0
    assert "STALE" in capsys.readouterr().out
    assert cli.main(["clean"]) == 0

    assert f"stopped redis (pid {orphan.pid})" in capsys.readouterr().out
    orphan.popen.wait(timeout=5)
    assert not run.exists()


def test_down_of_an_unknown_run_names_the_status_command(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_RUN_ROOT", str(tmp_path))
    assert cli.main(["down", "nope"]) == 2
    assert "harness status" in capsys.readouterr().err
