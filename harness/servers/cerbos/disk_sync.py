"""The PASS control (CERBOS_STORE=disk-sync): Cerbos's disk driver over a clone that a loop
keeps in step with the remote, the git-sync sidecar pattern.

Every `interval_s` the loop runs `git fetch --prune`, `git reset --hard origin/<branch>` and
`git clean -fdx`: force-pushes, re-created branches and a tampered clone all converge to the
remote, which is what the gates expect a correct server to do. It is a control for the
checkers, not a recommendation. The loop runs on a daemon thread and stops on exit; every
git command has a timeout (its whole process group killed when it passes: git's
git-remote-http child holds the connection), so a hanging remote delays a sync, never the
exit, by more than one.

`git_timeout_s=None` (CERBOS_STORE=disk-sync-untimed) runs the git commands with no timeout:
the FAIL control of the offline-remote gate — a fetch stuck in a hung request stays stuck
after the remote heals, as a client without an operation timeout does. stop() still ends it
(the running command's process group is killed), so the exit stays bounded.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from harness.errors import HarnessError
from harness.servers.cerbos.policies import SUB_DIR

log = logging.getLogger(__name__)

# The disk driver's watcher (upstream internal/storage/disk/dirwatch.go, both versions) applies
# a batch of file events at a ticker of defaultCooldownPeriod = 2 s, once the last event is
# older than that period: up to two periods after the files changed. Not configurable.
WATCH_COOLDOWN_S = 2.0
GIT_TIMEOUT_S = 10.0  # each git command's bound
CLONE_TIMEOUT_S = 60.0  # the first clone's bound when the loop's commands have none (untimed)


@dataclass
class SyncState:
    """What the loop did so far (read by tests and gates; written by the loop thread only)."""

    syncs: int = 0
    errors: int = 0
    last_error: str = ""
    head: str = ""


@dataclass
class DiskSync:
    remote_url: str
    clone_dir: Path
    branch: str = "main"
    interval_s: float = 1.0
    git_timeout_s: float | None = GIT_TIMEOUT_S  # None: no timeout (the disk-sync-untimed control)
    state: SyncState = field(default_factory=SyncState, init=False)
    _running: subprocess.Popen[str] | None = field(default=None, init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    @property
    def policies_dir(self) -> Path:
        """What the Cerbos disk driver watches (`disk.directory`)."""
        return self.clone_dir / SUB_DIR

    @property
    def served_within_s(self) -> float:
        """The longest a commit may take to be served from a remote that answers, by the
        settings alone (add slack): one sync interval, then two watcher cooldown periods."""
        return self.interval_s + 2 * WATCH_COOLDOWN_S

    def __enter__(self) -> DiskSync:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        """Clone unless a clone is kept from an earlier run, then keep syncing on a daemon
        thread. A kept clone is not synced first: like a sidecar beside a restarted server,
        the server starts on the last synced content and a dead remote only stalls the loop."""
        if not (self.clone_dir / ".git").exists():
            self._clone()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"disk-sync {self.clone_dir.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            if self.git_timeout_s is None:
                self._kill_running()  # nothing else would end a command stuck on a hung remote
            # One sync is at most three git commands, each bounded by git_timeout_s.
            self._thread.join(timeout=3 * (self.git_timeout_s or 0.0) + self.interval_s + 5)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sync_once()
            self._stop.wait(self.interval_s)

    def sync_once(self) -> bool:
        """One fetch + reset + clean; False (and the error recorded) when a step failed."""
        try:
            self._git("fetch", "--prune", "--quiet", "origin")
            self._git("reset", "--hard", "--quiet", f"origin/{self.branch}")
            self._git("clean", "-fdxq")
            self.state.head = self._git("rev-parse", "HEAD")
        except HarnessError as exc:
            self.state.errors += 1
            self.state.last_error = str(exc)
            return False
        self.state.syncs += 1
        return True

    def _clone(self) -> None:
        self.clone_dir.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        # Bounded even untimed: the control is about the loop's fetches, not setting it up.
        self._run(["git", "clone", "--quiet", "--branch", self.branch, self.remote_url, str(self.clone_dir)],
                  timeout=self.git_timeout_s or CLONE_TIMEOUT_S)
        self.state.head = self._git("rev-parse", "HEAD")
        log.info(f"[harness] disk-sync cloned {self.remote_url} in {time.monotonic() - started:.1f} s")

    def _git(self, *args: str) -> str:
        return self._run(["git", "-C", str(self.clone_dir), *args])

    def _run(self, argv: list[str], timeout: float | None = None) -> str:
        """`timeout`: this command's own (default: git_timeout_s, None for none)."""
        timeout = self.git_timeout_s if timeout is None else timeout
        # No prompt may wait for a user: a 401 from the remote must fail the step at once.
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}
        # Its own process group, so a timeout or stop() ends git-remote-http with it.
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                   start_new_session=True)
        self._running = process
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill(process)
            raise HarnessError(f"{' '.join(argv[1:4])}: no answer within {timeout:g} s") from None
        finally:
            self._running = None
        if process.returncode != 0:
            raise HarnessError(f"{' '.join(argv)} exited {process.returncode}: {stderr.strip()[-300:]}")
        return stdout.strip()

    def _kill_running(self) -> None:
        """From stop(): the running command's process group killed; the loop thread, waiting
        in communicate(), reaps it (only that thread reads its pipes)."""
        process = self._running
        if process is not None and process.poll() is None:
            _killpg(process)

    @staticmethod
    def _kill(process: subprocess.Popen[str]) -> None:
        """On the loop's own thread: the command's process group killed and reaped."""
        _killpg(process)
        try:
            process.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _killpg(process: subprocess.Popen[str]) -> None:
    """The command's process group (git and its remote helper), by the PID it started with."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
