"""Which compose is installed (v2 `docker compose` or v1 `docker-compose`), and running it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from harness import config
from harness.errors import HarnessError, MissingDependency

# Commands that create or remove containers, networks and volumes (`run` creates and removes
# a one-shot container: the seed sidecar adding repos). On a vfs engine two of
# them at once (two stacks coming up side by side) have timed out engine calls and once left
# the engine unresponsive, so this machine runs them one at a time; everything else (exec,
# logs, stats, the gates themselves) runs side by side.
ENGINE_WRITES = frozenset({"up", "down", "create", "rm", "run"})


def engine_write_lock() -> FileLock:
    """One engine-writing compose command at a time across every harness process here."""
    path = config.default_cache_dir() / "compose-engine-writes.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path)


@dataclass(frozen=True)
class ComposeCli:
    argv: tuple[str, ...]  # ("docker", "compose") or ("docker-compose",)
    version: str

    def run(self, project: str, files: list[Path], args: list[str], env: Mapping[str, str],
            timeout: float = 600, log: Path | None = None) -> str:
        command = [*self.argv, "-p", project, *[a for f in files for a in ("-f", str(f))], *args]
        try:
            # Waiting for another stack's up/down counts against the same timeout.
            writes = args and args[0] in ENGINE_WRITES
            with engine_write_lock().acquire(timeout=timeout) if writes else nullcontext():
                result = subprocess.run(command, env=dict(env), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"`{' '.join(command[:6])} ... {' '.join(args)}` did not finish within "
                               f"{timeout:g} s") from None
        except Timeout:
            raise HarnessError(f"compose {args[0]} waited {timeout:g} s for another stack's up/down on this "
                               f"engine (lock {engine_write_lock().lock_file})") from None
        if log is not None:
            with open(log, "a") as out:
                out.write(f"$ {' '.join(command)}\n{result.stdout}{result.stderr}\n")
        if result.returncode != 0:
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
            raise HarnessError(f"compose {' '.join(args)} failed (exit {result.returncode}):\n{tail}")
        return result.stdout


def _version(argv: list[str]) -> str | None:
    try:
        result = subprocess.run([*argv, "version", "--short"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def detect() -> ComposeCli:
    """Compose v2 when the docker CLI has the plugin, else docker-compose v1."""
    if shutil.which("docker"):
        version = _version(["docker", "compose"])
        if version:
            return ComposeCli(("docker", "compose"), version)
    if shutil.which("docker-compose"):
        version = _version(["docker-compose"])
        if version:
            return ComposeCli(("docker-compose",), version)
    raise MissingDependency("neither `docker compose` (v2) nor `docker-compose` (v1) is installed; install "
                            "the compose plugin, or on Debian: sudo apt-get install -y docker-compose")
