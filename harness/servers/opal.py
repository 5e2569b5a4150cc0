"""The OPAL server adapter: its launch recipe, scope API and the cache-stats contract."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

from harness import STACKS_DIR, procs
from harness.probes import CacheStats
from harness.services.base import LocalService
from harness.venvs import ServerVenv

RECIPE_DIR = STACKS_DIR / "opal"
STATS_PATH = "/internal/git-fetcher-cache-stats"
GRACEFUL_TIMEOUT_S = 5
# Redis key under which OPAL stores a scope; storing scopes there directly stages a boot.
SCOPE_KEY_PREFIX = "permit.io/Scope:"

# Boots 0.9.6 and 0.9.9 cleanly (see shared/OPAL.md). Auth keys stay unset: auth is a no-op.
FIXED_ENV = {
    "OPAL_SCOPES": "1",
    "OPAL_POLICY_REFRESH_INTERVAL": "0",
    "OPAL_DEBUG_INTERNAL_STATS": "true",
    "OPAL_LOG_FORMAT_INCLUDE_PID": "true",
    "OPAL_LOG_COLORIZE": "false",
    "DD_TRACE_ENABLED": "false",
    "DD_DOGSTATSD_DISABLE": "true",
    "DD_INSTRUMENTATION_TELEMETRY_ENABLED": "false",
    "DD_REMOTE_CONFIGURATION_ENABLED": "false",
}


# Times one clone with the server's own pygit2 (same libgit2), excluding interpreter start,
# into a temp dir it removes; run with the server's python: argv = [url].
CLONE_TIMER = (
    "import sys, tempfile, time, pygit2\n"
    "with tempfile.TemporaryDirectory(prefix='harness-clone-') as d:\n"
    "    t = time.monotonic(); pygit2.clone_repository(sys.argv[1], d + '/repo')\n"
    "    print(time.monotonic() - t)\n"
)


# The server settings gate budgets derive from, read from the server's own config object
# (opal_server.config.opal_server_config) with the environment the server runs with: the
# values a fix branch or a release really uses, and None where a tree has no such knob
# (a pre-fix tree has no git timeout, no zombie cap, no preload drain).
KNOB_NAMES = ("SCOPES_GIT_FETCH_TIMEOUT", "SCOPES_GIT_MAX_WORKERS", "SCOPES_GIT_MAX_ZOMBIES",
              "SCOPES_GIT_PRELOAD_DRAIN_TIMEOUT", "SCOPES_POLICY_CLONE_WAIT_SECONDS",
              # recorded for the reports, not budgets: what decides orphan-clones' outcome
              "SCOPES_STORE_READ_TIMEOUT", "BROADCAST_RECONNECT_BACKOFF_MAX_SECONDS",
              "BROADCAST_RESYNC_SETTLE_SECONDS")
KNOB_READER = (
    "import json, sys; from opal_server.config import opal_server_config as c; "
    "print(json.dumps({n: getattr(c, n, None) for n in sys.argv[1:]}))"
)


def scope_body(scope_id: str, repo_url: str, branch: str = "main") -> dict:
    return {"scope_id": scope_id,
            "policy": {"source_type": "git", "url": repo_url, "auth": {"auth_type": "none"},
                       "branch": branch}}


def stored_scopes(scopes: Mapping[str, str]) -> dict[str, str]:
    """Redis key -> value for scopes (id -> repo URL), as OPAL stores them: staging a boot."""
    return {f"{SCOPE_KEY_PREFIX}{scope_id}": stored_scope_json(scope_id, url) for scope_id, url in scopes.items()}


def stored_scope_json(scope_id: str, repo_url: str) -> str:
    """The value OPAL keeps in Redis for a scope (used to stage boots with N scopes)."""
    body = scope_body(scope_id, repo_url)
    body["data"] = {"entries": []}
    return json.dumps(body)


@dataclass
class OpalServerProcess(LocalService):
    """opal-server under gunicorn with uvicorn workers, from its own virtualenv."""

    venv: ServerVenv | None = None
    instance_dir: Path = Path()
    redis_url: str = ""
    broadcast_uri: str = ""
    workers: int = 1
    overrides: Mapping[str, str] = field(default_factory=dict)
    start_timeout: float = 60.0
    stop_grace: float = GRACEFUL_TIMEOUT_S + 5.0

    @property
    def base_dir(self) -> Path:
        return self.instance_dir / "base"

    @property
    def clones_dir(self) -> Path:
        """Where both releases keep scope clones: BASE_DIR/git_sources/<source id>."""
        return self.base_dir / "git_sources"

    def server_env(self) -> dict[str, str]:
        """The OPAL_* settings this instance runs with (recorded in reports)."""
        env = dict(FIXED_ENV)
        env.update({
            "OPAL_REDIS_URL": self.redis_url,
            "OPAL_BROADCAST_URI": self.broadcast_uri,
            "OPAL_BASE_DIR": str(self.base_dir),
            # Leader election is a per-host file lock: one per instance.
            "OPAL_LEADER_LOCK_FILE_PATH": str(self.instance_dir / "leader.lock"),
            "OPAL_AUTH_JWKS_STATIC_DIR": str(self.instance_dir / "jwks"),
        })
        env.update(self.overrides)
        return env

    def env(self) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items()
                     if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE")}
        return {**inherited, **self.server_env(),
                "HARNESS_BIND": f"127.0.0.1:{self.port}",
                "HARNESS_WORKERS": str(self.workers),
                "HARNESS_GRACEFUL_TIMEOUT": str(GRACEFUL_TIMEOUT_S),
                "PYTHONUNBUFFERED": "1"}

    def prepare(self) -> None:
        for sub in ("base", "jwks"):
            (self.instance_dir / sub).mkdir(parents=True, exist_ok=True)

    def argv(self) -> list[str]:
        assert self.venv is not None
        return [str(self.venv.python), "-m", "gunicorn", "-c", str(RECIPE_DIR / "gunicorn_conf.py"),
                "--pythonpath", str(RECIPE_DIR), "--no-control-socket", "harness_opal_app:app"]

    def ready(self) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{self.port}/healthcheck", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def launch(self) -> None:
        """Start without waiting for health (boot gates time the wait themselves)."""
        self.prepare()
        self.process = procs.start(self.name, self.argv(), self.run_dir, self.log_path, env=self.env())

    def worker_pids(self) -> list[int]:
        if not self.pid:
            return []
        try:
            return [p.pid for p in psutil.Process(self.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def sigkill(self) -> None:
        if self.process:
            self.process.stop(grace=0, first_signal=signal.SIGKILL)


@dataclass
class PolicyResult:
    status: int | None  # None: no answer within the client timeout
    seconds: float
    error: str = ""
    hash: str | None = None  # the served bundle's commit (policy_hash only)

    @property
    def served(self) -> bool:
        return self.status == 200


class OpalClient:
    """The scope API, health and stats of one running server. Every call has a timeout."""

    def __init__(self, base_url: str, timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        # One connection per request: 0.9.6 drops a keep-alive connection after an
        # unhandled error (e.g. GET policy of a deleted scope), and reusing it would turn
        # the next, unrelated request into a "connection reset".
        self.session.headers["Connection"] = "close"

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def healthy(self, timeout: float = 2.0) -> bool:
        try:
            return self.session.get(self._url("/healthcheck"), timeout=timeout).status_code == 200
        except requests.RequestException:
            return False

    def put_scope(self, scope_id: str, repo_url: str) -> int:
        response = self.session.put(self._url("/scopes"), json=scope_body(scope_id, repo_url),
                                    timeout=self.timeout)
        return response.status_code

    def delete_scope(self, scope_id: str) -> int:
        return self.session.delete(self._url(f"/scopes/{scope_id}"), timeout=self.timeout).status_code

    def list_scopes(self) -> list[dict]:
        response = self.session.get(self._url("/scopes"), timeout=self.timeout)
        response.raise_for_status()
        return response.json()

    def refresh(self, scope_id: str | None = None) -> int:
        path = f"/scopes/{scope_id}/refresh" if scope_id else "/scopes/refresh"
        return self.session.post(self._url(path), timeout=self.timeout).status_code

    def get_policy(self, scope_id: str, timeout: float | None = None) -> PolicyResult:
        started = time.monotonic()
        try:
            response = self.session.get(self._url(f"/scopes/{scope_id}/policy"),
                                        timeout=timeout or self.timeout)
            return PolicyResult(response.status_code, time.monotonic() - started)
        except requests.RequestException as exc:
            return PolicyResult(None, time.monotonic() - started, type(exc).__name__)

    def policy_hash(self, scope_id: str, timeout: float | None = None) -> PolicyResult:
        """GET policy, keeping the commit the served bundle was built from.

        OPAL's PolicyBundle carries it as `hash` (the commit SHA; `old_hash` is set only on
        diff bundles). A 200 without a string `hash` keeps `hash` None and says so in `error`."""
        started = time.monotonic()
        try:
            response = self.session.get(self._url(f"/scopes/{scope_id}/policy"),
                                        timeout=timeout or self.timeout)
        except requests.RequestException as exc:
            return PolicyResult(None, time.monotonic() - started, type(exc).__name__)
        seconds = time.monotonic() - started
        if response.status_code != 200:
            return PolicyResult(response.status_code, seconds)
        try:
            served = response.json().get("hash")
        except (ValueError, AttributeError):
            served = None
        if not isinstance(served, str) or not served:
            return PolicyResult(200, seconds, "the bundle has no `hash` field")
        return PolicyResult(200, seconds, hash=served)

    def cache_stats(self) -> CacheStats:
        response = self.session.get(self._url(STATS_PATH), timeout=self.timeout)
        response.raise_for_status()
        return CacheStats.from_json(response.json(), wrapper=response.headers.get("X-Harness-Stats") == "wrapper")
