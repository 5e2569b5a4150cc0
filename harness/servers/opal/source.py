"""An OPAL policy repo on the local git host and the harness's working clone of it
(harness.servers.base.PolicySource), in OPAL's layout: rego policies and a data file at the
repo's root, the tree a scope's bundle is built from.

What OPAL reports of the content it serves is the bundle's `hash`: the commit the bundle was
built from. So this source's nonce is the commit SHA: every change returns the new head,
and every file of that commit is served with it (the nonce names the whole tree, not one
policy: `NONCE_NAMES`).

OPAL as the harness runs it does not poll (OPAL_POLICY_REFRESH_INTERVAL=0, and a scope's
`poll_updates` is off): it learns of a push by its refresh call, which is what a git host's
webhook calls in production. Every push through this source is followed by `on_push(sha)`,
which the probe points at POST /scopes/<id>/refresh of the scope the source is attached to.

The bare repo is made by harness.seed (the seeded tree of its name: a distinct first commit),
pushes go straight to it on disk (the local backend's git host is a directory); the server
reads it over smart HTTP through the git front.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError
from harness.seed import create_repo

BRANCH = "main"
DATA_FILE = "data.json"
GIT_TIMEOUT_S = 60.0
NONCE_NAMES = "commit"  # a served nonce is a commit: the whole tree at it is served
IDENTITY = {"GIT_AUTHOR_NAME": "Policy Harness", "GIT_AUTHOR_EMAIL": "harness@localhost",
            "GIT_COMMITTER_NAME": "Policy Harness", "GIT_COMMITTER_EMAIL": "harness@localhost",
            "GIT_TERMINAL_PROMPT": "0"}


def make_marker() -> str:
    return f"n{time.time_ns()}-{uuid.uuid4().hex[:8]}"


def package_of(name: str) -> str:
    """A rego package segment for a file or repo name (letters, digits, underscores)."""
    cleaned = "".join(c if c.isalnum() else "_" for c in name)
    return cleaned if cleaned[:1].isalpha() else f"p_{cleaned}"


def bad_rego() -> str:
    """A rego module no parser accepts: a rule body that never closes."""
    return "package broken\n\nallow {\n"


def valid_rego(name: str, marker: str) -> str:
    return (f"package harness.{package_of(name)}\n\n# {marker}\n"
            f"default allow = false\n\nallow {{\n    input.file == \"{name}\"\n}}\n")


@dataclass
class OpalSource:
    """`<repos_dir>/<name>.git` and its working clone `<work_root>/<name>`."""

    name: str
    repos_dir: Path
    work_root: Path
    front_url: str  # the git front's URL of this repo (smart HTTP)
    dead_url: str  # a URL on the blackhole for this repo
    nonce: str = ""  # the head the harness pushed last (what a served bundle's hash must be)
    # told of every push (the new head): the probe refreshes the attached scope with it
    on_push: Callable[[str], None] | None = field(default=None, repr=False)
    nonce_names: str = NONCE_NAMES

    @property
    def bare(self) -> Path:
        return self.repos_dir / f"{self.name}.git"

    @property
    def work(self) -> Path:
        return self.work_root / self.name

    def url(self, via: str = "front") -> str:
        return self.dead_url if via == "dead" else self.front_url

    # -- making it ----------------------------------------------------------------------
    def create(self, policies: int = 0) -> OpalSource:
        """The seeded repo of this name (policy.rego, data.json), cloned, plus `policies`
        filler policies in a second commit when asked."""
        if self.bare.exists():
            raise HarnessError(f"policy repo {self.bare} exists already: a source is made once per run")
        self.repos_dir.mkdir(parents=True, exist_ok=True)
        create_repo(self.repos_dir, self.name)
        self.work_root.mkdir(parents=True, exist_ok=True)
        self._git(self.work_root, "clone", "-q", "-b", BRANCH, str(self.bare), str(self.work))
        if policies:
            fillers = {f"filler_{i:04d}.rego": valid_rego(f"filler_{i:04d}", make_marker()) for i in range(policies)}
            self.commit_files(fillers, f"harness: {policies} filler policies", new_nonce=False)
        else:
            self.nonce = self.head()
        return self

    # -- PolicySource -------------------------------------------------------------------
    def head(self) -> str:
        return self._git(self.work, "rev-parse", "HEAD").strip()

    def commit(self) -> str:
        return self.commit_files({}, "harness: new data")

    def commit_files(self, files: Mapping[str, str | None], message: str, new_nonce: bool = True) -> str:
        """Files written (None: removed) at the repo's root, the data file changed too when
        `new_nonce`; committed (empty when nothing changed: a commit is a new nonce all the
        same) and pushed. The new head: OPAL's nonce."""
        for name, content in files.items():
            path = self.work / name
            if content is None:
                path.unlink(missing_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
        if new_nonce:
            self._write_data()
        self._git(self.work, "add", "-A")
        self._git(self.work, "commit", "-q", "--allow-empty", "-m", message)
        return self._push()

    def bad_file(self, name: str) -> tuple[str, str]:
        return f"{name}.rego", bad_rego()

    def other_file(self, name: str) -> tuple[str, str]:
        return f"{name}.rego", valid_rego(name, make_marker())

    def force_push(self) -> str:
        self._write_data()
        self._git(self.work, "add", "-A")
        self._git(self.work, "commit", "-q", "--amend", "--allow-empty", "-m", f"harness: {self.name} rewritten")
        return self._push(force=True)

    # -- helpers ------------------------------------------------------------------------
    def _write_data(self) -> None:
        (self.work / DATA_FILE).write_text(json.dumps({"repo": self.name, "marker": make_marker()}) + "\n")

    def _push(self, force: bool = False) -> str:
        self._git(self.work, "push", "-q", *(["--force"] if force else []), "origin", f"HEAD:refs/heads/{BRANCH}")
        self.nonce = self.head()
        if self.on_push is not None:
            self.on_push(self.nonce)
        return self.nonce

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
