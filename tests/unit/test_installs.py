"""Server installs: the installer chosen (uv where present, pip otherwise), what is read
from the installers' machine-readable reports, a tree's venv on its reused third-party layer
(keys, the clone, the steps), the conflict named on failure (no installs here)."""

import json
import os
import subprocess

import pytest

from harness.config import Target
from harness.errors import HarnessError
from harness.servers.opal import venvs
from tests.unit.test_venvs import MASTER_SERVER_REQUIRES, _tree


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch):
    for var in ("HARNESS_CONSTRAINTS", "HARNESS_INSTALLER", "UV_CACHE_DIR", "UV_INDEX_URL", "UV_DEFAULT_INDEX",
                "PIP_INDEX_URL", "SSL_CERT_FILE"):
        monkeypatch.delenv(var, raising=False)


def test_uv_is_the_installer_where_present_pip_otherwise(monkeypatch, tmp_path):
    monkeypatch.setattr(venvs, "find_uv", lambda: tmp_path / "uv")
    assert venvs.choose_installer() == venvs.Installer("uv", tmp_path / "uv")
    assert venvs.choose_installer().describe() == f"uv ({tmp_path / 'uv'})"
    monkeypatch.setenv("HARNESS_INSTALLER", "pip")
    assert venvs.choose_installer().name == "pip"
    assert venvs.choose_installer().describe() == "pip (HARNESS_INSTALLER=pip)"
    monkeypatch.setattr(venvs, "find_uv", lambda: None)
    monkeypatch.setenv("HARNESS_INSTALLER", "")
    fallback = venvs.choose_installer()
    assert fallback.name == "pip" and "uv not found" in fallback.describe()
    with pytest.raises(HarnessError, match="HARNESS_INSTALLER=uv but no uv was found"):
        venvs.choose_installer("uv")
    with pytest.raises(HarnessError, match="HARNESS_INSTALLER=conda is not known; use one of auto, uv, pip"):
        venvs.choose_installer("conda")


def test_the_harness_finds_the_uv_its_dependency_ships():
    found = venvs.find_uv()
    assert found is not None and os.access(found, os.X_OK)


def test_uv_keeps_its_cache_under_the_harness_cache_and_gets_pips_index(monkeypatch, tmp_path):
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple")
    monkeypatch.setenv("PIP_CERT", "/etc/ca.pem")
    env = venvs.Installer("uv", tmp_path / "uv").env(tmp_path / "cache")
    assert env["UV_CACHE_DIR"] == str(tmp_path / "cache" / "uv")
    assert env["UV_INDEX_URL"] == "https://mirror.example/simple" and env["SSL_CERT_FILE"] == "/etc/ca.pem"
    monkeypatch.setenv("UV_CACHE_DIR", "/elsewhere")
    assert venvs.Installer("uv", tmp_path / "uv").env(tmp_path / "cache")["UV_CACHE_DIR"] == "/elsewhere"
    assert "UV_CACHE_DIR" not in venvs.Installer("pip").env(tmp_path) or os.environ.get("UV_CACHE_DIR")


# pip 23.2's installation report (`pip install --report`), trimmed to what is read.
PIP_REPORT = {
    "version": "1", "pip_version": "23.2.1",
    "install": [
        {"download_info": {"url": "https://files.example/fastapi-0.125.0-py3-none-any.whl", "archive_info": {}},
         "is_direct": False, "requested": False, "metadata": {"name": "FastAPI", "version": "0.125.0"}},
        {"download_info": {"url": "file:///src/opal/packages/opal-common", "dir_info": {}},
         "is_direct": True, "requested": True, "metadata": {"name": "opal-common", "version": "0.0.0"}},
        {"download_info": {"url": "https://files.example/aiofiles-25.1.0-py3-none-any.whl"},
         "is_direct": False, "requested": True, "metadata": {"name": "aiofiles", "version": "25.1.0"}},
    ],
    "environment": {"python_version": "3.11"},
}
# `uv pip list --format json` (uv 0.13).
UV_LIST = '[{"name":"aiofiles","version":"25.1.0"},{"name":"opal-server","version":"0.0.0"},' \
          '{"name":"typing_extensions","version":"4.15.0"}]'


def test_what_was_installed_is_read_from_the_reports():
    assert venvs.report_packages(PIP_REPORT) == {"fastapi": "0.125.0", "opal-common": "0.0.0", "aiofiles": "25.1.0"}
    assert venvs.report_packages({"version": "1", "install": []}) == {}
    assert venvs.listed_packages(json.loads(UV_LIST)) == {"aiofiles": "25.1.0", "opal-server": "0.0.0",
                                                           "typing-extensions": "4.15.0"}


def test_a_resolve_is_locked_from_the_report_without_the_opal_packages(tmp_path):
    lock = tmp_path / "locks" / "opal-abc.txt"
    venvs.write_lock_pins(lock, venvs.report_packages(PIP_REPORT), "note")
    assert lock.read_text() == "# note\naiofiles==25.1.0\nfastapi==0.125.0\n"


def test_the_index_releases_are_read_as_json_with_the_english_as_fallback(monkeypatch):
    calls = []

    def answer(stdout, returncode):
        def run(command, **_):
            calls.append(command)
            return subprocess.CompletedProcess(command, returncode, stdout, "")
        return run

    monkeypatch.setattr(venvs.subprocess, "run", answer('{"name": "opal-server", "versions": ["0.9.9", "0.9.6"], '
                                                        '"latest": "0.9.9"}', 0))
    assert venvs.index_releases("opal-server", "(from versions: 0.1.0)") == ["0.9.9", "0.9.6"]
    assert calls[-1][-6:] == ["versions", "--json", "--pre", "--disable-pip-version-check", "--no-input",
                              "opal-server"]
    # pip < 25.1: no --json; what the failed download printed is all there is.
    monkeypatch.setattr(venvs.subprocess, "run", answer("", 2))
    assert venvs.index_releases("opal-server", "(from versions: 0.1.0, 0.9.9)") == ["0.1.0", "0.9.9"]


# uv 0.13 (no terminal) installing with a constraint its requirement excludes, and with one a
# dependency's requirement excludes. Captured verbatim.
UV_DIRECT = """\
Using Python 3.11.7 environment at: uvfail
error: No solution found when resolving dependencies
  cause: Because you require fastapi>=0.109.1,<1 and fastapi==0.99.1, we can conclude that your requirements are unsatisfiable.
"""  # noqa: E501
UV_TRANSITIVE = """\
Using Python 3.11.7 environment at: uvfail
error: No solution found when resolving dependencies
  cause: Because fastapi==0.110.0 depends on starlette>=0.36.3,<0.37.0 and starlette==0.20.0, we can conclude that fastapi==0.110.0 cannot be used.
         And because you require fastapi==0.110.0, we can conclude that your requirements are unsatisfiable.
"""  # noqa: E501
UV_TERMINAL = """\
  × No solution found when resolving dependencies:
  ╰─▶ Because you require fastapi>=0.109.1 and fastapi==0.99.1, we can conclude that your requirements are
      unsatisfiable.
"""


def test_uv_conflicts_are_one_line():
    assert venvs.uv_conflicts(UV_DIRECT) == [
        "Because you require fastapi>=0.109.1,<1 and fastapi==0.99.1, we can conclude that your requirements "
        "are unsatisfiable."]
    assert venvs.uv_conflicts(UV_TRANSITIVE)[0].startswith(
        "Because fastapi==0.110.0 depends on starlette>=0.36.3,<0.37.0 and starlette==0.20.0")
    assert venvs.uv_conflicts(UV_TRANSITIVE)[0].endswith("And because you require fastapi==0.110.0, we can "
                                                         "conclude that your requirements are unsatisfiable.")
    assert venvs.uv_conflicts(UV_TERMINAL) == [
        "Because you require fastapi>=0.109.1 and fastapi==0.99.1, we can conclude that your requirements are "
        "unsatisfiable."]
    assert venvs.uv_conflicts("error: Failed to build `opal-server`\n") == []


def _failing(monkeypatch, output):
    def fake_run(command, stdout, **_):
        stdout.write(output.encode())
        return subprocess.CompletedProcess(command, 1)
    monkeypatch.setattr(venvs.subprocess, "run", fake_run)


def test_a_conflict_with_the_targets_own_requirements_is_named_from_them(tmp_path, monkeypatch):
    pins = tmp_path / "pins.txt"
    pins.write_text("fastapi==0.99.1\n")
    chosen = venvs.Constraints("file", "HARNESS_CONSTRAINTS", path=pins)
    _failing(monkeypatch, UV_DIRECT)
    with pytest.raises(HarnessError) as err:
        venvs._uv_install(venvs.Installer("uv", tmp_path / "uv"), tmp_path, ["-c", str(pins)], tmp_path / "log",
                          chosen, "source:/src/opal", tmp_path, ["fastapi>=0.109.1,<1", "redis<5"])
    message = str(err.value)
    assert message.startswith(f"uv cannot install source:/src/opal with {pins}: the constraint fastapi==0.99.1 "
                              "vs the requirement fastapi>=0.109.1,<1. Choose the pins yourself")
    assert str(tmp_path / "log") in message


def test_a_deeper_conflict_is_named_from_the_installers_output(tmp_path, monkeypatch):
    pins = tmp_path / "pins.txt"
    pins.write_text("starlette==0.20.0\n")
    chosen = venvs.Constraints("file", "HARNESS_CONSTRAINTS", path=pins)
    _failing(monkeypatch, UV_TRANSITIVE)
    with pytest.raises(HarnessError, match="uv cannot install opal-server==0.9.9 with .*Because fastapi==0.110.0 "
                                           "depends on starlette"):
        venvs._uv_install(venvs.Installer("uv", tmp_path / "uv"), tmp_path, [], tmp_path / "log", chosen,
                          "opal-server==0.9.9", tmp_path, ["fastapi==0.110.0"])


def test_trees_with_the_same_requirements_share_their_third_party_layer(tmp_path):
    one = _tree(tmp_path / "one")
    two = _tree(tmp_path / "two", body="x = 2  # another change\n")
    chosen = venvs.choose_constraints(Target(source=one), tmp_path, "auto")
    assert venvs.venv_dir(Target(source=one), tmp_path, chosen) != venvs.venv_dir(Target(source=two), tmp_path, chosen)
    layer = venvs.base_dir(Target(source=one), tmp_path, chosen)
    assert layer == venvs.base_dir(Target(source=two), tmp_path, chosen) and layer.name.startswith("opal-base-")
    requirements = venvs.base_requirements(Target(source=one))
    assert "aiofiles" in requirements and not [r for r in requirements if r.startswith("opal-")]
    assert "permit-broadcaster[postgres,redis,kafka]==0.2.6" in requirements
    other_pins = venvs.choose_constraints(Target(source=one), tmp_path, "none")
    assert venvs.base_dir(Target(source=one), tmp_path, other_pins) != layer
    three = _tree(tmp_path / "three", server_requires=MASTER_SERVER_REQUIRES + "anyio>=4.4.0\n")
    assert venvs.base_dir(Target(source=three), tmp_path, chosen) != layer


def test_a_clone_names_its_own_path_and_leaves_the_layer_alone(tmp_path):
    base = tmp_path / "opal-base-1"
    (base / "bin").mkdir(parents=True)
    site = base / "lib" / "python3.11" / "site-packages" / "fastapi"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text("VERSION = 1\n")
    (base / "bin" / "gunicorn").write_text(f"#!{base}/bin/python\nimport gunicorn\n")
    (base / "bin" / "gunicorn").chmod(0o755)
    (base / "bin" / "activate").write_text(f'VIRTUAL_ENV="{base}"\n')
    (base / "bin" / "python").symlink_to("/usr/bin/python3")
    (base / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = false\n")
    for name in venvs.BUILD_FILES:
        (base / name).write_text("the layer's own\n")
    dest = tmp_path / "opal-source-1"
    venvs.clone_venv(base, dest)
    assert (dest / "bin" / "gunicorn").read_text() == f"#!{dest}/bin/python\nimport gunicorn\n"
    assert os.access(dest / "bin" / "gunicorn", os.X_OK)
    assert (dest / "bin" / "activate").read_text() == f'VIRTUAL_ENV="{dest}"\n'
    assert os.readlink(dest / "bin" / "python") == "/usr/bin/python3"
    assert not [name for name in venvs.BUILD_FILES if (dest / name).exists()]
    # The layer is as it was; its packages are shared, not copied.
    assert (base / "bin" / "gunicorn").read_text() == f"#!{base}/bin/python\nimport gunicorn\n"
    assert all((base / name).read_text() == "the layer's own\n" for name in venvs.BUILD_FILES)
    copied = dest / "lib" / "python3.11" / "site-packages" / "fastapi" / "__init__.py"
    assert copied.read_text() == "VERSION = 1\n" and copied.stat().st_ino == (site / "__init__.py").stat().st_ino


def _fake_steps(monkeypatch, tmp_path, check_ok):
    steps = []

    def ensure_base(target, cache_dir, constraints, installer):
        layer = tmp_path / "venvs" / "opal-base-x"
        layer.mkdir(parents=True, exist_ok=True)
        venvs._record(layer, installer, {"fastapi": "0.125.0", "aiofiles": "25.1.0"})
        return layer

    def install(installer, path, args, constraints, label, cache_dir, requirements):
        steps.append(args)
        return {"opal-common": "0.0.0", "opal-server": "0.0.0"}

    monkeypatch.setattr(venvs, "ensure_base_venv", ensure_base)
    monkeypatch.setattr(venvs, "clone_venv", lambda base, dest: dest.mkdir(parents=True))
    monkeypatch.setattr(venvs, "_install", install)
    monkeypatch.setattr(venvs, "_check", lambda *a: check_ok)
    return steps


@pytest.mark.parametrize("installer", [venvs.Installer("uv", venvs.Path("/bin/uv")), venvs.Installer("pip")])
def test_a_tree_installs_only_its_own_packages_on_its_layer(tmp_path, monkeypatch, installer):
    tree = _tree(tmp_path / "src")
    steps = _fake_steps(monkeypatch, tmp_path, check_ok=True)
    chosen = venvs.choose_constraints(Target(source=tree), tmp_path, "auto")
    path = tmp_path / "venvs" / "opal-source-y"
    venvs._build_tree(path, Target(source=tree), chosen, installer, tmp_path)
    [args] = steps
    assert args[:2] == ["-c", str(path / "constraints.txt")] and args[-1] == "--no-deps"
    assert args[2:4] == [str(tree / "packages" / "opal-common"), str(tree / "packages" / "opal-server")]
    # uv would install an earlier build of an edited tree without this.
    assert ("--reinstall-package=opal-server" in args) == (installer.name == "uv")
    assert venvs.read_resolved(path)["opal-server"] == "0.0.0"


def test_a_tree_needing_more_than_its_layer_installs_its_dependencies(tmp_path, monkeypatch):
    tree = _tree(tmp_path / "src")
    steps = _fake_steps(monkeypatch, tmp_path, check_ok=False)
    chosen = venvs.choose_constraints(Target(source=tree), tmp_path, "auto")
    venvs._build_tree(tmp_path / "venvs" / "opal-source-y", Target(source=tree), chosen, venvs.Installer("pip"),
                      tmp_path)
    assert [args[-1] for args in steps] == ["--no-deps", str(tree / "packages" / "opal-server")]
