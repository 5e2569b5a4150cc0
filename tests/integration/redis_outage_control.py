"""The redis-outage gate's control: a real server on which the gate passes, for the right reason.

Both releases lose the first scope sync after the store returns. The leader's watcher task
reads scopes through its own `RedisDB` (redis.asyncio, default settings), whose pool keeps
the connection Redis closed when it stopped; the first command on it afterwards raises
`ConnectionError("Connection closed by server.")` (redis-py 4.6 does not retry by default),
in the webhook trigger task, which dies with it — its exception is only logged at the next
webhook. So a scope PUT after the outage is stored (201) and never cloned or served.

The control is 0.9.9 with one change: its `RedisDB` client retries a command once on a
connection error (redis-py's own `Retry` / `retry_on_error`), which reconnects. If the
gate's reason is right, this tree passes; if the PUT were lost anywhere else, it still fails.
"""

from __future__ import annotations

from pathlib import Path

from tests.integration import source_tree

RELEASE = "0.9.9"

RETRY_ON_A_CLOSED_CONNECTION = source_tree.Patch(
    "opal_server/redis_utils.py",
    "        self._redis = redis.Redis.from_url(self._url)\n",
    "        # harness control: retry a command once on a connection the server closed\n"
    "        from redis.asyncio.retry import Retry\n"
    "        from redis.backoff import NoBackoff\n"
    "        from redis.exceptions import ConnectionError as RedisConnectionError\n"
    "\n"
    "        self._redis = redis.Redis.from_url(\n"
    "            self._url, retry=Retry(NoBackoff(), 1), retry_on_error=[RedisConnectionError]\n"
    "        )\n",
)


def build(dest: Path, wheels_dir: Path) -> Path:
    """The control tree at `dest`: 0.9.9's own packages (its native stats route) plus the retry."""
    return source_tree.build(dest, wheels_dir, release=RELEASE, native_stats=False,
                             patches=[RETRY_ON_A_CLOSED_CONNECTION])
