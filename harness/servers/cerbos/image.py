"""The Cerbos server image of the compose backend, built with no network from the cached binary.

`policy-harness/cerbos-offline:<version>` (the offline image set: on the debootstrap'd base
policy-harness/debian:bookworm) or `policy-harness/cerbos:<version>` (the public set: on
debian:bookworm-slim). The build context is the binary's cache directory: the binary npm
published, sha512-checked when it was installed (harness/servers/cerbos/install.py); the
build runs with `--network=none` and only copies it in. Its inputs' digest (Dockerfile,
binary, version, base) labels the image, so an unchanged build is reused (harness.images.build).

  python -m harness.servers.cerbos.image [--version V ...]   (HARNESS_IMAGES picks the set)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from harness import config, console, images
from harness.errors import HarnessError
from harness.servers.cerbos.install import DEFAULT_VERSION, ensure_cerbos

DOCKERFILE = images.IMAGES_DIR / "cerbos.Dockerfile"
REPOS = {"offline": "policy-harness/cerbos-offline", "public": "policy-harness/cerbos"}
BASES = {"offline": images.OFFLINE_BASE, "public": images.PUBLIC_TOOLS_BASE}


def image_ref(version: str, image_set: images.ImageSet) -> str:
    return f"{REPOS[image_set.name]}:{version}"


def build_image(version: str, image_set: images.ImageSet, cache_dir: Path, client=None) -> images.BuildResult:
    """The server image of `version`, built (or reused) from the cached binary, no network."""
    binary = ensure_cerbos(version, cache_dir)  # installed and checked once; cached after
    if binary.version != version:
        raise HarnessError(f"the cached binary {binary.path} is cerbos {binary.version}, not {version}: "
                           f"remove {binary.path.parent} and run again")
    context = binary.path.parent
    return images.build(image_ref(version, image_set), DOCKERFILE,
                        {"BASE_IMAGE": BASES[image_set.name], "CERBOS_VERSION": version},
                        [binary.path], client, context=context, network="none")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.servers.cerbos.image",
                                     description="Build the Cerbos server image of the compose backend (no network).")
    parser.add_argument("--version", action="append", dest="versions", metavar="V",
                        help=f"a Cerbos release (repeatable; default {DEFAULT_VERSION})")
    args = parser.parse_args(argv)
    try:
        console.to_stream()
        image_set = images.choose_image_set()
        started = time.monotonic()
        for version in args.versions or [DEFAULT_VERSION]:
            print(build_image(version, image_set, config.default_cache_dir()))
        print(f"done in {time.monotonic() - started:.1f} s")
        return 0
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
