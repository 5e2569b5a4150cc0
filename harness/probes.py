"""What the gates observe outside the server: per-PID process metrics, clone dirs, mapped files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psutil

from harness.errors import HarnessError
from harness.fds import fd_kind, fd_targets, tcp_sockets


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
    return sum(1 for target in fd_targets(pid) if fd_kind(target) == "file")


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


class CountUnavailable(HarnessError):
    """A count the harness could not take (a directory that is not there, an exec that
    failed): the gate judging it is an ERROR naming why, never a count of 0."""


def clone_dirs(clones_dir: Path) -> list[str]:
    """Names of the scope clone directories the server keeps on disk. The clones' directory
    appears with the first clone, so it may be missing under the server's base dir (none
    yet); a missing base dir means the harness looks in the wrong place: CountUnavailable."""
    if not clones_dir.parent.is_dir():
        raise CountUnavailable(f"the server's base dir {clones_dir.parent} is missing: its clone dirs cannot "
                               "be counted")
    if not clones_dir.is_dir():
        return []
    try:
        return sorted(p.name for p in clones_dir.iterdir() if p.is_dir())
    except OSError as exc:
        raise CountUnavailable(f"the clone dirs under {clones_dir} could not be listed: {exc}") from exc


PACK_SUFFIXES = (".pack", ".idx")
DELETED = " (deleted)"


def mapped_pack_files(pid: int) -> int | None:
    """Distinct git pack and pack-index files (`*.pack`, `*.idx`) the process has mapped,
    from /proc/<pid>/maps; None when the process is gone or not readable.

    libgit2 maps a pack's index whole and its data in windows, and keeps both for as long
    as the Repository object lives: a server that caches Repository objects while every
    fetch adds a pack shows here. A deleted file that is still mapped counts (the process
    still holds it). Works for a container's processes too: /proc of the host PID."""
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as maps:
            lines = maps.readlines()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    paths = set()
    for line in lines:
        # address perms offset dev inode path — the path may contain spaces
        fields = line.rstrip("\n").split(maxsplit=5)
        if len(fields) < 6:
            continue
        path = fields[5].removesuffix(DELETED)
        if path.startswith("/") and path.endswith(PACK_SUFFIXES):
            paths.add(path)
    return len(paths)


def connections_to_port(pid: int, port: int | None, prefix: str) -> dict[str, int]:
    """TCP connections of process `pid` whose remote port is `port` (a peer the server talks
    to, as its sockets see it): `<prefix>_established` apart from `<prefix>_other` (CLOSE_WAIT
    and friends are what a request that gave up may leave). Read from the process's own
    /proc/<pid>/net tables, so a container's process is seen in its network namespace (psutil
    reads the caller's). Empty without a port; OSError when the process cannot be read."""
    if port is None:
        return {}
    mine = {t.removeprefix("socket:[").rstrip("]") for t in fd_targets(pid) if t.startswith("socket:[")}
    states = [peer_state.rsplit(" ", 1) for inode, peer_state in tcp_sockets(pid).items() if inode in mine]
    to_peer = [state for peer, state in states if peer.rsplit(":", 1)[-1] == str(port)]
    established = sum(1 for state in to_peer if state == "ESTABLISHED")
    return {f"{prefix}_established": established, f"{prefix}_other": len(to_peer) - established}


def inet_connections(proc: psutil.Process, kind: str = "inet") -> list:
    """The process's sockets; psutil 6 renamed connections() to net_connections() (the
    project allows psutil 5.9)."""
    method = getattr(proc, "net_connections", None) or proc.connections
    return list(method(kind=kind))
