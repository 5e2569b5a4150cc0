"""Per-target virtualenvs for the server, cached and keyed by what goes into them.

A release is keyed by its pinned constraints file (and the Python version); a source
tree by the content of its packages/ directory. The server's dependencies (pydantic<2,
starlette, ...) never enter the harness's own environment.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness import STACKS_DIR
from harness.config import Target, supported_versions
from harness.errors import HarnessError

# Neither the 0.9.6 nor the 0.9.9 wheel declares aiofiles, yet opal_server.git_fetcher
# imports it: without it every worker dies with ModuleNotFoundError.
UNDECLARED_DEPENDENCIES = ("aiofiles",)
COMPLETE_MARKER = ".harness-complete"
PIP_TIMEOUT_S = 1200

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ServerVenv:
    path: Path
    target: Target

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def installed_version(self) -> str:
        out = subprocess.run(
            [str(self.python), "-c", "import importlib.metadata as m; print(m.version('opal-server'))"],
            capture_output=True, text=True, timeout=60, check=True,
        )
        return out.stdout.strip()


def constraints_file(version: str) -> Path:
    return STACKS_DIR / "constraints" / f"opal-server-{version}.txt"


def _digest(*parts: bytes) -> str:
    sha = hashlib.sha256()
    for part in parts:
        sha.update(part)
        sha.update(b"\0")
    return sha.hexdigest()[:12]


def source_tree_files(tree: Path) -> list[Path]:
    """The files of packages/ that make the server (caches, builds and egg-info left out)."""
    files = []
    for path in sorted((tree / "packages").rglob("*")):
        if not path.is_file() or {"__pycache__", "build", ".eggs"} & set(path.parts):
            continue
        if path.suffix == ".pyc" or ".egg-info" in str(path):
            continue
        files.append(path)
    return files


def source_tree_digest(tree: Path) -> str:
    """Content hash of packages/ (sources and packaging files; caches and builds skipped)."""
    sha = hashlib.sha256()
    for path in source_tree_files(tree):
        sha.update(str(path.relative_to(tree)).encode() + b"\0" + path.read_bytes() + b"\0")
    return sha.hexdigest()[:12]


def source_tree_version(tree: Path) -> str | None:
    text = (tree / "packages" / "__packaging__.py").read_text()
    match = re.search(r"^VERSION\s*=\s*\(([\d\s,]+)\)", text, re.M)
    if not match:
        return None
    return ".".join(p.strip() for p in match.group(1).split(",") if p.strip())


def constraints_for_source(tree: Path) -> Path:
    """The tree's own release pins if we have them, else the newest supported release's."""
    versions = supported_versions()
    version = source_tree_version(tree)
    return constraints_file(version if version in versions else versions[-1])


def venv_dir(target: Target, cache_dir: Path) -> Path:
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    if target.source is not None:
        key = _digest(source_tree_digest(target.source).encode(),
                      constraints_for_source(target.source).read_bytes(), py.encode())
        return cache_dir / "venvs" / f"opal-source-{key}"
    key = _digest(constraints_file(target.version).read_bytes(), py.encode())
    return cache_dir / "venvs" / f"opal-server-{target.version}-{key}"


def _pip_install(venv: Path, args: list[str], log_path: Path) -> None:
    command = [str(venv / "bin" / "python"), "-m", "pip", "install",
               "--disable-pip-version-check", "--no-input", *args]
    with open(log_path, "ab") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=PIP_TIMEOUT_S)
    if result.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-12:])
        raise HarnessError(f"pip install failed ({' '.join(args)}); full log: {log_path}\n{tail}")


def source_constraints(tree: Path) -> str:
    """Constraints for a source tree: its release's pins minus the opal-* ones (the tree
    provides those packages itself)."""
    pins = constraints_for_source(tree).read_text().splitlines()
    own = [line for line in pins if not line.lower().startswith(("opal-common==", "opal-server=="))]
    return "\n".join(own) + "\n"


def _source_install_args(tree: Path, work: Path) -> list[str]:
    trimmed = work / "constraints-source.txt"
    trimmed.write_text(source_constraints(tree))
    packages = tree / "packages"
    return ["-c", str(trimmed), str(packages / "opal-common"), str(packages / "opal-server"),
            *UNDECLARED_DEPENDENCIES]


def _build(path: Path, target: Target, progress: Progress) -> None:
    if path.exists():
        shutil.rmtree(path)  # an incomplete earlier attempt
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    log_path = path / "install.log"
    if target.source is not None:
        args = _source_install_args(target.source, path)
    else:
        args = ["-c", str(constraints_file(target.version)),
                f"opal-server=={target.version}", *UNDECLARED_DEPENDENCIES]
    progress(f"installing {target.label} into {path} (log: {log_path})")
    _pip_install(path, args, log_path)


def ensure_server_venv(target: Target, cache_dir: Path, progress: Progress = print) -> ServerVenv:
    """The cached virtualenv for `target`, built first if needed (safe across processes)."""
    path = venv_dir(target, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (path / COMPLETE_MARKER).exists():
            progress(f"using cached virtualenv for {target.label}: {path}")
            return ServerVenv(path, target)
        started = time.monotonic()
        _build(path, target, progress)
        (path / COMPLETE_MARKER).write_text(f"{target.label}\n")
        progress(f"installed {target.label} in {time.monotonic() - started:.1f} s")
    return ServerVenv(path, target)
