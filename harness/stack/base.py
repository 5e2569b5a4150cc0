"""The Stack contract: lifecycle and topology, whatever runs it underneath.

Topology: server, redis, postgres (the broadcaster), githost, blackhole, slowfail,
latency (a proxy in front of the git host). A Stack is a context manager that always
tears down — on success, failure and Ctrl-C — unless it was asked to keep the stack.

What a gate drives or observes is not a Stack method but one of two handles:
`stack.service(name)` (start — waits until ready —, stop, kill, pause, resume, logs,
accepted connections) and `stack.server`, the probe of the server under test (PIDs,
settings, clone dirs, restart, staged scopes, its own Python). Each backend implements
those few verbs once; everything built on them lives here.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil

from harness.config import Settings
from harness.errors import ConfigError, HarnessError
from harness.gitops import host_head
from harness.heads import RepoHeads, ScopeBook
from harness.report import RunReport
from harness.runinfo import settings_metadata, target_spec
from harness.servers.base import ServerKnobs

log = logging.getLogger(__name__)

SERVICES = ("server", "redis", "postgres", "githost", "blackhole", "slowfail", "latency", "gitfront")
STATE_FILE = "stack.json"


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Address:
    """Where this machine reaches a service: host and port as they are, no URL to parse back."""

    scheme: str
    host: str
    port: int
    userinfo: str = ""  # "user:password" (the broadcaster's database)
    path: str = ""  # "/postgres", "/" for the git host

    @property
    def url(self) -> str:
        auth = f"{self.userinfo}@" if self.userinfo else ""
        return f"{self.scheme}://{auth}{self.host}:{self.port}{self.path}"


class ServiceHandle(Protocol):
    """One service of the stack. `start` returns once the service is ready again."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def kill(self) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def logs(self) -> Path:
        """The service's log file, current as of this call."""
        ...

    def accepted_connections(self) -> int:
        """Connections a fault listener (or the git host) accepted so far: proof that traffic
        reached it. ConfigError for a service that does not count them."""
        ...


class ServerProbe(ABC):
    """What gates observe and change of the server under test, on either backend."""

    def __init__(self, stack: Stack):
        self.stack = stack

    @abstractmethod
    def pids(self) -> tuple[int | None, list[int]]:
        """(master PID, worker PIDs) as seen on this machine."""

    @abstractmethod
    def settings(self) -> dict[str, str]:
        """The server settings it runs with now, under the server's own names."""

    @abstractmethod
    def clone_dirs(self) -> list[str]: ...

    @abstractmethod
    def cpu_count(self) -> int:
        """CPUs the server sees (pre-fix releases size their git thread pool from it)."""

    @abstractmethod
    def python(self, code: str, args: list[str], timeout: float = 300) -> str:
        """Run `python -c code args...` in the server's environment (its virtualenv and
        settings locally, its container on compose); stdout, or HarnessError on failure."""

    @abstractmethod
    def restart(self, fresh_state: bool, overrides: Mapping[str, str] | None = None,
                wait_healthy: bool = True, workers: int | None = None) -> None:
        """Stop the server (SIGKILL after a bounded grace) and start it again. With
        `fresh_state`, Redis is flushed and the server's clones are removed first.
        `overrides` are the complete server settings to run with (the runner decides their
        precedence); `workers` the gunicorn worker count (None: as it runs now)."""

    @abstractmethod
    def peer_ports(self) -> dict[int, str]:
        """Port -> service, as the server's sockets see its peers (names its connections)."""

    def stop(self) -> None:
        self.stack.service("server").stop()

    def log(self) -> Path:
        return self.stack.service("server").logs()

    @property
    def client(self) -> Any:
        """The server's API client (a ScopeClient for a server with runtime sources)."""
        raise HarnessError(f"{self.stack.settings.server} has no scope API")

    @abstractmethod
    def installed_version(self) -> str:
        """The server's version as its own build reports it."""

    @abstractmethod
    def knobs(self) -> ServerKnobs:
        """The server's own values of the knobs gate budgets derive from (None: this server
        has no such setting), read the way the server reads them."""

    # What only a server with a scope store, a broadcaster or its own Python does: each
    # adapter with the capability implements it (in its own package, e.g. its probe.py).
    def stage_scopes(self, scopes: Mapping[str, str]) -> None:
        """Store scopes (id -> repo URL) directly where the server keeps them (SCOPE_STORE)."""
        raise self._lacks("a scope store")

    def stored_scope_ids(self, scope_ids: list[str]) -> list[str] | None:
        """Which of `scope_ids` the store holds now (None: the store does not answer)."""
        raise self._lacks("a scope store")

    def flush_store(self) -> None:
        raise self._lacks("a scope store")

    def clone_seconds(self, url: str) -> float:
        """Time one clone of `url` from the server's environment with its git library."""
        raise self._lacks("a git library the harness can time")

    def disconnect_broadcaster(self) -> int:
        """A server-side disconnect from its broadcaster; how many connections it cut."""
        raise self._lacks("a broadcaster")

    def _lacks(self, what: str) -> HarnessError:
        return HarnessError(f"{self.stack.settings.server} has no {what}: the gate that asked should have "
                            "declared the capability it needs")


class Stack(ABC):
    backend = "abstract"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.run_id = new_run_id()
        self.run_dir: Path = settings.run_root / self.run_id
        self.keep = settings.keep_stack
        #: the service `up` is starting now: named in the report when the stack fails to come up
        self.starting: str | None = None
        #: what each scope must serve: the repo the harness gave it and that repo's head
        self.book = ScopeBook(RepoHeads(self._host_head))

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
        except BaseException as exc:
            try:
                self._report_failed_up(exc)
            except Exception as report_exc:  # the report must not keep what started from stopping
                log.warning(f"[harness] could not write the report of the failed stack: {report_exc}")
            finally:
                self.down()
            raise
        return self

    def _report_failed_up(self, exc: BaseException) -> None:
        """reports/<run id>/ with every service's log and the service that failed: down()
        removes the run dir, and a stack that fails to start must not take its logs along.
        A stack that failed before it started anything (no engine, no image) leaves the report
        with its message and no logs: what failed is never lost."""
        service = getattr(exc, "service", None) or self.starting
        report = RunReport(self.settings.reports_dir, self.run_id, self.settings.target.label, self.backend,
                           self.settings.server_profile, meta=settings_metadata(self.settings, self.backend))
        if self.run_dir.exists():
            try:
                report.collect_logs(self.logs_dir())
            except Exception as log_exc:  # the engine may be the thing that failed
                log.warning(f"[harness] could not collect the logs of the failed stack: {log_exc}")
        message = str(exc) or type(exc).__name__
        report.stack_failed(service, message)
        log.info(f"[harness] the stack did not come up ({service or 'unknown service'}); logs kept in {report.dir}")

    def __exit__(self, *exc_info) -> None:
        try:
            if self.keep:
                self._mark_kept()
                log.info(f"[harness] keeping stack {self.run_id} ({self.backend}) up:")
                for service, where in self.endpoints().items():
                    log.info(f"[harness]   {service:<10} {where}")
                log.info(f"[harness] stop it with: harness down {self.run_id}")
            else:
                self.down()
        finally:
            signal.signal(signal.SIGTERM, self._previous_sigterm)

    # -- topology -----------------------------------------------------------------------
    @abstractmethod
    def service(self, name: str) -> ServiceHandle:
        """The handle of one service (ConfigError naming the services for an unknown one)."""

    @abstractmethod
    def address(self, name: str) -> Address | None:
        """Where this machine reaches a service; None when only the stack's own network
        reaches it (compose's fault listeners)."""

    @property
    @abstractmethod
    def server(self) -> ServerProbe: ...

    @abstractmethod
    def logs_dir(self) -> Path:
        """A directory holding every service's log, current as of this call."""

    @abstractmethod
    def repo_url(self, repo: str, via_latency: bool = False, via_front: bool = False) -> str:
        """URL of a seeded repo as the server reaches it: from the git host, through the
        latency proxy, or over smart HTTP through the git front (harness.gitfront)."""

    @abstractmethod
    def dead_url(self, index: int, kind: str = "blackhole") -> str:
        """A distinct URL per index on a listener that never answers (or closes late)."""

    @abstractmethod
    def ensure_repos(self, count: int) -> None:
        """At least `count` policy repos seeded (idempotent): a gate whose load moves with
        its scale seeds what it needs instead of failing on a stack seeded for less."""

    @abstractmethod
    def rename_repo(self, repo: str, new_name: str) -> None:
        """Rename a repo on the git host, as the server and pushes reach it: to a name
        nobody asks for, the remote is gone ("repository not found"); back, it is
        restored with its history. The bare git host only."""

    # -- built on the above -------------------------------------------------------------
    def published(self, name: str) -> Address:
        """The address of a service this machine must reach (ConfigError when it cannot)."""
        address = self.address(name)
        if address is None:
            raise ConfigError(f"{name} is reachable only inside the stack's network on the {self.backend} backend")
        return address

    def endpoints(self) -> dict[str, str]:
        """Service -> URL as this machine reaches it (for people: CLI, stack.json)."""
        return {name: (address.url if (address := self.address(name)) else "inside the stack's network only")
                for name in self.service_names()}

    def service_names(self) -> tuple[str, ...]:
        """The services this stack runs (a server without Redis or Postgres has none)."""
        return SERVICES

    @property
    def client(self) -> Any:
        return self.server.client

    def _host_head(self, repo: str) -> str | None:
        """The git host's head of `repo` now, asked from this machine (`git ls-remote`)."""
        base = self.published("githost").url.rstrip("/")
        owner = "" if base.startswith("git://") else "/harness"  # Gitea's repos live under the harness user
        return host_head(f"{base}{owner}/{repo}.git")

    def run_metadata(self, run_env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """What a report records about this run (harness/runinfo.py) plus what only the
        running stack can say: the engine and the server's own version."""
        meta = settings_metadata(self.settings, self.backend, run_env)
        meta["host"]["engine_version"] = self.engine_version()
        try:
            meta["server_version"] = self.server.installed_version()
        except HarnessError as exc:  # recorded as unknown; never a reason to lose a run
            log.warning(f"[harness] could not read the server's version: {exc}")
            meta["server_version"] = None
        return meta

    def engine_version(self) -> str | None:
        """The container engine's version (None: no engine involved)."""
        return None

    def _mark_kept(self) -> None:
        if self.run_dir.is_dir():
            _mark_kept_state(self.run_dir)

    def write_state(self, **extra) -> None:
        """stack.json: what `harness status/down/clean` know of this run, including the
        owner process (PID and start time, so a recycled PID is not mistaken for it)."""
        state = {"run_id": self.run_id, "backend": self.backend, "target": self.settings.target.label,
                 "target_spec": target_spec(self.settings), "owner_pid": os.getpid(),
                 "owner_create_time": psutil.Process().create_time(),
                 # `harness down` without a run id stops only the runs started from its checkout
                 "owner_cwd": _cwd(), **extra}
        (self.run_dir / STATE_FILE).write_text(json.dumps(state, indent=2))


def _mark_kept_state(run_dir: Path) -> None:
    """stack.json says the run was kept on purpose: its owner exits, and `harness clean`
    must not take it for what a crash left (`harness down` or `clean --all` stop it)."""
    path = run_dir / STATE_FILE
    try:
        state = json.loads(path.read_text())
        path.write_text(json.dumps({**state, "kept": True}, indent=2))
    except (OSError, ValueError) as exc:  # no state yet: nothing registered to keep apart
        log.warning(f"[harness] could not mark {run_dir.name} as kept: {exc}")


def _cwd() -> str | None:
    """The current directory; None when it was removed under us (then `harness down --all`
    or the run id stops the run)."""
    try:
        return os.getcwd()
    except FileNotFoundError:
        return None


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")
