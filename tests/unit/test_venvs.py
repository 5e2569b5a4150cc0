"""Server virtualenvs: keys, requirements of the real checkout layout, the pin-set chooser,
HARNESS_CONSTRAINTS, pip's conflict output, wheel metadata (no installs here)."""

import zipfile

import pytest

from harness.config import Target
from harness.errors import HarnessError
from harness.servers.opal import venvs

# packages/opal-server/requires.txt as on OPAL's master (mid-2026): pins of 0.9.9 do not fit it.
MASTER_SERVER_REQUIRES = """\
# opal-server's own requirements
permit-broadcaster[postgres,redis,kafka]==0.2.6
pygit2>=1.14.1,<1.15
redis>=4.3.4,<5  # the Redis client, not the server
gitpython>=3.1.32,<4
slowapi>=0.1.5,<1
"""
SHARED_REQUIRES = """\
idna>=3.3,<4
fastapi>=0.109.1,<1
pydantic[email]>=1.9.1,<2

typing-extensions;python_version<'3.8'
"""
COMMON_REQUIRES = "aiohttp>=3.9.2,<4\nloguru>=0.6.0\n"


def _tree(root, body="x = 1\n", server_requires=MASTER_SERVER_REQUIRES):
    """A checkout in OPAL's real layout (placeholder version, requires.txt files, root README)."""
    packages = root / "packages"
    for dist in ("opal-common", "opal-server"):
        (packages / dist).mkdir(parents=True, exist_ok=True)
        (packages / dist / "setup.py").write_text("")
    (packages / "__packaging__.py").write_text("VERSION = (0, 0, 0)  # Placeholder, to be set by CI/CD\n")
    (packages / "requires.txt").write_text(SHARED_REQUIRES)
    (packages / "opal-common" / "requires.txt").write_text(COMMON_REQUIRES)
    (packages / "opal-server" / "requires.txt").write_text(server_requires)
    (packages / "opal-server" / "mod.py").write_text(body)
    (root / "README.md").write_text("# OPAL\n")
    return root


@pytest.fixture(autouse=True)
def _no_constraints_override(monkeypatch):
    monkeypatch.delenv("HARNESS_CONSTRAINTS", raising=False)


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
    (tree / "packages" / "opal-server" / "opal_server.egg-info").mkdir()
    (tree / "packages" / "opal-server" / "opal_server.egg-info" / "PKG-INFO").write_text("built in-tree")
    assert venvs.venv_dir(Target(source=tree), tmp_path) == first
    (tree / "packages" / "opal-server" / "mod.py").write_text("x = 2\n")
    second = venvs.venv_dir(Target(source=tree), tmp_path)
    assert second != first
    (tree / "README.md").write_text("# OPAL, edited\n")  # setup.py reads it: part of the key
    third = venvs.venv_dir(Target(source=tree), tmp_path)
    assert third != second
    (tree / "packages" / "requires.txt").write_text(SHARED_REQUIRES + "anyio>=4.4.0\n")
    assert venvs.venv_dir(Target(source=tree), tmp_path) != third


def test_source_venvs_change_with_the_constraints(tmp_path):
    tree = _tree(tmp_path / "src")
    pins = tmp_path / "pins.txt"
    pins.write_text("fastapi==0.125.0\n")
    chosen = venvs.venv_dir(Target(source=tree), tmp_path)
    mine = venvs.venv_dir(Target(source=tree), tmp_path, venvs.choose_constraints(Target(source=tree), tmp_path,
                                                                                   str(pins)))
    unpinned = venvs.venv_dir(Target(source=tree), tmp_path,
                              venvs.choose_constraints(Target(source=tree), tmp_path, "none"))
    assert len({chosen, mine, unpinned}) == 3


def test_requirements_are_read_from_the_real_layout(tmp_path):
    tree = _tree(tmp_path / "src")
    requirements = venvs.source_requirements(tree)
    assert requirements[:3] == ["idna>=3.3,<4", "fastapi>=0.109.1,<1", "pydantic[email]>=1.9.1,<2"]
    assert "typing-extensions;python_version<'3.8'" in requirements
    assert "aiohttp>=3.9.2,<4" in requirements
    assert "redis>=4.3.4,<5" in requirements  # trailing comment stripped
    assert not [r for r in requirements if r.startswith("#") or not r]
    assert len(requirements) == 4 + 2 + 5


def test_the_tree_files_include_the_root_readme_and_requires(tmp_path):
    tree = _tree(tmp_path / "src")
    names = {p.relative_to(tree).as_posix() for p in venvs.source_tree_files(tree)}
    assert {"README.md", "packages/requires.txt", "packages/opal-server/requires.txt"} <= names


def test_a_placeholder_version_tree_gets_the_newest_pins_that_fit_not_the_newest(tmp_path):
    tree = _tree(tmp_path / "src")
    choice = venvs.choose_constraints(Target(source=tree), tmp_path, "auto")
    assert choice.kind == "committed"
    assert choice.path == venvs.constraints_file("0.9.6")
    assert choice.reason == ("pins of 0.9.9 do not fit: permit-broadcaster==0.2.7 vs "
                             "permit-broadcaster[postgres,redis,kafka]==0.2.6; using 0.9.6's")
    pins = [line for line in choice.text().splitlines() if not line.startswith("#")]
    assert not [p for p in pins if p.startswith(("opal-server==", "opal-common=="))]
    assert "permit-broadcaster==0.2.6" in pins


def test_a_tree_the_newest_pins_fit_gets_them(tmp_path):
    tree = _tree(tmp_path / "src", server_requires=MASTER_SERVER_REQUIRES.replace("==0.2.6", ">=0.2.6"))
    choice = venvs.choose_constraints(Target(source=tree), tmp_path, "auto")
    assert choice.path == venvs.constraints_file("0.9.9")


def test_no_fitting_set_means_resolve_once_then_the_lock(tmp_path):
    tree = _tree(tmp_path / "src", server_requires=MASTER_SERVER_REQUIRES + "fastapi>=0.200\n")
    choice = venvs.choose_constraints(Target(source=tree), tmp_path, "auto")
    assert choice.kind == "resolve" and not choice.pinned
    assert choice.lock.parent == tmp_path / "locks" and choice.lock.name.startswith("opal-")
    assert "0.9.9 do not fit" in choice.reason and "0.9.6 do not fit" in choice.reason
    assert "fastapi==0.125.0 vs fastapi>=0.200" in choice.reason
    before = venvs.venv_dir(Target(source=tree), tmp_path, choice)
    choice.lock.parent.mkdir()
    choice.lock.write_text("# resolved\nfastapi==0.201.0\n")
    locked = venvs.choose_constraints(Target(source=tree), tmp_path, "auto")
    assert locked.kind == "lock" and locked.path == choice.lock
    assert venvs.venv_dir(Target(source=tree), tmp_path, locked) == before  # same key before and after


def test_the_pin_check_honours_markers_extras_and_ignores_opal(tmp_path):
    pins = venvs.read_pins("# header\nfastapi==0.125.0\nopal-common==0.9.9\nTyping_Extensions==4.15.0\n")
    assert pins == {"fastapi": "0.125.0", "opal-common": "0.9.9", "typing-extensions": "4.15.0"}
    requirements = ["opal-common==0.0.0",                          # the tree provides it
                    "typing-extensions<4; python_version < '3.8'",  # not for this Python
                    "fastapi<0.100; extra == 'old'",                # only with an extra
                    "FastAPI>=0.109.1,<1"]                          # names are normalized
    assert venvs.pin_conflicts(pins, requirements) == []
    assert venvs.pin_conflicts(pins, ["fastapi<0.110"]) == ["fastapi==0.125.0 vs fastapi<0.110"]


def test_harness_constraints_overrides_the_choice(tmp_path, monkeypatch):
    tree = _tree(tmp_path / "src")
    pins = tmp_path / "mine.txt"
    pins.write_text("opal-common==9.9.9\nfastapi==0.125.0\n")
    monkeypatch.setenv("HARNESS_CONSTRAINTS", str(pins))
    mine = venvs.choose_constraints(Target(source=tree), tmp_path)
    assert (mine.kind, mine.path) == ("file", pins) and "HARNESS_CONSTRAINTS=" in mine.reason
    assert mine.text().split() == ["fastapi==0.125.0"]  # opal-* pins dropped
    monkeypatch.setenv("HARNESS_CONSTRAINTS", "none")
    unpinned = venvs.choose_constraints(Target(version="0.9.6"), tmp_path)
    assert unpinned.kind == "none" and not unpinned.pinned and unpinned.text() == ""


def test_install_specs_install_both_packages_from_the_tree_in_place(tmp_path):
    tree = _tree(tmp_path / "src")
    specs = venvs.install_specs(Target(source=tree))
    assert specs == [str(tree / "packages" / "opal-common"), str(tree / "packages" / "opal-server"), "aiofiles"]
    assert venvs.install_specs(Target(version="0.9.5")) == ["opal-server==0.9.5", "aiofiles"]


def _wheel(path, requires):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("opal_server-0.9.5.dist-info/METADATA",
                         "Metadata-Version: 2.1\nName: opal-server\nVersion: 0.9.5\nRequires-Python: >=3.9\n"
                         + "".join(f"Requires-Dist: {r}\n" for r in requires)
                         + "Description-Content-Type: text/markdown\n\n# OPAL\nRequires-Dist: not-a-header\n")
        archive.writestr("opal_server/__init__.py", "")
    return path


def test_wheel_metadata_gives_the_release_requirements(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels / "opal_server-0.9.5-py3-none-any.whl",
           ["permit-broadcaster[kafka,postgres,redis]==0.2.6", "opal-common==0.9.5",
            'typing-extensions; python_version < "3.8"'])
    _wheel(wheels / "opal_common-0.9.5-py3-none-any.whl", ["fastapi<1,>=0.109.1"])
    assert venvs.wheel_requirements(wheels / "opal_server-0.9.5-py3-none-any.whl") == [
        "permit-broadcaster[kafka,postgres,redis]==0.2.6", "opal-common==0.9.5",
        'typing-extensions; python_version < "3.8"']
    # Wheels already in the cache are not downloaded again.
    requirements = venvs.release_requirements("0.9.5", tmp_path)
    assert requirements[0] == "fastapi<1,>=0.109.1"  # opal-common first, then opal-server
    choice = venvs.choose_constraints(Target(version="0.9.5"), tmp_path, "auto")
    assert choice.path == venvs.constraints_file("0.9.6") and "0.9.9 do not fit" in choice.reason


# pip 23.2 (the venv's own pip) installing the test tree with the 0.9.9 pins: the constraint
# leaves the tree's requirement no candidate. Captured verbatim (tail of the log).
PIP_NO_CANDIDATE = """\
Collecting setuptools>=70.0.0 (from opal-common==0.0.0)
Collecting anyio>=4.4.0 (from opal-common==0.0.0)
INFO: pip is looking at multiple versions of opal-server to determine which version is compatible with other requirements. This could take a while.
ERROR: Could not find a version that satisfies the requirement permit-broadcaster[kafka,postgres,redis]==0.2.6 (from opal-server) (from versions: 0.2.1, 0.2.2, 0.2.3, 0.2.4, 0.2.5, 0.2.6, 0.2.7)
ERROR: No matching distribution found for permit-broadcaster[kafka,postgres,redis]==0.2.6
"""

# pip 23.2 installing the tree's opal-common with a constraint fastapi==0.99.1.
PIP_CONFLICT = """\
  Preparing metadata (pyproject.toml): finished with status 'done'
INFO: pip is looking at multiple versions of opal-common to determine which version is compatible with other requirements. This could take a while.
ERROR: Cannot install opal-common==0.0.0 because these package versions have conflicting dependencies.

The conflict is caused by:
    opal-common 0.0.0 depends on fastapi<1 and >=0.109.1
    The user requested (constraint) fastapi==0.99.1

To fix this you could try to:
1. loosen the range of package versions you've specified
2. remove package versions to allow pip attempt to solve the dependency conflict

ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/#dealing-with-dependency-conflicts
"""

# pip download of a release the index does not have.
PIP_UNKNOWN_RELEASE = """\
ERROR: Could not find a version that satisfies the requirement opal-server==0.9.7 (from versions: 0.0.1, 0.1.0, 0.7.13rc1, 0.7.13, 0.9.4, 0.9.5rc1, 0.9.5, 0.9.6, 0.9.7rc1, 0.9.9, 0.10.0rc1)
ERROR: No matching distribution found for opal-server==0.9.7
"""


def test_pip_conflicts_name_the_requirements_and_the_constraint():
    assert venvs.pip_conflicts(PIP_NO_CANDIDATE, {"permit-broadcaster": "0.2.7"}) == [
        ("permit-broadcaster[kafka,postgres,redis]==0.2.6 (from opal-server) vs the constraint "
         "permit-broadcaster==0.2.7")]
    assert venvs.pip_conflicts(PIP_CONFLICT) == ["opal-common 0.0.0 depends on fastapi<1 and >=0.109.1",
                                                 "The user requested (constraint) fastapi==0.99.1"]
    assert venvs.pip_conflicts("ERROR: Cannot install a==1 because these package versions have conflicting "
                               "dependencies.\n") == ["cannot install a==1"]
    assert venvs.pip_conflicts("error: subprocess-exited-with-error\n") == []


def test_a_failed_install_names_the_conflict_the_switch_and_the_log(tmp_path, monkeypatch):
    log = tmp_path / "install.log"

    class Failed:
        returncode = 1

    def fake_run(command, stdout, **_):
        stdout.write(PIP_NO_CANDIDATE.encode())
        return Failed()

    monkeypatch.setattr(venvs.subprocess, "run", fake_run)
    chosen = venvs.Constraints("committed", "test", path=venvs.constraints_file("0.9.9"))
    with pytest.raises(HarnessError) as err:
        venvs._pip_install(tmp_path, ["-c", "x"], log, chosen, "source:/src/opal")
    message = str(err.value)
    assert "permit-broadcaster[kafka,postgres,redis]==0.2.6 (from opal-server) vs the constraint " \
           "permit-broadcaster==0.2.7" in message
    assert "HARNESS_CONSTRAINTS=none" in message and "HARNESS_CONSTRAINTS=<file>" in message
    assert str(log) in message


def test_an_unknown_release_lists_what_the_index_has():
    assert venvs.index_versions(PIP_UNKNOWN_RELEASE)[:2] == ["0.0.1", "0.1.0"]
    message = venvs.unknown_release_message("0.9.7", venvs.index_versions(PIP_UNKNOWN_RELEASE))
    assert "OPAL_VERSION=0.9.7 is not on the package index" in message
    assert "0.9.9, 0.9.6, 0.9.5, 0.9.4, 0.7.13, 0.1.0, 0.0.1" in message
    assert "pre-releases: 0.10.0rc1, 0.9.7rc1" in message


def test_a_resolve_is_frozen_into_the_lock_without_the_opal_packages(tmp_path, monkeypatch):
    frozen = ("aiofiles==25.1.0\nFastAPI==0.125.0\nopal-common @ file:///src/opal/packages/opal-common\n"
              "opal_server==0.0.0\n-e git+https://x/y#egg=z\n")

    class Done:
        stdout = frozen

    monkeypatch.setattr(venvs.subprocess, "run", lambda *a, **k: Done())
    lock = tmp_path / "locks" / "opal-abc.txt"
    venvs.write_lock(tmp_path / "python", lock, "note")
    assert lock.read_text() == "# note\naiofiles==25.1.0\nFastAPI==0.125.0\n"


def test_a_tree_without_requires_files_gets_the_newest_pins_and_says_so(tmp_path):
    tree = _tree(tmp_path / "src")
    for rel in venvs.SOURCE_REQUIRES:
        (tree / rel).unlink()
    choice = venvs.choose_constraints(Target(source=tree), tmp_path, "auto")
    assert choice.path == venvs.constraints_file("0.9.9") and "no requirements found" in choice.reason
