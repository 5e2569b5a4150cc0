"""A service run as one local process: start, wait until ready, stop/kill/pause by PID.

A LocalService is the local backend's service handle (harness.stack.base.ServiceHandle)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from harness import procs
from harness.errors import ConfigError, ServiceFailed
from harness.waiting import port_open, wait_for


@dataclass
class LocalService:
    name: str
    run_dir: Path
    port: int
    start_timeout: float = 30.0
    stop_signal: int = signal.SIGTERM
    stop_grace: float = 10.0
    process: procs.ManagedProcess | None = field(default=None, init=False)

    # -- what a concrete service defines -------------------------------------------
    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def user(self) -> str | None:
        return None

    def prepare(self) -> None:
        """One-time setup before the first start (e.g. initdb)."""

    def ready(self) -> bool:
        return port_open(self.port)

    # -- lifecycle --------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.run_dir / "logs" / f"{self.name}.log"

    def logs(self) -> Path:
        return self.log_path

    def accepted_connections(self) -> int:
        raise ConfigError(f"{self.name} does not count connections: only the fault listeners and the git host do")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process and self.process.alive() else None

    def start(self) -> None:
        if self.process and self.process.alive():
            return
        self.prepare()
        self.process = procs.start(self.name, self.argv(), self.run_dir, self.log_path,
                                   env=self.env(), user=self.user())
        wait_for(self._ready_or_died, self.start_timeout, f"{self.name} did not become ready",
                 interval=0.05, error=ServiceFailed)

    def _ready_or_died(self) -> bool:
        assert self.process is not None
        if not self.process.alive():
            raise ServiceFailed(
                f"{self.name} exited with code {self.process.exit_code()} while starting; "
                f"log {self.log_path}:\n{self.process.log_tail()}"
            )
        return self.ready()

    def stop(self) -> None:
        if self.process:
            try:
                self.resume()  # a paused process cannot act on SIGTERM
            finally:  # whatever resuming met, the process is stopped (a raise here once leaked a git daemon)
                self.process.stop(grace=self.stop_grace, first_signal=self.stop_signal)

    def kill(self) -> None:
        if self.process:
            self.process.stop(grace=0, first_signal=signal.SIGKILL)

    def pause(self) -> None:
        if self.process:
            for proc in procs.descendants_of(self.process.pid):
                _signal_if_alive(proc.suspend)

    def resume(self) -> None:
        if self.process:
            for proc in procs.descendants_of(self.process.pid):
                _signal_if_alive(proc.resume)


def _signal_if_alive(send: Callable[[], None]) -> None:
    """A child listed a moment ago may have exited since (a git process ending, a worker
    respawned): there is nothing left to pause or resume."""
    try:
        send()
    except psutil.NoSuchProcess:
        pass
