"""A server image built from an OPAL source tree, for OPAL_SOURCE on the compose backend.

The tree lives outside the project, so the build context is a staging directory made for
the build: the tree's root README.md and packages/ (sources and packaging files, incl.
packages/requires.txt: each setup.py reads ../__packaging__.py, ../../README.md and the
requires.txt files), the constraints, the harness's launch recipe and the Dockerfile.

The constraints are the ones the local backend would use (harness/venvs.py:
choose_constraints, HARNESS_CONSTRAINTS honoured). When no committed pin set fits and no
lock exists yet, the tree is first resolved on the host (the local virtualenv build writes
the lock; host and image both run Python 3.11) and the image installs with that lock, so
the image build itself never resolves unpinned.

The image is tagged by a digest of the tree's content and the constraints' key, and, like
every image the harness builds, labelled with the digest of its inputs: an unchanged tree
with unchanged pins is reused, not rebuilt.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from pathlib import Path

from harness import STACKS_DIR
from harness.config import Target, default_cache_dir
from harness.images import (
    OFFLINE_BASE,
    PUBLIC_SERVER_BASE,
    BuildResult,
    ImageSet,
    build,
)
from harness.servers.opal.venvs import (
    Constraints,
    choose_constraints,
    content_digest,
    ensure_server_venv,
    source_tree_digest,
    source_tree_files,
)

log = logging.getLogger(__name__)

DOCKERFILE = STACKS_DIR / "images" / "opal-server-source.Dockerfile"
RECIPE_DIR = STACKS_DIR / "opal"
IMAGE_PYTHON = (3, 11)  # the Python of both server bases (bookworm's python3, python:3.11-slim)


def image_constraints(tree: Path, cache_dir: Path | None = None, setting: str | None = None) -> Constraints:
    """The constraints the image of `tree` installs with (setting: HARNESS_CONSTRAINTS as
    harness.config validates it; None reads the environment)."""
    return choose_constraints(Target(source=tree), cache_dir or default_cache_dir(), setting)


def source_image_ref(image_set: ImageSet, tree: Path, constraints: Constraints | None = None) -> str:
    """e.g. policy-harness/opal-server-offline:source-1a2b3c4d5e6f (one tag per tree content
    and constraints)."""
    constraints = constraints or image_constraints(tree)
    return f"{image_set.server_repo}:source-{content_digest(source_tree_digest(tree).encode(), constraints.key())}"


def stage_context(tree: Path, context: Path, constraints: Constraints | None = None) -> list[Path]:
    """Fill `context` with what the image is built from; returns the files staged."""
    constraints = constraints or image_constraints(tree)
    for source in source_tree_files(tree):
        target = context / source.relative_to(tree)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    if not (context / "README.md").exists():
        # The Dockerfile copies it; a tree without one only works if its setup.py does not read it.
        (context / "README.md").write_text("")
    (context / "constraints.txt").write_text(constraints.text())
    shutil.copytree(RECIPE_DIR, context / "recipe", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(DOCKERFILE, context / "Dockerfile")
    return sorted(p for p in context.rglob("*") if p.is_file() and p.name != "Dockerfile")


def resolved_constraints(tree: Path, cache_dir: Path, setting: str | None = None) -> Constraints:
    """The image's constraints, resolving on the host first when only a resolve would do."""
    constraints = image_constraints(tree, cache_dir, setting)
    if constraints.kind != "resolve":
        return constraints
    if sys.version_info[:2] != IMAGE_PYTHON:
        host = f"{sys.version_info.major}.{sys.version_info.minor}"
        log.warning(f"[harness] warning: resolving on the host's Python {host}; the image runs "
                    f"{IMAGE_PYTHON[0]}.{IMAGE_PYTHON[1]}, so some pins may not fit it")
    log.info(f"[harness] {constraints.reason}: resolving on the host first (the local virtualenv build)")
    ensure_server_venv(Target(source=tree), cache_dir, constraints)
    locked = image_constraints(tree, cache_dir, setting)
    assert locked.kind == "lock", locked
    return locked


def build_source_image(image_set: ImageSet, tree: Path, client=None, cache_dir: Path | None = None,
                       setting: str | None = None) -> BuildResult:
    """Build (or reuse) the server image of `tree` for `image_set`'s base."""
    base = OFFLINE_BASE if image_set.name == "offline" else PUBLIC_SERVER_BASE
    constraints = resolved_constraints(tree, cache_dir or default_cache_dir(), setting)
    log.info(f"[harness]   constraints: {constraints.reason}")
    with tempfile.TemporaryDirectory(prefix="harness-opal-source-") as staging:
        context = Path(staging)
        inputs = stage_context(tree, context, constraints)
        return build(source_image_ref(image_set, tree, constraints), context / "Dockerfile",
                     {"BASE_IMAGE": base}, inputs, client, context=context)
