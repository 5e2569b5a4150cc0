"""Compose commands that create or remove engine objects wait in line across processes."""

import pytest

from harness.errors import HarnessError
from harness.stack.compose_cli import ComposeCli, engine_write_lock

# `true` stands in for the compose binary: it ignores its arguments and exits 0.
CLI = ComposeCli(("true",), "test")


@pytest.fixture(autouse=True)
def own_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))


@pytest.mark.parametrize("command", ["up", "down", "run", "rm", "create"])
def test_an_engine_write_waits_for_another_stacks_up_or_down(command):
    with engine_write_lock():
        with pytest.raises(HarnessError, match=f"compose {command} waited 0.3 s for another stack"):
            CLI.run("p", [], [command, "-d"], env={}, timeout=0.3)
    assert CLI.run("p", [], [command, "-d"], env={}, timeout=5) == ""


@pytest.mark.parametrize("command", ["exec", "logs", "ps"])
def test_other_commands_run_beside_an_up(command):
    with engine_write_lock():
        assert CLI.run("p", [], [command], env={}, timeout=5) == ""
