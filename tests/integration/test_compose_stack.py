"""The compose backend on a real Docker engine (bare git host profile)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from harness.report import schema_errors
from harness.waiting import wait_for
from tests.integration.compose_support import labelled_resources, require_compose

pytestmark = [pytest.mark.integration, pytest.mark.compose]


@pytest.fixture(autouse=True)
def _needs_compose():
    require_compose(["0.9.9"])


def _served(client, scope_id, budget=60.0):
    return wait_for(lambda: client.get_policy(scope_id, timeout=10).status == 200, budget, f"{scope_id} served")


def _repo_shas(stack) -> dict[str, str]:
    out = stack.exec_in("githost", ["sh", "-c", "for r in /repos/*.git; do echo $r $(cat $r/refs/heads/main); done"])
    return dict(line.split() for line in out.splitlines() if line.strip())


def test_compose_stack_serves_a_scope_and_leaves_nothing_labelled(stack_factory):
    stack = stack_factory(version="0.9.9", backend="compose", seed_repos=6)
    client = stack.client
    assert client.put_scope("c1", stack.repo_url("policy-0002")) == 201
    assert _served(client, "c1")
    assert client.cache_stats().repo_locks >= 1
    master, workers = stack.server.pids()
    assert master and workers and client.cache_stats().pid not in (master,)

    # A dead remote reaches the stack's own blackhole container and hangs there.
    assert client.put_scope("dead", stack.dead_url(1)) == 201
    wait_for(lambda: stack.service("blackhole").accepted_connections() >= 1, 20, "blackhole accepted")

    run_id = stack.run_id
    stack.down()
    assert labelled_resources(run_id) == []
    assert not stack.run_dir.exists()


def test_seed_sidecar_is_idempotent(stack_factory):
    stack = stack_factory(version="0.9.9", backend="compose", seed_repos=8)
    before = _repo_shas(stack)
    assert len(before) == 8 + 4 and len(set(before.values())) == len(before)
    # compose v1 re-runs the one-shot sidecar on every `up`: run it again explicitly.
    stack._compose(["run", "--rm", "seed"], timeout=300)
    assert _repo_shas(stack) == before


def test_two_stacks_run_side_by_side(stack_factory):
    first = stack_factory(version="0.9.9", backend="compose", seed_repos=3)
    second = stack_factory(version="0.9.9", backend="compose", seed_repos=3)
    assert first.project != second.project
    assert set(first.ports.values()).isdisjoint(second.ports.values())
    for stack, scope in ((first, "a"), (second, "b")):
        assert stack.client.put_scope(scope, stack.repo_url("policy-0001")) == 201
    assert _served(first.client, "a") and _served(second.client, "b")
    assert [s["scope_id"] for s in first.client.list_scopes()] == ["a"]
    assert [s["scope_id"] for s in second.client.list_scopes()] == ["b"]


def test_clean_removes_a_crashed_runs_containers(tmp_path):
    env = dict(os.environ, HARNESS_RUN_ROOT=str(tmp_path), HARNESS_SEED_REPOS="3", BACKEND="compose")
    up = subprocess.Popen([sys.executable, "-m", "harness", "up"], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = []
    try:
        for line in up.stdout:
            lines.append(line)
            if "is up; Ctrl-C" in line:
                break
        [run_dir] = list(tmp_path.iterdir())
        run_id = json.loads((run_dir / "stack.json").read_text())["run_id"]
        assert labelled_resources(run_id), "".join(lines)
    finally:
        up.kill()  # a crash: no teardown at all
        up.wait(timeout=30)
    clean = subprocess.run([sys.executable, "-m", "harness", "clean"], env=env, text=True,
                           capture_output=True, timeout=300)
    assert clean.returncode == 0, clean.stderr
    assert labelled_resources(run_id) == []
    assert not run_dir.exists()


def test_a_prebuilt_image_runs_with_the_mounted_recipe(stack_factory):
    """OPAL_IMAGE: the harness mounts its gunicorn config and stats wrapper into an image it
    did not build and overrides the command. The offline 0.9.9 image stands in for one."""
    from harness import images
    prebuilt = images.choose_image_set().server("0.9.9")
    stack = stack_factory(image=prebuilt, backend="compose", seed_repos=3)
    container = stack.container("server")
    mounts = {m["Destination"]: m["Source"] for m in container.attrs["Mounts"]}
    assert mounts.get("/opt/harness-recipe", "").endswith("stacks/opal")
    assert stack.client.put_scope("p", stack.repo_url("policy-0001")) == 201
    assert _served(stack.client, "p")
    assert "harness: scope preload finished" in stack.server.log().read_text()


def test_a_source_tree_runs_as_an_image_built_from_it(stack_factory, opal_source_tree):
    """OPAL_SOURCE with BACKEND=compose: the harness builds a server image from the tree
    (tagged by its content and pins) and runs it; an unchanged tree reuses the image."""
    import requests

    from harness import images
    from harness.servers.opal.source_image import build_source_image, source_image_ref
    stack = stack_factory(source=opal_source_tree, backend="compose", seed_repos=3)
    ref = source_image_ref(images.choose_image_set(), opal_source_tree)
    assert stack.container("server").image.tags == [ref]
    code = ("import importlib.metadata as m, opal_server.harness_tree_marker as k; "
            "print(k.BUILT_FROM, m.version('opal-server'), m.version('permit-broadcaster'))")
    marker = stack.exec_in("server", ["python", "-c", code])
    # Installed from the tree as it is (placeholder 0.0.0) with the pins that fit it (0.9.6's).
    assert marker.split() == ["harness", "test", "source", "tree", "0.0.0", "0.2.6"]
    assert stack.client.put_scope("src", stack.repo_url("policy-0001")) == 201
    assert _served(stack.client, "src")
    response = requests.get(f"{stack.client.base_url}/internal/git-fetcher-cache-stats", timeout=10,
                            headers={"Connection": "close"})
    assert set(response.json()) == {"repo_locks", "repos", "repos_last_fetched", "rss_kb"}
    assert "X-Harness-Stats" not in response.headers  # the tree's native route, not the wrapper
    assert not stack.client.cache_stats().wrapper
    # An unchanged tree is not built again.
    assert build_source_image(images.choose_image_set(), opal_source_tree).action == "reused"


def test_a_compose_stack_that_fails_to_come_up_leaves_its_logs_and_the_failed_service(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPAL_", "HARNESS_GATE_"))}
    env.update(HARNESS_RUN_ROOT=str(tmp_path / "runs"), HARNESS_SEED_REPOS="3", BACKEND="compose",
               OPAL_VERSION="0.9.9", OPAL_POLICY_REFRESH_INTERVAL="not-a-number")
    done = subprocess.run([sys.executable, "-m", "harness", "gates", "--gate", "leak", "--reports-dir",
                           str(tmp_path / "r")], env=env, text=True, capture_output=True, timeout=600)
    said = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 2, said
    assert (tmp_path / "r").is_dir(), said  # a stack that fails, however early, leaves its report
    [run_dir] = [p for p in (tmp_path / "r").iterdir() if p.name != "latest"]
    report = json.loads((run_dir / "report.json").read_text())
    assert schema_errors(report) == []
    assert report["error"]["service"] == "server", (report["error"], said)
    assert "not-a-number" in (run_dir / "logs" / "server.log").read_text()
    assert labelled_resources(run_dir.name) == []
