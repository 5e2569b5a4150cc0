"""Build hook: the wheel carries what a run needs beyond the Python package.

`stacks/` (compose files, Dockerfiles, the OPAL recipe, pin sets), `seed/` (the seed
sidecar) and `.dockerignore` go into the wheel as `harness/_bundled/`, laid out like this
checkout — with the standard-library modules the tools image copies (stacks/images/tools.Dockerfile's
COPY line; tests/unit/test_packaging.py checks them against harness/images.py) — so image builds
see the same context, and the same input digests, from a wheel as from a checkout. An
editable install reads them from the checkout instead (harness/__init__.py decides).
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
BUNDLED_TREES = ("stacks", "seed")
BUNDLED_FILES = (".dockerignore", "harness/__init__.py", "harness/seed.py", "harness/tcplisteners.py",
                 "harness/gitfront.py")


class BuildWithBundle(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / "harness" / "_bundled"
        for tree in BUNDLED_TREES:
            shutil.copytree(ROOT / tree, target / tree, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for name in BUNDLED_FILES:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)


setup(cmdclass={"build_py": BuildWithBundle})
