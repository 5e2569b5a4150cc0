"""What the gates observe: the cache-stats contract, per-PID process metrics, clone dirs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import psutil

CACHES = ("repo_locks", "repos", "repos_last_fetched")


@dataclass(frozen=True)
class CacheStats:
    """One answer of GET /internal/git-fetcher-cache-stats (native on 0.9.9, wrapper before)."""

    pid: int
    repo_locks: int
    repos: int
    repos_last_fetched: int
    rss_kb: int
    keys: dict[str, list[str]] = field(default_factory=dict)
    wrapper: bool = False

    @classmethod
    def from_json(cls, body: dict, wrapper: bool = False) -> "CacheStats":
        missing = [k for k in ("pid", *CACHES, "rss_kb") if k not in body]
        if missing:
            raise ValueError(f"stats contract broken: response lacks {', '.join(missing)}: {body}")
        keys = {name: list(body.get(f"{name}_keys", [])) for name in CACHES}
        return cls(pid=int(body["pid"]), repo_locks=int(body["repo_locks"]), repos=int(body["repos"]),
                   repos_last_fetched=int(body["repos_last_fetched"]), rss_kb=int(body["rss_kb"]),
                   keys=keys, wrapper=wrapper)

    def sizes(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in CACHES}


@dataclass(frozen=True)
class ProcessSample:
    pid: int
    role: str  # "master" or "worker"
    rss_kb: int
    open_fds: int
    open_files: int  # regular files only: sockets churn with connection pools, files do not
    threads: int


def open_file_count(pid: int) -> int:
    """fds whose target is a file path (not a socket, pipe, anon inode or /dev node).

    Not psutil's open_files(): it keeps only paths that are regular files *on this host*,
    which hides every file of a process in a container (its paths are in another mount
    namespace)."""
    count = 0
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("/") and not target.startswith("/dev/"):
            count += 1
    return count


def sample_process(pid: int, role: str) -> ProcessSample | None:
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            return ProcessSample(pid=pid, role=role, rss_kb=proc.memory_info().rss // 1024,
                                 open_fds=proc.num_fds(), open_files=open_file_count(pid),
                                 threads=proc.num_threads())
    except (psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError):
        return None


def sample_server(master_pid: int | None, worker_pids: list[int]) -> list[ProcessSample]:
    samples = [sample_process(master_pid, "master")] if master_pid else []
    samples += [sample_process(pid, "worker") for pid in worker_pids]
    return [s for s in samples if s is not None]


def clone_dirs(clones_dir: Path) -> list[str]:
    """Names of the scope clone directories the server keeps on disk."""
    if not clones_dir.is_dir():
        return []
    return sorted(p.name for p in clones_dir.iterdir() if p.is_dir())
