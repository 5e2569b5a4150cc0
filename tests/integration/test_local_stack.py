"""The local stack on real OPAL releases: served policy, stats contract, blackhole, teardown."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from harness import procs
from harness.waiting import port_open, wait_for

pytestmark = pytest.mark.integration


def _listening_ports(stack) -> dict[str, int]:
    return {name: stack.address(name).port
            for name in ("server", "redis", "postgres", "githost", "blackhole", "slowfail", "latency")}


def _assert_nothing_left(run_dir, entries, ports):
    alive = [e for e in entries if procs.still_running(e)]
    assert alive == [], f"processes left behind: {alive}"
    open_ports = {name: p for name, p in ports.items() if port_open(p)}
    assert open_ports == {}, f"ports still listening: {open_ports}"
    assert not run_dir.exists(), f"run dir left behind: {run_dir}"
    outside = list(Path(tempfile.gettempdir()).glob(f"harness-pg-{run_dir.name}-*"))
    assert outside == [], f"temp dirs left behind: {outside}"


def _served(client, scope_id, budget=30.0):
    return wait_for(lambda: client.get_policy(scope_id, timeout=10).status == 200, budget,
                    f"scope {scope_id} served")


@pytest.mark.parametrize("version", ["0.9.6", "0.9.9"])
def test_stack_serves_a_scope_exposes_stats_and_tears_down_clean(stack_factory, version, tmp_path):
    stack = stack_factory(version=version, seed_repos=10)
    client = stack.client

    assert client.put_scope("smoke", stack.repo_url("policy-0003")) == 201
    assert _served(client, "smoke")
    stats = client.cache_stats()
    assert stats.repo_locks >= 1
    assert stats.wrapper is (version == "0.9.6")  # 0.9.9 has the route natively
    master, workers = stack.server.pids()
    assert stats.pid in workers and master not in workers
    assert len(stack.server.clone_dirs()) == 1

    # A clone of a blackholed URL hangs: the listener accepted it and never answered.
    clone = subprocess.Popen(["git", "clone", "-q", stack.dead_url(1), str(tmp_path / "dead")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: stack.service("blackhole").accepted_connections() >= 1, 10, "blackhole accepted")
        time.sleep(3)
        assert clone.poll() is None, "git clone of a blackhole URL returned instead of hanging"
    finally:
        clone.kill()
        clone.wait(timeout=10)

    run_dir, entries, ports = stack.run_dir, procs.registered(stack.run_dir), _listening_ports(stack)
    stack.down()  # idempotent: the fixture's teardown calls it again harmlessly
    _assert_nothing_left(run_dir, entries, ports)


def _native_stats_answer(stack) -> tuple[dict, dict]:
    """(body, headers) of the stats route, read raw: the tree's own route, not the wrapper's."""
    response = requests.get(f"{stack.client.base_url}/internal/git-fetcher-cache-stats", timeout=10,
                            headers={"Connection": "close"})
    response.raise_for_status()
    return response.json(), dict(response.headers)


def test_a_source_tree_is_installed_and_launched(stack_factory, opal_source_tree):
    """A checkout in OPAL's real layout (placeholder version 0.0.0, requires.txt files, root
    README read by setup.py) installs from the tree in place with the pins that fit its
    requirements (0.9.6's: 0.9.9's permit-broadcaster does not), and its native stats route
    answers instead of the harness's wrapper."""
    stack = stack_factory(source=opal_source_tree, seed_repos=4)
    venv_python = stack.server_process.venv.python
    code = ("import importlib.metadata as m, opal_server.harness_tree_marker as k; "
            "print(k.BUILT_FROM, m.version('opal-server'), m.version('opal-common'), m.version('permit-broadcaster'))")
    probe = subprocess.run([str(venv_python), "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert probe.stdout.split() == ["harness", "test", "source", "tree", "0.0.0", "0.0.0", "0.2.6"], probe.stderr
    assert stack.client.put_scope("src", stack.repo_url("policy-0001")) == 201
    assert _served(stack.client, "src")
    body, headers = _native_stats_answer(stack)
    assert set(body) == {"repo_locks", "repos", "repos_last_fetched", "rss_kb"}
    assert "X-Harness-Stats" not in headers  # the tree's route, not the wrapper
    assert body["repo_locks"] >= 1 and body["rss_kb"] > 0
    stats = stack.client.cache_stats()
    assert not stats.wrapper and stats.pid is None


def test_a_release_without_committed_pins_installs_and_serves(stack_factory):
    """OPAL_VERSION=0.9.5: no stacks/constraints file, so its wheels' requirements pick the
    pins (0.9.6's fit, 0.9.9's permit-broadcaster does not)."""
    stack = stack_factory(version="0.9.5", seed_repos=4)
    assert stack.server_process.venv.installed_version() == "0.9.5"
    assert (stack.server_process.venv.path / "constraints.txt").read_text().count("permit-broadcaster==0.2.6") == 1
    assert stack.client.put_scope("old", stack.repo_url("policy-0002")) == 201
    assert _served(stack.client, "old")
    assert stack.client.cache_stats().wrapper  # 0.9.5 has no native stats route
