"""Build a small OPAL source tree of the checkout's layout from the 0.9.6 wheels.

OPAL's repository cannot be fetched here, so the tests make a tree with the same shape:
packages/__packaging__.py, packages/opal-common/setup.py, packages/opal-server/setup.py
(each setup.py reads ../__packaging__.py, as OPAL's do), holding the wheels' package
files plus a marker module that proves the server really runs from this tree.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

RELEASE = "0.9.6"
MARKER_MODULE = "harness_tree_marker"

PACKAGING = '''"""OPAL packaging metadata (test tree built from the {release} wheels)."""
VERSION = ({version_tuple})
VERSION_STRING = ".".join(map(str, VERSION))
__version__ = VERSION_STRING
'''

SETUP = '''import os
from setuptools import find_packages, setup

here = os.path.abspath(os.path.dirname(__file__))
about = {{}}
with open(os.path.join(here, "..", "__packaging__.py")) as f:
    exec(f.read(), about)
with open(os.path.join(here, "requirements.txt")) as f:
    requires = [line.strip() for line in f if line.strip()]

setup(
    name="{dist}",
    version=about["VERSION_STRING"],
    packages=find_packages(include=["{package}", "{package}.*"]),
    install_requires=requires,
    python_requires=">=3.9",
)
'''


def _requirements(metadata: str) -> list[str]:
    requires = []
    for line in metadata.splitlines():
        if line.startswith("Requires-Dist:"):
            requirement = line.split(":", 1)[1].strip()
            if ";" not in requirement:  # drop extras-only and old-python markers
                requires.append(requirement)
    return requires


def build(dest: Path, wheels_dir: Path) -> Path:
    wheels_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "-d", str(wheels_dir), f"opal-server=={RELEASE}", f"opal-common=={RELEASE}"],
                   check=True, timeout=600)
    packages = dest / "packages"
    packages.mkdir(parents=True)
    (packages / "__packaging__.py").write_text(
        PACKAGING.format(release=RELEASE, version_tuple=", ".join(RELEASE.split("."))))
    for dist, package in (("opal-common", "opal_common"), ("opal-server", "opal_server")):
        [wheel] = wheels_dir.glob(f"{package}-{RELEASE}-*.whl")
        target = packages / dist
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.startswith(f"{package}/"):
                    archive.extract(name, target)
            [metadata] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
            requires = _requirements(archive.read(metadata).decode())
        (target / "requirements.txt").write_text("\n".join(requires) + "\n")
        (target / "setup.py").write_text(SETUP.format(dist=dist, package=package))
    (packages / "opal-server" / "opal_server" / f"{MARKER_MODULE}.py").write_text(
        'BUILT_FROM = "harness test source tree"\n')
    return dest
