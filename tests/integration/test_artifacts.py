"""The harness installed the way a server's own CI installs it: sdist -> wheel (built from the
sdist) -> ONE fresh virtualenv with `opal-server==0.9.9` beside it, then the packaged pytest
suite and `harness gates` run from an empty directory with that venv's programs, on the local
backend and on a compose stack (its image inputs digest the same from the wheel's bundle as
from this checkout, so the engine's images are reused, not rebuilt).

opal-server 0.9.9 requires redis<5: the install resolving at all is the first check (it was
ResolutionImpossible while the harness required redis>=5). The install uses the release's
committed pin set as constraints (stacks/constraints/opal-server-0.9.9.txt) and pip's cache,
so it is repeatable and takes about a minute once the cache is warm. Real stacks (local backend).
See tests/integration/test_adoption.py for the same routes from a wheel installed alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import PROJECT_ROOT, images
from tests.integration.compose_support import labelled_resources, require_compose
from tests.integration.test_adoption import _env, _report, _run, _testcases
from tests.unit.test_packaging import build_artefacts

pytestmark = pytest.mark.integration
# For `make test`'s ordering (tests/conftest.py): build + install (~65 s warm), two leak runs
# on the local backend (~20 s each), one on compose (~80 s).
EXPECTED_COST_S = 200
RELEASE = "0.9.9"
# Each image the public set builds here -> the digest of its inputs (Dockerfile, .dockerignore,
# copied files, build arguments) as harness.images computes it for its reuse label.
IMAGE_DIGESTS = (
    "import json\n"
    "from harness import PROJECT_ROOT, images\n"
    "print(json.dumps({ref: images.inputs_digest([dockerfile, PROJECT_ROOT / '.dockerignore', *inputs],\n"
    "                                            {f'arg {k}': v for k, v in args.items()})\n"
    "                  for ref, dockerfile, args, inputs in images.public_plan()}))\n"
)


@pytest.fixture(scope="module")
def beside_server(tmp_path_factory) -> SimpleNamespace:
    """sdist -> wheel -> one fresh venv holding the harness and opal-server 0.9.9."""
    pytest.importorskip("build", reason="the build frontend: pip install -e '.[test]'")
    work = tmp_path_factory.mktemp("beside-server")
    started = time.monotonic()
    built = build_artefacts(work)
    build_s = time.monotonic() - started
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    started = time.monotonic()
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
         "-c", str(PROJECT_ROOT / "stacks" / "constraints" / f"opal-server-{RELEASE}.txt"),
         str(built.wheel), f"opal-server=={RELEASE}"],
        capture_output=True, text=True, timeout=1200)
    install_s = time.monotonic() - started
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-3000:]
    print(f"\n[artefacts] sdist + wheels built in {build_s:.1f} s; wheel + opal-server=={RELEASE} "
          f"installed in {install_s:.1f} s")
    return SimpleNamespace(venv=venv, wheel=built.wheel, build_s=build_s, install_s=install_s)


def _versions(venv: Path) -> dict[str, str]:
    listed = subprocess.run([str(venv / "bin" / "pip"), "list", "--format", "json", "--disable-pip-version-check"],
                            capture_output=True, text=True, timeout=120, check=True)
    return {p["name"].lower(): p["version"] for p in json.loads(listed.stdout)}


def test_the_harness_and_the_server_share_one_venv(beside_server, tmp_path):
    venv = beside_server.venv
    versions = _versions(venv)
    assert versions["opal-server"] == RELEASE and versions["policy-harness"]
    assert versions["redis"].split(".")[0] == "4", versions["redis"]  # opal-server: redis<5
    check = subprocess.run([str(venv / "bin" / "pip"), "check", "--disable-pip-version-check"],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    both = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import opal_server, harness.redisdb, harness.gates.suite, harness;"
                           "print(harness.PROJECT_ROOT)"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert both.returncode == 0, both.stderr
    assert both.stdout.strip().endswith("site-packages/harness/_bundled")
    version = subprocess.run([str(venv / "bin" / "harness"), "--version"], capture_output=True, text=True,
                             timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == f"harness {versions['policy-harness']}"


def test_the_pytest_route_runs_from_the_servers_venv(beside_server, tmp_path, harness_settings):
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    reports = tmp_path / "reports"
    env = _env(tmp_path, harness_settings, OPAL_VERSION=RELEASE, HARNESS_REPORTS_DIR=str(reports))
    suite = _run([str(beside_server.venv / "bin" / "pytest"), "--pyargs", "harness.gates.suite", "-m", "leak",
                  "--strict-markers", "-p", "no:cacheprovider", "--junitxml", "pytest.xml"], empty, env, timeout=900)
    assert suite.returncode == 0, suite.stdout[-3000:] + suite.stderr[-2000:]
    [(name, props)] = _testcases(empty / "pytest.xml").items()
    assert name == "test_gate[leak]" and props["verdict"] == "pass", props
    report = _report((reports / "latest").resolve())
    assert report["server_version"] == RELEASE
    assert not list(empty.glob("*.py")), "nothing was copied into the directory"


def test_harness_gates_runs_from_the_sdist_built_wheel(beside_server, tmp_path, harness_settings):
    reports = tmp_path / "reports"
    env = _env(tmp_path, harness_settings, OPAL_VERSION=RELEASE, HARNESS_REPORTS_DIR=str(reports))
    done = _run([str(beside_server.venv / "bin" / "harness"), "gates", "--gate", "leak", "--backend", "local"],
                tmp_path, env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    [gate] = _report((reports / "latest").resolve())["gates"]
    assert (gate["id"], gate["verdict"]) == ("leak", "pass")


def test_image_inputs_digest_the_same_from_the_wheel_as_from_the_checkout(beside_server, tmp_path):
    from_wheel = subprocess.run([str(beside_server.venv / "bin" / "python"), "-c", IMAGE_DIGESTS], cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)
    assert from_wheel.returncode == 0, from_wheel.stderr
    from_checkout = {ref: images.inputs_digest([dockerfile, PROJECT_ROOT / ".dockerignore", *inputs],
                                               {f"arg {k}": v for k, v in args.items()})
                     for ref, dockerfile, args, inputs in images.public_plan()}
    assert json.loads(from_wheel.stdout) == from_checkout


@pytest.mark.compose
def test_a_compose_stack_runs_a_gate_from_the_installed_wheel(beside_server, tmp_path, harness_settings):
    """`harness gates --backend compose` brings its stack up and down itself. (Not `up --detach`
    then `harness down`: on a loaded machine `down` races the owner's own teardown once the
    owner takes longer than its 30 s grace, and the engine answers 404/409; seen twice here.)"""
    require_compose([RELEASE])
    reports = tmp_path / "reports"
    env = _env(tmp_path, harness_settings, OPAL_VERSION=RELEASE, HARNESS_REPORTS_DIR=str(reports))
    env["BACKEND"] = "compose"
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    done = _run([str(beside_server.venv / "bin" / "harness"), "gates", "--gate", "leak", "--backend", "compose"],
                empty, env, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = _report((reports / "latest").resolve())
    assert report["backend"] == "compose" and report["server_version"] == RELEASE
    [gate] = report["gates"]
    assert (gate["id"], gate["verdict"]) == ("leak", "pass")
    assert labelled_resources(report["run_id"]) == []
    assert not list(empty.iterdir()), "nothing was written into the directory"
