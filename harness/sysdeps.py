"""System binaries the local backend needs, and how to install them.

`python -m harness.sysdeps ensure` installs what is missing with apt when run as root;
otherwise it prints the one apt command to run and exits non-zero.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.errors import MissingDependency


@dataclass(frozen=True)
class Binary:
    name: str
    debian_package: str


LOCAL_BACKEND = (
    Binary("redis-server", "redis-server"),
    Binary("initdb", "postgresql"),
    Binary("postgres", "postgresql"),
    Binary("git", "git"),
    Binary("git-daemon", "git"),
)


def find_binary(name: str) -> Path | None:
    """PATH first, then the places Debian keeps binaries off PATH (postgres, git-daemon)."""
    found = shutil.which(name)
    if found:
        return Path(found)
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    candidates.append(f"/usr/lib/git-core/{name}")
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def missing(binaries: tuple[Binary, ...] = LOCAL_BACKEND) -> list[Binary]:
    return [b for b in binaries if find_binary(b.name) is None]


def install_command(binaries: list[Binary]) -> str:
    packages = " ".join(sorted({b.debian_package for b in binaries}))
    return f"sudo apt-get update && sudo apt-get install -y {packages}"


def require(name: str) -> Path:
    """Path of a binary, or one error with the exact install command."""
    path = find_binary(name)
    if path is None:
        wanted = [b for b in LOCAL_BACKEND if b.name == name] or [Binary(name, name)]
        raise MissingDependency(f"'{name}' is not installed; install it with: {install_command(wanted)}")
    return path


def ensure(binaries: tuple[Binary, ...] = LOCAL_BACKEND) -> None:
    """Install missing binaries with apt when root; otherwise raise with the command."""
    absent = missing(binaries)
    if not absent:
        return
    if os.geteuid() != 0:
        raise MissingDependency(
            f"missing: {', '.join(b.name for b in absent)}; install with: {install_command(absent)}"
        )
    packages = sorted({b.debian_package for b in absent})
    print(f"[harness] installing {' '.join(packages)} with apt-get", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env, timeout=1200)
    still = missing(binaries)
    if still:
        raise MissingDependency(f"apt-get ran but {', '.join(b.name for b in still)} is still missing")


def main(argv: list[str]) -> int:
    if argv[1:] != ["ensure"]:
        print("usage: python -m harness.sysdeps ensure", file=sys.stderr)
        return 2
    try:
        ensure()
    except MissingDependency as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
