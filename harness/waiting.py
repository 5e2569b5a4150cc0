"""Bounded waiting with tenacity: every wait has a budget and a message on give-up."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

T = TypeVar("T")


class GaveUp(Exception):
    """The condition did not hold within the budget."""


def wait_for(
    condition: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 0.1,
    error: type[Exception] = GaveUp,
) -> T:
    """Poll `condition` until it returns a truthy value; raise `error` after `timeout` s.

    Exceptions raised by `condition` propagate at once (use them for "the process died").
    """
    retrying = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(interval),
        retry=retry_if_result(lambda value: not value),
        reraise=False,
    )
    try:
        return retrying(condition)
    except RetryError:
        raise error(f"{what}: not within {timeout:g} s") from None


def poll_until(condition: Callable[[], bool], budget: float, interval: float = 0.5) -> float | None:
    """Seconds until `condition` held, or None when the budget was spent first.

    For gates: a stalled server is judged when its budget is spent, never by a generic
    timeout. `condition` must bound its own calls (HTTP timeouts shorter than `budget`).
    """
    started = time.monotonic()
    retrying = Retrying(stop=stop_after_delay(budget), wait=wait_fixed(interval),
                        retry=retry_if_result(lambda value: not value))
    try:
        retrying(condition)
    except RetryError:
        return None
    return time.monotonic() - started


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    """An ephemeral port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
