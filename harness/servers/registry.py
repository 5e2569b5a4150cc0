"""The servers the harness has adapters for, by the name SERVER takes (opal, cerbos).

Only descriptions live here (harness.servers.base.ServerAdapter): which services a server
needs and what it can do. Importing this module runs nothing of any server.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from harness.errors import ConfigError
from harness.servers.base import Capability, ServerAdapter

OPAL = ServerAdapter(
    name="opal", title="OPAL server (scopes over git, Redis scope store, Postgres broadcaster)",
    package="opal-server", default_version="0.9.9",
    capabilities=frozenset({Capability.MANY_SOURCES, Capability.RUNTIME_SOURCES, Capability.REFRESH_CALL,
                            Capability.CACHE_STATS, Capability.SCOPE_STORE, Capability.BROADCASTER,
                            Capability.WORKERS, Capability.SERVER_PYTHON,
                            # one scope attached, commits pushed and the scope refreshed after each
                            # (harness/servers/opal/source.py). Not POLLING: the harness runs OPAL with
                            # OPAL_POLICY_REFRESH_INTERVAL=0 and scopes without poll_updates; OPAL learns
                            # of a push by its refresh call (a webhook's), which the source makes.
                            # Not KEPT_CHECKOUT: a clone per repository URL, no single checkout.
                            Capability.SOURCE_CONTROL}),
    dependencies=("redis", "postgres"),
    profiles={"quick": {"OPAL_SCOPES_GIT_FETCH_TIMEOUT": "10"}, "defaults": {}},
    caches=("repo_locks", "repos", "repos_last_fetched"), caches_on_load=("repo_locks", "repos"),
    local_only=frozenset({Capability.SOURCE_CONTROL}))  # the compose probe has no source verbs yet

CERBOS = ServerAdapter(
    name="cerbos", title="Cerbos PDP (git storage driver: one repo, polled)",
    package="cerbos", default_version="0.55.0",
    capabilities=frozenset({Capability.POLLING, Capability.KEPT_CHECKOUT, Capability.SOURCE_CONTROL,
                            Capability.COMPILE_CHECK}),
    # compose: harness/servers/cerbos/compose.py (its own stack: no Redis or Postgres)
    backends=("local", "compose"),
    local_only=frozenset({Capability.COMPILE_CHECK}),  # the compose probe runs no `cerbos compile` yet
    # the harness's Cerbos config already polls every 1 s with a 10 s operation timeout
    # (harness/servers/cerbos/config.py); `defaults` is the same file: its defaults are the quick ones
    profiles={"quick": {}, "defaults": {}})

SERVERS: dict[str, ServerAdapter] = {adapter.name: adapter for adapter in (OPAL, CERBOS)}
DEFAULT_SERVER = OPAL.name


def adapter(name: str) -> ServerAdapter:
    if name not in SERVERS:
        raise ConfigError(f"SERVER={name} is not known; use one of {', '.join(SERVERS)}")
    return SERVERS[name]


def adapter_module(name: str, part: str) -> ModuleType | None:
    """A part of a server's adapter package found by name (harness.servers.<name>.<part>), so
    what serves every server imports none; None: this server's adapter has no such part."""
    module = f"harness.servers.{SERVERS[name].name}.{part}"
    return importlib.import_module(module) if importlib.util.find_spec(module) is not None else None
