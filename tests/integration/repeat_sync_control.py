"""The repeat-sync gate's control: a real server on which the gate passes, for the right reason.

Both releases fail repeat-sync the same way: the git fetcher caches one pygit2.Repository
per clone (`GitPolicyFetcher.repos`) and fetches through it, every fetch writes a new pack
file, and libgit2 keeps every pack it has opened open (1 fd) and mapped (.pack + .idx) for
as long as the handle lives — which is the life of the process. So the worker keeps one
more open file and two more mapped pack files per scope per fetch.

The control is 0.9.9 with one change: the fetch path releases the cached handle
(`GitPolicyFetcher.forget_repo`, the release's own helper that frees a handle) after each
sync, under the same per-source lock and only after the git op has returned (a timed-out
fetch returns earlier, so a handle a lingering git thread still uses is never freed).
0.9.9 already reads the served head through a fresh, freed handle, so nothing else holds
the packs. If the gate's reason is right, this tree passes; if the growth came from
anywhere else, it still fails.
"""

from __future__ import annotations

from pathlib import Path

from tests.integration import source_tree

RELEASE = "0.9.9"

RELEASE_FETCH_HANDLE = source_tree.Patch(
    "opal_server/git_fetcher.py",
    "                        # New commits might be present because of a previous fetch made by another scope\n"
    "                        await self._notify_on_changes(repo)\n"
    "                        return\n",
    "                        # New commits might be present because of a previous fetch made by another scope\n"
    "                        await self._notify_on_changes(repo)\n"
    "                        # harness control: release the fetch handle after every sync, so the pack\n"
    "                        # each fetch adds is not kept open and mapped for the life of the process\n"
    "                        GitPolicyFetcher.forget_repo(str(self._repo_path))\n"
    "                        return\n",
)


def build(dest: Path, wheels_dir: Path) -> Path:
    """The control tree at `dest`: 0.9.9's own packages (its native stats route) plus the patch."""
    return source_tree.build(dest, wheels_dir, release=RELEASE, native_stats=False,
                             patches=[RELEASE_FETCH_HANDLE])


# The stale-commit reading, on a real server: 0.9.9 whose fetcher never fetches a clone it
# already has (what the old repeat-sync, refreshing unchanged repos, could not tell from a
# correct server). The gate ends in cycle 1 with FAIL repeat_sync.stale_commit: every scope
# keeps serving the commit from before the push although the refresh answered 200.
NEVER_FETCH = source_tree.Patch(
    "opal_server/git_fetcher.py",
    "    ) -> bool:\n        if force_fetch:\n",
    "    ) -> bool:\n        return False  # harness variant: never fetch an existing clone\n        if force_fetch:\n",
)


def build_never_fetch(dest: Path, wheels_dir: Path) -> Path:
    return source_tree.build(dest, wheels_dir, release=RELEASE, native_stats=False, patches=[NEVER_FETCH])
