"""What any git-backed policy server gives the harness: the low floor of the server seam.

An adapter (harness/servers/<name>/) describes one server: the services it depends on,
what it can do (capabilities), how its target is named, and where its parts live. Gates
name the capabilities they need (`Gate.requires`); the runner, `harness gates` and the
pytest suite skip a gate the chosen server cannot take, with the reason from here, listed
under `skipped` in the report — never as a verdict.

This module imports nothing of any adapter: adapters import it, and
harness/servers/registry.py maps a server's name (SERVER=opal|cerbos) to its adapter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Capability(str, Enum):  # not StrEnum: the harness runs on Python 3.10 too
    """What a gate may need of a server. Each value says what a server with it offers."""

    MANY_SOURCES = "many-sources"  # serves many policy sources (scopes) at once, each by its own id
    RUNTIME_SOURCES = "runtime-sources"  # sources attached, replaced and removed through its API at run time
    REFRESH_CALL = "refresh-call"  # a call that makes it fetch a source now
    POLLING = "polling"  # follows its remote on its own, every poll interval
    CACHE_STATS = "cache-stats"  # reports the sizes of its per-source caches (a stats route)
    SCOPE_STORE = "scope-store"  # keeps its sources in a store of its own that can be staged, flushed, taken down
    BROADCASTER = "broadcaster"  # its workers tell each other of changes through a broker
    WORKERS = "workers"  # runs several worker processes that each hold the sources
    SERVER_PYTHON = "server-python"  # runs in a Python environment the harness can run code in
    KEPT_CHECKOUT = "kept-checkout"  # keeps one checkout of its remote on disk across restarts
    REPORTS_REVISION = "reports-revision"  # says which commit it serves


# What each capability's absence means, as a skip reason reads it.
LACKS = {
    Capability.MANY_SOURCES: "serves one policy source, not many scopes",
    Capability.RUNTIME_SOURCES: "has no API to attach or remove policy sources at run time",
    Capability.REFRESH_CALL: "has no call that makes it fetch now",
    Capability.POLLING: "does not poll its remote",
    Capability.CACHE_STATS: "reports no per-source cache sizes",
    Capability.SCOPE_STORE: "keeps no scope store of its own",
    Capability.BROADCASTER: "has no broadcaster between workers",
    Capability.WORKERS: "runs no worker processes of its own",
    Capability.SERVER_PYTHON: "does not run in a Python environment",
    Capability.KEPT_CHECKOUT: "keeps no checkout of its remote across restarts",
    Capability.REPORTS_REVISION: "does not say which commit it serves",
}


@dataclass(frozen=True)
class ServerAdapter:
    """One git-backed policy server as the harness sees it, before anything runs.

    `dependencies` are the stack services it needs besides the git host, the git front
    and the fault listeners every stack has (OPAL: redis, postgres; Cerbos: none).
    `package` names its builds in reports (`opal-server==0.9.9`, `cerbos==0.55.0`).
    """

    name: str
    title: str
    package: str
    default_version: str
    capabilities: frozenset[Capability]
    dependencies: tuple[str, ...] = ()
    backends: tuple[str, ...] = ("local", "compose")

    def lacks(self, requires: Iterable[Capability]) -> list[Capability]:
        """The capabilities of `requires` this server lacks, in Capability's order (a reason
        reads the same in every run)."""
        wanted = set(requires)
        return [c for c in Capability if c in wanted and c not in self.capabilities]

    def skip_reason(self, gate_id: str, requires: Iterable[Capability]) -> str | None:
        """Why a gate needing `requires` cannot run on this server (None: it can)."""
        missing = self.lacks(requires)
        if not missing:
            return None
        return (f"gate {gate_id} needs {', '.join(c.value for c in missing)}: {self.name} "
                + "; ".join(LACKS[c] for c in missing))

    def label(self, version: str) -> str:
        return f"{self.package}=={version}"


@dataclass(frozen=True)
class ServerKnobs:
    """The settings a gate's budgets derive from, as the server itself reads them (OPAL: its
    config object with the settings it runs with; Cerbos: its config file), in the harness's
    names. None: this server has no such knob — a pre-fix OPAL tree has no git timeout, no
    git worker pool, no zombie cap, no preload drain; Cerbos has no workers — and a budget
    that would rest on it says so instead of citing a missing mechanism. `raw`: the values
    under the server's own names, recorded as the gate's fact `server_knobs`."""

    git_timeout_s: float | None = None  # OPAL: SCOPES_GIT_FETCH_TIMEOUT; Cerbos: storage.git.operationTimeout
    poll_interval_s: float | None = None  # Cerbos: storage.git.updatePollInterval
    git_workers: int | None = None
    max_zombies: int | None = None
    preload_drain_s: float | None = None
    clone_wait_s: float | None = None
    reconnect_backoff_max_s: float | None = None
    resync_settle_s: float | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)
