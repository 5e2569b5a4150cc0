"""The Cerbos binary from npm (`@cerbos/cerbos-linux-x64`), checked and cached per version.

The npm package's one file `package/cerbos-linux-x64` is the static server binary. It is
installed once into `<cache>/cerbos/<version>/cerbos` under a file lock (parallel test
workers share the cache); a cached binary needs no npm at all, so later runs work offline.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from harness.errors import ConfigError, HarnessError

log = logging.getLogger(__name__)

PACKAGE = "@cerbos/cerbos-linux-x64"
DEFAULT_VERSION = "0.55.0"
MEMBER = "package/cerbos-linux-x64"
NPM_INSTALL = "apt-get install -y npm"
NPM_TIMEOUT_S = 120.0  # a pack is ~30 MB; the registry's answers take well under a second


@dataclass(frozen=True)
class CerbosBinary:
    path: Path
    version: str
    build: str  # the commit `cerbos --version` names ("Build commit: ...")


def ensure_cerbos(version: str, cache_dir: Path) -> CerbosBinary:
    """The binary of `version`, downloaded and verified on first use."""
    target = binary_path(version, cache_dir)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(target.parent / "install.lock"):
            if not target.exists():  # another process may have installed it while we waited
                _install(version, target)
    return read_version(target)


def binary_path(version: str, cache_dir: Path) -> Path:
    return cache_dir / "cerbos" / version / "cerbos"


def read_version(path: Path) -> CerbosBinary:
    """Version and build from `cerbos --version`: the version alone on the first line, then
    "Build commit: <sha>" (0.51.0 and 0.55.0 print the same shape)."""
    out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    return parse_version(path, out)


def parse_version(path: Path, text: str) -> CerbosBinary:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    build = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Build commit:")), "")
    return CerbosBinary(path=path, version=lines[0] if lines else "", build=build)


def npm_versions() -> list[str]:
    """Every version of the package npm has."""
    out = _npm("view", f"{PACKAGE}", "versions", "--json")
    found = json.loads(out)
    return [found] if isinstance(found, str) else list(found)  # one version prints as a plain string


def _install(version: str, target: Path) -> None:
    integrity = _integrity(version)
    with tempfile.TemporaryDirectory(prefix="cerbos-pack-", dir=target.parent) as tmp:
        started = time.monotonic()
        log.info(f"[harness] downloading {PACKAGE}@{version} from npm (~30 MB) into {target.parent}")
        tarball = _pack(version, Path(tmp))
        verify_integrity(tarball, integrity)
        staged = _extract(tarball, Path(tmp))
        os.replace(staged, target)  # same file system (tmp is beside target): atomic
        log.info(f"[harness] installed cerbos {version} in {time.monotonic() - started:.1f} s")


def _integrity(version: str) -> str:
    """The tarball's sha512 SRI; an unknown version lists what npm has."""
    try:
        out = _npm("view", f"{PACKAGE}@{version}", "dist.integrity").strip()
    except HarnessError:
        out = ""  # npm exits 1 (E404) on an unknown version
    if not out.startswith("sha512-"):
        raise ConfigError(f"CERBOS_VERSION={version}: npm has {', '.join(npm_versions())}; set one of those")
    return out


def _pack(version: str, into: Path) -> Path:
    _npm("pack", f"{PACKAGE}@{version}", "--pack-destination", str(into), "--silent")
    tarballs = list(into.glob("*.tgz"))
    if len(tarballs) != 1:
        raise HarnessError(f"npm pack {PACKAGE}@{version} left {len(tarballs)} tarballs in {into}; expected one")
    return tarballs[0]


def verify_integrity(tarball: Path, integrity: str) -> None:
    """Raise HarnessError naming both digests when the tarball is not what npm published."""
    digest = hashlib.sha512()
    with open(tarball, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    actual = "sha512-" + base64.b64encode(digest.digest()).decode()
    if actual != integrity:
        raise HarnessError(f"{tarball.name}: sha512 {actual} does not match npm's dist.integrity {integrity}; "
                           f"nothing was installed, retry or check the registry")


def _extract(tarball: Path, into: Path) -> Path:
    staged = into / "cerbos"
    with tarfile.open(tarball) as archive:
        source = archive.extractfile(MEMBER)
        if source is None:
            raise HarnessError(f"{tarball.name} has no {MEMBER}: not the Cerbos binary package")
        with source, open(staged, "wb") as out:
            shutil.copyfileobj(source, out)
    staged.chmod(0o755)
    return staged


def _npm(*args: str) -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise ConfigError(f"npm is not on PATH and the Cerbos binary comes from npm: install it ({NPM_INSTALL})")
    done = subprocess.run([npm, *args], capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
    if done.returncode != 0:
        raise HarnessError(f"npm {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-400:]}")
    return done.stdout
