"""The Cerbos adapter on the real binaries (0.51.0, 0.55.0 from npm): a git remote behind the
harness's smart-HTTP front, the decision naming the served content, a commit served within a
poll, every socket on loopback; and the disk-sync control serving a commit too."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from harness.probes import inet_connections
from harness.servers.cerbos import (
    CerbosServerProcess,
    DiskSync,
    bad_policy,
    checkout_stats,
    ensure_cerbos,
    knobs,
    process_stats,
    write_tree,
)
from harness.servers.cerbos.install import CerbosBinary
from harness.services.listeners import GitFrontService
from harness.waiting import free_port, poll_until, wait_for

pytestmark = pytest.mark.integration
EXPECTED_COST_S = 20.0
VERSIONS = ["0.51.0", "0.55.0"]
REPO = "policy-0001"
SLACK_S = 5.0  # on top of what the settings allow (poll interval; sync interval + watcher cooldown): a loaded machine


@dataclass
class Remote:
    """A bare repo on the front and the working tree the test commits from."""

    work: Path
    url: str
    front: GitFrontService

    def commit(self, nonce: str, extra_policies: int = 0) -> str:
        write_tree(self.work, nonce, extra_policies)
        _git(self.work, "add", "-A")
        _git(self.work, "commit", "--quiet", "-m", f"nonce {nonce}")
        _git(self.work, "push", "--quiet", "origin", "main")
        return _git(self.work, "rev-parse", "HEAD")


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.name=harness", "-c", "user.email=harness@localhost", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


@pytest.fixture(params=VERSIONS)
def cerbos(request, harness_settings) -> CerbosBinary:
    return ensure_cerbos(request.param, harness_settings.cache_dir)


@pytest.fixture
def run_dir(harness_settings) -> Iterator[Path]:
    harness_settings.run_root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="cerbos-", dir=harness_settings.run_root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def remote(run_dir) -> Iterator[Remote]:
    repos = run_dir / "repos"
    repos.mkdir()
    _git(repos, "init", "--quiet", "--bare", "--initial-branch=main", f"{REPO}.git")
    work = run_dir / "work"
    _git(run_dir, "init", "--quiet", "--initial-branch=main", str(work))
    _git(work, "remote", "add", "origin", str(repos / f"{REPO}.git"))
    front = GitFrontService(name="gitfront", run_dir=run_dir, port=0, repos_dir=repos)
    try:
        front.start()
        yield Remote(work=work, url=f"http://127.0.0.1:{front.port}/{REPO}.git", front=front)
    finally:
        front.stop()


@pytest.fixture
def server(run_dir, cerbos) -> Iterator[CerbosServerProcess]:
    process = CerbosServerProcess(name="cerbos", run_dir=run_dir, port=free_port(), binary=cerbos.path,
                                  config_path=run_dir / "cerbos" / "config.yaml")
    try:
        yield process
    finally:
        process.stop()
        assert process.pid is None


def _boot(server: CerbosServerProcess) -> float:
    """Seconds from launch until health says SERVING (Cerbos listens only once its store is loaded)."""
    started = time.monotonic()
    server.launch()
    wait_for(server._ready_or_died, server.start_timeout, "cerbos did not become healthy", interval=0.05)
    return time.monotonic() - started


def _served_within(server: CerbosServerProcess, nonce: str, budget: float) -> float | None:
    client = server.client()
    return poll_until(lambda: client.decide(timeout=2.0).nonce == nonce, budget, interval=0.1)


def _loopback(ip: str) -> bool:
    return ipaddress.ip_address(ip).is_loopback


def _assert_loopback_only(pid: int) -> None:
    sockets = inet_connections(psutil.Process(pid), "inet")
    listening = [c for c in sockets if c.status == psutil.CONN_LISTEN]
    assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening), listening
    assert all(_loopback(c.laddr.ip) for c in sockets), sockets  # no UDP or other socket outside
    assert all(_loopback(c.raddr.ip) for c in sockets if c.raddr), sockets


def test_git_driver_serves_the_pushed_commit_within_a_poll(cerbos, remote, server):
    remote.commit("nonce-A")
    config = server.git_config(remote.url, poll_interval_s=1.0, operation_timeout_s=10.0)
    config.write(server.config_path)
    budget = knobs(server.config_path)["poll_interval_s"] + SLACK_S

    boot_s = _boot(server)
    first = server.client().decide()
    assert (first.status, first.allowed, first.nonce) == (200, True, "nonce-A")
    _assert_loopback_only(server.pid or 0)
    assert "Telemetry disabled" in server.log_path.read_text()

    head_b = remote.commit("nonce-B")
    served_s = _served_within(server, "nonce-B", budget)
    assert served_s is not None, f"nonce-B not served within {budget:g} s; log:\n{server.process.log_tail()}"
    assert checkout_stats(server.checkout_dir)["head"] == head_b
    figures = process_stats(server.pid or 0, remote.front.port, server.client().metrics())
    assert figures["cerbos_dev_store_poll_count_total"] >= 1
    assert figures["cerbos_dev_index_entry_count"] == 1
    assert "cerbos_dev_store_sync_error_count_total" not in figures  # appears with a first error
    _assert_loopback_only(server.pid or 0)
    print(f"\n[cerbos] {cerbos.version} (build {cerbos.build[:12]}) git driver: boot {boot_s:.2f} s, "
          f"commit served in {served_s:.2f} s (budget {budget:g} s), decision {first.seconds * 1000:.0f} ms; "
          f"{figures}; checkout {checkout_stats(server.checkout_dir)}")


def test_disk_sync_control_serves_the_pushed_commit(cerbos, remote, server, run_dir):
    remote.commit("nonce-A")
    with DiskSync(remote.url, run_dir / "sync" / "clone", interval_s=1.0) as sync:
        server.disk_config(sync.policies_dir).write(server.config_path)
        boot_s = _boot(server)
        assert server.client().decide().nonce == "nonce-A"
        _assert_loopback_only(server.pid or 0)

        head_b = remote.commit("nonce-B")
        budget = sync.served_within_s + SLACK_S
        served_s = _served_within(server, "nonce-B", budget)
        assert served_s is not None, f"nonce-B not served within {budget:g} s; sync {sync.state}"
        assert poll_until(lambda: sync.state.head == head_b, 5.0, interval=0.1) is not None
        assert sync.state.errors == 0, sync.state.last_error
    assert not [t for t in threading.enumerate() if t.name.startswith("disk-sync")]  # the loop stopped on exit
    print(f"\n[cerbos] {cerbos.version} disk-sync control: boot {boot_s:.2f} s, commit served in {served_s:.2f} s "
          f"(budget {budget:g} s), {sync.state.syncs} syncs")


def test_a_repo_of_2001_policies_boots_and_serves_its_nonce(cerbos, remote, server):
    """The size boot gates will use: Cerbos listens only once clone and index are done."""
    remote.commit("nonce-big", extra_policies=2000)
    server.git_config(remote.url, operation_timeout_s=60.0).write(server.config_path)
    boot_s = _boot(server)
    assert server.client().decide().nonce == "nonce-big"
    entries = process_stats(server.pid or 0, metrics=server.client().metrics())["cerbos_dev_index_entry_count"]
    assert entries == 2001
    print(f"\n[cerbos] {cerbos.version} git driver, 2,001 policies: boot {boot_s:.2f} s, "
          f"checkout {checkout_stats(server.checkout_dir)['packs']} pack(s)")


def test_a_tree_with_the_bad_policy_does_not_boot(cerbos, server, run_dir):
    """bad_policy() really fails to parse: both versions exit 1 at boot on it, whatever the driver."""
    policies = write_tree(run_dir / "tree", "nonce-A")
    (policies / "aaa.yaml").write_text(bad_policy())
    server.disk_config(policies).write(server.config_path)
    server.launch()
    assert server.process is not None
    wait_for(lambda: not server.process.alive(), 30, "cerbos kept running on a bad policy")
    assert server.process.exit_code() == 1
    assert "aaa.yaml" in server.log_path.read_text()
