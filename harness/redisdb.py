"""The server's scope store as the harness touches it: ping, flush, and stage scopes.

redis-py (in the harness's own environment, never the server's): a real client that reads
whole replies, with timeouts on connect and on every reply.
"""

from __future__ import annotations

from collections.abc import Mapping

import redis

TIMEOUT_S = 10.0


def _client(url: str, timeout: float = TIMEOUT_S) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def ping(url: str) -> bool:
    try:
        with _client(url, timeout=2.0) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def flush_all(url: str) -> None:
    with _client(url) as client:
        client.flushall()


def set_many(url: str, values: Mapping[str, str]) -> None:
    """SET every key in one pipeline: staging thousands of scopes is one round trip."""
    with _client(url) as client, client.pipeline(transaction=False) as pipe:
        for key, value in values.items():
            pipe.set(key, value)
        pipe.execute()


def snapshot(url: str, empty: bool = False) -> None:
    """Write the store's dump now (SAVE), which a restart loads: what it holds survives a
    stop. `empty`: FLUSHALL first, so a restart finds nothing, as after a restart without
    persistence (whatever dump an earlier snapshot left is overwritten)."""
    with _client(url) as client:
        if empty:
            client.flushall()
        client.save()


def key_count(url: str) -> int | None:
    """Keys in the store, or None when it does not answer."""
    try:
        with _client(url, timeout=2.0) as client:
            return int(client.dbsize())
    except redis.RedisError:
        return None


def present(url: str, keys: list[str]) -> list[str] | None:
    """Which of `keys` the store holds, or None when it does not answer."""
    try:
        with _client(url, timeout=2.0) as client:
            return [key for key in keys if client.exists(key)]
    except redis.RedisError:
        return None
