from harness import venvs
from harness.config import Target


def _tree(root, version="(0, 9, 6)", body="x = 1\n"):
    for rel in ("packages/opal-common/setup.py", "packages/opal-server/setup.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("")
    (root / "packages" / "__packaging__.py").write_text(f"VERSION = {version}\n")
    (root / "packages" / "opal-server" / "mod.py").write_text(body)
    return root


def test_release_venvs_are_keyed_by_version_and_constraints(tmp_path):
    a = venvs.venv_dir(Target(version="0.9.6"), tmp_path)
    b = venvs.venv_dir(Target(version="0.9.9"), tmp_path)
    assert a != b and a.name.startswith("opal-server-0.9.6-")
    assert a == venvs.venv_dir(Target(version="0.9.6"), tmp_path)


def test_source_venvs_change_with_the_tree_content_only(tmp_path):
    tree = _tree(tmp_path / "src")
    first = venvs.venv_dir(Target(source=tree), tmp_path)
    (tree / "packages" / "opal-server" / "__pycache__").mkdir()
    (tree / "packages" / "opal-server" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"junk")
    assert venvs.venv_dir(Target(source=tree), tmp_path) == first
    (tree / "packages" / "opal-server" / "mod.py").write_text("x = 2\n")
    assert venvs.venv_dir(Target(source=tree), tmp_path) != first


def test_source_tree_uses_its_own_release_pins_or_the_newest(tmp_path):
    assert venvs.source_tree_version(_tree(tmp_path / "a")) == "0.9.6"
    assert venvs.constraints_for_source(tmp_path / "a").name == "opal-server-0.9.6.txt"
    assert venvs.constraints_for_source(_tree(tmp_path / "b", "(1, 2, 3)")).name == "opal-server-0.9.9.txt"


def test_source_install_drops_the_trees_own_pins_and_adds_aiofiles(tmp_path):
    tree = _tree(tmp_path / "src")
    args = venvs._source_install_args(tree, tmp_path)
    pins = [line for line in (tmp_path / "constraints-source.txt").read_text().splitlines()
            if not line.startswith("#")]
    assert not [p for p in pins if p.startswith(("opal-server==", "opal-common=="))]
    assert any(p.startswith("fastapi==") for p in pins)
    assert args[-1] == "aiofiles"
    assert str(tree / "packages" / "opal-server") in args
