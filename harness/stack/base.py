"""The Stack contract: one interface, one topology, whatever runs it underneath.

Topology: server, redis, postgres (the broadcaster), githost, blackhole, slowfail,
latency (a proxy in front of the git host). A Stack is a context manager that always
tears down — on success, failure and Ctrl-C — unless it was asked to keep the stack.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path

import psutil

from harness.config import Settings
from harness.errors import HarnessError
from harness.servers.opal import CLONE_TIMER, KNOB_NAMES, KNOB_READER, OpalClient

log = logging.getLogger(__name__)

SERVICES = ("server", "redis", "postgres", "githost", "blackhole", "slowfail", "latency")
STATE_FILE = "stack.json"


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


class Stack(ABC):
    backend = "abstract"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.run_id = new_run_id()
        self.run_dir: Path = settings.run_root / self.run_id
        self.keep = settings.keep_stack

    # -- lifecycle ----------------------------------------------------------------------
    @abstractmethod
    def up(self) -> None: ...

    @abstractmethod
    def down(self) -> None: ...

    def __enter__(self) -> Stack:
        # SIGTERM (CI cancelling a job, `harness down`) unwinds like Ctrl-C does.
        self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            if self.keep:
                log.info(f"[harness] keeping stack {self.run_id} ({self.backend}) up:")
                for service in SERVICES:
                    log.info(f"[harness]   {service:<10} {self.endpoint(service)}")
                log.info(f"[harness] stop it with: harness down {self.run_id}")
            else:
                self.down()
        finally:
            signal.signal(signal.SIGTERM, self._previous_sigterm)

    # -- services -----------------------------------------------------------------------
    @abstractmethod
    def endpoint(self, service: str) -> str:
        """URL of a service on 127.0.0.1."""

    @abstractmethod
    def stop(self, service: str) -> None: ...

    @abstractmethod
    def start(self, service: str) -> None: ...

    @abstractmethod
    def kill(self, service: str) -> None: ...

    @abstractmethod
    def pause(self, service: str) -> None: ...

    @abstractmethod
    def resume(self, service: str) -> None: ...

    @abstractmethod
    def logs(self, service: str) -> Path: ...

    @abstractmethod
    def logs_dir(self) -> Path:
        """A directory holding every service's log, current as of this call."""

    @abstractmethod
    def server_pids(self) -> tuple[int | None, list[int]]:
        """(master PID, worker PIDs) as seen on this machine."""

    @abstractmethod
    def restart_server(self, fresh_state: bool, overrides: Mapping[str, str] | None = None,
                       wait_healthy: bool = True, workers: int | None = None) -> None:
        """Stop the server (SIGKILL after a bounded grace) and start it again. With
        `fresh_state`, Redis is flushed and the server's clones are removed first.
        `overrides` are the complete OPAL_* settings to run with (the runner decides their
        precedence); `workers` the gunicorn worker count (None: as it runs now)."""

    # -- what gates use -------------------------------------------------------------------
    @abstractmethod
    def repo_url(self, repo: str, via_latency: bool = False) -> str:
        """URL of a seeded repo as the server reaches it."""

    @abstractmethod
    def dead_url(self, index: int, kind: str = "blackhole") -> str:
        """A distinct URL per index on a listener that never answers (or closes late)."""

    @abstractmethod
    def ensure_repos(self, count: int) -> None:
        """At least `count` policy repos seeded (idempotent): a gate whose load moves with
        its scale seeds what it needs instead of failing on a stack seeded for less."""

    @abstractmethod
    def peer_ports(self) -> dict[int, str]:
        """Port -> service, as the server's sockets see its peers (names its connections)."""

    @abstractmethod
    def stage_scopes(self, scopes: Mapping[str, str]) -> None:
        """Store scopes (id -> repo URL) directly where the server keeps them."""

    @abstractmethod
    def clone_dirs(self) -> list[str]: ...

    @abstractmethod
    def server_settings(self) -> dict[str, str]:
        """The OPAL_* settings the server runs with now."""

    @abstractmethod
    def accepted_connections(self, service: str) -> int:
        """Connections a fault listener has accepted (proof the fault took effect)."""

    @abstractmethod
    def server_cpu_count(self) -> int:
        """CPUs the server sees (pre-fix releases size their git thread pool from it)."""

    @abstractmethod
    def server_python(self, code: str, args: list[str], timeout: float = 300) -> str:
        """Run `python -c code args...` in the server's environment (its virtualenv and
        settings locally, its container on compose); stdout, or HarnessError on failure."""

    def clone_seconds(self, url: str) -> float:
        """Time one clone of `url` from the server's environment with its git library."""
        return float(self.server_python(CLONE_TIMER, [url]).strip())

    def server_knobs(self) -> dict[str, float | int | None]:
        """The server's own values of the knobs gate budgets derive from (None: this server
        has no such setting), read from its config object with the settings it runs with."""
        try:
            return json.loads(self.server_python(KNOB_READER, list(KNOB_NAMES), timeout=120))
        except (ValueError, HarnessError) as exc:
            raise HarnessError(f"could not read the server's settings from opal_server.config: {exc}") from None

    @property
    def client(self) -> OpalClient:
        return OpalClient(self.endpoint("server"))

    def write_state(self, **extra) -> None:
        """stack.json: what `harness status/down/clean` know of this run, including the
        owner process (PID and start time, so a recycled PID is not mistaken for it)."""
        state = {"run_id": self.run_id, "backend": self.backend, "target": self.settings.target.label,
                 "owner_pid": os.getpid(), "owner_create_time": psutil.Process().create_time(), **extra}
        (self.run_dir / STATE_FILE).write_text(json.dumps(state, indent=2))


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")
