"""A Cerbos policy repo on the local git host and the harness's working clone of it
(harness.servers.base.PolicySource): created with a valid tree, then changed commit by
commit. Pushes go straight to the bare repo on disk (the local backend's git host is a
directory); the server reads it over smart HTTP through the git front."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.seed import BARE_CONFIG
from harness.servers.cerbos.policies import MAIN_FILE, SUB_DIR, bad_policy, filler_policy, write_tree

BRANCH = "main"
GIT_TIMEOUT_S = 60.0
IDENTITY = {"GIT_AUTHOR_NAME": "Policy Harness", "GIT_AUTHOR_EMAIL": "harness@localhost",
            "GIT_COMMITTER_NAME": "Policy Harness", "GIT_COMMITTER_EMAIL": "harness@localhost",
            "GIT_TERMINAL_PROMPT": "0"}


def make_nonce() -> str:
    return f"n{time.time_ns()}-{uuid.uuid4().hex[:8]}"


@dataclass
class CerbosSource:
    """`<repos_dir>/<name>.git` and its working clone `<work_root>/<name>`."""

    name: str
    repos_dir: Path
    work_root: Path
    front_url: str  # the git front's base URL: http://127.0.0.1:<port>
    dead_url: str  # a URL on the blackhole for this repo
    nonce: str = ""  # the content's nonce at the head the harness pushed last
    nonce_names: str = "content"  # the nonce is in the main policy: it vouches for that policy only

    @property
    def bare(self) -> Path:
        return self.repos_dir / f"{self.name}.git"

    @property
    def work(self) -> Path:
        return self.work_root / self.name

    def url(self, via: str = "front") -> str:
        if via == "dead":
            return self.dead_url
        return f"{self.front_url.rstrip('/')}/{self.name}.git"

    # -- making it ----------------------------------------------------------------------
    def create(self, policies: int = 0) -> CerbosSource:
        """The bare repo with one commit: the main policy (a nonce) and `policies` fillers."""
        if self.bare.exists():
            raise HarnessError(f"policy repo {self.bare} exists already: a source is made once per run")
        self._git(self.repos_dir, "init", "-q", "--bare", f"--initial-branch={BRANCH}", str(self.bare))
        (self.bare / "config").write_text(BARE_CONFIG)  # like the seeded repos: the branch may be deleted
        self.work.mkdir(parents=True)
        self._git(self.work, "init", "-q", f"--initial-branch={BRANCH}")
        self._git(self.work, "remote", "add", "origin", str(self.bare))
        self.nonce = make_nonce()
        write_tree(self.work, self.nonce, extra_policies=policies)
        self._commit_and_push(f"harness: {self.name} with {policies + 1} policies")
        return self

    # -- PolicySource -------------------------------------------------------------------
    def head(self) -> str:
        return self._git(self.work, "rev-parse", "HEAD").strip()

    def commit(self) -> str:
        return self.commit_files({}, "harness: a new nonce")

    def commit_files(self, files: Mapping[str, str | None], message: str, new_nonce: bool = True) -> str:
        policies = self.work / SUB_DIR
        for name, content in files.items():
            path = policies / name
            if content is None:
                path.unlink(missing_ok=True)
            else:
                path.write_text(content)
        if new_nonce:
            self.nonce = make_nonce()
            write_tree(self.work, self.nonce)
        self._commit_and_push(message)
        return self.nonce

    def bad_file(self, name: str) -> tuple[str, str]:
        file = f"{name}.yaml"
        return file, bad_policy(file)

    def other_file(self, name: str) -> tuple[str, str]:
        return f"{name}.yaml", f"# {make_nonce()}\n" + filler_policy(sum(name.encode()) % 10_000)

    def force_push(self) -> str:
        self.nonce = make_nonce()
        write_tree(self.work, self.nonce)
        self._git(self.work, "add", "-A")
        self._git(self.work, "commit", "-q", "--amend", "-m", f"harness: {self.name} rewritten")
        self._git(self.work, "push", "-q", "--force", "origin", f"HEAD:refs/heads/{BRANCH}")
        return self.nonce

    # -- helpers ------------------------------------------------------------------------
    def _commit_and_push(self, message: str) -> None:
        self._git(self.work, "add", "-A")
        self._git(self.work, "commit", "-q", "-m", message)
        self._git(self.work, "push", "-q", "origin", f"HEAD:refs/heads/{BRANCH}")

    def _git(self, cwd: Path, *args: str) -> str:
        env = {**{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}, **IDENTITY}
        try:
            done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=GIT_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"git {args[0]} for policy repo {self.name} took over {GIT_TIMEOUT_S:g} s") from None
        if done.returncode != 0:
            raise HarnessError(f"git {args[0]} for policy repo {self.name} failed: {done.stderr.strip()[-400:]}")
        return done.stdout


MAIN_POLICY = f"{SUB_DIR}/{MAIN_FILE}"  # the file a nonce lives in, relative to the repo root
