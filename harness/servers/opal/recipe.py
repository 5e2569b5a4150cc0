"""OPAL's launch recipe: the environment and command line it runs with on both backends,
and the snippets the harness runs with the server's own python (clone timer, knob reader).

The recipe files themselves (gunicorn config with the production preload hook, the stats
wrapper app) live in stacks/opal/ and run inside the server's environment."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from harness import STACKS_DIR
from harness.servers.base import ServerKnobs

RECIPE_DIR = STACKS_DIR / "opal"
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


def knobs_from_config(values: Mapping[str, Any]) -> ServerKnobs:
    """What KNOB_READER printed (OPAL's names) in the harness's names."""
    def get(name: str, kind: type) -> Any:
        value = values.get(name)
        return None if value is None else kind(value)
    return ServerKnobs(git_timeout_s=get("SCOPES_GIT_FETCH_TIMEOUT", float),
                       git_workers=get("SCOPES_GIT_MAX_WORKERS", int),
                       max_zombies=get("SCOPES_GIT_MAX_ZOMBIES", int),
                       preload_drain_s=get("SCOPES_GIT_PRELOAD_DRAIN_TIMEOUT", float),
                       clone_wait_s=get("SCOPES_POLICY_CLONE_WAIT_SECONDS", float),
                       reconnect_backoff_max_s=get("BROADCAST_RECONNECT_BACKOFF_MAX_SECONDS", float),
                       resync_settle_s=get("BROADCAST_RESYNC_SETTLE_SECONDS", float), raw=dict(values))


# A server-side disconnect of the broadcaster: Postgres terminates every client backend of the
# server's broadcast database (its LISTEN connections and its publishers), from the server's
# own environment (asyncpg comes with the broadcaster; on compose the URI is the network's).
# Prints how many were terminated.
BROADCASTER_DISCONNECT = (
    "import asyncio, os, asyncpg\n"
    "async def main():\n"
    "    conn = await asyncpg.connect(os.environ['OPAL_BROADCAST_URI'], timeout=10)\n"
    "    try:\n"
    "        print(await conn.fetchval(\"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \"\n"
    "                                  \"WHERE pid <> pg_backend_pid() AND datname = current_database() \"\n"
    "                                  \"AND backend_type = 'client backend'\"))\n"
    "    finally:\n"
    "        await conn.close()\n"
    "asyncio.run(main())\n"
)
# The installed opal-server's version, as its own environment reports it (a checkout says 0.0.0).
VERSION_READER = "import importlib.metadata as m; print(m.version('opal-server'))"
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


def server_env(redis_url: str, broadcast_uri: str, base_dir: str, instance_dir: str,
               overrides: Mapping[str, str]) -> dict[str, str]:
    """The OPAL_* settings of one instance, on either backend: the fixed boot settings, where
    its stores and per-instance files are, then `overrides` (the runner's precedence, decided
    in harness.runner.run.server_env_for) win."""
    return {**FIXED_ENV,
            "OPAL_REDIS_URL": redis_url,
            "OPAL_BROADCAST_URI": broadcast_uri,
            "OPAL_BASE_DIR": base_dir,
            # Leader election is a per-host file lock: one per instance.
            "OPAL_LEADER_LOCK_FILE_PATH": f"{instance_dir}/leader.lock",
            "OPAL_AUTH_JWKS_STATIC_DIR": f"{instance_dir}/jwks",
            **overrides}


def gunicorn_argv(python: str, recipe_dir: str) -> list[str]:
    """The launch line: gunicorn with the harness's config (preload in `when_ready`, as the
    production images do) and the app that adds the stats route where a release lacks it.
    `--no-control-socket`: gunicorn 27's per-user socket would make two servers collide."""
    return [python, "-m", "gunicorn", "-c", f"{recipe_dir}/gunicorn_conf.py", "--pythonpath", recipe_dir,
            "--no-control-socket", "harness_opal_app:app"]
