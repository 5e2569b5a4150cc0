"""A Cerbos policy repo on the local git host and the harness's working clone of it
(harness.servers.base.PolicySource): created with a valid tree, then changed commit by
commit. Pushes go straight to the bare repo on disk (the local backend's git host is a
directory); the server reads it over smart HTTP through the git front."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from harness.seed import BARE_CONFIG
from harness.servers.cerbos.policies import MAIN_FILE, SUB_DIR, bad_policy, filler_policy, write_tree
from harness.servers.repo_clone import BRANCH, RepoClone


def make_nonce() -> str:
    return f"n{time.time_ns()}-{uuid.uuid4().hex[:8]}"


@dataclass
class CerbosSource(RepoClone):
    """A Cerbos policy repo (harness.servers.repo_clone.RepoClone): its nonce is in the main
    policy's decision, so it vouches for that policy only (`nonce_names`)."""

    nonce_names: str = "content"

    # -- making it ----------------------------------------------------------------------
    def create(self, policies: int = 0) -> CerbosSource:
        """The bare repo with one commit: the main policy (a nonce) and `policies` fillers."""
        self.refuse_existing()
        self.git(self.repos_dir, "init", "-q", "--bare", f"--initial-branch={BRANCH}", str(self.bare))
        (self.bare / "config").write_text(BARE_CONFIG)  # like the seeded repos: the branch may be deleted
        self.work.mkdir(parents=True)
        self.git(self.work, "init", "-q", f"--initial-branch={BRANCH}")
        self.git(self.work, "remote", "add", "origin", str(self.bare))
        self.nonce = make_nonce()
        write_tree(self.work, self.nonce, extra_policies=policies)
        self.commit_all(f"harness: {self.name} with {policies + 1} policies")
        self.push()
        return self

    # -- PolicySource -------------------------------------------------------------------
    def commit(self) -> str:
        return self.commit_files({}, "harness: a new nonce")

    def commit_files(self, files: Mapping[str, str | None], message: str, new_nonce: bool = True) -> str:
        self.write_files(self.work / SUB_DIR, files)
        if new_nonce:
            self.nonce = make_nonce()
            write_tree(self.work, self.nonce)
        self.commit_all(message)
        self.push()
        return self.nonce

    def bad_file(self, name: str) -> tuple[str, str]:
        file = f"{name}.yaml"
        return file, bad_policy(file)

    def other_file(self, name: str) -> tuple[str, str]:
        return f"{name}.yaml", f"# {make_nonce()}\n" + filler_policy(sum(name.encode()) % 10_000)

    def force_push(self) -> str:
        self.nonce = make_nonce()
        write_tree(self.work, self.nonce)
        self.commit_all(f"harness: {self.name} rewritten", amend=True)
        self.push(force=True)
        return self.nonce

    def delete_branch(self) -> None:
        self.delete_remote_branch()

    def recreate_branch(self) -> str:
        """A new nonce committed as a root commit (the whole tree, on no parent) and pushed."""
        self.nonce = make_nonce()
        write_tree(self.work, self.nonce)
        self.commit_root(f"harness: {self.name}'s branch re-created on a history of its own")
        self.push(force=True)
        return self.nonce

    def remove(self) -> None:
        self.remove_bare()

    def restore(self) -> str:
        self.restore_bare()
        return self.nonce


MAIN_POLICY = f"{SUB_DIR}/{MAIN_FILE}"  # the file a nonce lives in, relative to the repo root
