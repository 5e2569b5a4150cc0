"""The OPAL server app, plus the cache-stats route on releases that lack it.

gunicorn serves `harness_opal_app:app`. The installed opal-server package is imported
unmodified; when it has no `GET /internal/git-fetcher-cache-stats` (0.9.6 and earlier),
this module mounts one with the same shape as 0.9.9's native route. Responses from the
wrapper carry the header `X-Harness-Stats: wrapper` so a client can tell them apart.
"""

import os
from pathlib import Path

from fastapi.responses import JSONResponse
from opal_server.git_fetcher import GitPolicyFetcher
from opal_server.main import app

STATS_PATH = "/internal/git-fetcher-cache-stats"


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cache_stats() -> dict:
    # dict.copy() is atomic under the GIL; the caches are mutated on other threads.
    repo_locks = GitPolicyFetcher.repo_locks.copy()
    repos = GitPolicyFetcher.repos.copy()
    last_fetched = GitPolicyFetcher.repos_last_fetched.copy()
    return {
        "pid": os.getpid(),
        "repo_locks": len(repo_locks),
        "repos": len(repos),
        "repos_last_fetched": len(last_fetched),
        "rss_kb": _rss_kb(),
        "repo_locks_keys": sorted(map(str, repo_locks)),
        "repos_keys": sorted(map(str, repos)),
        "repos_last_fetched_keys": sorted(map(str, last_fetched)),
    }


def _has_native_route() -> bool:
    return any(getattr(route, "path", None) == STATS_PATH for route in app.routes)


if not _has_native_route():
    # A plain `def` route: Starlette runs it on its own thread pool, so it keeps
    # answering while the asyncio default executor is jammed by hung git clones.
    @app.get(STATS_PATH, include_in_schema=False)
    def _git_fetcher_cache_stats():
        return JSONResponse(cache_stats(), headers={"X-Harness-Stats": "wrapper"})
