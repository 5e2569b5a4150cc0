"""The OPAL server's HTTP API as the gates use it: scopes, policy, health, cache stats."""

from __future__ import annotations

import time
from collections.abc import Callable

import requests

from harness.servers.base import PolicyResult
from harness.servers.opal.recipe import scope_body
from harness.servers.opal.stats import STATS_PATH, CacheStats


def bundle_data(bundle: dict) -> tuple[str, ...]:
    """The data files of an OPAL PolicyBundle (`data_modules[].data`, each file's text)."""
    modules = bundle.get("data_modules") or []
    return tuple(m["data"] for m in modules if isinstance(m, dict) and isinstance(m.get("data"), str))


class OpalClient:
    """The scope API, health and stats of one running server. Every call has a timeout."""

    def __init__(self, base_url: str, timeout: float = 10.0,
                 on_put: Callable[[str, str], None] | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # told of every PUT before it is sent (scope id, repo URL): what the scope must serve,
        # whatever the server does with the request
        self.on_put = on_put
        self.session = requests.Session()
        # One connection per request: 0.9.6 drops a keep-alive connection after an
        # unhandled error (e.g. GET policy of a deleted scope), and reusing it would turn
        # the next, unrelated request into a "connection reset".
        self.session.headers["Connection"] = "close"

    def fresh(self, timeout: float | None = None) -> OpalClient:
        return OpalClient(self.base_url, timeout=self.timeout if timeout is None else timeout)

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def healthy(self, timeout: float = 2.0) -> bool:
        try:
            return self.session.get(self._url("/healthcheck"), timeout=timeout).status_code == 200
        except requests.RequestException:
            return False

    def put_scope(self, scope_id: str, repo_url: str) -> int:
        if self.on_put is not None:
            self.on_put(scope_id, repo_url)
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
        """GET policy, keeping the commit the bundle was built from and its data files.

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
            bundle = response.json()
            served = bundle.get("hash")
        except (ValueError, AttributeError):
            bundle, served = {}, None
        if not isinstance(served, str) or not served:
            return PolicyResult(200, seconds, "the bundle has no `hash` field")
        return PolicyResult(200, seconds, hash=served, data=bundle_data(bundle))

    # the name the sync gates compare commits with: one request, one parser
    policy_hash = get_policy

    def cache_stats(self) -> CacheStats:
        response = self.session.get(self._url(STATS_PATH), timeout=self.timeout)
        response.raise_for_status()
        return CacheStats.from_json(response.json(), wrapper=response.headers.get("X-Harness-Stats") == "wrapper")
