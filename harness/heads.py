"""What a scope must serve to count as served: its own repo's head, not any 200.

Once a scope named `default` is stored, OPAL answers GET /scopes/{id}/policy of a scope it does
not know (never stored, deleted, a PUT it lost) with 200 and the default's bundle (see
shared/OPAL.md). A status code therefore never proves a scope was served: the bundle's `hash`
must be the head the harness last set for that scope's repo.

Two records, one per stack:
- `RepoHeads`: repo -> the head the harness set. A seeded repo's head is computed from the
  seed (every git host gets the same objects), a push records its commit; a hash that matches
  neither is checked once against the git host (`git ls-remote`, once per repo and hash seen),
  so a head changed by an earlier gate of the same run is learned instead of read as foreign.
  No request per poll: at 1,000 scopes the check is a dict lookup.
- `ScopeBook`: scope id -> the repo it was given, as the harness PUT or staged it (the
  client's PUT and the store staging record it, whatever the server did with the request).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.seed import seeded_head

# What the harness can say of one GET policy answer (Judgement.kind).
OWN = "own"  # 200 with the head the harness set for the scope's repo
STALE = "stale"  # 200 with an older head of the scope's own repo
FOREIGN = "foreign"  # 200 with a bundle that is not of the scope's repo (e.g. the default scope's)
NO_HASH = "no_hash"  # 200 without a commit in the bundle
NOT_200 = "not_200"  # any other status, or no answer
UNKNOWN_SCOPE = "unknown_scope"  # the harness never gave this scope a repo: nothing it serves is its own

HostHead = Callable[[str], "str | None"]


def repo_of(url: str) -> str:
    """The repo name in a repo URL as the server was given it (git host, latency proxy or git
    front alike): its last path segment without `.git`."""
    return url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")


@dataclass
class RepoHeads:
    """repo -> the head the harness last set for it (seeded, pushed, or read off the host)."""

    host_head: HostHead  # the git host's head of a repo now (None: no such repo or branch)
    heads: dict[str, str] = field(default_factory=dict)
    # every head the harness ever knew per repo: an older one served is stale, not foreign
    history: dict[str, set[str]] = field(default_factory=dict)
    _checked: set[tuple[str, str]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def head(self, repo: str) -> str:
        with self._lock:
            if repo not in self.heads:
                self._set(repo, seeded_head(repo))
            return self.heads[repo]

    def set(self, repo: str, sha: str) -> None:
        """A head the harness itself made (a push, a force-push, a re-created branch)."""
        with self._lock:
            self._set(repo, sha)

    def is_head(self, repo: str, seen: str) -> bool:
        """Whether `seen` is `repo`'s head. A mismatch is checked against the git host once
        per (repo, hash): a head some earlier gate pushed is learned, not judged foreign."""
        if seen == self.head(repo):
            return True
        with self._lock:
            if (repo, seen) in self._checked:
                return False
            self._checked.add((repo, seen))
        actual = self.host_head(repo)
        if actual is not None and actual != self.heads.get(repo):
            self.set(repo, actual)
        return actual == seen

    def owner(self, sha: str) -> str | None:
        """The repo whose head (now or earlier) `sha` is, among the heads the harness knows."""
        with self._lock:
            return next((repo for repo, shas in self.history.items() if sha in shas), None)

    def _set(self, repo: str, sha: str) -> None:
        self.heads[repo] = sha
        self.history.setdefault(repo, set()).add(sha)


@dataclass(frozen=True)
class Judgement:
    """One GET policy answer judged: served only when it is the scope's own head."""

    kind: str
    status: int | None = None
    seen: str | None = None  # the answer's bundle hash
    expected: str | None = None  # the scope's repo's head
    bundle_of: str | None = None  # for a foreign bundle: whose it is, when the harness knows

    @property
    def served(self) -> bool:
        return self.kind == OWN

    def describe(self) -> str:
        """For reasons and timelines: what the answer was, when it was not the scope's own."""
        if self.kind == FOREIGN:
            whose = f"the bundle of {self.bundle_of}" if self.bundle_of else "a bundle of no repo the harness set"
            return f"200 with another bundle ({whose}, {_short(self.seen)}; expected {_short(self.expected)})"
        if self.kind == STALE:
            return f"200 with an older commit of its repo ({_short(self.seen)}; expected {_short(self.expected)})"
        if self.kind == NO_HASH:
            return "200 without a commit in the bundle"
        if self.kind == UNKNOWN_SCOPE:
            return f"{self.status} for a scope the harness never stored"
        if self.kind == OWN:
            return "served"
        return "no answer" if self.status is None else str(self.status)


@dataclass
class ScopeBook:
    """scope id -> the repo the harness gave it, and the judge of what the server answers."""

    heads: RepoHeads
    repos: dict[str, str] = field(default_factory=dict)
    # scope ids by repo, to name whose bundle a foreign answer is
    scopes_of: dict[str, list[str]] = field(default_factory=dict)

    def given(self, scope_id: str, repo_url: str) -> None:
        """The harness stored (PUT or staged) `scope_id` with `repo_url`."""
        repo = repo_of(repo_url)
        self.heads.head(repo)  # known from now on, so a foreign answer can name whose bundle it is
        self.repos[scope_id] = repo
        self.scopes_of.setdefault(repo, [])
        if scope_id not in self.scopes_of[repo]:
            self.scopes_of[repo].append(scope_id)

    def forget(self) -> None:
        """A new gate: a fresh server, scopes given anew."""
        self.repos.clear()
        self.scopes_of.clear()

    def judge(self, scope_id: str, status: int | None, seen: str | None) -> Judgement:
        repo = self.repos.get(scope_id)
        if status != 200:
            return Judgement(NOT_200, status)
        if repo is None:
            return Judgement(UNKNOWN_SCOPE, status, seen)
        if not seen:
            return Judgement(NO_HASH, status)
        if self.heads.is_head(repo, seen):
            return Judgement(OWN, status, seen, seen)
        expected = self.heads.head(repo)
        owner = self.heads.owner(seen)
        if owner == repo:
            return Judgement(STALE, status, seen, expected)
        return Judgement(FOREIGN, status, seen, expected, self._name(owner))

    def _name(self, repo: str | None) -> str | None:
        if repo is None:
            return None
        scopes = self.scopes_of.get(repo) or []
        return f"repo {repo}" + (f" (scope {', '.join(scopes[:3])})" if scopes else "")


def _short(sha: str | None) -> str:
    return sha[:10] if sha else "none"
