"""Cerbos on the local backend (harness.stack.local_runtime): the binary from npm, `cerbos
server` as a local process on one attached policy source, and the probe of it.

Cerbos serves one repo, named in its config: attaching a source writes the config and
restarts the server (`fresh`: its checkout removed first). Its remote is the git front
over the git host's repos; a dead remote is the blackhole. With CERBOS_STORE=disk-sync the
server runs the disk driver over a clone that a fetch-and-reset loop keeps in step with the
same remote (the PASS control of the source gates, harness/servers/cerbos/disk_sync.py);
CERBOS_STORE=disk-sync-untimed is the same loop with no timeout on its git commands (the
FAIL control of offline-remote: nothing bounds a fetch stuck on a hung remote).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.config import Settings
from harness.errors import ConfigError, HarnessError
from harness.servers.base import Served, ServerKnobs
from harness.servers.cerbos.client import CerbosClient
from harness.servers.cerbos.config import POLL_KEY, TIMEOUT_KEY, CerbosConfig, knobs
from harness.servers.cerbos.disk_sync import GIT_TIMEOUT_S, DiskSync
from harness.servers.cerbos.install import CerbosBinary, ensure_cerbos, read_version
from harness.servers.cerbos.policies import SUB_DIR
from harness.servers.cerbos.process import CerbosServerProcess
from harness.servers.cerbos.source import MAIN_POLICY, CerbosSource
from harness.servers.cerbos.stats import checkout_stats
from harness.services.base import LocalService
from harness.stack.base import ServerProbe, Stack

COMPILE_TIMEOUT_S = 300.0
BASE_SOURCE = "cerbos-base"  # the repo the server boots on when the stack comes up
DISK_SYNC = "disk-sync"
DISK_SYNC_UNTIMED = "disk-sync-untimed"  # the loop's git commands without a timeout


class CerbosLocal:
    def install(self, settings: Settings) -> CerbosBinary:
        return ensure_cerbos(settings.target.version, settings.cache_dir)

    def server(self, stack: Stack, port: int, installed: CerbosBinary) -> CerbosServerProcess:
        return CerbosServerProcess("server", stack.run_dir, port, binary=installed.path,
                                   config_path=stack.run_dir / "cerbos" / "config.json",
                                   overrides=dict(stack.settings.server_env))

    def before_start(self, stack: Stack) -> None:
        """The repo the server boots on, and its config written for it."""
        probe = self.probe(stack)
        source = probe.new_source(BASE_SOURCE)
        probe.state.attach(source, "front")
        probe.write_config()

    def after_stop(self, stack: Stack) -> None:
        self.probe(stack).stop_sync()

    def probe(self, stack: Stack) -> CerbosProbe:
        return CerbosProbe(stack)

    def install_state(self, server: LocalService) -> dict[str, Any]:
        return {"binary": str(server.binary) if isinstance(server, CerbosServerProcess) else None}

    def installed_from_state(self, settings: Settings, state: Mapping[str, Any]) -> CerbosBinary:
        return read_version(Path(state["binary"]))


RUNTIME = CerbosLocal()


class SourceState:
    """What the server serves and how, kept on the stack (a probe is made per access). The
    URL is also kept in the run dir (`cerbos/source.json`): another process driving the same
    stack (`harness gates --against`) restarts the server on the source it serves."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.source: CerbosSource | None = None
        self.via = "front"
        self.sync: DiskSync | None = None
        self.url = json.loads(path.read_text())["url"] if path.is_file() else ""

    def attach(self, source: CerbosSource, via: str) -> None:
        self.source, self.via, self.url = source, via, source.url(via)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"url": self.url, "source": source.name, "via": via}))


class CerbosProbe(ServerProbe):
    """One Cerbos process: its PID (master and only worker), config, checkout and source."""

    @property
    def process(self) -> CerbosServerProcess:
        return self.stack.service("server")  # type: ignore[return-value]

    @property
    def state(self) -> SourceState:
        if not hasattr(self.stack, "cerbos_state"):
            self.stack.cerbos_state = SourceState(self.stack.run_dir / "cerbos" / "source.json")  # type: ignore[attr-defined]
        return self.stack.cerbos_state  # type: ignore[attr-defined,no-any-return]

    @property
    def store(self) -> str:
        return self.stack.settings.cerbos_store

    # -- ServerProbe ----------------------------------------------------------------------
    def pids(self) -> tuple[int | None, list[int]]:
        pid = self.process.pid
        return pid, [pid] if pid else []  # one process: the master is the worker that answers

    def settings(self) -> dict[str, str]:
        return {"store": self.store, "source": self.state.url,
                **{k: str(v) for k, v in self.process.overrides.items()}}

    def clone_dirs(self) -> list[str]:
        checkout = self.process.checkout_dir
        return [str(checkout)] if (checkout / ".git").exists() else []

    def cpu_count(self) -> int:
        return os.cpu_count() or 1

    def python(self, code: str, args: list[str], timeout: float = 300) -> str:
        raise HarnessError("Cerbos is a Go binary: it has no Python environment to run code in")

    def restart(self, fresh_state: bool, overrides: Mapping[str, str] | None = None,
                wait_healthy: bool = True, workers: int | None = None) -> None:
        """`fresh_state`: the checkout (and the disk-sync clone) removed. `workers` does not
        apply: Cerbos is one process."""
        self.process.stop()
        self.stop_sync()
        if fresh_state:
            self.wipe()
        if overrides is not None:
            self.process.overrides = dict(overrides)
        self.write_config()
        if wait_healthy:
            self.process.start()
        else:
            self.process.launch()

    def peer_ports(self) -> dict[int, str]:
        return {self.stack.service(name).port: name for name in self.stack.service_names()}  # type: ignore[attr-defined]

    @property
    def client(self) -> CerbosClient:  # type: ignore[override]
        return CerbosClient(self.process.base_url)

    def installed_version(self) -> str:
        binary = read_version(self.process.binary)
        return f"{binary.version} (build {binary.build})"

    def knobs(self) -> ServerKnobs:
        """Poll interval and operation timeout from the config the server runs with (its --set
        overrides win); under disk-sync, the loop's git timeout (None under disk-sync-untimed)
        and the longest a synced change takes to be served (one interval, then the disk
        watcher's cooldowns)."""
        if self.state.sync is not None:
            sync = self.state.sync
            return ServerKnobs(git_timeout_s=sync.git_timeout_s, poll_interval_s=sync.served_within_s,
                               raw={"store": self.store, "sync_interval_s": sync.interval_s,
                                    "sync_git_timeout_s": sync.git_timeout_s,
                                    "served_within_s": sync.served_within_s})
        values = knobs(self.process.config_path, self.process.overrides)
        return ServerKnobs(git_timeout_s=values["operation_timeout_s"], poll_interval_s=values["poll_interval_s"],
                           raw={TIMEOUT_KEY: values["operation_timeout_s"], POLL_KEY: values["poll_interval_s"]})

    # -- SourceControl --------------------------------------------------------------------
    def new_source(self, name: str, policies: int = 0) -> CerbosSource:
        githost = self.stack.service("githost")
        return CerbosSource(name, githost.repos_dir, self.stack.run_dir / "sources",  # type: ignore[attr-defined]
                            front_url=f"{self.stack.published('gitfront').url}/{name}.git",
                            dead_url=self.stack.dead_url(_index(name))).create(policies)

    def attach(self, source: CerbosSource, via: str = "front", fresh: bool = True,  # type: ignore[override]
               wait_healthy: bool = True) -> None:
        self.state.attach(source, via)
        self.restart(fresh_state=fresh, wait_healthy=wait_healthy)

    def served(self, timeout: float = 5.0) -> Served:
        return self.client.served(timeout)

    def compile_seconds(self, source: CerbosSource) -> float:  # type: ignore[override]
        """`cerbos compile` of the source's working tree (the same files the server loads)."""
        started = time.monotonic()
        try:
            done = subprocess.run([str(self.process.binary), "compile", str(source.work / SUB_DIR)],
                                  capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S,
                                  env=self.process.env(), check=False)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"cerbos compile of {source.name} took over {COMPILE_TIMEOUT_S:g} s") from None
        if done.returncode != 0:
            raise HarnessError(f"cerbos compile of {source.name} exited {done.returncode}: "
                               f"{(done.stdout + done.stderr).strip()[-400:]}")
        return time.monotonic() - started

    def checkout(self) -> dict[str, Any]:
        directory = self.state.sync.clone_dir if self.state.sync is not None else self.process.checkout_dir
        return checkout_stats(directory)

    def nudge(self) -> None:
        """Nothing: Cerbos polls its remote on its own (storage.git.updatePollInterval)."""

    def tamper(self, kind: str) -> str:
        """The main policy in the checkout: its mode flipped (`mode`) or a comment appended
        (`content`); git sees the tree dirty, the server's index does not change."""
        directory = self.state.sync.clone_dir if self.state.sync is not None else self.process.checkout_dir
        path = directory / MAIN_POLICY
        if not path.is_file():
            raise HarnessError(f"no checkout to tamper with at {path}: has the server cloned its source?")
        if kind == "mode":
            path.chmod(path.stat().st_mode ^ 0o111)
            return f"{MAIN_POLICY}: mode {oct(path.stat().st_mode & 0o777)}"
        if kind == "content":
            with path.open("a") as out:
                out.write("# changed in the checkout by the harness\n")
            return f"{MAIN_POLICY}: a comment appended"
        raise ConfigError(f"tamper kind {kind!r}: one of mode, content")

    # -- the config and the disk-sync loop --------------------------------------------------
    def write_config(self) -> None:
        url = self.state.url
        if not url:
            raise HarnessError(f"no policy source attached to the Cerbos server (none in {self.state.path})")
        config: CerbosConfig
        if self.store in (DISK_SYNC, DISK_SYNC_UNTIMED):
            sync = DiskSync(url, self.stack.run_dir / "cerbos" / "sync",
                            git_timeout_s=None if self.store == DISK_SYNC_UNTIMED else GIT_TIMEOUT_S)
            sync.start()
            self.state.sync = sync
            config = self.process.disk_config(sync.policies_dir)
        else:
            config = self.process.git_config(url)
        config.write(self.process.config_path)

    def stop_sync(self) -> None:
        if self.state.sync is not None:
            self.state.sync.stop()
            self.state.sync = None

    def wipe(self) -> None:
        shutil.rmtree(self.process.checkout_dir, ignore_errors=True)
        shutil.rmtree(self.stack.run_dir / "cerbos" / "sync", ignore_errors=True)


def _index(name: str) -> int:
    """A stable dead-repo index per source name (the blackhole logs the repo asked for)."""
    return sum(name.encode()) % 10_000

