"""The remote-transitions gate's FAIL server: a real server that does not follow a rewritten
history, for the reason the gate names.

0.9.9 and 0.9.6 follow every transition: pygit2 fetches with the remote's default refspec
`+refs/heads/*:refs/remotes/origin/*`, and the `+` lets a force-push move the tracking ref
(libgit2 1.7 even ignores a refspec without it). The server serves `origin/<branch>`, so it
serves the rewritten head. OPAL #99 ("stops pulling after a force push") is the server
that treats the remote as fast-forward only, as `git pull` or a refspec without `+` does
in git itself: the rewritten head is fetched but the tracking ref stays where it was.

This tree is 0.9.9 with that one change, made where it fetches: after the fetch, a tracking
ref that moved to a commit that does not descend from where it was is put back, as git's
"! [rejected] (non-fast-forward)". A new commit on top is still followed, so the gate must
FAIL at `force_push`, with `transitions.force_push_not_served`; if it failed anywhere else,
or passed, the gate would not be telling a rewritten history from the rest.
"""

from __future__ import annotations

from pathlib import Path

from tests.integration import source_tree

RELEASE = "0.9.9"

FAST_FORWARD_ONLY_FETCH = source_tree.Patch(
    "opal_server/git_fetcher.py",
    "                            fetch_started = datetime.datetime.now()\n",
    "                            fetch_started = datetime.datetime.now()\n"
    "                            # harness variant: a fast-forward-only fetch (OPAL #99)\n"
    "                            _ff_ref = f\"refs/remotes/{self._remote}/{self._source.branch}\"\n"
    "                            _ff_old = (repo.lookup_reference(_ff_ref).target\n"
    "                                       if RepoInterface.has_remote_branch(\n"
    "                                           repo, self._source.branch, self._remote)\n"
    "                                       else None)\n",
)
REJECT_NON_FAST_FORWARD = source_tree.Patch(
    "opal_server/git_fetcher.py",
    "                            GitPolicyFetcher.repos_last_fetched[\n"
    "                                self._source_id\n"
    "                            ] = fetch_started\n",
    "                            GitPolicyFetcher.repos_last_fetched[\n"
    "                                self._source_id\n"
    "                            ] = fetch_started\n"
    "                            if _ff_old is not None and RepoInterface.has_remote_branch(\n"
    "                                    repo, self._source.branch, self._remote):\n"
    "                                _ff_new = repo.lookup_reference(_ff_ref).target\n"
    "                                if _ff_new != _ff_old and not repo.descendant_of(_ff_new, _ff_old):\n"
    "                                    logger.warning(f\"harness variant: non-fast-forward {_ff_ref} rejected\")\n"
    "                                    repo.lookup_reference(_ff_ref).set_target(_ff_old)\n",
)


def build(dest: Path, wheels_dir: Path) -> Path:
    """The FAIL tree at `dest`: 0.9.9's own packages (its native stats route) plus the change."""
    return source_tree.build(dest, wheels_dir, release=RELEASE, native_stats=False,
                             patches=[FAST_FORWARD_ONLY_FETCH, REJECT_NON_FAST_FORWARD])
