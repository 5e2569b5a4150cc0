"""The offline image set: built once, reused after, and every image does its job.

Needs a Docker engine (skips with the reason otherwise; HARNESS_REQUIRE=1 makes that a
failure). The first run builds the set (about 5 minutes on vfs, root needed for the
debootstrap'd base); later runs reuse it. Every container and network a test starts is
removed in the fixture teardown.
"""

from __future__ import annotations

import time
import uuid

import pytest

from harness import images
from harness.config import supported_versions
from harness.errors import HarnessError, MissingDependency

pytestmark = [pytest.mark.integration, pytest.mark.compose, pytest.mark.timeout(2400)]

TEST_LABEL = "io.policy-harness.test"
SERVER_VERSIONS = [v for v in ("0.9.6", "0.9.9") if v in supported_versions()]


@pytest.fixture(scope="module")
def client():
    try:
        return images.docker_client(timeout=30)
    except HarnessError as exc:
        pytest.skip(f"no Docker engine: {exc}")


@pytest.fixture(scope="module")
def offline_set(client):
    """Build (or reuse) the whole offline set once for this module."""
    try:
        results = images.build_offline()
    except (MissingDependency, images.NeedsRoot) as exc:
        pytest.skip(f"cannot build the offline image set here: {exc}")
    return results


@pytest.fixture
def docker_run(client):
    """run(image, command, **kwargs) -> a detached container; all removed after the test."""
    started = []
    networks = []
    tag = uuid.uuid4().hex[:8]

    def run(image, command=None, **kwargs):
        container = client.containers.run(image, command, detach=True,
                                          labels={TEST_LABEL: f"test_images-{tag}"}, **kwargs)
        started.append(container)
        return container

    def network():
        net = client.networks.create(f"ph-test-images-{tag}", labels={TEST_LABEL: f"test_images-{tag}"})
        networks.append(net)
        return net

    run.network = network
    run.tag = tag
    yield run
    import docker
    for container in reversed(started):
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass
    for net in networks:
        try:
            net.remove()
        except docker.errors.NotFound:
            pass


def _exec(container, command, **kwargs) -> tuple[int, str]:
    result = container.exec_run(command, **kwargs)
    return result.exit_code, result.output.decode(errors="replace")


def _until(container, command, budget: float = 60.0, expect: str | None = None) -> str:
    deadline = time.monotonic() + budget
    code, out = -1, ""
    while time.monotonic() < deadline:
        container.reload()
        if container.status not in ("created", "running"):
            break
        code, out = _exec(container, command)
        if code == 0 and (expect is None or expect in out):
            return out
        time.sleep(0.5)
    logs = container.logs(tail=30).decode(errors="replace")
    pytest.fail(f"{command} did not succeed within {budget:.0f} s (exit {code}: {out.strip()!r}); "
                f"container {container.status}; logs:\n{logs}")


def _finished(container, budget: float = 120.0) -> tuple[int, str]:
    status = container.wait(timeout=budget)
    return status["StatusCode"], container.logs().decode(errors="replace")


def _ip(container) -> str:
    container.reload()
    return container.attrs["NetworkSettings"]["IPAddress"]


def test_a_second_offline_build_reuses_every_image(offline_set):
    assert [r.image for r in offline_set][0] == images.OFFLINE_BASE
    again = images.build_offline()
    assert [r.image for r in again] == [r.image for r in offline_set]
    rebuilt = [f"{r.image} ({r.seconds:.1f} s)" for r in again if r.action != "reused"]
    assert rebuilt == [], f"rebuilt although nothing changed: {rebuilt}"
    assert sum(r.seconds for r in again) < 30


def test_redis_answers_ping_locally_and_over_the_network(offline_set, docker_run):
    redis = docker_run(images.OFFLINE.redis)
    _until(redis, ["redis-cli", "ping"], expect="PONG")
    probe = docker_run(images.OFFLINE.redis, ["redis-cli", "-h", _ip(redis), "ping"])
    code, out = _finished(probe, 30)
    assert code == 0 and "PONG" in out, out
    assert _exec(redis, ["redis-cli", "config", "get", "save"])[1].split() == ["save"]
    started = time.monotonic()
    redis.stop(timeout=20)
    assert time.monotonic() - started < 10, "redis-server did not stop on SIGTERM"


def test_postgres_has_the_official_images_interface(offline_set, docker_run):
    env = {"POSTGRES_USER": "opal", "POSTGRES_PASSWORD": "opal", "POSTGRES_DB": "opal"}
    db = docker_run(images.OFFLINE.postgres, environment=env)
    _until(db, ["pg_isready", "-U", "opal"], budget=90)
    _until(db, ["pg_isready", "-h", "127.0.0.1", "-U", "opal"], budget=30)
    # From another container, over the network, as the server connects.
    query = (f"pg_isready -h {_ip(db)} -U opal -d opal -t 30 && "
             f"psql -h {_ip(db)} -U opal -d opal -tAc \"select current_user, current_database(), "
             "current_setting('port')\"")
    client = docker_run(images.OFFLINE.postgres, ["bash", "-c", query])
    code, out = _finished(client, 60)
    assert code == 0, out
    assert "opal|opal|5432" in out, out
    code, out = _exec(db, ["bash", "-c", "test -d /var/lib/postgresql/data/base && stat -c %U /var/lib/postgresql/data"])
    assert (code, out.strip()) == (0, "postgres")
    # postgres is PID 1 (exec'd), so a SIGTERM alone stops it cleanly.
    db.kill(signal="SIGTERM")
    code, logs = _finished(db, 30)
    assert code == 0, logs
    assert "database system is shut down" in logs, logs


def test_tools_seeds_serves_git_and_runs_the_listeners(offline_set, docker_run):
    script = (
        "set -e; python3 -m harness.seed --root /tmp/r --count 3; ls /tmp/r; "
        "git daemon --base-path=/tmp/r --export-all --reuseaddr --listen=127.0.0.1 --detach /tmp/r; "
        "for i in $(seq 50); do git ls-remote git://127.0.0.1/policy-0002.git >/dev/null 2>&1 && break; sleep 0.2; done; "
        "git clone -q git://127.0.0.1/policy-0002.git /tmp/clone; grep -q policy-0002 /tmp/clone/policy.rego; "
        "python3 -m harness.tcplisteners --help >/dev/null; "
        # the git front: a clone over smart HTTP through git http-backend
        "(python3 -m harness.gitfront --repos /tmp/r --port-file /tmp/front.port &); "
        "for i in $(seq 50); do test -f /tmp/front.port && break; sleep 0.2; done; "
        "git clone -q http://127.0.0.1:$(cat /tmp/front.port)/policy-0001.git /tmp/http; "
        "grep -q policy-0001 /tmp/http/policy.rego; "
        "ps -e >/dev/null; echo tools-ok"
    )
    tools = docker_run(images.OFFLINE.tools, ["bash", "-c", script])
    code, out = _finished(tools, 120)
    assert code == 0, out
    for expected in ("policy-0000.git", "policy-0002.git", "probe-0.git", "tools-ok"):
        assert expected in out, out


def test_seed_sidecar_is_idempotent_and_counts_failures(offline_set, docker_run):
    """The seed image (seed/Dockerfile) seeds, re-seeds without change, and exits non-zero
    with the number of repos it could not make (here: a file squatting on a repo's path)."""
    script = (
        "set -u; /usr/local/bin/seed-entrypoint && "
        "sha1=$(cat /repos/policy-0001.git/refs/heads/main); "
        "/usr/local/bin/seed-entrypoint && "
        "sha2=$(cat /repos/policy-0001.git/refs/heads/main); "
        "[ \"$sha1\" = \"$sha2\" ] && echo same-sha; "
        "rm -rf /repos/policy-0002.git; echo squat > /repos/policy-0002.git; "
        "/usr/local/bin/seed-entrypoint; echo exit=$?; "
        "SEED_COUNT=many /usr/local/bin/seed-entrypoint; echo bad-exit=$?"
    )
    container = docker_run(images.OFFLINE.seed, environment={"SEED_COUNT": "3"}, entrypoint=["bash", "-c", script])
    code, out = _finished(container, 120)
    assert code == 0, out
    assert "3 policy repos + 4 probe repos" in out and "(7 new, 0 already there, 0 failed)" in out, out
    assert "(0 new, 7 already there, 0 failed)" in out and "same-sha" in out, out
    assert "1 of 7 repos failed to seed" in out and "exit=1" in out, out
    assert "SEED_COUNT=many is not a whole number" in out and "bad-exit=2" in out, out


@pytest.mark.parametrize("version", SERVER_VERSIONS)
def test_server_image_has_the_release_and_the_recipe(offline_set, docker_run, version):
    check = ("import importlib.metadata as m, opal_server, gunicorn, aiofiles, uvicorn; "
             "print('opal-server', m.version('opal-server'))")
    script = (f"python -c \"{check}\" && test -f /opt/harness-recipe/gunicorn_conf.py "
              "&& test -f /opt/harness-recipe/harness_opal_app.py && git --version && echo server-ok")
    container = docker_run(images.OFFLINE.server(version), ["bash", "-c", script])
    code, out = _finished(container, 120)
    assert code == 0, out
    assert f"opal-server {version}" in out and "server-ok" in out, out


@pytest.mark.parametrize("version", SERVER_VERSIONS)
def test_server_image_boots_healthy_with_redis_and_postgres(offline_set, docker_run, version):
    net = docker_run.network()
    tag = docker_run.tag
    redis = docker_run(images.OFFLINE.redis, name=f"ph-test-redis-{tag}", network=net.name)
    db = docker_run(images.OFFLINE.postgres, name=f"ph-test-pg-{tag}", network=net.name,
                    environment={"POSTGRES_USER": "opal", "POSTGRES_PASSWORD": "opal", "POSTGRES_DB": "opal"})
    _until(redis, ["redis-cli", "ping"], expect="PONG")
    _until(db, ["pg_isready", "-h", "127.0.0.1", "-U", "opal"], budget=90)
    env = {
        "OPAL_SCOPES": "1",
        "OPAL_REDIS_URL": f"redis://ph-test-redis-{tag}:6379",
        "OPAL_BROADCAST_URI": f"postgres://opal:opal@ph-test-pg-{tag}:5432/opal",
        "OPAL_POLICY_REFRESH_INTERVAL": "0",
        "OPAL_LOG_COLORIZE": "false",
        "DD_TRACE_ENABLED": "false",
        "DD_DOGSTATSD_DISABLE": "true",
        "DD_INSTRUMENTATION_TELEMETRY_ENABLED": "false",
        "DD_REMOTE_CONFIGURATION_ENABLED": "false",
    }
    server = docker_run(images.OFFLINE.server(version), network=net.name, environment=env)
    deadline = time.monotonic() + 120
    health = "starting"
    while time.monotonic() < deadline:
        server.reload()
        health = server.attrs["State"].get("Health", {}).get("Status", "none")
        if health == "healthy" or server.status != "running":
            break
        time.sleep(1)
    logs = server.logs(tail=60).decode(errors="replace")
    assert health == "healthy", f"server {server.status}, health {health}; logs:\n{logs}"
    assert "scope preload finished" in server.logs().decode(errors="replace"), logs
