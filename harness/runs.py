"""Run directories under the run root: find them, tell live from stale, remove them.

A run directory holds `stack.json` (owner PID, the directory it was started in, endpoints)
and `pids.jsonl` (every process the run started). `harness status/down/clean` work from these alone, so they also find
what a crashed or killed run left behind.
"""

from __future__ import annotations

import json
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

import psutil

from harness import procs
from harness.stack.base import STATE_FILE


@dataclass
class RunInfo:
    run_id: str
    path: Path
    state: dict
    owner_alive: bool
    live_processes: list[str]

    @property
    def kept(self) -> bool:
        """Left up on purpose (--keep-stack, HARNESS_KEEP_STACK) after its command finished."""
        return bool(self.state.get("kept"))

    @property
    def stale(self) -> bool:
        """What a crashed or killed run left: its owner is gone and it was not kept."""
        return not self.owner_alive and not self.kept


def _owner_alive(state: dict) -> bool:
    entry = {"pid": state.get("owner_pid", -1), "create_time": state.get("owner_create_time", 0)}
    return entry["pid"] > 0 and procs.still_running(entry) is not None


def checkout_of(path: Path) -> Path:
    """The git checkout (or worktree: `.git` is then a file) around `path`, else `path`:
    where a run was started from, as `harness down` matches it."""
    path = path.resolve()
    return next((p for p in (path, *path.parents) if (p / ".git").exists()), path)


def owner_cwd(run: RunInfo) -> Path | None:
    """The directory the run's owner was started in: recorded in stack.json; for a run made
    by an older harness, asked of its live owner; None when neither can say."""
    if run.state.get("owner_cwd"):
        return Path(run.state["owner_cwd"])
    if not run.owner_alive:
        return None
    try:
        return Path(psutil.Process(run.state["owner_pid"]).cwd())
    except (psutil.Error, KeyError):
        return None


def started_here(run: RunInfo, here: Path) -> bool:
    """Whether `run` was started from the checkout around `here`."""
    cwd = owner_cwd(run)
    return cwd is not None and checkout_of(cwd) == checkout_of(here)


def list_runs(run_root: Path) -> list[RunInfo]:
    if not run_root.is_dir():
        return []
    runs = []
    for path in sorted(p for p in run_root.iterdir() if p.is_dir()):
        try:
            state = json.loads((path / STATE_FILE).read_text())
        except (OSError, ValueError):
            state = {}
        live = [f"{e['name']}:{e['pid']}" for e in procs.registered(path) if procs.still_running(e)]
        runs.append(RunInfo(path.name, path, state, _owner_alive(state), live))
    return runs


def remove_run(run: RunInfo, owner_grace: float = 30.0) -> list[str]:
    """Ask a live owner to tear down (SIGTERM), then stop whatever is left, then rm the dir."""
    if run.owner_alive:
        try:
            owner = psutil.Process(run.state["owner_pid"])
            owner.send_signal(signal.SIGTERM)
            owner.wait(timeout=owner_grace)
        except psutil.TimeoutExpired:
            pass
        except psutil.NoSuchProcess:
            pass
    stopped = procs.stop_registered(run.path) if run.path.exists() else []
    procs.remove_registered_dirs(run.path)
    if run.state.get("backend") == "compose":
        stopped += remove_compose_resources(run.run_id)
    shutil.rmtree(run.path, ignore_errors=True)
    return stopped


def remove_compose_resources(run_id: str | None = None, everything: bool = False,
                             spare: frozenset[str] = frozenset()) -> list[str]:
    """Containers, networks and volumes labelled by the harness: one run's; or (run_id None)
    those whose owner process is gone, but for the runs in `spare` (kept on purpose) —
    every run's with `everything`. Nothing to do when no Docker engine answers."""
    from harness.errors import HarnessError
    from harness.images import docker_client
    from harness.stack.compose import OWNER_LABEL, RUN_LABEL, owner_alive, remove_labelled
    try:
        client = docker_client(timeout=30)
    except HarnessError:
        return []
    if run_id is not None:
        return remove_labelled(client, run_id)
    owners: dict[str, str | None] = {}
    for container in client.containers.list(all=True, filters={"label": RUN_LABEL}):
        owners[container.labels[RUN_LABEL]] = container.labels.get(OWNER_LABEL)
    for resource in [*client.networks.list(filters={"label": RUN_LABEL}),
                     *client.volumes.list(filters={"label": RUN_LABEL})]:
        labels = resource.attrs.get("Labels") or {}
        owners.setdefault(labels[RUN_LABEL], labels.get(OWNER_LABEL))
    removed = []
    for orphan, owner in sorted(owners.items()):
        if everything or (not owner_alive(owner) and orphan not in spare):
            removed += remove_labelled(client, orphan)
    return removed
