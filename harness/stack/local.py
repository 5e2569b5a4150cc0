"""The local backend: every service a real process on this machine, no Docker needed."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness import procs, seed
from harness.config import Settings
from harness.errors import ConfigError, HarnessError
from harness.githost.bare import BareGitHost
from harness.servers.registry import SERVERS
from harness.services.base import LocalService
from harness.services.listeners import GitFrontService, ListenerService
from harness.services.postgres import DB_NAME, DB_PASSWORD, DB_USER, PostgresService
from harness.services.redis import RedisService
from harness.stack.base import SERVICES, Address, ServerProbe, Stack
from harness.stack.local_runtime import LocalRuntime, local_runtime
from harness.sysdeps import ensure
from harness.waiting import free_port

log = logging.getLogger(__name__)

SLOWFAIL_CLOSE_AFTER_S = 5.0
# Services start in this order (those the stack has) and stop in the reverse, the server first.
START_ORDER = ("redis", "postgres", "githost", "blackhole", "slowfail", "latency", "gitfront")


class LocalStack(Stack):
    backend = "local"

    def __init__(self, settings):
        super().__init__(settings)
        self.services: dict[str, LocalService] = {}
        self.seeded = 0

    # -- lifecycle ----------------------------------------------------------------------
    def up(self) -> None:
        started = time.monotonic()
        ensure()
        installed = self.runtime.install(self.settings)
        self.run_dir.mkdir(parents=True, exist_ok=False)
        os.chmod(self.run_dir, 0o755)  # postgres runs as another user when we are root
        self.write_state()
        self._build_services(installed)
        for name in [n for n in START_ORDER if n in self.services]:
            self.starting = name
            step = time.monotonic()
            self.services[name].start()
            self._say(f"{name} up on {self.address(name).url} ({time.monotonic() - step:.1f} s)")
        self.starting = "githost"  # seeding
        self.ensure_repos(self.settings.seed_repos)
        self.runtime.before_start(self)  # e.g. Cerbos: the repo it boots on
        self.starting = "server"
        step = time.monotonic()
        self.services["server"].start()
        self._say(f"server {self.settings.target.label} healthy on {self.address('server').url} "
                  f"({time.monotonic() - step:.1f} s)")
        self.starting = None
        self.write_state(endpoints=self.endpoints(), attach=self.attach_state())
        self._say(f"stack {self.run_id} up in {time.monotonic() - started:.1f} s (run dir {self.run_dir})")

    def _build_services(self, installed: Any, ports: Mapping[str, int] | None = None) -> None:
        """The services of this stack, on `ports` (an attached stack's) or free ones; the
        fault listeners bind their own (0) unless given. The server's own dependencies
        (OPAL: redis, postgres) come from its adapter, and so does the server."""
        rd = self.run_dir
        port = dict(ports or {})
        githost = BareGitHost("githost", rd, port.get("githost") or free_port())
        dependencies = {"redis": RedisService, "postgres": PostgresService}
        self.services = {
            **{name: dependencies[name](name, rd, port.get(name) or free_port())
               for name in SERVERS[self.settings.server].dependencies},
            "githost": githost,
            "blackhole": ListenerService("blackhole", rd, port.get("blackhole", 0), mode="blackhole"),
            "slowfail": ListenerService("slowfail", rd, port.get("slowfail", 0), mode="slowfail",
                                        extra_args=("--close-after", str(SLOWFAIL_CLOSE_AFTER_S))),
        }
        self.services["gitfront"] = GitFrontService("gitfront", rd, port.get("gitfront", 0), mode="gitfront",
                                                    repos_dir=githost.repos_dir)
        # The latency proxy needs the git host's port, known now.
        self.services["latency"] = ListenerService(
            "latency", rd, port.get("latency", 0), mode="latency",
            extra_args=("--upstream", str(githost.port), "--delay-ms", str(self.settings.latency_ms)))
        self.services["server"] = self.runtime.server(self, port.get("server") or free_port(), installed)

    @property
    def runtime(self) -> LocalRuntime:
        """The server's local parts (harness/servers/<server>/local.py), found by name: the
        stack imports no server."""
        return local_runtime(self.settings.server)

    def attach_state(self) -> dict[str, Any]:
        """What another harness process needs to drive this stack (`harness gates --against`)."""
        return {"ports": {name: service.port for name, service in self.services.items()},
                **self.runtime.install_state(self.services["server"]), "seeded": self.seeded}

    @classmethod
    def attached(cls, settings: Settings, run_dir: Path, state: Mapping[str, Any]) -> LocalStack:
        """This stack as seen from another process: the same services on the same ports,
        their running processes adopted from the run's registry (stopped and started by PID
        like its own). The owner (`harness up --detach`) still tears it down."""
        stack = cls(settings)
        stack.run_id, stack.run_dir, stack.keep = run_dir.name, run_dir, True
        stack._build_services(stack.runtime.installed_from_state(settings, state), state["ports"])
        for name, service in stack.services.items():
            service.process = procs.adopt(run_dir, name, service.log_path)
        stack.seeded = int(state.get("seeded", 0))
        return stack

    def down(self) -> None:
        self.runtime.after_stop(self)
        for name in reversed(["server", *START_ORDER]):
            service = self.services.get(name)
            if service is not None:
                service.stop()
        if self.run_dir.exists():
            leftovers = procs.stop_registered(self.run_dir)
            if leftovers:
                self._say(f"stopped leftover processes: {', '.join(leftovers)}")
            procs.remove_registered_dirs(self.run_dir)
            shutil.rmtree(self.run_dir, ignore_errors=True)
        self.services = {}

    def _say(self, message: str) -> None:
        log.info(f"[harness] {message}")

    # -- typed access -------------------------------------------------------------------
    @property
    def server_process(self) -> LocalService:
        return self.services["server"]

    @property
    def githost(self) -> BareGitHost:
        return self.services["githost"]  # type: ignore[return-value]

    # -- Stack contract -------------------------------------------------------------------
    def service(self, name: str) -> LocalService:
        if name not in self.services:
            raise ConfigError(f"unknown service {name!r}; services: {', '.join(SERVICES)}")
        return self.services[name]

    def service_names(self) -> tuple[str, ...]:
        return tuple(name for name in SERVICES if name in self.services)

    def address(self, name: str) -> Address:
        port = self.service(name).port
        if name == "redis":
            return Address("redis", "127.0.0.1", port)
        if name == "postgres":
            return Address("postgres", "127.0.0.1", port, userinfo=f"{DB_USER}:{DB_PASSWORD}", path=f"/{DB_NAME}")
        if name == "githost":
            return Address("git", "127.0.0.1", port, path="/")
        if name in ("server", "gitfront"):
            return Address("http", "127.0.0.1", port)
        return Address("tcp", "127.0.0.1", port)

    @property
    def server(self) -> ServerProbe:
        return self.runtime.probe(self)

    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    def repo_url(self, repo: str, via_latency: bool = False, via_front: bool = False) -> str:
        if via_front:
            return f"http://127.0.0.1:{self.services['gitfront'].port}/{repo}.git"
        return self.githost.url(repo, port=self.services["latency"].port if via_latency else None)

    def dead_url(self, index: int, kind: str = "blackhole") -> str:
        return f"git://127.0.0.1:{self.service(kind).port}/{seed.dead_repo_name(index)}.git"

    def ensure_repos(self, count: int) -> None:
        if count <= self.seeded:
            return
        result = seed.seed(self.githost.repos_dir, count)
        if result.failed:
            raise HarnessError(f"seeding failed for {len(result.failed)} of {result.total} repos; "
                               f"first: {next(iter(result.failed.items()))}")
        self.seeded = count


    def rename_repo(self, repo: str, new_name: str) -> None:
        repos = self.githost.repos_dir
        (repos / f"{repo}.git").rename(repos / f"{new_name}.git")
