"""The `gitea` git host: a client for Gitea's REST API (1.22) and seeding through it.

Gitea itself runs in a container (the compose backend); this module only speaks HTTP to it
and builds the argv that bootstraps its admin user. The repos it seeds carry the same
deterministic content as the `bare` profile: each is made locally with
`harness.seed.create_repo` and pushed to Gitea's `main` branch.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from harness import seed
from harness.errors import HarnessError, ServiceFailed
from harness.waiting import GaveUp, wait_for

# The token is used for POST /user/repos (the `/user` group needs the user scope, the
# repo routes the repository scope) and as the password of `git push` over HTTP.
TOKEN_SCOPES = ("write:repository", "write:user")
DEFAULT_TOKEN_NAME = "policy-harness"
BRANCH = "main"
PUSH_TIMEOUT_S = 120


class GiteaError(HarnessError):
    """Gitea answered one request with an unexpected status (e.g. 500, 422 on a name)."""


class GiteaUnusable(HarnessError):
    """Gitea is unreachable or refuses our credentials: every request would fail alike."""


@dataclass
class GiteaAdmin:
    username: str = "harness"
    # Fixed: the container is throwaway and bound to 127.0.0.1; 8+ chars for MIN_PASSWORD_LENGTH.
    password: str = "harness-gitea-admin-1"
    email: str = "harness@localhost"


def admin_create_command(admin: GiteaAdmin) -> list[str]:
    """argv of `gitea admin user create`, run inside the container as the git user.

    --must-change-password=false: otherwise Gitea answers 403 to every API call of the admin
    until a password change (only the very first user is exempt by default).
    """
    return ["gitea", "admin", "user", "create", "--admin",
            "--username", admin.username, "--password", admin.password, "--email", admin.email,
            "--must-change-password=false"]


def _segment(value: str) -> str:
    return quote(value, safe="")


def _message(resp: requests.Response) -> str:
    """Gitea's own explanation: the `message` field of its JSON error body."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:200]
    return str(body.get("message", body)) if isinstance(body, dict) else str(body)[:200]


class GiteaClient:
    """Gitea's REST API at `base_url` (e.g. http://127.0.0.1:3000), one connection per call."""

    def __init__(self, base_url: str, timeout: float = 10) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._token: str | None = None

    # -- transport -------------------------------------------------------------------------

    def _raw(self, method: str, path: str, *, json: Any = None, basic: tuple[str, str] | None = None,
             timeout: float | None = None) -> requests.Response:
        # "Connection: close": the project's rule of one HTTP connection per request.
        headers = {"Accept": "application/json", "Connection": "close"}
        if basic is None and self._token:
            headers["Authorization"] = f"token {self._token}"
        return requests.request(method, self.base_url + path, json=json, auth=basic, headers=headers,
                                timeout=timeout or self.timeout)

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return self._raw(method, path, **kwargs)
        except requests.RequestException as exc:
            raise GiteaUnusable(f"Gitea is not reachable at {self.base_url} ({type(exc).__name__} on "
                                f"{method} {path}); start the git host (is the gitea container up and "
                                f"its port published on 127.0.0.1?) and retry") from None

    def _expect(self, resp: requests.Response, ok: Iterable[int], doing: str) -> requests.Response:
        if resp.status_code in ok:
            return resp
        why = f"HTTP {resp.status_code}: {_message(resp)}"
        if resp.status_code == 401:
            raise GiteaUnusable(f"Gitea at {self.base_url} rejected the credentials while {doing} ({why}); "
                                f"check the admin's username/password (created by `gitea admin user "
                                f"create`) or make a new token with create_token")
        if resp.status_code == 403:
            raise GiteaUnusable(f"Gitea at {self.base_url} refused {doing} ({why}); the admin must be "
                                f"created with --must-change-password=false and the token needs the "
                                f"scopes {', '.join(TOKEN_SCOPES)}")
        raise GiteaError(f"Gitea at {self.base_url} answered {why} while {doing}")

    # -- API -------------------------------------------------------------------------------

    def version(self) -> str:
        resp = self._expect(self._send("GET", "/api/v1/version"), (200,), "reading its version")
        return resp.json()["version"]

    def wait_ready(self, budget_s: float, interval: float = 0.25) -> str:
        """Poll GET /api/v1/version until it answers 200; its version, or ServiceFailed."""
        last = "no answer yet"

        def probe() -> str | None:
            nonlocal last
            try:
                # Each probe is bounded well under the budget, so give-up comes on time.
                resp = self._raw("GET", "/api/v1/version", timeout=min(self.timeout, max(budget_s / 4, 0.2)))
            except requests.RequestException as exc:
                last = type(exc).__name__
                return None
            if resp.status_code == 200:
                try:
                    return resp.json().get("version") or "unknown"
                except ValueError:  # something else answers on that port
                    last = "HTTP 200 without Gitea's JSON"
                    return None
            last = f"HTTP {resp.status_code}"
            return None

        try:
            return str(wait_for(probe, budget_s, "gitea", interval=interval))
        except GaveUp:
            raise ServiceFailed(f"Gitea at {self.base_url} was not ready within {budget_s:g} s "
                                f"(GET /api/v1/version, last: {last}); check that the gitea container "
                                f"is running and read its log") from None

    def create_token(self, admin: GiteaAdmin, name: str = DEFAULT_TOKEN_NAME,
                     scopes: Iterable[str] = TOKEN_SCOPES) -> str:
        """A new token of the admin (basic auth, as Gitea requires for this route).

        Gitea never shows an existing token's value again, so a token of the same name from an
        earlier bootstrap is deleted and made anew: bootstrapping stays idempotent.
        """
        path = f"/api/v1/users/{_segment(admin.username)}/tokens"
        body = {"name": name, "scopes": list(scopes)}
        basic = (admin.username, admin.password)
        resp = self._send("POST", path, json=body, basic=basic)
        # 1.22 answers 400 "access token name has been used already" (older releases 422).
        # 400 is also a bad scope: only retry when a token of that name really was deleted.
        if resp.status_code in (400, 422) and self._delete_token(admin, name):
            resp = self._send("POST", path, json=body, basic=basic)
        return self._expect(resp, (201,), f"creating token {name!r}").json()["sha1"]

    def _delete_token(self, admin: GiteaAdmin, name: str) -> bool:
        """DELETE by name (Gitea accepts an id or a name); False when there was none."""
        path = f"/api/v1/users/{_segment(admin.username)}/tokens/{_segment(name)}"
        resp = self._send("DELETE", path, basic=(admin.username, admin.password))
        return self._expect(resp, (204, 404), f"deleting token {name!r}").status_code == 204

    def use_token(self, token: str) -> None:
        self._token = token

    def repo_exists(self, owner: str, name: str) -> bool:
        resp = self._send("GET", f"/api/v1/repos/{_segment(owner)}/{_segment(name)}")
        return self._expect(resp, (200, 404), f"looking up repo {owner}/{name}").status_code == 200

    def branch_exists(self, owner: str, name: str, branch: str = BRANCH) -> bool:
        path = f"/api/v1/repos/{_segment(owner)}/{_segment(name)}/branches/{_segment(branch)}"
        resp = self._send("GET", path)
        return self._expect(resp, (200, 404), f"looking up {owner}/{name}@{branch}").status_code == 200

    def create_repo(self, name: str) -> None:
        """An empty repo of the token's user; 409 (it already exists) counts as done."""
        body = {"name": name,
                "private": False,         # the server under test clones clone_url without credentials
                "default_branch": BRANCH,
                "auto_init": False}       # no README commit: main must be exactly the seeded commit
        self._expect(self._send("POST", "/api/v1/user/repos", json=body), (201, 409), f"creating repo {name}")

    def clone_url(self, owner: str, name: str) -> str:
        return f"{self.base_url}/{_segment(owner)}/{_segment(name)}.git"

    def push_url(self, owner: str, name: str, token: str) -> str:
        parts = urlsplit(self.clone_url(owner, name))
        netloc = f"{_segment(owner)}:{_segment(token)}@{parts.netloc}"
        return urlunsplit(parts._replace(netloc=netloc))


Pusher = Callable[[Path, str], None]


def git_push(local_repo: Path, url: str) -> None:
    """`git push <url> main` from a local repo; the error never shows the URL's token."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}  # bad credentials fail, never prompt
    try:
        result = subprocess.run(["git", "-C", str(local_repo), "push", "--quiet", url, BRANCH],
                                capture_output=True, text=True, timeout=PUSH_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        # Re-raised without the command line: it holds the token.
        raise subprocess.SubprocessError(f"git push of {BRANCH} timed out after {PUSH_TIMEOUT_S} s") from None
    if result.returncode != 0:
        secret = urlsplit(url).password
        detail = result.stderr.strip()
        if secret:
            detail = detail.replace(secret, "***")
        raise subprocess.SubprocessError(f"git push of {BRANCH} failed (exit {result.returncode}): {detail}")


def seed_gitea(client: GiteaClient, admin: GiteaAdmin, token: str, names: Iterable[str], work_dir: Path,
               push: Pusher = git_push) -> seed.SeedResult:
    """Make each repo in Gitea hold the seeded `main`; idempotent.

    `created` lists repos whose main was pushed now, `existing` those that had it already.
    A failure of one repo is recorded in `failed`; GiteaUnusable (unreachable, 401/403) is
    raised, since every other repo would fail the same way.
    """
    client.use_token(token)
    work_dir.mkdir(parents=True, exist_ok=True)
    result = seed.SeedResult()
    started = time.monotonic()
    for name in names:
        try:
            if not client.repo_exists(admin.username, name):
                client.create_repo(name)
            if client.branch_exists(admin.username, name):
                result.existing.append(name)
                continue
            seed.create_repo(work_dir, name)
            push(work_dir / f"{name}.git", client.push_url(admin.username, name, token))
            result.created.append(name)
        except GiteaUnusable:
            raise
        except (GiteaError, subprocess.SubprocessError, OSError) as exc:
            result.failed[name] = str(exc)
    result.seconds = time.monotonic() - started
    return result
