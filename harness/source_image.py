"""A server image built from an OPAL source tree, for OPAL_SOURCE on the compose backend.

The tree lives outside the project, so the build context is a staging directory made for
the build: the tree's packages/ (sources and packaging files only), the constraints of
its release minus the opal-* pins, the harness's launch recipe and the Dockerfile. The
image is tagged by the tree's content digest and, like every image the harness builds,
labelled with the digest of its inputs: an unchanged tree is reused, not rebuilt.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from harness import STACKS_DIR
from harness.images import BuildResult, ImageSet, OFFLINE_BASE, PUBLIC_SERVER_BASE, Progress, build
from harness.venvs import source_constraints, source_tree_digest, source_tree_files

DOCKERFILE = STACKS_DIR / "images" / "opal-server-source.Dockerfile"
RECIPE_DIR = STACKS_DIR / "opal"


def source_image_ref(image_set: ImageSet, tree: Path) -> str:
    """e.g. policy-harness/opal-server-offline:source-1a2b3c4d5e6f (one tag per tree content)."""
    return f"{image_set.server_repo}:source-{source_tree_digest(tree)}"


def stage_context(tree: Path, context: Path) -> list[Path]:
    """Fill `context` with what the image is built from; returns the files staged."""
    for source in source_tree_files(tree):
        target = context / source.relative_to(tree)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    (context / "constraints.txt").write_text(source_constraints(tree))
    shutil.copytree(RECIPE_DIR, context / "recipe", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(DOCKERFILE, context / "Dockerfile")
    return sorted(p for p in context.rglob("*") if p.is_file() and p.name != "Dockerfile")


def build_source_image(image_set: ImageSet, tree: Path, progress: Progress = print,
                       client=None) -> BuildResult:
    """Build (or reuse) the server image of `tree` for `image_set`'s base."""
    base = OFFLINE_BASE if image_set.name == "offline" else PUBLIC_SERVER_BASE
    with tempfile.TemporaryDirectory(prefix="harness-opal-source-") as staging:
        context = Path(staging)
        inputs = stage_context(tree, context)
        return build(source_image_ref(image_set, tree), context / "Dockerfile", {"BASE_IMAGE": base},
                     inputs, progress, client, context=context)
