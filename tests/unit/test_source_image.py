"""The build context of a source-tree server image (no Docker needed)."""

from harness import images
from harness.source_image import source_image_ref, stage_context
from tests.unit.test_venvs import _tree


def test_the_context_holds_the_tree_the_trimmed_pins_the_recipe_and_the_dockerfile(tmp_path):
    tree = _tree(tmp_path / "src")
    cache = tree / "packages" / "opal-server" / "__pycache__"
    cache.mkdir()
    (cache / "mod.cpython-311.pyc").write_bytes(b"junk")
    context = tmp_path / "ctx"
    staged = stage_context(tree, context)
    names = {p.relative_to(context).as_posix() for p in staged}
    assert {"packages/__packaging__.py", "packages/opal-server/mod.py", "packages/opal-common/setup.py",
            "constraints.txt", "recipe/gunicorn_conf.py", "recipe/harness_opal_app.py"} <= names
    assert not any("__pycache__" in n for n in names)
    assert (context / "Dockerfile").is_file()
    pins = [line.split("==")[0] for line in (context / "constraints.txt").read_text().lower().splitlines()
            if line and not line.startswith("#")]
    assert "fastapi" in pins and "opal-server" not in pins and "opal-common" not in pins


def test_the_image_tag_follows_the_tree_content(tmp_path):
    tree = _tree(tmp_path / "src")
    first = source_image_ref(images.OFFLINE, tree)
    assert first.startswith("policy-harness/opal-server-offline:source-")
    assert source_image_ref(images.PUBLIC, tree).startswith("policy-harness/opal-server:source-")
    (tree / "packages" / "opal-server" / "mod.py").write_text("x = 2\n")
    assert source_image_ref(images.OFFLINE, tree) != first
