"""Processes the harness starts: logged, registered by PID, stopped by PID.

Every process is recorded in its run directory's `pids.jsonl` with its creation time,
so `harness clean` can stop what a crashed run left behind without ever touching a
process it did not start (a recycled PID has another creation time).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil

PID_REGISTRY = "pids.jsonl"
DIR_REGISTRY = "dirs.txt"  # directories a run made outside its run dir


@dataclass
class ManagedProcess:
    """A process the harness started: by this process (`popen`), or by another harness
    process of the same run and adopted from its registry (`harness gates --against`)."""

    name: str
    popen: subprocess.Popen | None
    log_path: Path
    create_time: float
    adopted_pid: int = 0

    @property
    def pid(self) -> int:
        return self.popen.pid if self.popen is not None else self.adopted_pid

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return still_running({"pid": self.adopted_pid, "create_time": self.create_time}) is not None

    def exit_code(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def send_signal(self, sig: int) -> None:
        """Send a signal to this process only (not its children)."""
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, grace: float = 10.0, first_signal: int = signal.SIGTERM) -> None:
        """Stop the process and everything it spawned, by PID; SIGKILL after `grace` s."""
        stop_tree(self.pid, grace=grace, first_signal=first_signal)
        if self.popen is None:
            return
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def adopt(run_dir: Path, name: str, log_path: Path) -> ManagedProcess | None:
    """The newest registered process called `name` of a run, if it still runs."""
    for entry in reversed(registered(run_dir)):
        if entry["name"] == name:
            if still_running(entry) is None:
                return None
            return ManagedProcess(name=name, popen=None, log_path=log_path, create_time=entry["create_time"],
                                  adopted_pid=entry["pid"])
    return None


def descendants_of(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop_tree(pid: int, grace: float, first_signal: int = signal.SIGTERM) -> None:
    """Signal the root (children follow their parent's shutdown), then SIGKILL whatever
    of the tree is still there after `grace` seconds — e.g. a 0.9.6 worker whose
    thread pool is jammed ignores graceful stop."""
    tree = descendants_of(pid)
    if not tree:
        return
    try:
        tree[0].send_signal(first_signal)
    except psutil.NoSuchProcess:
        pass
    _, alive = psutil.wait_procs(tree, timeout=grace)
    # Children spawned during the grace period (e.g. a gunicorn respawn) are caught too.
    alive += [p for p in descendants_of(pid) if p not in alive]
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def start(
    name: str,
    argv: Sequence[str],
    run_dir: Path,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
    stdout: int | IO | None = None,
) -> ManagedProcess:
    """Start `argv` in its own session, output to `log_path`, registered in `run_dir`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "ab", buffering=0)
    try:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else log_file,
            stderr=log_file,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            user=user,
            start_new_session=True,  # Ctrl-C in the terminal reaches the harness, which stops it
        )
    finally:
        log_file.close()
    create_time = psutil.Process(popen.pid).create_time()
    register(run_dir, name, popen.pid, create_time)
    return ManagedProcess(name=name, popen=popen, log_path=log_path, create_time=create_time)


def register(run_dir: Path, name: str, pid: int, create_time: float) -> None:
    with open(run_dir / PID_REGISTRY, "a") as registry:
        registry.write(json.dumps({"name": name, "pid": pid, "create_time": create_time}) + "\n")


def registered(run_dir: Path) -> list[dict]:
    path = run_dir / PID_REGISTRY
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def still_running(entry: dict) -> psutil.Process | None:
    """The registered process if it is the same one (PID and creation time match) and has
    not exited — a zombie (exited, not yet reaped by its parent, e.g. a detached `harness up`
    whose service another process stopped) does not count."""
    try:
        proc = psutil.Process(entry["pid"])
        if abs(proc.create_time() - entry["create_time"]) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE:
            return proc
    except psutil.NoSuchProcess:
        pass
    return None


def stop_registered(run_dir: Path, grace: float = 5.0) -> list[str]:
    """Stop every still-running process of a run (used by `harness clean`)."""
    stopped = []
    for entry in reversed(registered(run_dir)):
        if still_running(entry) is not None:
            stop_tree(entry["pid"], grace=grace)
            stopped.append(f"{entry['name']} (pid {entry['pid']})")
    return stopped


def register_dir(run_dir: Path, path: Path) -> None:
    with open(run_dir / DIR_REGISTRY, "a") as registry:
        registry.write(f"{path}\n")


def remove_registered_dirs(run_dir: Path) -> None:
    path = run_dir / DIR_REGISTRY
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                shutil.rmtree(line.strip(), ignore_errors=True)
