"""`make bench BENCH_ARGS=--installs` (harness.bench): OPAL's venv installed the way it was
(pip, a tree rebuilt whole) and the way it is (uv where present, a tree on its cached
third-party layer), in one run, each in an empty cache of its own."""

from __future__ import annotations

import os
import shutil
import sys
from functools import partial
from pathlib import Path

from harness import config
from harness.bench import Bench
from harness.config import Target
from harness.errors import HarnessError
from harness.servers.opal.venvs import choose_installer, ensure_server_venv, venv_dir


def bench_tree(dest: Path, wheels: Path, given: Path | None) -> Path:
    """A source tree to install at `dest`: a copy of `given`, or one built from 0.9.9's wheels
    the way the gate matrix builds its trees (tests/integration/source_tree.py, in a checkout)."""
    if given is not None:
        shutil.copytree(given, dest, symlinks=True,
                        ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "build"))
        return dest
    checkout = Path(__file__).resolve().parents[1]
    if not (checkout / "tests" / "integration" / "source_tree.py").is_file():
        raise HarnessError("--installs needs a source tree: --tree DIR or OPAL_SOURCE (the tree the checkout's "
                           "tests build is not in an installed harness)")
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    from tests.integration import source_tree  # type: ignore[import-not-found,unused-ignore]

    return source_tree.build(dest, wheels, release="0.9.9", native_stats=False)


def one_line_change(tree: Path, n: int) -> None:
    """A one-line edit of the tree's server package, as a developer's commit would make."""
    init = tree / "packages" / "opal-server" / "opal_server" / "__init__.py"
    init.write_text(init.read_text() + f"# policy-harness bench: one-line change {n}\n")


def measure_installs(bench: Bench, settings: config.Settings, tree_given: Path | None, work: Path) -> None:
    """Before (pip, a tree rebuilt whole) and after (uv where present, a tree on its reused
    third-party layer), in one run, each in an empty cache of its own (the installer's own
    cache in it too: pip's via PIP_CACHE_DIR, uv's under it), so cold is cold."""
    after = choose_installer()
    # before: pip, a tree rebuilt whole; after: the default installer, a tree on its layer.
    ways = {"pip": (choose_installer("pip"), False),
            (after.name if after.name != "pip" else "pip-layer"): (after, True)}
    release = Target(version="0.9.9")
    tree = bench_tree(work / "tree", settings.cache_dir / "wheels", tree_given)
    saved = {k: os.environ.pop(k) for k in ("PIP_CACHE_DIR", "UV_CACHE_DIR", "PIP_NO_CACHE_DIR") if k in os.environ}
    try:
        for name, (installer, reuse) in ways.items():
            cache = work / f"cache-{name}"
            os.environ["PIP_CACHE_DIR"] = str(cache / "pip")

            def install(target: Target, cache: Path = cache, installer=installer, reuse: bool = reuse) -> None:
                ensure_server_venv(target, cache, installer=installer, reuse_layer=reuse)

            bench.time(install_figure("release_cold", name), partial(install, release))
            shutil.rmtree(venv_dir(release, cache))
            bench.time(install_figure("release_warm", name), partial(install, release))
            copy = work / f"tree-{name}"
            shutil.copytree(tree, copy, symlinks=True)
            bench.time(install_figure("tree_first", name), partial(install, Target(source=copy)))
            one_line_change(copy, 1)
            bench.time(install_figure("tree_one_line_change", name), partial(install, Target(source=copy)))
            bench.time(install_figure("tree_cached", name), partial(install, Target(source=copy)))
    finally:
        os.environ.pop("PIP_CACHE_DIR", None)
        os.environ.update(saved)
    before, now = list(ways)
    for what in INSTALL_STEPS:
        bench.figures[f"install_speedup_{what}"] = round(
            bench.figures[install_figure(what, before)] / max(bench.figures[install_figure(what, now)], 1e-3), 2)
    bench.details = {"before": "pip, a tree's venv rebuilt whole",
                     "after": f"{after.describe()}, a tree on its cached third-party layer",
                     "tree": str(tree_given or "built from 0.9.9's wheels"), "ways": [before, now]}
    print("[bench] before -> after: " + ", ".join(
        f"{what} {bench.figures[install_figure(what, before)]:.1f} s -> "
        f"{bench.figures[install_figure(what, now)]:.1f} s (x{bench.figures[f'install_speedup_{what}']})"
        for what in INSTALL_STEPS), flush=True)


INSTALL_STEPS = ("release_cold", "release_warm", "tree_first", "tree_one_line_change", "tree_cached")


def install_figure(step: str, way: str) -> str:
    """e.g. install_release_cold_uv_s, install_tree_one_line_change_pip_s"""
    return f"install_{step}_{way}_s"
