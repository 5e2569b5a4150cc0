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
from typing import Any, Protocol


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
    SOURCE_CONTROL = "source-control"  # its adapter attaches one policy source and commits to it (SourceControl)
    COMPILE_CHECK = "compile-check"  # its own tool loads a policy tree offline (SourceControl.compile_seconds)
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
    Capability.SOURCE_CONTROL: "has no SourceControl in its adapter yet (one attached source, commits by content)",
    Capability.COMPILE_CHECK: "has no offline compile of a policy tree to time a boot against",
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
    # HARNESS_SERVER_PROFILE -> the server settings the gates run with under it (quick: short
    # git timeouts keep the suite quick; defaults: the server's own)
    profiles: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: {"quick": {}, "defaults": {}})
    # capabilities its adapter has on the local backend only (OPAL: source control)
    local_only: frozenset[Capability] = frozenset()
    # with CACHE_STATS: the caches its stats report a size of, one entry per loaded source
    # (OPAL: repo_locks, repos, repos_last_fetched) — what the cache gates judge — and those
    # of them that hold the entry as soon as the source is served (OPAL: repo_locks, repos;
    # repos_last_fetched fills with the first fetch after the clone)
    caches: tuple[str, ...] = ()
    caches_on_load: tuple[str, ...] = ()

    def capabilities_on(self, backend: str | None) -> frozenset[Capability]:
        """What it can do on `backend` (None or auto: the local backend's)."""
        return self.capabilities - self.local_only if backend == "compose" else self.capabilities

    def lacks(self, requires: Iterable[Capability], backend: str | None = None) -> list[Capability]:
        """The capabilities of `requires` this server lacks, in Capability's order (a reason
        reads the same in every run)."""
        wanted, has = set(requires), self.capabilities_on(backend)
        return [c for c in Capability if c in wanted and c not in has]

    def skip_reason(self, gate_id: str, requires: Iterable[Capability], backend: str | None = None) -> str | None:
        """Why a gate needing `requires` cannot run on this server (None: it can)."""
        missing = self.lacks(requires, backend)
        if not missing:
            return None
        where = " on the compose backend" if set(missing) <= self.local_only else ""
        return (f"gate {gate_id} needs {', '.join(c.value for c in missing)}: {self.name}{where} "
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


@dataclass(frozen=True)
class Served:
    """What the server answered when asked for the policy source's content: the nonce its
    decision carries (None: no decision, an error, or content without a nonce), the HTTP
    status (None: no answer), whether its health check said it serves, and how long the
    question took. "Served" always means the content's own nonce, never any 200."""

    nonce: str | None
    status: int | None
    healthy: bool
    seconds: float
    error: str = ""


@dataclass
class PolicyResult:
    """One answer to "which content does source `id` serve" from a server with many runtime
    sources. A 200 alone is not "served": OPAL with a `default` scope stored answers 200 with
    the default's bundle for a scope it does not know; whether `hash` is the source's own head
    is judged by harness.heads (GateContext.judge)."""

    status: int | None  # None: no answer within the client timeout
    seconds: float
    error: str = ""
    hash: str | None = None  # the commit the content was built from (200 only)
    data: tuple[str, ...] = ()  # the content's data files, as text (200 only)


class CacheSizes(Protocol):
    """One answer of a server's cache stats (CACHE_STATS): a size per cache the adapter names
    in `ServerAdapter.caches`, and which process answered."""

    pid: int | None
    rss_kb: int | None

    @property
    def missing_fields(self) -> list[str]: ...

    def sizes(self) -> dict[str, int]: ...


class ScopeClient(Protocol):
    """The API of a server with many runtime sources (RUNTIME_SOURCES), which the scope gates
    drive: a source is a "scope" with an id, stored with a repo URL, refreshed, deleted, and
    asked which commit it serves. Every call has a timeout."""

    base_url: str
    timeout: float

    def healthy(self, timeout: float = 2.0) -> bool: ...

    def put_scope(self, scope_id: str, repo_url: str) -> int: ...

    def delete_scope(self, scope_id: str) -> int: ...

    def refresh(self, scope_id: str | None = None) -> int: ...

    def get_policy(self, scope_id: str, timeout: float | None = None) -> PolicyResult: ...

    def policy_hash(self, scope_id: str, timeout: float | None = None) -> PolicyResult: ...

    def cache_stats(self) -> CacheSizes: ...

    def fresh(self, timeout: float | None = None) -> ScopeClient:
        """A client of its own (its own connections, nothing told of its PUTs): for a request
        sent from another thread while this client's are in flight."""
        ...


class PolicySource(Protocol):
    """One policy repo on the stack's git host in the layout the server reads, and the
    harness's working clone of it. Every change is committed and pushed at once; each
    returns the nonce the server serves once it has the change."""

    name: str
    nonce: str  # the content's nonce at the head the harness pushed last
    # what a served nonce vouches for: "content" (one policy's content — Cerbos: its main
    # policy carries the nonce, other files of the tree may or may not be loaded beside it) or
    # "commit" (the whole tree at one commit — OPAL: the bundle's hash; every file of that
    # commit is served with it)
    nonce_names: str

    def url(self, via: str = "front") -> str:
        """The URL the server reaches it by: through the git front (`front`), or a dead
        remote (`dead`: the blackhole)."""
        ...

    def head(self) -> str: ...

    def commit(self) -> str:
        """A valid change of the content (a new nonce): fast-forward."""
        ...

    def commit_files(self, files: Mapping[str, str | None], message: str, new_nonce: bool = True) -> str:
        """Files written (None: removed) under the policy dir, beside a new nonce unless
        `new_nonce` is False; the nonce the head carries."""
        ...

    def bad_file(self, name: str) -> tuple[str, str]:
        """(file name, content) of a policy file the server cannot parse, named to sort where
        `name` does (`aaa`: before every valid file)."""
        ...

    def other_file(self, name: str) -> tuple[str, str]:
        """(file name, content) of a valid policy file other than the nonce's, with content
        new on every call (a change elsewhere in the tree)."""
        ...

    def force_push(self) -> str:
        """The last commit rewritten with a new nonce and force-pushed."""
        ...

    def remote_head(self) -> str | None:
        """The branch head the git host has now; None when the branch or the repo is gone."""
        ...

    def delete_branch(self) -> None:
        """The branch deleted on the host (the remote is broken: no branch to fetch)."""
        ...

    def recreate_branch(self) -> str:
        """The deleted branch re-created with new content (a new nonce) on a history of its
        own: a root commit, so nothing the server fetched before is an ancestor."""
        ...

    def remove(self) -> None:
        """The repository removed from the host (renamed away: "repository not found")."""
        ...

    def restore(self) -> str:
        """The removed repository restored with the history it had; the nonce its head
        carries (the one served before the removal)."""
        ...


class SourceControl(Protocol):
    """The source-level verbs of a server probe (Capability.SOURCE_CONTROL): what gates that
    make sense for any git-backed server drive, the same on every adapter that has it."""

    def new_source(self, name: str, policies: int = 0) -> PolicySource:
        """A new repo on the git host with a valid tree (plus `policies` filler policies)."""
        ...

    def attach(self, source: PolicySource, via: str = "front", fresh: bool = True,
               wait_healthy: bool = True) -> None:
        """Serve `source` (restarting the server where that is how it takes a new source);
        `fresh`: no checkout or cache of an earlier source kept."""
        ...

    def served(self, timeout: float = 5.0) -> Served: ...

    def nudge(self) -> None:
        """Ask the server to fetch its source now, where it takes such a request (OPAL: the
        scope's refresh call, as a git host's webhook or a retry would make it). A polling
        server fetches on its own schedule: nothing to do. A failed request is the server's
        answer, never raised."""
        ...

    def checkout(self) -> Mapping[str, Any]:
        """The server's checkout as it is on disk: packs, head, dirty ({} when it keeps none)."""
        ...

    def tamper(self, kind: str) -> str:
        """Change the server's checkout behind its back (`mode`: a file's mode; `content`: a
        file's content); what was changed."""
        ...

    def compile_seconds(self, source: PolicySource) -> float:
        """Seconds the server's own tool takes to load the source's tree offline, without
        serving it (Capability.COMPILE_CHECK: Cerbos's `cerbos compile`)."""
        ...
