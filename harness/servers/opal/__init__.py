"""The OPAL server adapter: everything the harness knows of OPAL, in one package.

  recipe        the environment and launch line (both backends), scope storage format,
                the snippets run with the server's python (clone timer, knob reader)
  client        the HTTP API the gates drive: scopes, policy, health, cache stats
  stats         the cache-stats contract in the shapes OPAL serves it
  process       opal-server as a local gunicorn process (the local backend's service)
  venvs         per-target virtualenvs: releases and source trees, pins by requirements
  source_image  a compose server image built from an OPAL source tree

A second git-backed policy server gets a package beside this one with the same parts;
the gates reach the server only through the client, the stats contract and the stack's
server probe (harness.stack.base.ServerProbe).
"""

from harness.servers.opal.client import OpalClient, PolicyResult
from harness.servers.opal.process import OpalServerProcess
from harness.servers.opal.recipe import (
    BROADCASTER_DISCONNECT,
    CLONE_TIMER,
    FIXED_ENV,
    KNOB_NAMES,
    KNOB_READER,
    VERSION_READER,
    knobs_from_config,
    scope_body,
    server_env,
    stored_scopes,
)
from harness.servers.opal.stats import CACHES, STATS_PATH, CacheStats, StatsContractError

__all__ = [
    "BROADCASTER_DISCONNECT", "CACHES", "CLONE_TIMER", "CacheStats", "FIXED_ENV", "KNOB_NAMES", "KNOB_READER",
    "OpalClient", "OpalServerProcess", "PolicyResult", "STATS_PATH", "StatsContractError", "VERSION_READER",
    "knobs_from_config", "scope_body", "server_env", "stored_scopes",
]
