"""An OPAL policy repo on the local git host and the harness's working clone of it
(harness.servers.base.PolicySource), in OPAL's layout: rego policies and a data file at the
repo's root, the tree a scope's bundle is built from.

What OPAL reports of the content it serves is the bundle's `hash`: the commit the bundle was
built from. So this source's nonce is the commit SHA: every change returns the new head,
and every file of that commit is served with it (the nonce names the whole tree, not one
policy: `NONCE_NAMES`).

OPAL as the harness runs it does not poll (OPAL_POLICY_REFRESH_INTERVAL=0, and a scope's
`poll_updates` is off): it learns of a push by its refresh call, which is what a git host's
webhook calls in production. Every change of the remote through this source is followed by
`on_push(head)`, which the probe points at POST /scopes/<id>/refresh of the scope the source
is attached to: each push, and the transitions a git host's webhooks also report — the branch
deleted (head None), the repository removed (None) and restored (its head).

The bare repo is made by harness.seed (the seeded tree of its name: a distinct first commit),
pushes go straight to it on disk (the local backend's git host is a directory); the server
reads it over smart HTTP through the git front.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from harness.seed import create_repo
from harness.servers.repo_clone import BRANCH, RepoClone

DATA_FILE = "data.json"
NONCE_NAMES = "commit"  # a served nonce is a commit: the whole tree at it is served


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
class OpalSource(RepoClone):
    """An OPAL policy repo (harness.servers.repo_clone.RepoClone) whose nonce is its head."""

    # told of every change of the remote (the new head; None: no branch or no repo): the probe refreshes the scope
    on_push: Callable[[str | None], None] | None = field(default=None, repr=False)
    nonce_names: str = NONCE_NAMES

    # -- making it ----------------------------------------------------------------------
    def create(self, policies: int = 0) -> OpalSource:
        """The seeded repo of this name (policy.rego, data.json), cloned, plus `policies`
        filler policies in a second commit when asked."""
        self.refuse_existing()
        self.repos_dir.mkdir(parents=True, exist_ok=True)
        create_repo(self.repos_dir, self.name)
        self.work_root.mkdir(parents=True, exist_ok=True)
        self.git(self.work_root, "clone", "-q", "-b", BRANCH, str(self.bare), str(self.work))
        if policies:
            fillers = {f"filler_{i:04d}.rego": valid_rego(f"filler_{i:04d}", make_marker()) for i in range(policies)}
            self.commit_files(fillers, f"harness: {policies} filler policies", new_nonce=False)
        else:
            self.nonce = self.head()
        return self

    # -- PolicySource -------------------------------------------------------------------
    def commit(self) -> str:
        return self.commit_files({}, "harness: new data")

    def commit_files(self, files: Mapping[str, str | None], message: str, new_nonce: bool = True) -> str:
        """Files written (None: removed) at the repo's root, the data file changed too when
        `new_nonce`; committed (empty when nothing changed: a commit is a new nonce all the
        same) and pushed. The new head: OPAL's nonce."""
        self.write_files(self.work, files)
        if new_nonce:
            self._write_data()
        self.commit_all(message)
        return self._pushed()

    def bad_file(self, name: str) -> tuple[str, str]:
        return f"{name}.rego", bad_rego()

    def other_file(self, name: str) -> tuple[str, str]:
        return f"{name}.rego", valid_rego(name, make_marker())

    def force_push(self) -> str:
        self._write_data()
        self.commit_all(f"harness: {self.name} rewritten", amend=True)
        return self._pushed(force=True)

    def delete_branch(self) -> None:
        self.delete_remote_branch()
        self._tell(None)

    def recreate_branch(self) -> str:
        """New data committed as a root commit and force-pushed: the new head."""
        self._write_data()
        self.commit_root(f"harness: {self.name}'s branch re-created on a history of its own")
        return self._pushed(force=True)

    def remove(self) -> None:
        self.remove_bare()
        self._tell(None)

    def restore(self) -> str:
        self.restore_bare()
        self._tell(self.nonce)
        return self.nonce

    # -- helpers ------------------------------------------------------------------------
    def _tell(self, head: str | None) -> None:
        if self.on_push is not None:
            self.on_push(head)

    def _write_data(self) -> None:
        (self.work / DATA_FILE).write_text(json.dumps({"repo": self.name, "marker": make_marker()}) + "\n")

    def _pushed(self, force: bool = False) -> str:
        self.push(force)
        self.nonce = self.head()
        self._tell(self.nonce)
        return self.nonce
