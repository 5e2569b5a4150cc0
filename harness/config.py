"""Typed settings, read from environment variables (and CLI flags), validated up front.

Environment variables (all optional):

  SERVER               the policy server under test: opal (default) | cerbos (harness/servers/registry.py)
  OPAL_VERSION         PyPI release of opal-server to test (default 0.9.9); any release on the index
  OPAL_SOURCE          path to an OPAL source checkout (packages/opal-common, packages/opal-server)
  OPAL_IMAGE           prebuilt server image (compose backend only)
  OPAL_<ANYTHING>      any other OPAL_ variable is passed to the server unchanged (recorded in reports)
  CERBOS_VERSION       SERVER=cerbos: the release of @cerbos/cerbos-linux-x64 on npm (default 0.55.0)
  CERBOS_SET           SERVER=cerbos: extra `--set` settings, `key=value` separated by spaces (never the
                       listeners or telemetry: the network rule)
  CERBOS_STORE         SERVER=cerbos: git (default: its git storage driver) | disk-sync (the disk driver on
                       a clone kept in step by a fetch-and-reset loop: the PASS control of the Cerbos gates)
                       | disk-sync-untimed (the same loop, its git commands without a timeout: the FAIL
                       control of offline-remote — a fetch stuck in a hung request never ends)
  BACKEND              auto (default: compose when a Docker engine and the images are there) | local | compose
  HARNESS_WORKERS      gunicorn workers for the server (default 1)
  HARNESS_SEED_REPOS   policy repos to seed (default 60)
  HARNESS_RUN_ROOT     where run directories live (default /tmp/policy-harness)
  HARNESS_CACHE_DIR    per-version virtualenvs (default ~/.cache/policy-harness)
  HARNESS_REPORTS_DIR  gate reports (default ./reports)
  HARNESS_KEEP_STACK   1 = leave the stack running after any command that brings one up (gates, rerun,
                       compare's sides, scale), for debugging; `--keep-stack` wins; `harness down` stops it
  HARNESS_CONSTRAINTS  pins for the server's install: a pip constraints file, or `none` (unpinned);
                       unset = chosen by the target's requirements (see harness/servers/opal/venvs.py)
  HARNESS_INSTALLER    what installs the server's venvs: auto (default: uv when found, else pip) | uv | pip
  HARNESS_LATENCY_MS   delay per chunk of the latency proxy in front of the git host (default 150)
  HARNESS_GITHOST      compose git host profile: bare | gitea (default: follows the image set)
  HARNESS_GITEA_IMAGE  the Gitea image of the `gitea` profile (default gitea/gitea:1.22.3)
  HARNESS_IMAGES       compose image set: auto (default) | public | offline
  HARNESS_SERVER_PROFILE  the gates' server profile: quick (default) | defaults
  HARNESS_REQUIRE      1 = a test that would skip fails instead (CI)
  HARNESS_GATE_<GATE>_<NAME>  a gate's parameter or threshold, e.g. HARNESS_GATE_LEAK_CYCLES=5
  HARNESS_SCALE        the scale profile: leak, repeat-sync and boot-timing at N live scopes
                       (budgets, seeding and limits move with N; HARNESS_GATE_* still win)
  HARNESS_BASELINE     known failures that do not fail a run (harness/baseline.py): a baseline file, the
                       name of a shipped one (opal-server-0.9.9), `auto` (the shipped baseline of the
                       target release, if any: what `make leak-test` and `make gates` use) or `none`
  HARNESS_DEFAULT_SCOPE  1 = store a scope named `default` before every gate: the server then answers
                       200 with its bundle for any scope it does not know, and no gate may pass on that
  GITHUB_STEP_SUMMARY  set by GitHub Actions: gate runs append their verdict table to it
  GITHUB_ACTIONS       `true` inside GitHub Actions: gate runs print annotations (::error) for failed gates

This module is the only one that reads HARNESS_* variables: everything else gets Settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from harness import STACKS_DIR
from harness.errors import ConfigError
from harness.servers.registry import CERBOS, DEFAULT_SERVER, SERVERS

DEFAULT_OPAL_VERSION = "0.9.9"
BACKENDS = ("local", "compose", "auto")
# Variables the harness itself reads; every other OPAL_* is forwarded to the server.
_HARNESS_OPAL_VARS = {"OPAL_VERSION", "OPAL_SOURCE", "OPAL_IMAGE"}
# The variables that pick or set up a Cerbos target: refused when the server is OPAL.
_CERBOS_VARS = ("CERBOS_VERSION", "CERBOS_IMAGE", "CERBOS_SET", "CERBOS_STORE")
CERBOS_STORES = ("git", "disk-sync", "disk-sync-untimed")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
CONSTRAINTS_VAR = "HARNESS_CONSTRAINTS"
CONSTRAINTS_AUTO = "auto"  # chosen by the target's own requirements (harness/servers/opal/venvs.py)
CONSTRAINTS_NONE = "none"  # unpinned: pip resolves
GITHOST_PROFILES = ("bare", "gitea")
IMAGE_SET_NAMES = ("auto", "public", "offline")
SERVER_PROFILES = ("quick", "defaults")
DEFAULT_GITEA_IMAGE = "gitea/gitea:1.22.3"
GATE_PREFIX = "HARNESS_GATE_"
BASELINE_AUTO = "auto"  # the shipped baseline of the target release, when one exists
BASELINE_OFF = "none"
MAX_SCALE = 19_000  # repeat-sync reads policy-0040 onwards, and seeding stops at 20,000 repos


def supported_versions() -> list[str]:
    """Releases with a pinned constraints file under stacks/constraints/."""
    files = (STACKS_DIR / "constraints").glob("opal-server-*.txt")
    names = [f.name.removeprefix("opal-server-").removesuffix(".txt") for f in files]
    return sorted(names, key=lambda v: tuple(int(p) for p in v.split(".")))


@dataclass(frozen=True)
class Target:
    """Which server build to run: a release (PyPI for OPAL, npm for Cerbos), a source tree
    (OPAL), or (compose) an image. `server` names its adapter (harness/servers/registry.py)."""

    version: str = DEFAULT_OPAL_VERSION
    source: Path | None = None
    image: str | None = None
    server: str = DEFAULT_SERVER

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], default_version: str | None = None) -> Target | None:
        """The target a report or a run's stack.json recorded (harness.runinfo.target_spec);
        None when it recorded none. No validation: a recording names what ran."""
        server = spec.get("server") or DEFAULT_SERVER
        if spec.get("source"):
            return cls(source=Path(spec["source"]), server=server)
        if spec.get("image"):
            return cls(image=spec["image"], server=server)
        version = spec.get("version") or default_version
        return cls(version=version, server=server) if version else None

    def to_spec(self) -> dict[str, str | None]:
        return {"server": self.server, "version": self.version if not (self.source or self.image) else None,
                "source": str(self.source) if self.source else None, "image": self.image}

    @property
    def label(self) -> str:
        if self.source:
            return f"source:{self.source}"
        if self.image:
            return f"image:{self.image}"
        return SERVERS[self.server].label(self.version)


@dataclass(frozen=True)
class Settings:
    target: Target = field(default_factory=Target)
    backend: str = "auto"
    workers: int = 1
    seed_repos: int = 60
    run_root: Path = Path("/tmp/policy-harness")
    cache_dir: Path = Path.home() / ".cache" / "policy-harness"
    reports_dir: Path = Path("reports")
    keep_stack: bool = False
    server_env: Mapping[str, str] = field(default_factory=dict)
    # HARNESS_CONSTRAINTS: "auto", "none" or an absolute path (see constraints_setting)
    constraints: str = CONSTRAINTS_AUTO
    latency_ms: float = 150.0
    githost: str | None = None  # None: follows the image set (compose)
    gitea_image: str = DEFAULT_GITEA_IMAGE
    images: str = "auto"
    server_profile: str = "quick"
    require: bool = False
    # GITHUB_STEP_SUMMARY: a CI job's summary file; gate runs append their verdict table to it.
    step_summary: Path | None = None
    # GITHUB_ACTIONS=true: gate runs print `::error` / `::notice` annotations for the PR page.
    github_actions: bool = False
    # HARNESS_GATE_<GATE>_<NAME>: raw values by gate variable prefix, resolved per gate by
    # gate_overrides() (the gates validate the names and types).
    gate_vars: Mapping[str, str] = field(default_factory=dict)
    # HARNESS_SCALE: N live scopes for the gates whose load grows with it (None: their own)
    scale: int | None = None
    # HARNESS_BASELINE: None (no baseline), "auto", a shipped baseline's name or a file path;
    # harness/baseline.py resolves and reads it (a missing or broken file: one ConfigError).
    baseline: str | None = None
    # HARNESS_DEFAULT_SCOPE: a scope named `default` stored before every gate (GateContext.store_default_scope)
    default_scope: bool = False
    # CERBOS_STORE (git | disk-sync | disk-sync-untimed); CERBOS_SET is the Cerbos server's `server_env`
    cerbos_store: str = "git"

    @property
    def server(self) -> str:
        return self.target.server

    def gate_overrides(self, gate_id: str) -> dict[str, str]:
        """HARNESS_GATE_<ID>_<NAME>=value as {name: value}, e.g. HARNESS_GATE_LEAK_CYCLES=5."""
        prefix = f"{gate_id.upper().replace('-', '_')}_"
        return {k[len(prefix):].lower(): v for k, v in self.gate_vars.items() if k.startswith(prefix)}


def gate_variable(gate_id: str, name: str) -> str:
    """The variable that sets a gate's setting: leak, cycles -> HARNESS_GATE_LEAK_CYCLES."""
    return f"{GATE_PREFIX}{gate_id.upper().replace('-', '_')}_{name.upper()}"


def check_gate_vars(gate_vars: Mapping[str, str], known: Mapping[str, Sequence[str]]) -> None:
    """Every HARNESS_GATE_<GATE>_<NAME> names a gate of `known` (gate id -> its settings)
    and one of its settings; otherwise one ConfigError lists each unknown variable with the
    gate ids, or the gate's settings — a typo must not silently run a gate on defaults."""
    problems = [problem for key in sorted(gate_vars) if (problem := _gate_var_problem(key, known))]
    if problems:
        raise ConfigError("; ".join(problems) + " (`harness gates --list` shows every gate's settings and variables)")


def _gate_var_problem(key: str, known: Mapping[str, Sequence[str]]) -> str | None:
    prefixes = {gate_id.upper().replace("-", "_") + "_": gate_id for gate_id in known}
    # the longest gate prefix that matches: a gate id is never cut short by another's
    matched = max((p for p in prefixes if key.startswith(p)), key=len, default=None)
    if matched is None:
        return (f"{GATE_PREFIX}{key} names no gate: use {GATE_PREFIX}<GATE>_<SETTING> with <GATE> one of "
                f"{', '.join(p.rstrip('_') for p in prefixes)}")
    gate_id, name = prefixes[matched], key[len(matched):].lower()
    if name in known[gate_id]:
        return None
    return (f"{GATE_PREFIX}{key}: gate {gate_id} has no setting {name or '(empty)'}; its settings: "
            f"{', '.join(sorted(known[gate_id])) or 'none'} (each set with {gate_variable(gate_id, '<NAME>')})")


def _number(env: Mapping[str, str], name: str, default: float, minimum: float, maximum: float,
            kind: type = float) -> Any:
    raw = env.get(name)
    if raw is None or raw == "":
        return kind(default)
    what = "a whole number" if kind is int else "a number"
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not {what}; set e.g. {name}={default:g}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}={value:g} is out of range; use a value from {minimum:g} to {maximum:g}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    return int(_number(env, name, default, minimum, maximum, kind=int))


def _float(env: Mapping[str, str], name: str, default: float, minimum: float, maximum: float) -> float:
    return float(_number(env, name, default, minimum, maximum))


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (env.get(name) or default).strip().lower()
    if value not in choices:
        raise ConfigError(f"{name}={value} is not known; use one of {', '.join(choices)}")
    return value


def image_set_choice(env: Mapping[str, str] | None = None) -> str:
    """HARNESS_IMAGES, for callers that choose an image set without Settings (image builds)."""
    return _choice(os.environ if env is None else env, "HARNESS_IMAGES", "auto", IMAGE_SET_NAMES)


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """HARNESS_CACHE_DIR or ~/.cache/policy-harness (for callers without Settings)."""
    env = os.environ if env is None else env
    return Path(env.get("HARNESS_CACHE_DIR") or Path.home() / ".cache" / "policy-harness")


def step_summary_path(env: Mapping[str, str] | None = None) -> Path | None:
    """GitHub Actions' job summary file (GITHUB_STEP_SUMMARY), when there is one."""
    env = os.environ if env is None else env
    return Path(env["GITHUB_STEP_SUMMARY"]) if env.get("GITHUB_STEP_SUMMARY") else None


def github_actions(env: Mapping[str, str] | None = None) -> bool:
    """Inside GitHub Actions (GITHUB_ACTIONS=true), whose runner reads annotations on stdout."""
    return (os.environ if env is None else env).get("GITHUB_ACTIONS", "").strip().lower() == "true"


def require_switch(env: Mapping[str, str] | None = None) -> bool:
    """HARNESS_REQUIRE, read by the pytest plugin before any Settings exist."""
    return _bool(os.environ if env is None else env, "HARNESS_REQUIRE")


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a switch; use {name}=1 or {name}=0")


def validate_target(target: Target, backend: str) -> Target:
    """Check the target selection; return it with the source path made absolute."""
    if target.source is not None:
        return replace(target, source=validate_source_tree(target.source))
    if target.image is not None:
        if backend == "local":
            raise ConfigError(
                "OPAL_IMAGE needs the compose backend; unset OPAL_IMAGE or set BACKEND=compose"
            )
        return target
    try:
        Version(target.version)
    except InvalidVersion:
        raise ConfigError(f"OPAL_VERSION={target.version!r} is not a version number; "
                          f"set e.g. OPAL_VERSION={DEFAULT_OPAL_VERSION}") from None
    # Any release on the index installs locally (harness/servers/opal/venvs.py checks the index and picks
    # its pins); compose images are built only for releases with a committed pin set.
    versions = supported_versions()
    if backend == "compose" and target.version not in versions:
        raise ConfigError(
            f"OPAL_VERSION={target.version} has no compose image: images are built for the releases "
            f"with a committed pin set ({', '.join(versions)}). Run it with BACKEND=local, or add "
            f"stacks/constraints/opal-server-{target.version}.txt and run `make images-offline`"
        )
    return target


INSTALLER_VAR = "HARNESS_INSTALLER"
INSTALLER_SETTINGS = ("auto", "uv", "pip")


def installer_setting(env: Mapping[str, str] | None = None) -> str:
    """HARNESS_INSTALLER: auto (uv when found, pip otherwise), uv or pip."""
    raw = ((os.environ if env is None else env).get(INSTALLER_VAR) or "").strip()
    chosen = raw.lower() or "auto"
    if chosen not in INSTALLER_SETTINGS:
        raise ConfigError(f"{INSTALLER_VAR}={raw} is not known; use one of {', '.join(INSTALLER_SETTINGS)}")
    return chosen


def constraints_setting(env: Mapping[str, str] | None = None) -> str:
    """HARNESS_CONSTRAINTS: unset/"auto" (choose by the target's requirements), "none"
    (unpinned) or an existing constraints file (returned as an absolute path)."""
    raw = ((os.environ if env is None else env).get(CONSTRAINTS_VAR) or "").strip()
    if raw.lower() in ("", CONSTRAINTS_AUTO):
        return CONSTRAINTS_AUTO
    if raw.lower() == CONSTRAINTS_NONE:
        return CONSTRAINTS_NONE
    path = Path(raw).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(
            f"{CONSTRAINTS_VAR}={raw} is neither a file nor `none`: point it at a pip constraints file "
            f"(name==version lines), set {CONSTRAINTS_VAR}=none for an unpinned install, or unset it "
            "to let the harness choose the pins"
        )
    return str(path)


def validate_source_tree(path: Path) -> Path:
    """An OPAL checkout: packages/__packaging__.py plus the two package dirs with setup.py."""
    path = path.expanduser().resolve()
    expected = [
        path / "packages" / "__packaging__.py",
        path / "packages" / "opal-common" / "setup.py",
        path / "packages" / "opal-server" / "setup.py",
    ]
    missing = [str(p.relative_to(path)) for p in expected if not p.is_file()]
    if not path.is_dir() or missing:
        raise ConfigError(
            f"OPAL_SOURCE={path} is not an OPAL source tree: expected "
            f"{', '.join(str(p.relative_to(path)) for p in expected)}"
            + (f" (missing: {', '.join(missing)})" if path.is_dir() else " (no such directory)")
            + ". Point OPAL_SOURCE at the root of an OPAL checkout."
        )
    return path


# CLI flags -> the variable they stand for: a flag is validated exactly like the variable.
_FLAG_VARS = {"workers": "HARNESS_WORKERS", "seed_repos": "HARNESS_SEED_REPOS", "run_root": "HARNESS_RUN_ROOT",
              "cache_dir": "HARNESS_CACHE_DIR", "reports_dir": "HARNESS_REPORTS_DIR",
              "keep_stack": "HARNESS_KEEP_STACK", "version": "OPAL_VERSION", "source": "OPAL_SOURCE",
              "image": "OPAL_IMAGE", "backend": "BACKEND", "scale": "HARNESS_SCALE",
              "baseline": "HARNESS_BASELINE", "server": "SERVER", "cerbos_version": "CERBOS_VERSION",
              "opal_version": "OPAL_VERSION"}  # <server>_version: the release flag of each server


def _with_flags(env: Mapping[str, str], flags: Mapping[str, object]) -> dict[str, str]:
    unknown = sorted(set(flags) - set(_FLAG_VARS))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(_FLAG_VARS))}")
    merged = dict(env)
    for name, value in flags.items():
        if value is None:
            continue
        if name in ("version", "opal_version", "source", "image"):  # a flag's target replaces the environment's
            for var in ("OPAL_VERSION", "OPAL_SOURCE", "OPAL_IMAGE"):
                merged.pop(var, None)
        if name == "cerbos_version":
            merged.pop("CERBOS_IMAGE", None)
        merged[_FLAG_VARS[name]] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    return merged


def from_env(env: Mapping[str, str] | None = None, **flags: object) -> Settings:
    """Settings from the environment; CLI flags win, and go through the same validation."""
    env = _with_flags(os.environ if env is None else env, flags)
    server = _choice(env, "SERVER", DEFAULT_SERVER, tuple(SERVERS))
    backend = _choice(env, "BACKEND", "auto", BACKENDS)
    target = cerbos_target(env, backend) if server == CERBOS.name else opal_target(env, backend)
    githost = (env.get("HARNESS_GITHOST") or "").strip().lower() or None
    if githost is not None and githost not in GITHOST_PROFILES:
        raise ConfigError(f"HARNESS_GITHOST={githost} is not known; use one of {', '.join(GITHOST_PROFILES)}")
    return Settings(
        target=target,
        backend=backend,
        workers=_int(env, "HARNESS_WORKERS", 1, 1, 16),
        seed_repos=_int(env, "HARNESS_SEED_REPOS", 60, 1, 20000),
        run_root=Path(env.get("HARNESS_RUN_ROOT") or "/tmp/policy-harness"),
        cache_dir=default_cache_dir(env),
        reports_dir=Path(env.get("HARNESS_REPORTS_DIR") or "reports"),
        keep_stack=_bool(env, "HARNESS_KEEP_STACK"),
        # the user's server settings: OPAL_* variables for OPAL, CERBOS_SET's key=value pairs for Cerbos
        server_env=(cerbos_set(env.get("CERBOS_SET") or "") if server == CERBOS.name else
                    {k: v for k, v in env.items() if k.startswith("OPAL_") and k not in _HARNESS_OPAL_VARS}),
        constraints=constraints_setting(env),
        latency_ms=_float(env, "HARNESS_LATENCY_MS", 150.0, 1.0, 10000.0),
        githost=githost,
        gitea_image=env.get("HARNESS_GITEA_IMAGE") or DEFAULT_GITEA_IMAGE,
        images=image_set_choice(env),
        server_profile=_choice(env, "HARNESS_SERVER_PROFILE", "quick", SERVER_PROFILES),
        require=_bool(env, "HARNESS_REQUIRE"),
        step_summary=step_summary_path(env),
        github_actions=github_actions(env),
        gate_vars={k.removeprefix(GATE_PREFIX): v for k, v in env.items() if k.startswith(GATE_PREFIX)},
        scale=_int(env, "HARNESS_SCALE", 1000, 1, MAX_SCALE) if env.get("HARNESS_SCALE") else None,
        baseline=baseline_setting(env),
        default_scope=_bool(env, "HARNESS_DEFAULT_SCOPE"),
        cerbos_store=_choice(env, "CERBOS_STORE", "git", CERBOS_STORES),
    )


def opal_target(env: Mapping[str, str], backend: str) -> Target:
    """SERVER=opal: one of OPAL_VERSION, OPAL_SOURCE, OPAL_IMAGE; no Cerbos variable."""
    if given := [var for var in _CERBOS_VARS if env.get(var)]:
        raise ConfigError(f"{', '.join(given)}: a Cerbos setting, and the server under test is OPAL (SERVER=opal): set "
                          f"SERVER=cerbos to test Cerbos, or unset {', '.join(given)}")
    version, source, image = (env.get(v) or None for v in ("OPAL_VERSION", "OPAL_SOURCE", "OPAL_IMAGE"))
    if sum(x is not None for x in (version, source, image)) > 1:
        raise ConfigError("set only one of OPAL_VERSION, OPAL_SOURCE, OPAL_IMAGE")
    target = Target(version=version or DEFAULT_OPAL_VERSION, source=Path(source) if source else None, image=image)
    return validate_target(target, backend)


def cerbos_target(env: Mapping[str, str], backend: str) -> Target:
    """SERVER=cerbos: CERBOS_VERSION (an npm release; harness/servers/cerbos/install.py checks
    npm has it); no OPAL target variable — one server per run."""
    if given := [var for var in sorted(_HARNESS_OPAL_VARS) if env.get(var)]:
        raise ConfigError(f"{', '.join(given)}: an OPAL target, and SERVER=cerbos tests Cerbos: unset "
                          f"{', '.join(given)} (CERBOS_VERSION picks the Cerbos release), or set SERVER=opal")
    if env.get("CERBOS_IMAGE"):
        raise ConfigError("CERBOS_IMAGE is not supported: on compose the harness builds the server image from the "
                          "npm release itself; unset CERBOS_IMAGE (CERBOS_VERSION picks the release)")
    if backend == "compose" and (env.get("CERBOS_STORE") or "git").strip().lower() != "git":
        raise ConfigError(f"CERBOS_STORE={env.get('CERBOS_STORE')} runs on the local backend only: set "
                          "BACKEND=local, or unset CERBOS_STORE on compose")
    version = (env.get("CERBOS_VERSION") or CERBOS.default_version).strip()
    try:
        Version(version)
    except InvalidVersion:
        raise ConfigError(f"CERBOS_VERSION={version!r} is not a version number; "
                          f"set e.g. CERBOS_VERSION={CERBOS.default_version}") from None
    return Target(version=version, server=CERBOS.name)


def cerbos_set(raw: str) -> dict[str, str]:
    """CERBOS_SET="a.b=1 c=2" as {"a.b": "1", "c": "2"} (the adapter refuses the keys the
    network rule keeps: listeners, telemetry)."""
    pairs = {}
    for item in raw.split():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"CERBOS_SET item {item!r} is not key=value; set e.g. "
                              "CERBOS_SET=storage.git.updatePollInterval=2s")
        pairs[key] = value
    return pairs


def baseline_setting(env: Mapping[str, str] | None = None) -> str | None:
    """HARNESS_BASELINE: None when unset or `none`, `auto`, or a name or path as given."""
    raw = ((os.environ if env is None else env).get("HARNESS_BASELINE") or "").strip()
    if raw.lower() in ("", BASELINE_OFF):
        return None
    return BASELINE_AUTO if raw.lower() == BASELINE_AUTO else raw
