"""The orphan-clones gate's control: a real server on which the gate passes, for the right reason.

Measured on 0.9.9 with 500 scopes: a burst of deletes leaves (a) clone dirs on disk —
each delete's sibling check reads the whole scope store under
OPAL_SCOPES_STORE_READ_TIMEOUT, under a burst it times out and the clone is kept — and
(b) one Redis socket per sibling check that ran at the same time: the store's client is
`redis.asyncio.Redis.from_url(url)`, whose connection pool opens a connection for every
concurrent command, keeps it when it is returned and never closes it.

The control removes exactly those two causes: the documented setting
OPAL_SCOPES_STORE_READ_TIMEOUT=0 (no timeout: the check completes, the clone goes), and one
change to opal_server/redis_utils.py that gives the store's client a bounded, blocking
pool (a command waits for a free connection instead of opening another). If the gate's
reasons are right, this server passes; a leftover from anywhere else still fails it.
"""

from __future__ import annotations

from pathlib import Path

from tests.integration import source_tree

RELEASE = "0.9.9"
POOL_SIZE = 16
SERVER_ENV = (("OPAL_SCOPES_STORE_READ_TIMEOUT", "0"),)

BOUNDED_POOL = source_tree.Patch(
    "opal_server/redis_utils.py",
    "        self._redis = redis.Redis.from_url(self._url)\n",
    "        # harness control: a bounded, blocking pool (at most POOL_SIZE sockets, a command\n"
    "        # waits for a free one) instead of one new socket per concurrent command, kept forever\n"
    "        self._redis = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(\n"
    f"            self._url, max_connections={POOL_SIZE}, timeout=None))\n",
)


def build(dest: Path, wheels_dir: Path) -> Path:
    """0.9.9's own packages (its native stats route) plus the bounded pool."""
    return source_tree.build(dest, wheels_dir, release=RELEASE, native_stats=False, patches=[BOUNDED_POOL])
