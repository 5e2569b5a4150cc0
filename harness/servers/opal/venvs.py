"""Per-target virtualenvs for the server, cached and keyed by what goes into them.

The server's dependencies (pydantic<2, starlette, ...) never enter the harness's own
environment: each target gets a virtualenv under <cache_dir>/venvs, keyed by the
constraints it was installed with, the Python version and, for a source tree, the tree's
content (packages/ and the root README.md its setup.py files read).

Which pins (decisions):

- A release with a committed pin set (stacks/constraints/opal-server-<v>.txt) installs with
  its own set: it *is* that release's resolved environment.
- Any other target is judged by its own requirements, never by its version: OPAL's
  repository keeps `VERSION = (0, 0, 0)` as a placeholder, so a checkout's version says
  nothing. A source tree's requirements are packages/requires.txt plus
  packages/opal-{common,server}/requires.txt; another release's are the Requires-Dist of its
  two wheels (downloaded once into <cache_dir>/wheels). The newest committed set that
  "fits" is used: no pinned version contradicts a requirement (opal-* requirements are
  ignored: the tree or the release provides those packages).
- When no committed set fits, pip resolves unpinned once (a few minutes) and the result is
  frozen into <cache_dir>/locks/opal-<digest of the requirements>.txt; later builds and the
  compose source image reuse that lock. The venv key of such a target is the requirements
  digest, so it is the same before and after the lock exists.
- HARNESS_CONSTRAINTS=<file>|none overrides the choice (validated by harness.config).
- opal-* pins are always dropped from the constraints: the target provides those
  packages (a checkout is opal-common==0.0.0, which no pin set names).

A checkout is installed "as it is": both packages from the tree in place in one installer
command (opal-server's setup.py requires opal-common==<its own placeholder version>), so they
are built from the tree and their setup.py read ../__packaging__.py and ../../README.md.

How (decisions):

- The installer is uv where present (the `uv` package the harness depends on ships it; one on
  PATH does too), pip otherwise; HARNESS_INSTALLER=auto|uv|pip. A log line says which.
- A tree installs on its third-party layer: a venv of the tree's requirements (opal-* left out)
  plus aiofiles under the chosen pins, keyed by those requirements, the pins and the Python
  (venvs/opal-base-<key>) and built once; the tree's venv (same key as ever: its content and the
  pins) is a hard-linked clone of it plus the tree's two packages (--no-deps, then pip/uv check;
  with their dependencies again should the check fail). A code edit reinstalls two packages.
- What an install put in a venv is read from machine-readable reports (pip's --report JSON,
  `uv pip list --format json`), kept as <venv>/resolved.json, and a resolve is locked from it.
  The index's releases come from `pip index versions --json`. Only a failed resolution has no
  structured report in either installer: its conflict is named from the target's requirements
  against the pins where they clash, and read from the installer's output otherwise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

from filelock import FileLock
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from harness import STACKS_DIR
from harness.config import (
    CONSTRAINTS_AUTO,
    CONSTRAINTS_NONE,
    CONSTRAINTS_VAR,
    INSTALLER_VAR,
    Target,
    constraints_setting,
    installer_setting,
)
from harness.errors import HarnessError
from harness.servers.opal.recipe import VERSION_READER

log = logging.getLogger(__name__)

# Neither the 0.9.6 nor the 0.9.9 wheel declares aiofiles, yet opal_server.git_fetcher
# imports it: without it every worker dies with ModuleNotFoundError.
UNDECLARED_DEPENDENCIES = ("aiofiles",)
COMPLETE_MARKER = ".harness-complete"
PIP_TIMEOUT_S = 1200
OPAL_DISTS = ("opal-common", "opal-server")
# The requirement files of a checkout, relative to its root (a missing one counts as empty).
SOURCE_REQUIRES = ("packages/requires.txt", "packages/opal-common/requires.txt",
                   "packages/opal-server/requires.txt")



@dataclass(frozen=True)
class ServerVenv:
    path: Path
    target: Target

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def installed_version(self) -> str:
        out = subprocess.run(
            [str(self.python), "-c", VERSION_READER],
            capture_output=True, text=True, timeout=60, check=True,
        )
        return out.stdout.strip()


def constraints_file(version: str) -> Path:
    return STACKS_DIR / "constraints" / f"opal-server-{version}.txt"


def content_digest(*parts: bytes) -> str:
    sha = hashlib.sha256()
    for part in parts:
        sha.update(part)
        sha.update(b"\0")
    return sha.hexdigest()[:12]


def _python_tag() -> str:
    return f"py{sys.version_info.major}{sys.version_info.minor}"


# --- source trees --------------------------------------------------------------------------

def source_tree_files(tree: Path) -> list[Path]:
    """What makes the server in a checkout: the files of packages/ (caches, builds and
    egg-info left out) and the root README.md, which each setup.py reads."""
    files = [tree / "README.md"] if (tree / "README.md").is_file() else []
    for path in sorted((tree / "packages").rglob("*")):
        if not path.is_file() or {"__pycache__", "build", ".eggs"} & set(path.parts):
            continue
        if path.suffix == ".pyc" or ".egg-info" in str(path):
            continue
        files.append(path)
    return files


def source_tree_digest(tree: Path) -> str:
    """Content hash of the files source_tree_files() names."""
    sha = hashlib.sha256()
    for path in source_tree_files(tree):
        sha.update(str(path.relative_to(tree)).encode() + b"\0" + path.read_bytes() + b"\0")
    return sha.hexdigest()[:12]


# --- requirements --------------------------------------------------------------------------

def requirement_lines(text: str) -> list[str]:
    """Requirement lines of a requires.txt: comments, blank lines and trailing ` # notes`
    dropped (as __packaging__.get_install_requires skips comment lines)."""
    lines = []
    for line in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            lines.append(line)
    return lines


def source_requirements(tree: Path) -> list[str]:
    """The checkout's requirements: shared packages/requires.txt plus each package's own."""
    lines: list[str] = []
    for rel in SOURCE_REQUIRES:
        path = tree / rel
        if path.is_file():
            lines += requirement_lines(path.read_text())
    return lines


def metadata_requirements(metadata: str) -> list[str]:
    """Requires-Dist of a wheel's METADATA, in order."""
    headers = HeaderParser().parsestr(metadata)
    return [value.strip() for value in headers.get_all("Requires-Dist") or []]


def wheel_requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        if len(names) != 1:
            raise HarnessError(f"{wheel} has {len(names)} METADATA files; delete it to download it again")
        return metadata_requirements(archive.read(names[0]).decode("utf-8", errors="replace"))


def index_versions(pip_output: str) -> list[str]:
    """The versions pip's "(from versions: ...)" lists, as printed (oldest first).

    The fallback of index_releases() for a pip without `pip index versions --json` (older
    than 25.1): pip gives the list in English only then."""
    match = re.search(r"\(from versions: ([^)]*)\)", pip_output)
    if not match or match.group(1).strip() == "none":
        return []
    return [v.strip() for v in match.group(1).split(",") if v.strip()]


def index_releases(dist: str, pip_output: str = "") -> list[str]:
    """Every version of `dist` on the package index pip is configured with, pre-releases
    included: `pip index versions --json --pre` (a JSON document, pip >= 25.1); with an older
    pip, what its English `pip_output` lists (index_versions)."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", "--json", "--pre", "--disable-pip-version-check",
         "--no-input", dist], capture_output=True, text=True, timeout=300, check=False)
    if result.returncode == 0:
        try:
            listed = json.loads(result.stdout)
        except ValueError:
            listed = None
        if isinstance(listed, dict) and isinstance(listed.get("versions"), list):
            return [str(v) for v in listed["versions"]]
    return index_versions(pip_output)


def unknown_release_message(version: str, available: list[str]) -> str:
    releases: list[Version] = []
    previews: list[Version] = []
    for raw in available:
        try:
            parsed = Version(raw)
        except InvalidVersion:
            continue
        (previews if parsed.is_prerelease or parsed.is_devrelease else releases).append(parsed)
    releases.sort(reverse=True)
    previews.sort(reverse=True)
    shown = 20  # the newest; old release lines are rarely what was meant
    listed = ", ".join(map(str, releases[:shown])) or "none"
    if len(releases) > shown:
        listed += f" and {len(releases) - shown} older"
    message = f"OPAL_VERSION={version} is not on the package index; releases there, newest first: {listed}"
    if previews:
        message += f" (pre-releases: {', '.join(map(str, previews[:6]))}{', ...' if len(previews) > 6 else ''})"
    return message + ". Set OPAL_VERSION to one of those releases."


def release_wheels(version: str, cache_dir: Path) -> dict[str, Path]:
    """{dist: wheel} of opal-common and opal-server `version`, downloaded once into
    <cache_dir>/wheels (--no-deps: only their metadata is read)."""
    wheels_dir = cache_dir / "wheels"

    def found() -> dict[str, Path]:
        hits = {dist: sorted(wheels_dir.glob(f"{dist.replace('-', '_')}-{version}-*.whl")) for dist in OPAL_DISTS}
        return {dist: paths[0] for dist, paths in hits.items() if paths}

    wheels = found()
    if len(wheels) == len(OPAL_DISTS):
        return wheels
    wheels_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input", "--no-deps",
         "--only-binary=:all:", "-d", str(wheels_dir), *(f"{dist}=={version}" for dist in OPAL_DISTS)],
        capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        output = result.stdout + result.stderr
        if "Could not find a version that satisfies the requirement" in output:
            # Which failure it was is in pip's English only (pip download has no --report on
            # failure); what the index has is read as JSON (index_releases).
            raise HarnessError(unknown_release_message(version, index_releases("opal-server", output)))
        tail = "\n".join(output.splitlines()[-8:])
        raise HarnessError(f"downloading the opal {version} wheels failed (is the package index reachable?):\n{tail}")
    wheels = found()
    if len(wheels) != len(OPAL_DISTS):
        raise HarnessError(f"pip downloaded no wheel of opal {version} into {wheels_dir}; "
                           "the index may carry only source distributions of it")
    return wheels


def release_requirements(version: str, cache_dir: Path) -> list[str]:
    """Requires-Dist of the opal-server and opal-common wheels of `version`."""
    wheels = release_wheels(version, cache_dir)
    return [line for dist in OPAL_DISTS for line in wheel_requirements(wheels[dist])]


def target_requirements(target: Target, cache_dir: Path) -> list[str]:
    if target.source is not None:
        return source_requirements(target.source)
    return release_requirements(target.version, cache_dir)


def requirements_digest(requirements: Iterable[str]) -> str:
    """Names the lock of a requirement set (order-insensitive; per Python version, because
    a resolved set is only valid for the Python it was resolved on)."""
    text = "\n".join(sorted(set(requirements)))
    return content_digest(text.encode(), _python_tag().encode())


# --- pin sets ------------------------------------------------------------------------------

def is_opal(name: str) -> bool:
    return canonicalize_name(name).startswith("opal-")


def read_pins(text: str) -> dict[str, str]:
    """{canonical name: version} of the `name==version` lines of a constraints file."""
    pins = {}
    for line in requirement_lines(text):
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        specs = list(requirement.specifier)
        if len(specs) == 1 and specs[0].operator in ("==", "==="):
            pins[str(canonicalize_name(requirement.name))] = specs[0].version
    return pins


def without_opal(text: str) -> str:
    """A constraints text minus the opal-* lines (the target provides those packages)."""
    kept = []
    for line in text.splitlines():
        name = re.split(r"[\s=<>!~;\[@]", line.strip(), maxsplit=1)[0]
        if line.strip() and not line.lstrip().startswith("#") and is_opal(name):
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


def pin_conflicts(pins: Mapping[str, str], requirements: Iterable[str]) -> list[str]:
    """"pin vs requirement" for each applicable requirement a pinned version contradicts.

    Markers are evaluated for this Python with no extra selected; unparsable lines are
    left to pip."""
    conflicts = []
    for line in requirements:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        name = canonicalize_name(requirement.name)
        if is_opal(name) or name not in pins:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        try:
            fits = requirement.specifier.contains(Version(pins[name]), prereleases=True)
        except InvalidVersion:
            continue
        if not fits:
            conflicts.append(f"{name}=={pins[name]} vs {line}")
    return conflicts


@dataclass(frozen=True)
class PinSet:
    """A committed pin set: the resolved environment of one release."""

    release: str
    path: Path

    def pins(self) -> dict[str, str]:
        return read_pins(self.path.read_text())


def committed_pin_sets() -> list[PinSet]:
    """Every stacks/constraints/opal-server-<release>.txt, newest release first."""
    sets = []
    for path in (STACKS_DIR / "constraints").glob("opal-server-*.txt"):
        release = path.name.removeprefix("opal-server-").removesuffix(".txt")
        try:
            Version(release)
        except InvalidVersion:
            continue
        sets.append(PinSet(release, path))
    return sorted(sets, key=lambda s: Version(s.release), reverse=True)


def choose_pin_set(requirements: list[str], pin_sets: list[PinSet]) -> tuple[PinSet | None, list[str]]:
    """(the newest set that fits or None, why each newer set was passed over)."""
    passed_over: list[str] = []
    for pin_set in pin_sets:
        conflicts = pin_conflicts(pin_set.pins(), requirements)
        if not conflicts:
            return pin_set, passed_over
        more = f" (+{len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        passed_over.append(f"pins of {pin_set.release} do not fit: {conflicts[0]}{more}")
    return None, passed_over


@dataclass(frozen=True)
class Constraints:
    """What pip gets with -c for one install, and why.

    kind: committed (a file under stacks/constraints), lock (resolved once earlier),
    resolve (no set fits and no lock yet: install unpinned, then freeze into `lock`),
    file (HARNESS_CONSTRAINTS=<file>), none (HARNESS_CONSTRAINTS=none).
    """

    kind: str
    reason: str
    path: Path | None = None  # the pin file used (committed, lock, file)
    lock: Path | None = None  # lock / resolve: the lock file of these requirements
    requirements_key: str = ""  # lock / resolve: the digest naming that lock

    def text(self) -> str:
        """The constraints pip gets, opal-* pins dropped; empty when unpinned."""
        if self.path is None:
            return ""
        return without_opal(self.path.read_text())

    def key(self) -> bytes:
        """What a venv or image built with these constraints is keyed by."""
        if self.kind in ("lock", "resolve"):
            return f"lock:{self.requirements_key}".encode()
        if self.path is None:
            return b"unpinned"
        # The file as it is: a committed release keeps the key its venvs always had.
        return self.path.read_bytes()

    @property
    def pinned(self) -> bool:
        return self.path is not None


def lock_file(cache_dir: Path, key: str) -> Path:
    return cache_dir / "locks" / f"opal-{key}.txt"


def choose_constraints(target: Target, cache_dir: Path, setting: str | None = None) -> Constraints:
    """The constraints for `target`. `setting` is HARNESS_CONSTRAINTS as harness.config
    validates it ("auto", "none" or a file); None reads it from the environment."""
    setting = constraints_setting() if setting is None else setting
    if setting == CONSTRAINTS_NONE:
        return Constraints("none", f"{CONSTRAINTS_VAR}=none: unpinned, pip resolves (a few minutes)")
    if setting != CONSTRAINTS_AUTO:
        return Constraints("file", f"{CONSTRAINTS_VAR}={setting}", path=Path(setting))
    if target.source is None and constraints_file(target.version).is_file():
        return Constraints("committed", f"pins of {target.version} (its own committed set)",
                           path=constraints_file(target.version))
    requirements = target_requirements(target, cache_dir)
    chosen, passed_over = choose_pin_set(requirements, committed_pin_sets())
    why = "; ".join(passed_over)
    if chosen is not None and not requirements:
        return Constraints("committed", f"no requirements found for {target.label} "
                                        "(requires.txt files missing or empty); "
                           f"using the newest pins, {chosen.release}'s", path=chosen.path)
    if chosen is not None:
        reason = f"{why}; using {chosen.release}'s" if why else f"pins of {chosen.release} (the newest that fit)"
        return Constraints("committed", reason, path=chosen.path)
    key = requirements_digest(requirements)
    lock = lock_file(cache_dir, key)
    if lock.is_file():
        return Constraints("lock", f"{why or 'no committed pin set'}; using the set resolved once earlier: {lock}",
                           path=lock, lock=lock, requirements_key=key)
    return Constraints("resolve", f"{why or 'no committed pin set'}; no committed set fits, so pip resolves "
                       f"unpinned once (a few minutes) and keeps the result as {lock}",
                       lock=lock, requirements_key=key)


def venv_dir(target: Target, cache_dir: Path, constraints: Constraints | None = None) -> Path:
    constraints = constraints or choose_constraints(target, cache_dir)
    py = _python_tag().encode()
    if target.source is not None:
        key = content_digest(source_tree_digest(target.source).encode(), constraints.key(), py)
        return cache_dir / "venvs" / f"opal-source-{key}"
    return cache_dir / "venvs" / f"opal-server-{target.version}-{content_digest(constraints.key(), py)}"


# --- installing ----------------------------------------------------------------------------

def pip_conflicts(log: str, pins: Mapping[str, str] | None = None) -> list[str]:
    """The conflicting requirements pip names in a failed install's output (pip writes no
    report of a failed resolution: its --report is written on success only).

    pip words it two ways: "The conflict is caused by:" followed by indented lines (two
    requirements that exclude each other), or "Could not find a version that satisfies the
    requirement X (from P)" (when a constraint leaves X no candidate; `pins` then names the
    constraint)."""
    found: list[str] = []
    cannot_install: list[str] = []  # named only when pip gave no detail
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "The conflict is caused by:":
            for follow in lines[i + 1:]:
                if not follow.startswith((" ", "\t")) or not follow.strip():
                    break
                found.append(follow.strip())
        cannot = re.search(r"Cannot install (.+?) because these package versions have conflicting", line)
        if cannot:
            cannot_install.append(cannot.group(1))
        match = re.search(r"Could not find a version that satisfies the requirement (\S+)"
                          r"( \(from (?!versions:)[^)]*\))?", line)
        if match:
            wanted = match.group(1) + (match.group(2) or "")
            try:
                name: str = canonicalize_name(Requirement(match.group(1)).name)
            except InvalidRequirement:
                name = ""
            if pins and name in pins:
                wanted += f" vs the constraint {name}=={pins[name]}"
            found.append(wanted)
    if not found:
        found = [f"cannot install {what}" for what in cannot_install]
    return list(dict.fromkeys(found))


def uv_conflicts(log: str) -> list[str]:
    """The conflict uv names in a failed install's output: the explanation under its "No
    solution found" line (`cause: Because ...`, or `╰─▶ Because ...` on a terminal), joined
    into one line."""
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if "No solution found when resolving dependencies" not in line:
            continue
        explanation: list[str] = []
        for follow in lines[i + 1:]:
            text = follow.strip().lstrip("╰─▶│ ").strip()
            text = text.removeprefix("cause:").strip()
            if not text:
                if explanation:
                    break
                continue
            if text.startswith(("hint:", "help:", "error:")):
                break
            explanation.append(text)
        if explanation:
            return [" ".join(explanation)]
    return []


# --- the installer: uv where present, pip otherwise -------------------------------------------

RESOLVED_FILE = "resolved.json"  # per venv: the installer and {name: version} of what it holds


def find_uv() -> Path | None:
    """uv's binary: the one the `uv` package ships (a dependency of the harness), else one on PATH."""
    try:
        import uv  # type: ignore[import-not-found,import-untyped,unused-ignore]

        return Path(uv.find_uv_bin())
    except (ImportError, FileNotFoundError, AttributeError):
        found = shutil.which("uv")
        return Path(found) if found else None


@dataclass(frozen=True)
class Installer:
    """What installs the server's venvs: `uv` (with its binary) or `pip` (the venv's own)."""

    name: str
    uv: Path | None = None
    why: str = ""

    def env(self, cache_dir: Path) -> dict[str, str]:
        """The environment of an installer run. uv keeps its cache under the harness's cache
        (<cache_dir>/uv, unless UV_CACHE_DIR says otherwise): on the venvs' filesystem, so it
        hard-links into them, and an empty harness cache is a cold uv. uv does not read pip's
        configuration: PIP_INDEX_URL and PIP_CERT are handed on when uv's own are unset."""
        env = dict(os.environ)
        if self.name == "uv":
            env.setdefault("UV_CACHE_DIR", str(cache_dir / "uv"))
            env.setdefault("UV_PYTHON_DOWNLOADS", "never")
            if env.get("PIP_INDEX_URL") and not (env.get("UV_INDEX_URL") or env.get("UV_DEFAULT_INDEX")):
                env["UV_INDEX_URL"] = env["PIP_INDEX_URL"]
            if env.get("PIP_CERT") and not env.get("SSL_CERT_FILE"):
                env["SSL_CERT_FILE"] = env["PIP_CERT"]
        return env

    def describe(self) -> str:
        return f"uv ({self.uv})" if self.name == "uv" else f"pip ({self.why})" if self.why else "pip"


def choose_installer(setting: str | None = None) -> Installer:
    """uv when it is found (HARNESS_INSTALLER=auto, the default), pip otherwise;
    HARNESS_INSTALLER=uv insists on uv, =pip keeps to pip."""
    chosen = installer_setting({INSTALLER_VAR: setting} if setting is not None else None)
    if chosen == "pip":
        return Installer("pip", why=f"{INSTALLER_VAR}=pip")
    uv = find_uv()
    if uv is not None:
        return Installer("uv", uv)
    if chosen == "uv":
        raise HarnessError(f"{INSTALLER_VAR}=uv but no uv was found: `pip install uv` into the harness's "
                           "environment (it is one of its dependencies) or put uv on PATH")
    return Installer("pip", why="uv not found: `pip install uv` makes server installs several times faster")


def _run_logged(command: list[str], log_path: Path, env: Mapping[str, str] | None = None,
                timeout: float = PIP_TIMEOUT_S) -> int:
    with open(log_path, "ab") as out:
        out.write(("$ " + " ".join(command) + "\n").encode())
        out.flush()
        return subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False,
                              env=dict(env) if env is not None else None).returncode


def _install_failed(installer: str, text: str, log_path: Path, args: list[str], constraints: Constraints,
                    label: str, requirements: Iterable[str]) -> HarnessError:
    """One error naming the conflict, the switch and the log."""
    pins = read_pins(constraints.text()) if constraints.pinned else {}
    # Structured first: the target's own requirements (its requires.txt files or its wheels'
    # Requires-Dist) against the pins.
    conflicts = pin_conflicts(pins, requirements) if pins else []
    if conflicts:
        conflicts = [f"the constraint {c.replace(' vs ', ' vs the requirement ', 1)}" for c in conflicts]
    else:
        # A conflict deeper down (between two dependencies' own requirements) is only in the
        # installer's English: neither pip (its --report is written on success only) nor uv
        # reports a failed resolution in a machine-readable form.
        conflicts = pip_conflicts(text, pins) if installer == "pip" else uv_conflicts(text)
    if conflicts:
        used = f"with {constraints.path}" if constraints.pinned else "unpinned"
        return HarnessError(
            f"{installer} cannot install {label} {used}: " + "; ".join(conflicts)
            + f". Choose the pins yourself: {CONSTRAINTS_VAR}=none (resolve unpinned) or "
            f"{CONSTRAINTS_VAR}=<file> (a pip constraints file). Full log: {log_path}")
    tail = "\n".join(text.splitlines()[-12:])
    return HarnessError(f"{installer} install failed ({' '.join(args)}); full log: {log_path}\n{tail}")


def _pip_install(venv: Path, args: list[str], log_path: Path, constraints: Constraints, label: str,
                 requirements: Iterable[str] = (), report: Path | None = None) -> None:
    """`pip install args` with the venv's own pip; `report`: pip's installation report (JSON)."""
    command = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
               *(["--report", str(report)] if report is not None else []), *args]
    if _run_logged(command, log_path) == 0:
        return
    raise _install_failed("pip", log_path.read_text(errors="replace"), log_path, args, constraints, label,
                          requirements)


def _uv_install(installer: Installer, venv: Path, args: list[str], log_path: Path, constraints: Constraints,
                label: str, cache_dir: Path, requirements: Iterable[str] = ()) -> None:
    assert installer.uv is not None
    # --compile-bytecode: as pip does, so a server's first boot (which boot gates time) does
    # not compile its modules first.
    command = [str(installer.uv), "pip", "install", "--compile-bytecode", "--python", str(venv / "bin" / "python"),
               *args]
    if _run_logged(command, log_path, installer.env(cache_dir)) == 0:
        return
    raise _install_failed("uv", log_path.read_text(errors="replace"), log_path, args, constraints, label,
                          requirements)


def report_packages(report: Mapping) -> dict[str, str]:
    """{name: version} of what a pip installation report (`pip install --report`, format 1)
    says was installed (the opal-* ones included)."""
    packages = {}
    for item in report.get("install") or []:
        metadata = item.get("metadata") or {}
        if metadata.get("name") and metadata.get("version"):
            packages[str(canonicalize_name(metadata["name"]))] = str(metadata["version"])
    return packages


def listed_packages(listing: Iterable[Mapping]) -> dict[str, str]:
    """{name: version} of `uv pip list --format json` (or pip's)."""
    return {str(canonicalize_name(row["name"])): str(row["version"]) for row in listing
            if row.get("name") and row.get("version")}


def _installed(installer: Installer, venv: Path, cache_dir: Path, report: Path | None) -> dict[str, str]:
    """What the last install step put in `venv`, read from a machine-readable report: pip's
    installation report, or uv's JSON listing of the venv."""
    if installer.name == "pip":
        if report is None or not report.is_file():
            return {}
        return report_packages(json.loads(report.read_text()))
    assert installer.uv is not None
    listing = subprocess.run([str(installer.uv), "pip", "list", "--format", "json", "--python",
                              str(venv / "bin" / "python")], capture_output=True, text=True, timeout=120,
                             check=True, env=installer.env(cache_dir)).stdout
    return listed_packages(json.loads(listing))


def read_resolved(venv: Path) -> dict[str, str]:
    path = venv / RESOLVED_FILE
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text()).get("packages") or {})


def _record(venv: Path, installer: Installer, packages: Mapping[str, str]) -> None:
    (venv / RESOLVED_FILE).write_text(json.dumps({"installer": installer.name,
                                                  "packages": dict(sorted(packages.items()))}, indent=1) + "\n")


def install_specs(target: Target) -> list[str]:
    """What pip installs: the release, or both packages of the tree in place."""
    if target.source is not None:
        packages = target.source / "packages"
        return [str(packages / "opal-common"), str(packages / "opal-server"), *UNDECLARED_DEPENDENCIES]
    return [f"opal-server=={target.version}", *UNDECLARED_DEPENDENCIES]


def base_requirements(target: Target) -> list[str]:
    """The third-party layer of a tree: its requirements minus the opal-* ones (the tree
    provides those), plus what OPAL imports without declaring."""
    assert target.source is not None
    third_party = []
    for line in source_requirements(target.source):
        try:
            if is_opal(Requirement(line).name):
                continue
        except InvalidRequirement:
            pass
        third_party.append(line)
    return [*dict.fromkeys(third_party), *UNDECLARED_DEPENDENCIES]


def base_dir(target: Target, cache_dir: Path, constraints: Constraints) -> Path:
    """The venv of a tree's third-party layer, keyed by those requirements, the pins and the
    Python: every tree (and every edit of a tree) with the same requirements shares it."""
    text = "\n".join(sorted(set(base_requirements(target))))
    return cache_dir / "venvs" / f"opal-base-{content_digest(text.encode(), constraints.key(), _python_tag().encode())}"


def write_lock(python: Path, lock: Path, note: str) -> None:
    """pip freeze of a resolved venv into `lock` (a venv built before resolved.json existed)."""
    frozen = subprocess.run([str(python), "-m", "pip", "freeze", "--disable-pip-version-check"],
                            capture_output=True, text=True, timeout=120, check=True).stdout
    pins = [line for line in without_opal(frozen).splitlines()
            if line.strip() and " @ " not in line and not line.startswith("-e ")]
    _write_lock_lines(lock, pins, note)


def write_lock_pins(lock: Path, packages: Mapping[str, str], note: str) -> None:
    """`name==version` of every package but the opal-* ones into `lock`."""
    _write_lock_lines(lock, [f"{name}=={version}" for name, version in packages.items() if not is_opal(name)], note)


def _write_lock_lines(lock: Path, pins: list[str], note: str) -> None:
    """Written atomically: another process may be resolving the same requirements."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    partial = lock.with_name(f"{lock.name}.{os.getpid()}.tmp")
    partial.write_text(f"# {note}\n" + "\n".join(sorted(pins, key=str.lower)) + "\n")
    partial.replace(lock)


def _new_venv(installer: Installer, path: Path, cache_dir: Path) -> None:
    if path.exists():
        shutil.rmtree(path)  # an incomplete earlier attempt
    if installer.uv is not None:
        subprocess.run([str(installer.uv), "venv", "--quiet", "--python", sys.executable, str(path)], check=True,
                       timeout=120, env=installer.env(cache_dir))
    else:
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)


# Files of a venv that belong to its build, not to what it holds: a clone starts without them.
BUILD_FILES = (COMPLETE_MARKER, "install.log", "constraints.txt", "requirements.txt", RESOLVED_FILE,
               "install-report.json")


def clone_venv(base: Path, dest: Path) -> None:
    """`dest` as a copy of the venv `base`: every file hard-linked (`cp -al`: a second or two,
    no extra disk; uv itself hard-links its cache into venvs), then each file of bin/ and
    pyvenv.cfg that names `base` rewritten for `dest` as a new file, so the link to base's is
    broken and base stays as it was. Installers replace files, never write into them, so
    installing into the clone leaves base alone."""
    if dest.exists():
        shutil.rmtree(dest)
    linked = subprocess.run(["cp", "-al", str(base), str(dest)], capture_output=True, timeout=600, check=False)
    if linked.returncode != 0:  # no GNU cp, or another filesystem: a plain copy
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(base, dest, symlinks=True)
    for name in BUILD_FILES:
        (dest / name).unlink(missing_ok=True)
    old, new = str(base).encode(), str(dest).encode()
    for path in [dest / "pyvenv.cfg", *sorted((dest / "bin").iterdir())]:
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if old not in data:
            continue
        fresh = path.with_name(f".{path.name}.harness-tmp")
        fresh.write_bytes(data.replace(old, new))
        shutil.copymode(path, fresh)
        fresh.replace(path)


def _constraint_args(path: Path, constraints: Constraints) -> list[str]:
    if not constraints.pinned:
        return []
    trimmed = path / "constraints.txt"
    trimmed.write_text(constraints.text())
    return ["-c", str(trimmed)]


def _install(installer: Installer, path: Path, args: list[str], constraints: Constraints, label: str,
             cache_dir: Path, requirements: Iterable[str]) -> dict[str, str]:
    """One install step into the venv at `path`; returns what it installed ({name: version},
    from the installer's machine-readable report)."""
    log_path = path / "install.log"
    report = path / "install-report.json" if installer.name == "pip" else None
    if report is not None:
        report.unlink(missing_ok=True)
    if installer.name == "uv":
        _uv_install(installer, path, args, log_path, constraints, label, cache_dir, requirements)
    else:
        _pip_install(path, args, log_path, constraints, label, requirements, report)
    return _installed(installer, path, cache_dir, report)


def _lock_resolved(constraints: Constraints, packages: Mapping[str, str], label: str) -> None:
    if constraints.kind != "resolve":
        return
    assert constraints.lock is not None
    write_lock_pins(constraints.lock, packages,
                    f"Resolved once by policy-harness for {label} on Python {sys.version_info.major}."
                    f"{sys.version_info.minor} ({time.strftime('%Y-%m-%d')}); requirements digest "
                    f"{constraints.requirements_key}")
    log.info(f"[harness] resolved set kept as {constraints.lock} (later builds of these requirements reuse it)")


def _warn_unpinned(constraints: Constraints, installer: Installer) -> None:
    if not constraints.pinned:
        log.warning(f"[harness] warning: an unpinned install makes {installer.name} resolve every dependency"
                    + (": expect a few minutes" if installer.name == "pip" else ""))


def _build(path: Path, target: Target, constraints: Constraints, installer: Installer | None = None,
           cache_dir: Path | None = None) -> None:
    """A venv with everything in one install step (a release; a tree without the reused layer)."""
    installer = installer or choose_installer()
    cache_dir = cache_dir or path.parent.parent
    _new_venv(installer, path, cache_dir)
    log.info(f"[harness] installing {target.label} into {path} with {installer.describe()} "
             f"(log: {path / 'install.log'})")
    _warn_unpinned(constraints, installer)
    requirements = _requirements_or_none(target, cache_dir)
    packages = _install(installer, path, _constraint_args(path, constraints) + install_specs(target), constraints,
                        target.label, cache_dir, requirements)
    _record(path, installer, packages)
    _lock_resolved(constraints, packages, target.label)


def _requirements_or_none(target: Target, cache_dir: Path) -> list[str]:
    """The target's requirements for diagnosing a failed install (empty when they cannot be read)."""
    try:
        return target_requirements(target, cache_dir)
    except (HarnessError, OSError, subprocess.SubprocessError):
        return []


def ensure_base_venv(target: Target, cache_dir: Path, constraints: Constraints, installer: Installer) -> Path:
    """The third-party layer of a tree, built once per requirements and pins (safe across processes)."""
    path = base_dir(target, cache_dir, constraints)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.parent / f"{path.name}.lock"):
        if (path / COMPLETE_MARKER).exists():
            log.info(f"[harness] reusing the third-party layer {path.name} (only the tree's packages install)")
            return path
        started = time.monotonic()
        _new_venv(installer, path, cache_dir)
        log.info(f"[harness] installing the third-party layer of {target.label} into {path} with "
                 f"{installer.describe()} (log: {path / 'install.log'})")
        _warn_unpinned(constraints, installer)
        requirements = base_requirements(target)
        (path / "requirements.txt").write_text("\n".join(requirements) + "\n")
        packages = _install(installer, path, _constraint_args(path, constraints)
                            + ["-r", str(path / "requirements.txt")], constraints, f"{target.label}'s dependencies",
                            cache_dir, requirements)
        _record(path, installer, packages)
        (path / COMPLETE_MARKER).write_text(f"third-party layer of {target.label}\n{constraints.reason}\n")
        log.info(f"[harness] installed the third-party layer in {time.monotonic() - started:.1f} s")
    return path


def _check(installer: Installer, venv: Path, cache_dir: Path) -> bool:
    """Whether every installed package's requirements are met (`pip check` / `uv pip check`:
    the exit code is the answer)."""
    if installer.uv is not None:
        command = [str(installer.uv), "pip", "check", "--python", str(venv / "bin" / "python")]
    else:
        command = [str(venv / "bin" / "python"), "-m", "pip", "check", "--disable-pip-version-check"]
    return _run_logged(command, venv / "install.log", installer.env(cache_dir), timeout=300) == 0


def _build_tree(path: Path, target: Target, constraints: Constraints, installer: Installer, cache_dir: Path) -> None:
    """A tree's venv: a clone of its third-party layer, then the tree's two packages alone
    (--no-deps: the layer holds their requirements.txt dependencies). Should the installed set
    not hold together (a setup.py adding a requirement of its own), the same packages install
    again with their dependencies, under the same pins."""
    assert target.source is not None
    base = ensure_base_venv(target, cache_dir, constraints, installer)
    clone_venv(base, path)
    log.info(f"[harness] installing {target.label}'s packages into {path} (a clone of {base.name}) with "
             f"{installer.describe()} (log: {path / 'install.log'})")
    args = _constraint_args(path, constraints) + install_specs(target)[:len(OPAL_DISTS)]
    if installer.name == "uv":
        # uv caches what it builds from a local directory by its setup.py/pyproject.toml
        # alone: an edit elsewhere in the tree would install the earlier build.
        args += [f"--reinstall-package={dist}" for dist in OPAL_DISTS]
    requirements = source_requirements(target.source)
    packages = _install(installer, path, [*args, "--no-deps"], constraints, target.label, cache_dir, requirements)
    if not _check(installer, path, cache_dir):
        log.info(f"[harness] {target.label} needs more than its third-party layer holds: installing its "
                 "packages again with their dependencies")
        packages.update(_install(installer, path, args, constraints, target.label, cache_dir, requirements))
    everything = {**read_resolved(base), **packages} if installer.name == "pip" else packages
    _record(path, installer, everything)
    _lock_resolved(constraints, everything, target.label)


def ensure_server_venv(target: Target, cache_dir: Path, constraints: Constraints | None = None,
                       installer: Installer | None = None, reuse_layer: bool = True) -> ServerVenv:
    """The cached virtualenv for `target`, built first if needed (safe across processes).

    `installer`: uv or pip (default: choose_installer()); `reuse_layer`: a tree's venv starts
    from its cached third-party layer (False: everything in one install, as before)."""
    constraints = constraints or choose_constraints(target, cache_dir)
    path = venv_dir(target, cache_dir, constraints)
    path.parent.mkdir(parents=True, exist_ok=True)
    # One build per venv across processes (parallel test workers, a user's run beside CI).
    with FileLock(path.parent / f"{path.name}.lock"):
        if (path / COMPLETE_MARKER).exists():
            log.info(f"[harness] using cached virtualenv for {target.label}: {path}")
            if constraints.kind == "resolve" and constraints.lock is not None:
                # The lock was deleted since: the venv is that resolve, write it again.
                note = (f"Frozen again by policy-harness from {path}; requirements digest "
                        f"{constraints.requirements_key}")
                resolved = read_resolved(path)
                if resolved:
                    write_lock_pins(constraints.lock, resolved, note)
                else:
                    write_lock(path / "bin" / "python", constraints.lock, note)
            return ServerVenv(path, target)
        installer = installer or choose_installer()
        log.info(f"[harness] installer: {installer.describe()}")
        log.info(f"[harness] constraints for {target.label}: {constraints.reason}")
        started = time.monotonic()
        if target.source is not None and reuse_layer:
            _build_tree(path, target, constraints, installer, cache_dir)
        else:
            _build(path, target, constraints, installer, cache_dir)
        (path / COMPLETE_MARKER).write_text(f"{target.label}\n{constraints.reason}\n")
        log.info(f"[harness] installed {target.label} in {time.monotonic() - started:.1f} s")
    return ServerVenv(path, target)
