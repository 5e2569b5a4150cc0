"""The gitea profile's client against a fake Gitea: a real HTTP server on 127.0.0.1.

The fake keeps state (users, tokens, repos, branches) and answers as Gitea 1.22 does, with
the statuses of its API handlers; it records every request so the tests pin the exact
method, path, auth header and JSON body the client sends.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from harness import seed
from harness.errors import HarnessError, ServiceFailed
from harness.githost import gitea
from harness.githost.gitea import GiteaAdmin, GiteaClient, GiteaUnusable

ADMIN = GiteaAdmin()
KNOWN_SCOPES = {f"{level}:{cat}" for level in ("read", "write")
                for cat in ("activitypub", "admin", "issue", "misc", "notification", "organization",
                            "package", "repository", "user")} | {"all"}


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeGitea:
    url: str = ""
    users: dict[str, str] = field(default_factory=lambda: {ADMIN.username: ADMIN.password})
    tokens: dict[str, str] = field(default_factory=dict)            # name -> value
    repos: dict[str, set[str]] = field(default_factory=dict)        # "owner/name" -> branches
    fail_create: set[str] = field(default_factory=set)              # repo names answered with 500
    requests: list[Recorded] = field(default_factory=list)
    issued: int = 0

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests]

    def reset_log(self) -> None:
        self.requests.clear()

    # -- what Gitea does -----------------------------------------------------------------

    def handle(self, rec: Recorded) -> tuple[int, Any]:
        m, p = rec.method, rec.path
        if (m, p) == ("GET", "/api/v1/version"):
            return 200, {"version": "1.22.6"}
        if match := re.fullmatch(r"/api/v1/users/([^/]+)/tokens", p):
            return self._basic(rec, match[1]) or (self._create_token(rec.body) if m == "POST" else (405, None))
        if match := re.fullmatch(r"/api/v1/users/([^/]+)/tokens/([^/]+)", p):
            return self._basic(rec, match[1]) or (self._delete_token(match[2]) if m == "DELETE" else (405, None))
        if denied := self._token_auth(rec):
            return denied
        if (m, p) == ("POST", "/api/v1/user/repos"):
            return self._create_repo(rec)
        if m == "GET" and (match := re.fullmatch(r"/api/v1/repos/([^/]+)/([^/]+)", p)):
            key = f"{match[1]}/{match[2]}"
            return (200, {"full_name": key, "empty": not self.repos[key]}) if key in self.repos else _not_found()
        if m == "GET" and (match := re.fullmatch(r"/api/v1/repos/([^/]+)/([^/]+)/branches/([^/]+)", p)):
            branches = self.repos.get(f"{match[1]}/{match[2]}")
            if branches is None or match[3] not in branches:
                return _not_found()
            return 200, {"name": match[3]}
        return _not_found()

    def _basic(self, rec: Recorded, user: str) -> tuple[int, Any] | None:
        auth = rec.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return 401, {"message": "auth required"}
        name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        if self.users.get(name) != password:
            return 401, {"message": f"user's password is invalid [name: {name}]"}
        return None if name == user else (403, {"message": "token is only for its user"})

    def _token_auth(self, rec: Recorded) -> tuple[int, Any] | None:
        auth = rec.headers.get("Authorization", "")
        if auth.startswith("token ") and auth[6:] in self.tokens.values():
            return None
        return 401, {"message": "token is required"}

    def _create_token(self, body: dict) -> tuple[int, Any]:
        if body["name"] in self.tokens:
            return 400, {"message": "access token name has been used already"}
        bad = [s for s in body.get("scopes", []) if s not in KNOWN_SCOPES]
        if bad:
            return 400, {"message": f"invalid access token scope provided: {bad[0]}"}
        self.issued += 1
        value = f"{self.issued:040x}"
        self.tokens[body["name"]] = value
        return 201, {"id": self.issued, "name": body["name"], "sha1": value, "token_last_eight": value[-8:]}

    def _delete_token(self, name: str) -> tuple[int, Any]:
        if self.tokens.pop(name, None) is None:
            return _not_found()
        return 204, None

    def _create_repo(self, rec: Recorded) -> tuple[int, Any]:
        name = rec.body["name"]
        if name in self.fail_create:
            return 500, {"message": "CreateRepository: disk full"}
        key = f"{ADMIN.username}/{name}"
        if key in self.repos:
            return 409, {"message": "The repository with the same name already exists."}
        # auto_init would add a README commit on the default branch
        self.repos[key] = {rec.body.get("default_branch") or "main"} if rec.body.get("auto_init") else set()
        return 201, {"full_name": key, "empty": not rec.body.get("auto_init")}


def _not_found() -> tuple[int, Any]:
    return 404, {"message": "The target couldn't be found.", "errors": []}


def _handler(fake: FakeGitea) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            rec = Recorded(self.command, self.path, dict(self.headers.items()),
                           json.loads(raw) if raw else None)
            fake.requests.append(rec)
            status, body = fake.handle(rec)
            payload = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            if payload:
                self.send_header("Content-Type", "application/json;charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def fake() -> Iterator[FakeGitea]:
    state = FakeGitea()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def closed_port() -> int:
    """A port that was just bound and closed: nothing listens there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _client_with_token(fake: FakeGitea) -> tuple[GiteaClient, str]:
    client = GiteaClient(fake.url, timeout=5)
    token = client.create_token(ADMIN, "seed")
    client.use_token(token)
    fake.reset_log()
    return client, token


# -- admin bootstrap and URLs ------------------------------------------------------------

def test_admin_create_command_is_gitea_cli_argv():
    admin = GiteaAdmin("root", "s3cret-pass", "root@localhost")
    assert gitea.admin_create_command(admin) == [
        "gitea", "admin", "user", "create", "--admin", "--username", "root", "--password", "s3cret-pass",
        "--email", "root@localhost", "--must-change-password=false"]


def test_clone_url_has_no_credentials_and_push_url_has_user_and_token():
    client = GiteaClient("http://127.0.0.1:3000/")
    assert client.clone_url("harness", "policy-0001") == "http://127.0.0.1:3000/harness/policy-0001.git"
    assert (client.push_url("harness", "policy-0001", "abc123")
            == "http://harness:abc123@127.0.0.1:3000/harness/policy-0001.git")


# -- version / readiness -----------------------------------------------------------------

def test_version_and_wait_ready_read_the_version_endpoint(fake):
    client = GiteaClient(fake.url)
    assert client.version() == "1.22.6"
    assert client.wait_ready(5) == "1.22.6"
    assert fake.calls() == [("GET", "/api/v1/version")] * 2


def test_wait_ready_gives_up_within_its_budget_with_a_clear_message(closed_port):
    client = GiteaClient(f"http://127.0.0.1:{closed_port}", timeout=10)
    started = time.monotonic()
    with pytest.raises(ServiceFailed) as info:
        client.wait_ready(0.6, interval=0.1)
    assert time.monotonic() - started < 3
    message = str(info.value)
    assert f"127.0.0.1:{closed_port}" in message and "not ready within 0.6 s" in message
    assert "ConnectionError" in message and "gitea container" in message


def test_an_unreachable_gitea_is_a_harness_error_naming_the_fix(closed_port):
    with pytest.raises(GiteaUnusable, match=r"not reachable at http://127\.0\.0\.1:\d+ .*start the git host"):
        GiteaClient(f"http://127.0.0.1:{closed_port}").create_token(ADMIN, "seed")


# -- tokens --------------------------------------------------------------------------------

def test_token_creation_posts_name_and_scopes_with_basic_auth(fake):
    token = GiteaClient(fake.url).create_token(ADMIN, "seed")

    [req] = fake.requests
    assert (req.method, req.path) == ("POST", "/api/v1/users/harness/tokens")
    assert req.headers["Authorization"] == _basic_header(ADMIN.username, ADMIN.password)
    assert req.headers["Content-Type"] == "application/json"
    assert req.body == {"name": "seed", "scopes": ["write:repository", "write:user"]}
    assert token == fake.tokens["seed"]


def test_an_existing_token_is_deleted_and_recreated(fake):
    client = GiteaClient(fake.url)
    first = client.create_token(ADMIN, "seed")
    fake.reset_log()
    second = client.create_token(ADMIN, "seed")

    assert fake.calls() == [("POST", "/api/v1/users/harness/tokens"),
                            ("DELETE", "/api/v1/users/harness/tokens/seed"),
                            ("POST", "/api/v1/users/harness/tokens")]
    assert fake.requests[1].headers["Authorization"] == _basic_header(ADMIN.username, ADMIN.password)
    assert second != first and fake.tokens == {"seed": second}


def test_a_400_that_is_not_a_name_clash_is_reported_not_retried(fake):
    with pytest.raises(HarnessError, match="HTTP 400: invalid access token scope provided: write:everything"):
        GiteaClient(fake.url).create_token(ADMIN, "seed", scopes=["write:everything"])
    assert fake.calls() == [("POST", "/api/v1/users/harness/tokens"),
                            ("DELETE", "/api/v1/users/harness/tokens/seed")]


def test_bad_credentials_are_a_harness_error_naming_the_fix(fake):
    wrong = GiteaAdmin(ADMIN.username, "not-the-password", ADMIN.email)
    with pytest.raises(GiteaUnusable) as info:
        GiteaClient(fake.url).create_token(wrong, "seed")
    message = str(info.value)
    assert "rejected the credentials while creating token 'seed' (HTTP 401" in message
    assert "username/password" in message and "gitea admin user create" in message
    assert isinstance(info.value, HarnessError)


def test_a_bad_token_is_a_harness_error(fake):
    client = GiteaClient(fake.url)
    client.use_token("0" * 40)
    with pytest.raises(GiteaUnusable, match="HTTP 401"):
        client.repo_exists("harness", "policy-0000")


# -- repos ---------------------------------------------------------------------------------

def test_repo_existence_is_a_get_of_the_repo_with_the_token(fake):
    client, token = _client_with_token(fake)
    assert client.repo_exists("harness", "policy-0000") is False
    fake.repos["harness/policy-0000"] = set()
    assert client.repo_exists("harness", "policy-0000") is True

    assert fake.calls() == [("GET", "/api/v1/repos/harness/policy-0000")] * 2
    assert all(r.headers["Authorization"] == f"token {token}" for r in fake.requests)


def test_repo_creation_posts_the_options_and_a_409_means_done(fake):
    client, token = _client_with_token(fake)
    client.create_repo("policy-0000")
    client.create_repo("policy-0000")  # Gitea answers 409: already there

    assert fake.calls() == [("POST", "/api/v1/user/repos")] * 2
    req = fake.requests[0]
    assert req.headers["Authorization"] == f"token {token}"
    assert req.body == {"name": "policy-0000", "private": False, "default_branch": "main", "auto_init": False}
    assert fake.repos == {"harness/policy-0000": set()}


def test_an_unexpected_status_names_it_and_gitea_s_message(fake):
    client, _ = _client_with_token(fake)
    fake.fail_create.add("policy-0000")
    with pytest.raises(gitea.GiteaError, match="answered HTTP 500: CreateRepository: disk full while creating repo"):
        client.create_repo("policy-0000")


# -- seeding -------------------------------------------------------------------------------

@dataclass
class PushToLocalBare:
    """A pusher that runs the real git_push to a local bare repo standing in for Gitea's.

    It records the URL the client meant to push to, and tells the fake that main arrived.
    """
    fake: FakeGitea
    remote_root: Path
    pushed: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, local_repo: Path, url: str) -> None:
        name = local_repo.name.removesuffix(".git")
        target = self.remote_root / f"{name}.git"
        if not target.exists():
            subprocess.run(["git", "init", "--bare", "-q", str(target)], check=True, timeout=60)
        gitea.git_push(local_repo, str(target))
        self.pushed.append((name, url))
        self.fake.repos[f"harness/{name}"].add("main")


def test_seed_creates_repos_and_pushes_the_seeded_main_then_is_idempotent(fake, tmp_path):
    client, token = _client_with_token(fake)
    (tmp_path / "remote").mkdir()
    pusher = PushToLocalBare(fake, tmp_path / "remote")
    names = ["policy-0000", "probe-0"]

    result = gitea.seed_gitea(client, ADMIN, token, names, tmp_path / "work", push=pusher)

    assert result.created == names and not result.existing and not result.failed
    for name in names:
        assert fake.calls()[:3] == [("GET", f"/api/v1/repos/harness/{name}"), ("POST", "/api/v1/user/repos"),
                                    ("GET", f"/api/v1/repos/harness/{name}/branches/main")]
        del fake.requests[:3]
    assert fake.requests == []
    base = fake.url.removeprefix("http://")
    assert pusher.pushed == [(n, f"http://harness:{token}@{base}/harness/{n}.git") for n in names]
    # Gitea's main is the deterministic seed commit, the same as the bare profile's
    for name in names:
        assert seed.head_sha(tmp_path / "remote" / f"{name}.git") == seed.head_sha(tmp_path / "work" / f"{name}.git")

    again = gitea.seed_gitea(client, ADMIN, token, names, tmp_path / "work", push=pusher)
    assert again.existing == names and not again.created and not again.failed
    assert [m for m, _ in fake.calls()] == ["GET"] * 4 and len(pusher.pushed) == 2


def test_seed_pushes_into_an_existing_empty_repo_without_creating_it(fake, tmp_path):
    client, token = _client_with_token(fake)
    fake.repos["harness/policy-0003"] = set()  # made by an interrupted earlier seed
    (tmp_path / "remote").mkdir()
    pusher = PushToLocalBare(fake, tmp_path / "remote")

    result = gitea.seed_gitea(client, ADMIN, token, ["policy-0003"], tmp_path / "work", push=pusher)

    assert result.created == ["policy-0003"]
    assert fake.calls() == [("GET", "/api/v1/repos/harness/policy-0003"),
                            ("GET", "/api/v1/repos/harness/policy-0003/branches/main")]


def test_seed_records_one_repo_s_failure_and_goes_on(fake, tmp_path):
    client, token = _client_with_token(fake)
    fake.fail_create.add("policy-0001")
    (tmp_path / "remote").mkdir()
    good = PushToLocalBare(fake, tmp_path / "remote")

    def push(local_repo: Path, url: str) -> None:
        if local_repo.name == "policy-0002.git":
            gitea.git_push(local_repo, str(tmp_path / "no-such-remote.git"))
        good(local_repo, url)

    result = gitea.seed_gitea(client, ADMIN, token, ["policy-0000", "policy-0001", "policy-0002"],
                              tmp_path / "work", push=push)

    assert result.created == ["policy-0000"]
    assert set(result.failed) == {"policy-0001", "policy-0002"}
    assert "HTTP 500" in result.failed["policy-0001"]
    assert "git push of main failed" in result.failed["policy-0002"]


def test_git_push_errors_do_not_show_the_token(tmp_path, closed_port):
    local = tmp_path / "work"
    seed.create_repo(local, "policy-0000")
    with pytest.raises(subprocess.SubprocessError, match="git push of main failed") as info:
        gitea.git_push(local / "policy-0000.git", f"http://harness:topsecret@127.0.0.1:{closed_port}/harness/x.git")
    assert "topsecret" not in str(info.value)


def test_a_hung_push_times_out_without_showing_the_token(tmp_path, monkeypatch):
    # subprocess.TimeoutExpired carries the whole command line, token included.
    local = tmp_path / "work"
    seed.create_repo(local, "policy-0000")
    monkeypatch.setattr(gitea, "PUSH_TIMEOUT_S", 1)
    with socket.socket() as silent:  # listens, never accepts: the push hangs
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://harness:topsecret@127.0.0.1:{silent.getsockname()[1]}/harness/x.git"
        with pytest.raises(subprocess.SubprocessError, match="timed out after 1 s") as info:
            gitea.git_push(local / "policy-0000.git", url)
    assert "topsecret" not in str(info.value)


def test_seed_raises_when_gitea_refuses_the_token(fake, tmp_path):
    client = GiteaClient(fake.url)
    with pytest.raises(GiteaUnusable, match="HTTP 401"):
        gitea.seed_gitea(client, ADMIN, "0" * 40, ["policy-0000"], tmp_path / "work",
                         push=lambda *_: pytest.fail("must not push"))
