"""The local backend: every service a real process on this machine, no Docker needed."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from harness import procs, redisdb, seed
from harness.errors import ConfigError, HarnessError
from harness.githost.bare import BareGitHost
from harness.probes import clone_dirs
from harness.servers.opal import OpalServerProcess, stored_scopes
from harness.services.base import LocalService
from harness.services.listeners import ListenerService
from harness.services.postgres import PostgresService
from harness.services.redis import RedisService
from harness.stack.base import SERVICES, Stack
from harness.sysdeps import ensure
from harness.venvs import choose_constraints, ensure_server_venv
from harness.waiting import free_port

log = logging.getLogger(__name__)

SLOWFAIL_CLOSE_AFTER_S = 5.0


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
        target, cache = self.settings.target, self.settings.cache_dir
        venv = ensure_server_venv(target, cache, choose_constraints(target, cache, self.settings.constraints))
        self.run_dir.mkdir(parents=True, exist_ok=False)
        os.chmod(self.run_dir, 0o755)  # postgres runs as another user when we are root
        self.write_state()
        self._build_services(venv)
        for name in ("redis", "postgres", "githost", "blackhole", "slowfail", "latency"):
            step = time.monotonic()
            self.services[name].start()
            self._say(f"{name} up on {self.endpoint(name)} ({time.monotonic() - step:.1f} s)")
        self.ensure_repos(self.settings.seed_repos)
        step = time.monotonic()
        self.server.start()
        self._say(f"server {self.settings.target.label} healthy on {self.endpoint('server')} "
                  f"({time.monotonic() - step:.1f} s)")
        self.write_state(endpoints={name: self.endpoint(name) for name in SERVICES})
        self._say(f"stack {self.run_id} up in {time.monotonic() - started:.1f} s (run dir {self.run_dir})")

    def _build_services(self, venv) -> None:
        rd = self.run_dir
        githost = BareGitHost("githost", rd, free_port())
        self.services = {
            "redis": RedisService("redis", rd, free_port()),
            "postgres": PostgresService("postgres", rd, free_port()),
            "githost": githost,
            "blackhole": ListenerService("blackhole", rd, 0, mode="blackhole"),
            "slowfail": ListenerService("slowfail", rd, 0, mode="slowfail",
                                        extra_args=("--close-after", str(SLOWFAIL_CLOSE_AFTER_S))),
        }
        # The latency proxy needs the git host's port, known now.
        self.services["latency"] = ListenerService(
            "latency", rd, 0, mode="latency",
            extra_args=("--upstream", str(githost.port), "--delay-ms", str(self.settings.latency_ms)))
        self.services["server"] = OpalServerProcess(
            "server", rd, free_port(), venv=venv, instance_dir=rd / "opal",
            redis_url=self.redis.url, broadcast_uri=self.postgres.url,
            workers=self.settings.workers, overrides=dict(self.settings.server_env))

    def down(self) -> None:
        order = ["server", "latency", "slowfail", "blackhole", "githost", "postgres", "redis"]
        for name in order:
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
    def server(self) -> OpalServerProcess:
        return self.services["server"]  # type: ignore[return-value]

    @property
    def redis(self) -> RedisService:
        return self.services["redis"]  # type: ignore[return-value]

    @property
    def postgres(self) -> PostgresService:
        return self.services["postgres"]  # type: ignore[return-value]

    @property
    def githost(self) -> BareGitHost:
        return self.services["githost"]  # type: ignore[return-value]

    def _service(self, name: str) -> LocalService:
        if name not in self.services:
            raise ConfigError(f"unknown service {name!r}; services: {', '.join(SERVICES)}")
        return self.services[name]

    # -- Stack contract -------------------------------------------------------------------
    def endpoint(self, service: str) -> str:
        svc = self._service(service)
        if service == "redis":
            return self.redis.url
        if service == "postgres":
            return self.postgres.url
        if service == "githost":
            return f"git://127.0.0.1:{svc.port}/"
        if service == "server":
            return f"http://127.0.0.1:{svc.port}"
        return f"tcp://127.0.0.1:{svc.port}"

    def stop(self, service: str) -> None:
        self._service(service).stop()

    def start(self, service: str) -> None:
        self._service(service).start()

    def kill(self, service: str) -> None:
        self._service(service).kill()

    def pause(self, service: str) -> None:
        self._service(service).pause()

    def resume(self, service: str) -> None:
        self._service(service).resume()

    def logs(self, service: str) -> Path:
        return self._service(service).log_path

    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    def server_pids(self) -> tuple[int | None, list[int]]:
        return self.server.pid, self.server.worker_pids()

    def restart_server(self, fresh_state: bool, overrides: Mapping[str, str] | None = None,
                       wait_healthy: bool = True, workers: int | None = None) -> None:
        self.server.stop()
        if fresh_state:
            redisdb.flush_all(self.redis.url)
            shutil.rmtree(self.server.base_dir, ignore_errors=True)
        if overrides is not None:
            self.server.overrides = dict(overrides)
        if workers is not None:
            self.server.workers = workers
        if wait_healthy:
            self.server.start()
        else:
            self.server.launch()

    def repo_url(self, repo: str, via_latency: bool = False) -> str:
        return self.githost.url(repo, port=self.services["latency"].port if via_latency else None)

    def dead_url(self, index: int, kind: str = "blackhole") -> str:
        return f"git://127.0.0.1:{self._service(kind).port}/dead-{index:04d}.git"

    def ensure_repos(self, count: int) -> None:
        if count <= self.seeded:
            return
        result = seed.seed(self.githost.repos_dir, count)
        if result.failed:
            raise HarnessError(f"seeding failed for {len(result.failed)} of {result.total} repos; "
                               f"first: {next(iter(result.failed.items()))}")
        self.seeded = count

    def peer_ports(self) -> dict[int, str]:
        return {service.port: name for name, service in self.services.items()}

    def stage_scopes(self, scopes: Mapping[str, str]) -> None:
        redisdb.set_many(self.redis.url, stored_scopes(scopes))

    def clone_dirs(self) -> list[str]:
        return clone_dirs(self.server.clones_dir)

    def server_settings(self) -> dict[str, str]:
        return self.server.server_env()

    def server_cpu_count(self) -> int:
        return os.cpu_count() or 1

    def server_python(self, code: str, args: list[str], timeout: float = 300) -> str:
        assert self.server.venv is not None
        result = subprocess.run([str(self.server.venv.python), "-c", code, *args], capture_output=True,
                                text=True, timeout=timeout, env=self.server.env())
        if result.returncode != 0:
            raise HarnessError(f"the server's python exited {result.returncode}: {result.stderr.strip()[-400:]}")
        return result.stdout

    def accepted_connections(self, service: str) -> int:
        if service == "githost":
            return self.githost.connections()
        listener = self._service(service)
        if not isinstance(listener, ListenerService):
            raise ConfigError(f"{service} is not a fault listener nor the git host")
        return listener.accepted_connections()
