"""The build context of a source-tree server image (no Docker needed)."""

import logging

import pytest

from harness import images
from harness.servers.opal import source_image
from harness.servers.opal.source_image import image_constraints, source_image_ref, stage_context
from tests.unit.test_venvs import MASTER_SERVER_REQUIRES, _tree


@pytest.fixture(autouse=True)
def _no_constraints_override(monkeypatch, tmp_path):
    monkeypatch.delenv("HARNESS_CONSTRAINTS", raising=False)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))


def _pins(path):
    return [line for line in path.read_text().lower().splitlines() if line and not line.startswith("#")]


def test_the_context_holds_the_tree_readme_requires_the_chosen_pins_the_recipe_and_the_dockerfile(tmp_path):
    tree = _tree(tmp_path / "src")
    cache = tree / "packages" / "opal-server" / "__pycache__"
    cache.mkdir()
    (cache / "mod.cpython-311.pyc").write_bytes(b"junk")
    context = tmp_path / "ctx"
    staged = stage_context(tree, context)
    names = {p.relative_to(context).as_posix() for p in staged}
    assert {"README.md", "packages/__packaging__.py", "packages/requires.txt", "packages/opal-server/requires.txt",
            "packages/opal-server/mod.py", "packages/opal-common/setup.py",
            "constraints.txt", "recipe/gunicorn_conf.py", "recipe/harness_opal_app.py"} <= names
    assert not any("__pycache__" in n for n in names)
    assert (context / "Dockerfile").is_file()
    pins = _pins(context / "constraints.txt")
    # The tree's requirements (permit-broadcaster==0.2.6) rule out 0.9.9's pins: 0.9.6's are staged.
    assert "permit-broadcaster==0.2.6" in pins and "fastapi==0.125.0" in pins
    assert not [p for p in pins if p.startswith(("opal-server", "opal-common"))]


def test_harness_constraints_reaches_the_image(tmp_path, monkeypatch):
    tree = _tree(tmp_path / "src")
    mine = tmp_path / "mine.txt"
    mine.write_text("fastapi==0.125.0\nopal-server==0.9.9\n")
    monkeypatch.setenv("HARNESS_CONSTRAINTS", str(mine))
    stage_context(tree, tmp_path / "ctx")
    assert _pins(tmp_path / "ctx" / "constraints.txt") == ["fastapi==0.125.0"]
    monkeypatch.setenv("HARNESS_CONSTRAINTS", "none")
    stage_context(tree, tmp_path / "ctx2")
    assert _pins(tmp_path / "ctx2" / "constraints.txt") == []  # unpinned: pip resolves in the build


def test_the_image_tag_follows_the_tree_content_and_the_constraints(tmp_path, monkeypatch):
    tree = _tree(tmp_path / "src")
    first = source_image_ref(images.OFFLINE, tree)
    assert first.startswith("policy-harness/opal-server-offline:source-")
    assert source_image_ref(images.PUBLIC, tree).startswith("policy-harness/opal-server:source-")
    assert source_image_ref(images.OFFLINE, tree) == first
    (tree / "packages" / "opal-server" / "mod.py").write_text("x = 2\n")
    second = source_image_ref(images.OFFLINE, tree)
    assert second != first
    (tree / "README.md").write_text("# changed\n")
    third = source_image_ref(images.OFFLINE, tree)
    assert third != second
    monkeypatch.setenv("HARNESS_CONSTRAINTS", "none")
    assert source_image_ref(images.OFFLINE, tree) != third


def test_a_tree_no_pin_set_fits_is_resolved_on_the_host_before_the_image(tmp_path, monkeypatch, caplog):
    tree = _tree(tmp_path / "src", server_requires=MASTER_SERVER_REQUIRES + "fastapi>=0.200\n")
    cache = tmp_path / "cache"
    assert image_constraints(tree, cache).kind == "resolve"
    ref_before = source_image_ref(images.OFFLINE, tree)
    built = []

    def fake_venv(target, cache_dir, constraints):
        built.append(target.source)
        constraints.lock.parent.mkdir(parents=True, exist_ok=True)
        constraints.lock.write_text("fastapi==0.201.0\n")

    monkeypatch.setattr(source_image, "ensure_server_venv", fake_venv)
    caplog.set_level(logging.INFO, logger="harness")
    locked = source_image.resolved_constraints(tree, cache)
    assert built == [tree] and locked.kind == "lock"
    assert any("resolving on the host first" in line for line in caplog.messages)
    assert source_image_ref(images.OFFLINE, tree, locked) == ref_before  # the tag does not move
    stage_context(tree, tmp_path / "ctx", locked)
    assert _pins(tmp_path / "ctx" / "constraints.txt") == ["fastapi==0.201.0"]
