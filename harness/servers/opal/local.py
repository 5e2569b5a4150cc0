"""OPAL on the local backend (harness.stack.local_runtime): its virtualenv, gunicorn as a
local process, and the probe of it."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.config import Settings
from harness.errors import HarnessError
from harness.probes import clone_dirs
from harness.servers.opal.process import OpalServerProcess
from harness.servers.opal.venvs import ServerVenv, choose_constraints, ensure_server_venv
from harness.services.base import LocalService
from harness.stack.base import ServerProbe
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


class LocalServerProbe(ServerProbe):
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
