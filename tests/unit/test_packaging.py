"""The published artefacts: the wheel carries every file a backend reads or copies, the sdist
carries everything that wheel is built from, the metadata says what the project is, and the
harness's dependency ranges admit the server's pinned environments (one venv in a server's CI).

The files are derived from the code, not listed here: the image builds of both image sets
(harness/images.py, run with the engine stood in for), the compose files a stack is started
with, the OPAL recipe, the constraints and the package's data files. Every checkout path is
mapped to where an installed wheel looks for it (harness/_bundled, see harness/__init__.py).

The artefacts are built once per module from a copy of this checkout (no stale build/ dir):
`python -m build` (the sdist, then a wheel from the extracted sdist) and a wheel straight
from the tree; the two wheels must hold the same files.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path
from types import SimpleNamespace

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from harness import PROJECT_ROOT, STACKS_DIR, harness_version, images, report
from harness.cli import main as cli_main
from harness.config import GITHOST_PROFILES, supported_versions
from harness.servers.opal import recipe, source_image, venvs
from harness.stack import compose

PACKAGE_DIR = PROJECT_ROOT / "harness"
BUNDLE = "harness/_bundled"
# What a copy of the checkout for building leaves out (local state, not project files).
NOT_PROJECT = shutil.ignore_patterns(".git", ".venv", "build", "dist", "reports", "*.egg-info", "__pycache__",
                                     "*.pyc", ".pytest_cache", ".mypy_cache", ".ruff_cache")


# --- what the code reads -------------------------------------------------------------------

def _recorded_image_builds(monkeypatch, tmp_path) -> list[tuple[Path, list[Path], dict[str, str]]]:
    """(Dockerfile, every file hashed as its input, build args) of each image both sets build
    for every release: harness.images' own build paths, with the engine stood in for (every
    image 'up to date', so nothing is built)."""
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    builds: list[tuple[Path, list[Path], dict[str, str]]] = []
    current: dict = {}

    real_build = images.build

    def build(image_ref, dockerfile, build_args, inputs, client=None, context=PROJECT_ROOT):
        current.update(dockerfile=Path(dockerfile), args=dict(build_args))
        return real_build(image_ref, dockerfile, build_args, inputs, client, context)

    def inputs_digest(paths, extra=None, root=PROJECT_ROOT):
        builds.append((current["dockerfile"], images._files(paths), current["args"]))
        return "0" * 12

    monkeypatch.setattr(images, "build", build)
    monkeypatch.setattr(images, "inputs_digest", inputs_digest)
    monkeypatch.setattr(images, "docker_client", lambda *a, **k: object())
    monkeypatch.setattr(images, "_local_base_id", lambda *a, **k: {})
    monkeypatch.setattr(images, "image_labels", lambda *a, **k: {images.INPUTS_LABEL: "0" * 12})
    monkeypatch.setattr(images, "base_digest", lambda: "0" * 12)
    versions = supported_versions()
    assert all(r.action == "reused" for r in images.build_offline(versions))
    assert all(r.action == "reused" for r in images.build_public(versions))
    return builds


def _compose_files() -> set[Path]:
    """The compose files a stack starts with, for every git host, prebuilt image or not."""
    files: set[Path] = set()
    run_dir = Path("/nonexistent-run-dir")
    for githost in GITHOST_PROFILES:
        for image in ("", "some/image:tag"):
            stand_in = SimpleNamespace(githost=githost, run_dir=run_dir,
                                       settings=SimpleNamespace(target=SimpleNamespace(image=image)))
            files.update(p for p in compose.ComposeStack._files(stand_in) if run_dir not in p.parents)
    return files


def project_files(monkeypatch, tmp_path) -> dict[str, set[Path]]:
    """Checkout files each backend reads or copies, by who reads them."""
    builds = _recorded_image_builds(monkeypatch, tmp_path)
    return {
        "image inputs": {p for _, inputs, _ in builds for p in inputs} | {images.BASE_SCRIPT},
        "source-tree image": set(images._files([source_image.DOCKERFILE, source_image.RECIPE_DIR])),
        "compose files": _compose_files() | set(images._files([STACKS_DIR / "opal"])),  # mounted as the recipe
        "local backend": set(images._files([recipe.RECIPE_DIR]))
        | {venvs.constraints_file(v) for v in supported_versions()},
    }


def package_data() -> set[Path]:
    """Non-Python files of the package, read beside the modules (report.schema.json...)."""
    found = {p for p in PACKAGE_DIR.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
             and "__pycache__" not in p.parts}
    assert report.SCHEMA_PATH in found
    return found


def _relative(path: Path) -> str:
    return path.resolve().relative_to(PROJECT_ROOT.resolve()).as_posix()


# --- the artefacts -------------------------------------------------------------------------

def build_artefacts(work: Path) -> SimpleNamespace:
    """sdist, the wheel built from it, and a wheel built straight from the tree, from a copy
    of this checkout in `work`. Needs the build frontend (the test extra)."""
    source = work / "src"
    shutil.copytree(PROJECT_ROOT, source, ignore=NOT_PROJECT)
    run = [sys.executable, "-m", "build", *(["--no-isolation"] if _can_build_in_place() else [])]
    for args in (["--outdir", str(work / "dist")], ["--wheel", "--outdir", str(work / "direct")]):
        done = subprocess.run([*run, *args, str(source)], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [sdist] = (work / "dist").glob("policy_harness-*.tar.gz")
    [wheel] = (work / "dist").glob("policy_harness-*.whl")  # built from the extracted sdist
    [direct] = (work / "direct").glob("policy_harness-*.whl")
    return SimpleNamespace(sdist=sdist, wheel=wheel, direct=direct, work=work)


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory) -> SimpleNamespace:
    pytest.importorskip("build", reason="the build frontend: pip install -e '.[test]'")
    return build_artefacts(tmp_path_factory.mktemp("artefacts"))


def _can_build_in_place() -> bool:
    """Whether this environment's setuptools meets the build requirement (then no isolated
    environment, so no index, is needed)."""
    try:
        from importlib.metadata import version

        from packaging.version import Version
        return Version(version("setuptools")) >= Version("77")
    except Exception:
        return False


def _wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return {n for n in zf.namelist() if not n.endswith("/")}


def _metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        [name] = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(zf.read(name).decode())


def test_the_wheel_carries_every_file_a_backend_reads_or_copies(artefacts, monkeypatch, tmp_path):
    names = _wheel_names(artefacts.wheel)
    missing = {}
    for reader, paths in project_files(monkeypatch, tmp_path).items():
        # Read through PROJECT_ROOT / STACKS_DIR: an installed wheel's are in harness/_bundled.
        lost = sorted(f"{BUNDLE}/{_relative(p)}" for p in paths if f"{BUNDLE}/{_relative(p)}" not in names)
        if lost:
            missing[reader] = lost
    lost_data = sorted(_relative(p) for p in package_data() if _relative(p) not in names)
    if lost_data:
        missing["package data"] = lost_data
    assert not missing, f"not in {artefacts.wheel.name}: {missing}"


def test_the_tools_image_inputs_include_its_copies_and_gitfront(monkeypatch, tmp_path):
    """Every file a Dockerfile built from the project root COPYs is an input of that build
    (so the digest and the wheel cover it); the tools image runs harness.gitfront."""
    builds = _recorded_image_builds(monkeypatch, tmp_path)
    assert builds
    for dockerfile, inputs, args in builds:
        rels = {_relative(p) for p in inputs}
        for line in re.findall(r"^(?:COPY|ADD)\s+(.+)$", dockerfile.read_text(), re.M):
            words = [w for w in line.split() if not w.startswith("--")]
            for src in words[:-1]:
                src = re.sub(r"\$\{(\w+)\}", lambda m, a=args: a[m.group(1)], src).rstrip("/")
                assert src in rels or any(r.startswith(src + "/") for r in rels), (dockerfile.name, src)
    tools = [inputs for dockerfile, inputs, _ in builds if dockerfile.name == "tools.Dockerfile"]
    assert tools and all(PACKAGE_DIR / "gitfront.py" in inputs for inputs in tools)


def test_an_installed_wheel_finds_its_bundle(artefacts, monkeypatch, tmp_path):
    """Unpacked (as pip lays it out), the package resolves PROJECT_ROOT to harness/_bundled and
    every file the backends read is there."""
    site = tmp_path / "site"
    with zipfile.ZipFile(artefacts.wheel) as zf:
        zf.extractall(site)
    # -S: no site-packages, so this checkout's editable install cannot shadow the unpacked copy.
    where = subprocess.run([sys.executable, "-S", "-c", "import harness; print(harness.PROJECT_ROOT)"],
                           cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
                           capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    root = Path(where.stdout.strip())
    assert root == site / BUNDLE
    for paths in project_files(monkeypatch, tmp_path).values():
        for path in paths:
            assert (root / _relative(path)).is_file(), _relative(path)


def test_the_sdist_builds_the_same_wheel(artefacts):
    """The wheel built from the sdist holds what a wheel built from the tree holds."""
    from_sdist, from_tree = _wheel_names(artefacts.wheel), _wheel_names(artefacts.direct)
    assert from_sdist == from_tree, {"only from the tree": sorted(from_tree - from_sdist),
                                     "only from the sdist": sorted(from_sdist - from_tree)}
    with tarfile.open(artefacts.sdist) as tf:
        top = f"policy_harness-{harness_version_of(artefacts.wheel)}"
        members = {m.name.removeprefix(top + "/") for m in tf.getmembers() if m.isfile()}
    for needed in ("LICENSE", "README.md", "setup.py", "pyproject.toml", "MANIFEST.in", ".dockerignore",
                   "stacks/opal/gunicorn_conf.py", "seed/Dockerfile", "harness/report.schema.json"):
        assert needed in members, needed
    assert not [m for m in members if "__pycache__" in m or m.endswith(".pyc")]


def harness_version_of(wheel: Path) -> str:
    return _metadata(wheel)["Version"]


def test_the_metadata_names_license_readme_urls_and_classifiers(artefacts):
    meta = _metadata(artefacts.wheel)
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert meta["Description-Content-Type"] == "text/markdown"
    assert meta.get_payload().strip() == (PROJECT_ROOT / "README.md").read_text().strip()
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert urls["Homepage"].startswith("https://") and "Source" in urls
    classifiers = meta.get_all("Classifier")
    assert "Framework :: Pytest" in classifiers and "Operating System :: POSIX :: Linux" in classifiers
    with zipfile.ZipFile(artefacts.wheel) as zf:
        [license_name] = [n for n in zf.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        text = zf.read(license_name).decode()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert (PROJECT_ROOT / "LICENSE").read_text() == text


def test_harness_version(capsys):
    with pytest.raises(SystemExit) as exited:
        cli_main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"harness {harness_version()}"
    declared = re.search(r'^version = "([^"]+)"', (PROJECT_ROOT / "pyproject.toml").read_text(), re.M)
    assert declared and harness_version() == declared.group(1)


@pytest.mark.parametrize("pin_set", venvs.committed_pin_sets(), ids=lambda s: s.release)
def test_the_harness_ranges_admit_the_servers_pins(pin_set, artefacts):
    """Each package the harness requires that a release's pinned environment also holds is
    allowed at the pinned version: the harness installs beside the server (redis 4.6.0 for
    opal-server 0.9.6/0.9.9, which require redis<5)."""
    pins = pin_set.pins()
    requirements = [Requirement(line) for line in _metadata(artefacts.wheel).get_all("Requires-Dist")]
    requirements = [r for r in requirements if r.marker is None]  # not the extras' (dev, test)
    shared = [r for r in requirements if canonicalize_name(r.name) in pins]
    assert "redis" in {canonicalize_name(r.name) for r in shared}
    clashes = venvs.pin_conflicts(pins, [str(r) for r in shared])
    assert clashes == []
