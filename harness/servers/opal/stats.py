"""The cache-stats contract: GET /internal/git-fetcher-cache-stats, in every shape OPAL serves it."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.servers.registry import OPAL

STATS_PATH = "/internal/git-fetcher-cache-stats"
CACHES = OPAL.caches


class StatsContractError(ValueError):
    """The stats endpoint answered, but without a field the gates need (named in the message)."""


@dataclass(frozen=True)
class CacheStats:
    """One answer of GET /internal/git-fetcher-cache-stats.

    Three shapes answer on that path: 0.9.9's native route (pid, sizes, rss_kb, key lists),
    the harness's wrapper on releases without one (the same shape, marked by a header), and
    OPAL's own `debug_stats` module on its test-bed and fix branches, which answers only the
    three sizes and rss_kb. `pid` is None for the last: the caller identifies the answering
    worker from the server's process tree instead (see GateContext.observe).
    """

    repo_locks: int
    repos: int
    repos_last_fetched: int
    rss_kb: int | None = None
    pid: int | None = None
    keys: dict[str, list[str]] = field(default_factory=dict)
    wrapper: bool = False

    @classmethod
    def from_json(cls, body: object, wrapper: bool = False) -> CacheStats:
        if not isinstance(body, dict):
            raise StatsContractError(f"stats endpoint answered {type(body).__name__}, not an object: "
                                     f"{str(body)[:200]}")
        missing = [k for k in CACHES if k not in body]
        if missing:
            raise StatsContractError(
                f"stats endpoint lacks the field(s) {', '.join(missing)} (it answered "
                f"{', '.join(sorted(body)) or 'nothing'}): the gates cannot see those caches")
        keys = {name: list(body[f"{name}_keys"]) for name in CACHES if f"{name}_keys" in body}
        return cls(repo_locks=int(body["repo_locks"]), repos=int(body["repos"]),
                   repos_last_fetched=int(body["repos_last_fetched"]),
                   rss_kb=int(body["rss_kb"]) if body.get("rss_kb") is not None else None,
                   pid=int(body["pid"]) if body.get("pid") is not None else None,
                   keys=keys, wrapper=wrapper)

    @property
    def missing_fields(self) -> list[str]:
        """Optional contract fields this answer did not carry (recorded, not fatal)."""
        missing = [name for name in ("pid", "rss_kb") if getattr(self, name) is None]
        return missing + ([] if self.keys else ["key lists"])

    def sizes(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in CACHES}
