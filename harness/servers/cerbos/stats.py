"""What the harness reads of a running Cerbos from outside: its checkout on disk, its process
(psutil), and the store figures of its metrics.

Cerbos says nothing reliable about which commit it serves (the nonce does that); these are
the costs a failed poll may keep: pack files, fds, connections to the git front.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

import psutil

from harness.probes import connections_to_port

GIT_TIMEOUT_S = 30.0
# The store figures a gate reads from /_cerbos/metrics. The store's carry a driver label
# (`cerbos_dev_store_poll_count_total{driver="git"}`), and the sync error counter appears
# only after a first error: absent means none yet.
STORE_METRICS = ("cerbos_dev_store_poll_count_total", "cerbos_dev_store_sync_error_count_total",
                 "cerbos_dev_index_entry_count")


def checkout_stats(checkout_dir: Path) -> dict:
    """Packs on disk (neither version repacks: one more per fetch), HEAD, and whether the
    checkout differs from HEAD. A checkout not cloned yet has no packs and no HEAD."""
    if not (checkout_dir / ".git").exists():
        return {"packs": 0, "head": None, "dirty": None}
    packs = list((checkout_dir / ".git" / "objects" / "pack").glob("*.pack"))
    status = _git(checkout_dir, "status", "--porcelain")
    return {"packs": len(packs), "head": _git(checkout_dir, "rev-parse", "HEAD") or None,
            "dirty": bool(status) if status is not None else None}


def _git(checkout_dir: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(checkout_dir), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def process_stats(pid: int, front_port: int | None = None, metrics: Mapping[str, float] | None = None) -> dict:
    """rss_kb, open regular files, all fds, threads, TCP connections to the git front (by
    state), and the store metrics when given. Empty when the process is gone."""
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            figures = {"rss_kb": proc.memory_info().rss // 1024, "open_files": len(proc.open_files()),
                       "fds": proc.num_fds(), "threads": proc.num_threads()}
        figures |= connections_to_port(pid, front_port, prefix="front")
    except (psutil.NoSuchProcess, OSError):
        return {}
    return figures | metric_figures(metrics or {})


def metric_figures(metrics: Mapping[str, float]) -> dict[str, float]:
    """The store figures present in a parsed /_cerbos/metrics (CerbosClient.metrics), each
    summed over its label sets (one driver per server: one sample in practice)."""
    figures: dict[str, float] = {}
    for key, value in metrics.items():
        name = key.partition("{")[0]
        if name in STORE_METRICS:
            figures[name] = figures.get(name, 0.0) + value
    return figures
