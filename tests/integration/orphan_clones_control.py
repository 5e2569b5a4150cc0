"""The orphan-clones gate's control: a real server on which the gate passes, for the right reason.

Measured on 0.9.9 with 500 scopes, what deletes leave behind has three causes:

(a) clone dirs on disk — each delete's sibling check reads the whole scope store under
    OPAL_SCOPES_STORE_READ_TIMEOUT; under a burst it times out and the clone is kept;
(b) one Redis socket per sibling check that ran at the same time — the store's client is
    `redis.asyncio.Redis.from_url(url)`, whose pool opens a connection for every concurrent
    command, keeps it when it is returned and never closes it;
(c) `git` child processes and their pipes after deletes race a sync — make_bundle opens a
    GitPython `Repo`, whose persistent `git cat-file` processes live until the object is
    closed or collected; on the error path of a clone deleted mid-bundle it is neither.

The control removes exactly those causes, each with the smallest change there is: the
documented setting OPAL_SCOPES_STORE_READ_TIMEOUT=0 (the check completes, the clone goes);
a bounded, blocking pool for the store's client (a command waits for a free connection
instead of opening another; POOL_SIZE small enough that the gate's warm-up fills it); and
make_bundle (and the new-commits callback, below) closing its Repo on every path. If the
gate's reasons are right, this server passes; a leftover from anywhere else still fails it.
"""

from __future__ import annotations

from pathlib import Path

from tests.integration import source_tree

RELEASE = "0.9.9"
POOL_SIZE = 4
SERVER_ENV = (("OPAL_SCOPES_STORE_READ_TIMEOUT", "0"),)

BOUNDED_POOL = source_tree.Patch(
    "opal_server/redis_utils.py",
    "        self._redis = redis.Redis.from_url(self._url)\n",
    "        # harness control: a bounded, blocking pool (at most POOL_SIZE sockets, a command\n"
    "        # waits for a free one) instead of one new socket per concurrent command, kept forever\n"
    "        self._redis = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(\n"
    f"            self._url, max_connections={POOL_SIZE}, timeout=None))\n",
)


CLOSED_BUNDLE_REPO = source_tree.Patch(
    "opal_server/git_fetcher.py",
    "    def make_bundle(self, base_hash: Optional[str] = None) -> PolicyBundle:\n"
    "        repo = Repo(str(self._repo_path))\n",
    "    def make_bundle(self, base_hash: Optional[str] = None) -> PolicyBundle:\n"
    "        # harness control: close GitPython's persistent `git cat-file` processes on every path\n"
    "        with Repo(str(self._repo_path)) as repo:\n"
    "            return self._make_bundle_with(repo, base_hash)\n"
    "\n"
    "    def _make_bundle_with(self, repo, base_hash: Optional[str] = None) -> PolicyBundle:\n",
)


# The same cause on the other path that opens a GitPython Repo: the new-commits callback
# (on_update) never closes its Repo. When a delete races the update and it raises, the
# exception the webhook task keeps (until the next webhook) holds the frame and the Repo, and
# with them its two `git cat-file` processes — seen once in CI: +6 pipes to 2 git processes
# after the mid-sync phase's settle. The update closes its Repo on every path here too.
CLOSED_UPDATE_REPO = source_tree.Patch(
    "opal_server/scopes/service.py",
    "    async def on_update(self, previous_head: str, head: str):\n",
    "    async def on_update(self, previous_head: str, head: str):\n"
    "        # harness control: close the Repos the update opens, on every path\n"
    "        self._harness_repos = []\n"
    "        try:\n"
    "            return await self._harness_on_update(previous_head, head)\n"
    "        finally:\n"
    "            for opened in self._harness_repos:\n"
    "                opened.close()\n"
    "\n"
    "    async def _harness_on_update(self, previous_head: str, head: str):\n",
)
CLOSED_UPDATE_REPO_OPENED = source_tree.Patch(
    "opal_server/scopes/service.py",
    "            repo = git.Repo(self._scope_repo_dir)\n",
    "            repo = git.Repo(self._scope_repo_dir)\n"
    "            self._harness_repos.append(repo)\n",
)


def build(dest: Path, wheels_dir: Path) -> Path:
    """0.9.9's own packages (its native stats route) plus the bounded pool and the closed Repos."""
    return source_tree.build(dest, wheels_dir, release=RELEASE, native_stats=False,
                             patches=[BOUNDED_POOL, CLOSED_BUNDLE_REPO, CLOSED_UPDATE_REPO,
                                      CLOSED_UPDATE_REPO_OPENED])
