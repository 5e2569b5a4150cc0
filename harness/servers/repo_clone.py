"""A policy repo on the local git host and the harness's working clone of it: the git
plumbing every adapter's PolicySource (harness.servers.base) shares. Pushes go straight to
the bare repo on disk (the local backend's git host is a directory); the server reads it
over smart HTTP through the git front, or a dead URL on the blackhole.

An adapter's source adds its own layout (which files, where the nonce lives) on top. The
remote's transitions live here too, the same for every layout: the branch deleted on the
host, a commit with no parent (a history of its own), the bare repo renamed away (gone:
"repository not found") and back (restored with the history it had)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError

BRANCH = "main"
REMOVED_SUFFIX = "-removed-by-harness"  # the bare repo's name while it is removed from the host
GIT_TIMEOUT_S = 60.0
IDENTITY = {"GIT_AUTHOR_NAME": "Policy Harness", "GIT_AUTHOR_EMAIL": "harness@localhost",
            "GIT_COMMITTER_NAME": "Policy Harness", "GIT_COMMITTER_EMAIL": "harness@localhost",
            "GIT_TERMINAL_PROMPT": "0"}


@dataclass
class RepoClone:
    """`<repos_dir>/<name>.git` and its working clone `<work_root>/<name>`."""

    name: str
    repos_dir: Path
    work_root: Path
    front_url: str  # the repo's URL through the git front (smart HTTP)
    dead_url: str  # a URL on the blackhole for this repo
    nonce: str = ""  # what the server serves once it has the head the harness pushed last

    @property
    def bare(self) -> Path:
        return self.repos_dir / f"{self.name}.git"

    @property
    def work(self) -> Path:
        return self.work_root / self.name

    def url(self, via: str = "front") -> str:
        return self.dead_url if via == "dead" else self.front_url

    def head(self) -> str:
        return self.git(self.work, "rev-parse", "HEAD").strip()

    def remote_head(self) -> str | None:
        """The branch head the git host has now (asks the bare repo, not the clone); None when
        the branch or the repository is gone."""
        if not self.bare.is_dir():
            return None
        out = self.git(self.repos_dir, f"--git-dir={self.bare}", "for-each-ref", "--format=%(objectname)",
                       f"refs/heads/{BRANCH}")
        return out.strip() or None

    def refuse_existing(self) -> None:
        if self.bare.exists():
            raise HarnessError(f"policy repo {self.bare} exists already: a source is made once per run")

    def write_files(self, root: Path, files: Mapping[str, str | None]) -> None:
        """Files written under `root` (None: removed)."""
        for name, content in files.items():
            path = root / name
            if content is None:
                path.unlink(missing_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)

    def commit_all(self, message: str, amend: bool = False) -> None:
        """Everything in the working tree committed (an empty commit when nothing changed:
        a commit the server must follow all the same)."""
        self.git(self.work, "add", "-A")
        self.git(self.work, "commit", "-q", "--allow-empty", *(["--amend"] if amend else []), "-m", message)

    def push(self, force: bool = False) -> None:
        self.git(self.work, "push", "-q", *(["--force"] if force else []), "origin", f"HEAD:refs/heads/{BRANCH}")

    def commit_root(self, message: str) -> None:
        """Everything in the working tree committed as a root commit (no parent: nothing
        pushed before is its ancestor) and made the local branch's head."""
        self.git(self.work, "add", "-A")
        tree = self.git(self.work, "write-tree").strip()
        sha = self.git(self.work, "commit-tree", tree, "-m", message).strip()
        self.git(self.work, "update-ref", f"refs/heads/{BRANCH}", sha)

    def delete_remote_branch(self) -> None:
        """The branch deleted on the host (HEAD then names no branch; the bare repos allow it
        with receive.denyDeleteCurrent=ignore). The clone keeps its commits."""
        self.push_refspec(f":refs/heads/{BRANCH}")

    def push_refspec(self, refspec: str) -> None:
        self.git(self.work, "push", "-q", "origin", refspec)

    @property
    def removed(self) -> Path:
        return self.repos_dir / f"{self.name}{REMOVED_SUFFIX}.git"

    def remove_bare(self) -> None:
        """The bare repo renamed away on the host's directory: the remote is gone."""
        if self.removed.exists():
            raise HarnessError(f"{self.removed} exists already: the repo was removed and never restored")
        self.bare.rename(self.removed)

    def restore_bare(self) -> None:
        """The bare repo renamed back: restored with the history it had."""
        if self.bare.exists():
            raise HarnessError(f"{self.bare} exists: nothing to restore it over")
        self.removed.rename(self.bare)

    def git(self, cwd: Path, *args: str) -> str:
        env = {**{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}, **IDENTITY}
        try:
            done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=GIT_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"git {args[0]} for policy repo {self.name} took over {GIT_TIMEOUT_S:g} s") from None
        if done.returncode != 0:
            raise HarnessError(f"git {args[0]} for policy repo {self.name} failed: {done.stderr.strip()[-400:]}")
        return done.stdout
