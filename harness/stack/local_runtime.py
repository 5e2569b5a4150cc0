"""What a server's adapter gives the local backend: its install, its process, its probe.

The local stack (harness/stack/local.py) builds the git host, the git front and the fault
listeners itself, and the server's dependencies from its adapter's description
(harness.servers.base.ServerAdapter.dependencies); the server itself comes from the
adapter's `local` module, loaded by name, so the stack imports no server:

    harness/servers/<server>/local.py   RUNTIME: LocalRuntime

A third adapter implements these methods and names its module in the registry.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Protocol

from harness.config import Settings
from harness.errors import ConfigError
from harness.servers.registry import SERVERS
from harness.services.base import LocalService
from harness.stack.base import ServerProbe, Stack


class LocalRuntime(Protocol):
    """`stack` is the local stack (harness.stack.local.LocalStack): its run dir, settings,
    addresses and services."""

    def install(self, settings: Settings) -> Any:
        """Install the target (a venv, a binary) into the cache; what `server` launches from.
        Slow the first time: it says so as it goes."""
        ...

    def server(self, stack: Stack, port: int, installed: Any) -> LocalService:
        """The server as a local service on `port`, not started."""
        ...

    def before_start(self, stack: Stack) -> None:
        """What must exist before the server starts for the first time (Cerbos: the repo it
        boots on); the other services are up."""
        ...

    def after_stop(self, stack: Stack) -> None:
        """What the server's probe started beside it (Cerbos: the disk-sync loop), stopped."""
        ...

    def probe(self, stack: Stack) -> ServerProbe:
        """What gates observe and change of the server (harness.stack.base.ServerProbe)."""
        ...

    def install_state(self, server: LocalService) -> dict[str, Any]:
        """What another process needs to drive the same server (stack.json's `attach`)."""
        ...

    def installed_from_state(self, settings: Settings, state: Mapping[str, Any]) -> Any:
        """`install`'s result again, from install_state (no install runs)."""
        ...


def local_runtime(server: str) -> LocalRuntime:
    adapter = SERVERS[server]
    if "local" not in adapter.backends:
        raise ConfigError(f"{adapter.name} has no local backend; use one of {', '.join(adapter.backends)}")
    return importlib.import_module(f"harness.servers.{adapter.name}.local").RUNTIME  # type: ignore[no-any-return]
