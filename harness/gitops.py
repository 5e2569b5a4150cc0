"""Changing the seeded repos while a gate runs: new commits, history rewrites, a branch
deleted and re-created, pushed over git:// to the git host's host-visible endpoint (git
daemon with receive-pack).

One working clone per repo, kept under a directory of the run and reused across cycles.
Every commit carries the repo's name, a revision number and a nonce, so no two commits
(across repos, cycles or runs) share a SHA. Every git operation is bounded by gitpython's
`kill_after_timeout`: a hung git host costs a timeout, never a stuck gate.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import git

from harness.errors import ConfigError, HarnessError

BRANCH = "main"
DATA_FILE = "data.json"
PAYLOAD_FILE = "payload.txt"
# Fixed identity: the commits are the harness's, whatever the machine's git config says.
IDENTITY = {
    "GIT_AUTHOR_NAME": "Policy Harness", "GIT_AUTHOR_EMAIL": "harness@localhost",
    "GIT_COMMITTER_NAME": "Policy Harness", "GIT_COMMITTER_EMAIL": "harness@localhost",
}


HARNESS = git.Actor(IDENTITY["GIT_AUTHOR_NAME"], IDENTITY["GIT_AUTHOR_EMAIL"])


class GitOpError(HarnessError):
    """A clone, commit or push against the git host failed or timed out."""


def push_base_url(githost_endpoint: str) -> str:
    """The base URL pushes go to: the git host's endpoint as this machine reaches it.

    Only the `bare` profile (git daemon with --enable=receive-pack) takes anonymous
    pushes; Gitea wants credentials the gates do not carry."""
    if not githost_endpoint.startswith("git://"):
        raise ConfigError(f"pushing new commits needs the bare git host (git daemon with receive-pack), "
                          f"but this stack's git host is {githost_endpoint}: run with HARNESS_GITHOST=bare")
    return githost_endpoint.rstrip("/") + "/"


def host_head(url: str, timeout_s: float = 10.0) -> str | None:
    """The branch head the git host has for the repo at `url` now (one `git ls-remote`);
    None when the repo or the branch is missing or the host did not answer in time."""
    try:
        result = subprocess.run(["git", "ls-remote", url, f"refs/heads/{BRANCH}"], capture_output=True, text=True,
                                timeout=timeout_s, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except (subprocess.TimeoutExpired, OSError):
        return None
    fields = result.stdout.split()
    return fields[0] if result.returncode == 0 and fields else None


@dataclass
class WorkingClones:
    """Working clones of the git host's repos under `root`, one per repo name."""

    root: Path
    base_url: str  # e.g. git://127.0.0.1:9418/ ; a repo is <base_url><name>.git
    timeout_s: float = 30.0
    # repo -> (head SHA, commit count) this object last pushed: while nobody else pushes to
    # the repo (a gate owns its repos for its run), the clone is at the host's head already
    # and needs no fetch — at 1,000 repos a cycle, that is 3 git processes fewer per repo.
    pushed: dict[str, tuple[str, int]] = field(default_factory=dict)
    # repo -> the nonce of the content this object last committed (what a served bundle's
    # data must carry to be that content, not just that commit's SHA)
    nonces: dict[str, str] = field(default_factory=dict)
    # bytes of fresh incompressible data each commit also carries (PAYLOAD_FILE), so its
    # pack is that large: what a throttled link takes long to deliver
    payload_bytes: int = 0

    def url(self, repo: str) -> str:
        return f"{self.base_url}{repo}.git"

    def clone(self, repo: str) -> git.Repo:
        """The working clone of `repo`, made on first use and reused afterwards."""
        path = self.root / repo
        if (path / ".git").is_dir():
            return git.Repo(path)
        self.root.mkdir(parents=True, exist_ok=True)
        # Not Repo.clone_from: it runs git as a process handle, where kill_after_timeout
        # does not apply.
        self._run(git.Git(str(self.root)), repo, "clone", "-q", "-b", BRANCH, self.url(repo), str(path))
        return git.Repo(path)

    def head(self, repo: str) -> str:
        """The SHA the git host has on the branch now (asks the host, not the clone)."""
        out = self._run(git.Git(), repo, "ls-remote", self.url(repo), f"refs/heads/{BRANCH}")
        if not out.strip():
            raise GitOpError(f"{self.url(repo)} has no branch {BRANCH}: was the repo seeded?")
        return out.split()[0]

    def push_new_commit(self, repo: str) -> str:
        """One new commit on top of the host's branch, pushed; its SHA."""
        clone, commits = self._synced(repo)
        revision = commits + 1
        sha = self._commit(clone, repo, revision, "commit", f"harness revision {revision} of {repo}",
                           parents=[clone.head.commit])
        self._run(clone.git, repo, "push", "-q", "origin", f"HEAD:refs/heads/{BRANCH}")
        self.pushed[repo] = (sha, revision)
        return sha

    def force_push_rewrite(self, repo: str) -> str:
        """Rewrite the branch's history: the last commit amended with new content and
        force-pushed, so the old head is no longer an ancestor of the new one; its SHA."""
        clone, revision = self._synced(repo)
        sha = self._commit(clone, repo, revision, "rewrite", f"harness rewrite of revision {revision} of {repo}",
                           parents=list(clone.head.commit.parents))
        self._run(clone.git, repo, "push", "-q", "--force", "origin", f"HEAD:refs/heads/{BRANCH}")
        self.pushed[repo] = (sha, revision)
        return sha

    def delete_branch(self, repo: str) -> None:
        """Delete the branch on the host (HEAD then names no branch; the seeded repos allow
        it with receive.denyDeleteCurrent=ignore). The clone keeps its commits."""
        clone, _ = self._synced(repo)
        self._run(clone.git, repo, "push", "-q", "origin", f":refs/heads/{BRANCH}")
        self.pushed.pop(repo, None)

    def recreate_branch(self, repo: str) -> str:
        """Re-create the deleted branch with new content on a history of its own (a root
        commit: nothing the server fetched before is an ancestor); its SHA."""
        clone = self.clone(repo)
        sha = self._commit(clone, repo, 1, "recreate", f"harness re-creation of {repo}'s branch", parents=[])
        self._run(clone.git, repo, "push", "-q", "--force", "origin", f"HEAD:refs/heads/{BRANCH}")
        self.pushed[repo] = (sha, 1)
        return sha

    # -- helpers ------------------------------------------------------------------------
    def _synced(self, repo: str) -> tuple[git.Repo, int]:
        """The clone at exactly the host's branch head, whatever was pushed or rewritten
        since (a reused clone may be behind; a force-push leaves it diverged), and the
        number of commits on it. A repo this object pushed last is there already."""
        clone = self.clone(repo)
        if repo in self.pushed:
            return clone, self.pushed[repo][1]
        self._run(clone.git, repo, "fetch", "-q", "--force", "origin",
                  f"+refs/heads/{BRANCH}:refs/remotes/origin/{BRANCH}")
        self._run(clone.git, repo, "reset", "-q", "--hard", f"origin/{BRANCH}")
        return clone, int(self._run(clone.git, repo, "rev-list", "--count", "HEAD"))

    def _commit(self, clone: git.Repo, repo: str, revision: int, kind: str, message: str,
                parents: list[git.Commit]) -> str:
        """The new content committed on `parents` and made HEAD (the commit in-process with
        gitpython's object writer: at 1,000 repos a cycle, git processes are most of a
        cycle's time); its SHA. Name, revision and a nonce make every commit distinct
        across repos, cycles, rewrites and runs."""
        nonce = f"{time.time_ns()}-{uuid.uuid4().hex}"
        data = {"repo": repo, "revision": revision, "kind": kind, "nonce": nonce}
        Path(str(clone.working_tree_dir), DATA_FILE).write_text(json.dumps(data) + "\n")
        # `git add`, not IndexFile.add: gitpython's add chdirs the whole process into the
        # working tree for its duration, which pushes on other threads (and a worker's
        # cwd once the clone is gone) do not survive. Its commit does not chdir.
        files = [DATA_FILE]
        if self.payload_bytes:
            # base64 of random bytes: zlib cannot shrink it much, so the pack stays about this size
            Path(str(clone.working_tree_dir), PAYLOAD_FILE).write_bytes(
                base64.b64encode(os.urandom(self.payload_bytes * 3 // 4)))
            files.append(PAYLOAD_FILE)
        self._run(clone.git, repo, "add", *files)
        commit = clone.index.commit(message, parent_commits=parents, head=True, author=HARNESS, committer=HARNESS)
        self.nonces[repo] = nonce
        return commit.hexsha

    def _run(self, runner: git.Git, repo: str, command: str, *args: str) -> str:
        try:
            return runner.execute(["git", command, *args], kill_after_timeout=self.timeout_s,
                                  env=IDENTITY)
        except git.GitCommandError as exc:
            detail = str(exc.stderr or exc).strip()[-400:]
            hint = (" (is receive-pack enabled on the git daemon?)" if command == "push" else "")
            raise GitOpError(f"git {command} for {repo} at {self.url(repo)} failed{hint}: {detail}") from None
