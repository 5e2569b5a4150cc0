"""Build an OPAL source tree in the real checkout layout from the wheels of a release.

OPAL's repository cannot be fetched here, so the tests make a tree with the shape users'
checkouts have (read off permitio/opal; the files are written here, not copied):

    README.md                          the root README: each setup.py reads it (../../README.md)
    packages/__packaging__.py          VERSION = (0, 0, 0) placeholder + get_install_requires(here)
    packages/requires.txt              requirements every package shares
    packages/opal-common/requires.txt  the rest of opal-common's requirements
    packages/opal-common/setup.py
    packages/opal-server/requires.txt  the rest of opal-server's (opal-common comes from setup.py)
    packages/opal-server/setup.py      adds "opal-common==<__version__>", i.e. opal-common==0.0.0

The package files come from the release's wheels; the requirements are split from the two
wheels' Requires-Dist (shared ones into packages/requires.txt). With `native_stats` the tree
carries OPAL's own stats route as its test-bed and fix branches do: `opal_server/debug_stats.py`
answers `GET /internal/git-fetcher-cache-stats` with only the four sizes (no `pid`, no key
lists), registered from `OpalServer._configure_api_routes` by a small patch of server.py, so
the harness's wrapper (stacks/opal/harness_opal_app.py) sees a native route and stays out.
A marker module proves the server really runs from this tree.

Variants for later tests: `build(dest, wheels, release="0.9.6", native_stats=False,
patches=[Patch("opal_server/git_fetcher.py", old, new)])`.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

RELEASE = "0.9.6"
MARKER_MODULE = "harness_tree_marker"
MARKER_TEXT = "harness test source tree"

PACKAGING = '''"""Packaging metadata shared by the OPAL packages (harness test tree, from the {release} wheels)."""

import os

VERSION = (0, 0, 0)  # Placeholder, to be set by CI/CD
VERSION_STRING = ".".join(map(str, VERSION))

__version__ = VERSION_STRING
__author__ = "Or Weis, Asaf Cohen"
__author_email__ = "or@permit.io"
__license__ = "Apache 2.0"
__copyright__ = "Copyright 2021 Or Weis and Asaf Cohen"


def get_install_requires(here):
    """The requirements listed in <here>/requires.txt (comment lines skipped)."""
    with open(os.path.join(here, "requires.txt")) as fp:
        return [line.strip() for line in fp.read().splitlines()
                if line.strip() and not line.startswith("#")]
'''

SETUP = '''import os
from types import SimpleNamespace

from setuptools import find_packages, setup

here = os.path.abspath(os.path.dirname(__file__))
project_root = os.path.normpath(os.path.join(here, os.pardir))


def get_package_metadata():
    metadata = {{}}
    with open(os.path.join(here, "../__packaging__.py")) as f:
        exec(f.read(), metadata)
    return SimpleNamespace(**metadata)


def get_long_description():
    with open(os.path.join(here, "../../README.md"), encoding="utf-8") as f:
        return f.read()


def get_own_requires():
    with open(os.path.join(here, "requires.txt")) as f:
        return [line.strip() for line in f.read().splitlines()
                if line.strip() and not line.startswith("#")]


about = get_package_metadata()
own_requires = get_own_requires(){extra_requires}

setup(
    name="{dist}",
    version=about.__version__,
    author=about.__author__,
    license=about.__license__,
    description="{description}",
    long_description=get_long_description(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=("{package}*",)),
    install_requires=own_requires + about.get_install_requires(project_root),{entry_points}
)
'''

README = """# OPAL (harness test tree)

Built by policy-harness's tests from the opal-common and opal-server {release} wheels, laid
out like OPAL's repository so the harness installs it the way it installs a real checkout.
"""

DEBUG_STATS = '''"""Internal debug stats of the git fetcher's caches.

Mounted when OPAL_DEBUG_INTERNAL_STATS is true. A plain `def` route: Starlette runs it on
its own thread pool, so it keeps answering while the asyncio default executor is jammed by
hung git operations. It answers the sizes only: no pid, no key lists.
"""

import os

from fastapi import Depends, FastAPI
from opal_server.git_fetcher import GitPolicyFetcher

STATS_PATH = "/internal/git-fetcher-cache-stats"


def enabled() -> bool:
    return os.environ.get("OPAL_DEBUG_INTERNAL_STATS", "").strip().lower() in ("1", "true", "yes", "on")


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def mount_debug_stats(app: FastAPI, authenticator=None) -> None:
    if not enabled():
        return
    dependencies = [Depends(authenticator)] if authenticator is not None else []

    @app.get(STATS_PATH, include_in_schema=False, dependencies=dependencies)
    def git_fetcher_cache_stats():
        return {
            "repo_locks": len(GitPolicyFetcher.repo_locks),
            "repos": len(GitPolicyFetcher.repos),
            "repos_last_fetched": len(GitPolicyFetcher.repos_last_fetched),
            "rss_kb": rss_kb(),
        }
'''


@dataclass(frozen=True)
class Patch:
    """Replace `old` (which must occur exactly once) by `new` in packages/<package dir>/`path`,
    where `path` starts with the import package (opal_server/... or opal_common/...)."""

    path: str
    old: str
    new: str


# 0.9.6 builds its FastAPI app in OpalServer._init_fast_api_app, which mounts every router
# in _configure_api_routes; the native route goes in there, next to the scopes router,
# with the same JWT dependency the other API routers get.
NATIVE_STATS_PATCH = Patch(
    "opal_server/server.py",
    "        if self.jwks_endpoint is not None:\n",
    "        # OPAL_DEBUG_INTERNAL_STATS: the git fetcher's cache sizes (opal_server/debug_stats.py)\n"
    "        from opal_server.debug_stats import mount_debug_stats\n"
    "\n"
    "        mount_debug_stats(app, authenticator)\n"
    "\n"
    "        if self.jwks_endpoint is not None:\n",
)


def download_wheels(wheels_dir: Path, release: str) -> dict[str, Path]:
    """{"opal-common": wheel, "opal-server": wheel} of `release`, downloaded once."""
    wheels_dir.mkdir(parents=True, exist_ok=True)
    found = {dist: list(wheels_dir.glob(f"{dist.replace('-', '_')}-{release}-*.whl"))
             for dist in ("opal-common", "opal-server")}
    if not all(found.values()):
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "-d", str(wheels_dir), f"opal-server=={release}", f"opal-common=={release}"],
                       check=True, timeout=600)
        found = {dist: list(wheels_dir.glob(f"{dist.replace('-', '_')}-{release}-*.whl"))
                 for dist in ("opal-common", "opal-server")}
    return {dist: wheels[0] for dist, wheels in found.items()}


def wheel_requires(wheel: Path) -> list[str]:
    """Requires-Dist of a wheel, in its order."""
    with zipfile.ZipFile(wheel) as archive:
        [metadata] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        headers = HeaderParser().parsestr(archive.read(metadata).decode())
    return [value.strip() for value in headers.get_all("Requires-Dist") or []]


def split_requires(common: list[str], server: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(shared, opal-common's own, opal-server's own): shared ones are in both wheels; the
    server's pin on opal-common is left out (setup.py adds it from __version__)."""
    server = [r for r in server if not r.replace(" ", "").lower().startswith("opal-common")]
    shared = [r for r in common if r in server]
    return (shared, [r for r in common if r not in shared], [r for r in server if r not in shared])


def _extract(wheel: Path, package: str, target: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.startswith(f"{package}/"):
                archive.extract(name, target)


def _apply(packages: Path, patch: Patch) -> None:
    dist = patch.path.split("/", 1)[0].replace("_", "-")
    path = packages / dist / patch.path
    text = path.read_text()
    if text.count(patch.old) != 1:
        raise ValueError(f"patch anchor found {text.count(patch.old)} times in {path}: {patch.old!r}")
    path.write_text(text.replace(patch.old, patch.new))


def build(dest: Path, wheels_dir: Path, release: str = RELEASE, native_stats: bool = True,
          patches: Iterable[Patch] = ()) -> Path:
    """A tree at `dest` (which must not exist) from `release`'s wheels; returns `dest`."""
    wheels = download_wheels(wheels_dir, release)
    packages = dest / "packages"
    packages.mkdir(parents=True)
    (dest / "README.md").write_text(README.format(release=release))
    (packages / "__packaging__.py").write_text(PACKAGING.format(release=release))
    shared, common_own, server_own = split_requires(wheel_requires(wheels["opal-common"]),
                                                    wheel_requires(wheels["opal-server"]))
    (packages / "requires.txt").write_text("\n".join(shared) + "\n")
    for dist, own in (("opal-common", common_own), ("opal-server", server_own)):
        package = dist.replace("-", "_")
        target = packages / dist
        _extract(wheels[dist], package, target)
        (target / "requires.txt").write_text("\n".join(own) + "\n")
        server = dist == "opal-server"
        (target / "setup.py").write_text(SETUP.format(
            dist=dist, package=package,
            description=f"OPAL {dist.split('-')[1]} (harness test tree)",
            extra_requires=(' + ["opal-common=={}".format(about.__version__)]' if server else ""),
            entry_points=('\n    entry_points={"console_scripts": ["opal-server = opal_server.cli:cli"]},'
                          if server else "")))
    server_pkg = packages / "opal-server" / "opal_server"
    (server_pkg / f"{MARKER_MODULE}.py").write_text(f'BUILT_FROM = "{MARKER_TEXT}"\n')
    if native_stats:
        (server_pkg / "debug_stats.py").write_text(DEBUG_STATS)
        _apply(packages, NATIVE_STATS_PATCH)
    for patch in patches:
        _apply(packages, patch)
    return dest
