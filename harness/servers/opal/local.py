"""OPAL on the local backend (harness.stack.local_runtime): its virtualenv, gunicorn as a
local process, and the probe of it.

The probe has the SourceControl verbs (harness.servers.base): one policy source attached as
one scope (`SOURCE_SCOPE`) whose repo the harness commits to; what it serves is the scope's
bundle hash, the commit (harness/servers/opal/source.py). OPAL runs without polling here, so
every push through the source is followed by the scope's refresh call, as a webhook would.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

from harness.config import Settings
from harness.errors import ConfigError, HarnessError
from harness.probes import clone_dirs
from harness.servers.base import Served
from harness.servers.opal.probe import OpalProbe
from harness.servers.opal.process import OpalServerProcess
from harness.servers.opal.source import OpalSource
from harness.servers.opal.venvs import ServerVenv, choose_constraints, ensure_server_venv
from harness.services.base import LocalService
from harness.stack.local import LocalStack


class OpalLocal:
    """OPAL's local parts: a venv per target, opal-server under gunicorn with Redis and the
    Postgres broadcaster of the stack."""

    def install(self, settings: Settings) -> ServerVenv:
        target, cache = settings.target, settings.cache_dir
        return ensure_server_venv(target, cache, choose_constraints(target, cache, settings.constraints))

    def server(self, stack: LocalStack, port: int, installed: ServerVenv) -> OpalServerProcess:
        return OpalServerProcess(
            "server", stack.run_dir, port, venv=installed, instance_dir=stack.run_dir / "opal",
            redis_url=stack.address("redis").url, broadcast_uri=stack.address("postgres").url,
            workers=stack.settings.workers, overrides=dict(stack.settings.server_env))

    def before_start(self, stack: LocalStack) -> None:
        """Nothing: OPAL boots with no scope."""

    def after_stop(self, stack: LocalStack) -> None:
        """Nothing: OPAL runs nothing beside its process tree."""

    def probe(self, stack: LocalStack) -> LocalServerProbe:
        return LocalServerProbe(stack)

    def install_state(self, server: LocalService) -> dict[str, Any]:
        venv = server.venv if isinstance(server, OpalServerProcess) else None
        return {"venv": str(venv.path) if venv else None}

    def installed_from_state(self, settings: Settings, state: Mapping[str, Any]) -> ServerVenv:
        return ServerVenv(Path(state["venv"]), settings.target)


RUNTIME = OpalLocal()

log = logging.getLogger(__name__)

SOURCE_SCOPE = "source"  # the scope an attached policy source is served as


class SourceState:
    """The attached source and how the server reaches it, kept on the stack (a probe is made
    per access)."""

    def __init__(self) -> None:
        self.source: OpalSource | None = None
        self.via = "front"
        self.refreshes: list[dict[str, Any]] = []  # each push's refresh call: sha, status, seconds


class LocalServerProbe(OpalProbe):
    """The server as processes on this machine: gunicorn's tree, its venv, its run dir."""

    stack: LocalStack

    @property
    def process(self) -> OpalServerProcess:
        return self.stack.services["server"]  # type: ignore[return-value]

    def pids(self) -> tuple[int | None, list[int]]:
        return self.process.pid, self.process.worker_pids()

    def settings(self) -> dict[str, str]:
        return self.process.server_env()

    def clone_dirs(self) -> list[str]:
        return clone_dirs(self.process.clones_dir)

    def cpu_count(self) -> int:
        return os.cpu_count() or 1

    def python(self, code: str, args: list[str], timeout: float = 300) -> str:
        assert self.process.venv is not None
        result = subprocess.run([str(self.process.venv.python), "-c", code, *args], capture_output=True,
                                text=True, timeout=timeout, env=self.process.env())
        if result.returncode != 0:
            raise HarnessError(f"the server's python exited {result.returncode}: {result.stderr.strip()[-400:]}")
        return result.stdout

    def restart(self, fresh_state: bool, overrides: Mapping[str, str] | None = None,
                wait_healthy: bool = True, workers: int | None = None) -> None:
        server = self.process
        server.stop()
        if fresh_state:
            self.flush_store()
            shutil.rmtree(server.base_dir, ignore_errors=True)
        if overrides is not None:
            server.overrides = dict(overrides)
        if workers is not None:
            server.workers = workers
        if wait_healthy:
            server.start()
        else:
            server.launch()

    def peer_ports(self) -> dict[int, str]:
        return {service.port: name for name, service in self.stack.services.items()}

    # -- SourceControl --------------------------------------------------------------------
    @property
    def source_state(self) -> SourceState:
        if not hasattr(self.stack, "opal_source_state"):
            self.stack.opal_source_state = SourceState()  # type: ignore[attr-defined]
        return self.stack.opal_source_state  # type: ignore[attr-defined,no-any-return]

    def new_source(self, name: str, policies: int = 0) -> OpalSource:
        return OpalSource(name, self.stack.githost.repos_dir, self.stack.run_dir / "sources",
                          front_url=self.stack.repo_url(name, via_front=True),
                          dead_url=self.stack.dead_url(_index(name))).create(policies)

    def attach(self, source: OpalSource, via: str = "front", fresh: bool = True,  # type: ignore[override]
               wait_healthy: bool = True) -> None:
        """Serve `source` as scope SOURCE_SCOPE. `fresh`: the server restarted on an empty
        store with no clones, then the scope PUT through the API (stored in Redis before the
        launch instead when the boot is not waited for: the boot's preload meets it).
        Not fresh: the scope PUT to the running server (repointed if it was stored)."""
        state = self.source_state
        state.source, state.via = source, via
        source.on_push = self._pushed
        url = source.url(via)
        if fresh and not wait_healthy:
            server = self.process
            server.stop()
            self.flush_store()
            shutil.rmtree(server.base_dir, ignore_errors=True)
            self.stage_scopes({SOURCE_SCOPE: url})
            server.launch()
            return
        if fresh:
            self.restart(fresh_state=True)
        status = self.client.put_scope(SOURCE_SCOPE, url)
        if status not in (200, 201):
            raise HarnessError(f"PUT /scopes for {SOURCE_SCOPE} ({url}) answered {status}, not 201")

    def served(self, timeout: float = 5.0) -> Served:
        """GET the scope's policy: the nonce is its bundle's hash (the commit it was built
        from); None on anything but a 200 with a hash."""
        client = self.client
        result = client.get_policy(SOURCE_SCOPE, timeout=timeout)
        return Served(nonce=result.hash, status=result.status, healthy=client.healthy(timeout=2.0),
                      seconds=result.seconds, error=result.error)

    def nudge(self) -> None:
        try:
            self.client.refresh(SOURCE_SCOPE)
        except requests.RequestException:
            pass  # the server's answer to a broken remote is what the gate judges, not this call

    def checkout(self) -> dict[str, Any]:
        """{}: OPAL keeps a clone per repository URL under its base dir, rebuilt from the remote
        at boot, not one checkout it serves from across restarts (no KEPT_CHECKOUT)."""
        return {}

    def tamper(self, kind: str) -> str:
        raise ConfigError(f"tamper {kind!r}: OPAL keeps no single checkout of its source to tamper with "
                          f"(a clone per repository URL, rebuilt from the remote); gates that tamper need "
                          f"kept-checkout, which OPAL lacks")

    def _pushed(self, sha: str | None) -> None:
        """A change of the attached source's remote (a push, or None: the branch deleted or
        the repo removed): its head recorded for harness.heads, and the scope refreshed
        (force-fetch) as the git host's webhook would. A refresh that fails is recorded, not
        raised: the change happened, and what is served says the rest."""
        state = self.source_state
        if state.source is not None and sha is not None:
            self.stack.book.heads.set(state.source.name, sha)
        started = time.monotonic()
        try:
            status: int | None = self.client.refresh(SOURCE_SCOPE)
            error = ""
        except requests.RequestException as exc:
            status, error = None, type(exc).__name__
        seconds = round(time.monotonic() - started, 3)
        state.refreshes.append({"sha": sha, "status": status, "seconds": seconds, "error": error})
        if status != 200:
            log.warning(f"[harness] refresh of scope {SOURCE_SCOPE} after push {(sha or 'none')[:10]} answered "
                        f"{status or error}")


def _index(name: str) -> int:
    """A stable dead-repo index per source name (the blackhole logs the repo asked for)."""
    return sum(name.encode()) % 10_000
