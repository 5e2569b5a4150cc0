"""What a run asks of the machine, checked before it starts instead of hit halfway through:
open files for the server process, disk for its clones and the seeded repos, memory.

The open-file limit is the one a large run meets first: both releases hold one open file per
cached scope, and 0.9.9 one more per scope for every fetch (repeat-sync at 1,000 scopes × 20
cycles needs 21,000 where this machine's default is 20,000). The harness raises its own soft
limit (the hard one too when it may: root) and every server it starts locally inherits it;
when it cannot, it stops with the number the run needs and the command that gives it. A
server in a container has the engine's limit: checked on the running server's
/proc/<pid>/limits, see `check_server`.

Per-scope figures, measured here with the seeded policy repos (local backend):
- open files: 1,005 at 1,000 scopes on 0.9.6 and on 0.9.9 (one per scope);
- disk: a scope's clone 148 KB, a seeded bare repo 76 KB;
- memory: worker RSS 139 MB at 1,000 scopes (0.9.9), 127 MB (0.9.6), about 70 MB empty.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError

log = logging.getLogger(__name__)

# The server's own files, sockets, Redis and broadcaster connections: an empty worker has
# about 60 fds open here.
FILES_BASE = 256
FILES_PER_SCOPE = 1  # the cached clone of a scope
# The worst release measured (0.9.6 and 0.9.9 alike) keeps one more per scope for every fetch
# that brings a new pack, the first clone included: 1,000 scopes × (1 + 20 cycles) = 21,000.
FILES_PER_FETCH = 1
CLONE_KB = 160
REPO_KB = 80
RSS_KB_PER_SCOPE = 100
RSS_KB_PER_FETCH = 32  # repeat-sync's own bound per scope per fetch: more fails the gate
MEMORY_BASE_MB = 512  # Redis, Postgres, the server's master and an empty worker


@dataclass(frozen=True)
class Needs:
    """What one gate run needs of the machine, and the load it follows from (for messages)."""

    open_files: int
    disk_mb: int
    memory_mb: int
    why: str

    @classmethod
    def of(cls, scopes: int, repos: int, fetches: int, why: str) -> Needs:
        return cls(open_files=FILES_BASE + scopes * max(FILES_PER_SCOPE, fetches * FILES_PER_FETCH),
                   disk_mb=(scopes * CLONE_KB + repos * REPO_KB) // 1024 + 1,
                   memory_mb=MEMORY_BASE_MB + scopes * (RSS_KB_PER_SCOPE + fetches * RSS_KB_PER_FETCH) // 1024,
                   why=why)


def largest(needs: list[Needs]) -> Needs | None:
    """The run's needs: gates run one after another, so the largest of each."""
    if not needs:
        return None
    biggest = max(needs, key=lambda n: n.open_files)
    return Needs(max(n.open_files for n in needs), max(n.disk_mb for n in needs),
                 max(n.memory_mb for n in needs), biggest.why)


def ensure(needs: Needs, run_root: Path) -> None:
    """Raise this process's open-file limit to what the run needs (children inherit it), and
    check disk and memory; a shortfall is one ConfigError with the number and the fix."""
    ensure_open_files(needs)
    free_mb = shutil.disk_usage(_existing(run_root)).free // 2**20
    if free_mb < needs.disk_mb:
        raise ConfigError(f"{needs.why} needs {needs.disk_mb:,} MB of disk for its clones and repos under "
                          f"{run_root}, which has {free_mb:,} MB free: free space or set HARNESS_RUN_ROOT elsewhere")
    available_mb = _available_memory_mb()
    if available_mb is not None and available_mb < needs.memory_mb:
        raise ConfigError(f"{needs.why} needs about {needs.memory_mb:,} MB of memory, and {available_mb:,} MB "
                          "are available: run it with fewer scopes (HARNESS_SCALE) or on a larger machine")


def ensure_open_files(needs: Needs) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needs.open_files:
        return
    over_hard = hard != resource.RLIM_INFINITY and hard < needs.open_files
    refusal = (f"{needs.why} needs {needs.open_files:,} open files for the server, over this process's hard limit "
               f"of {hard:,}")
    if over_hard and os.geteuid() != 0:
        raise ConfigError(f"{refusal}: raise it (ulimit -Hn {needs.open_files} as root, or "
                          "/etc/security/limits.conf), or run fewer scopes or cycles")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needs.open_files, needs.open_files if over_hard else hard))
    except (ValueError, OSError):  # root without CAP_SYS_RESOURCE (a container) may not raise it
        raise ConfigError(f"{refusal}, which this process may not raise (no CAP_SYS_RESOURCE): start it from a "
                          f"shell with ulimit -Hn {needs.open_files}, or run fewer scopes or cycles") from None
    log.info(f"[harness] open-file limit raised from {soft:,} to {needs.open_files:,} for {needs.why}")


def process_open_file_limit(pid: int) -> int | None:
    """The soft open-file limit of a running process (a container's too: its host PID)."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                value = line.split()[3]
                return None if value == "unlimited" else int(value)
    except (OSError, ValueError, IndexError):
        return None
    return None


def server_shortfall(needs: Needs, pids: list[int]) -> str | None:
    """Why the running server cannot hold the run (None: it can): a server process whose
    open-file limit is under the need. The fix for a container is the engine's."""
    for pid in pids:
        limit = process_open_file_limit(pid)
        if limit is not None and limit < needs.open_files:
            return (f"{needs.why} needs {needs.open_files:,} open files, and the server process {pid} may open "
                    f"{limit:,}: raise its limit (local: ulimit -n {needs.open_files}; a container: the engine's "
                    f"default, e.g. dockerd --default-ulimit nofile={needs.open_files}:{needs.open_files})")
    return None


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _available_memory_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
