"""Where the harness's progress lines go: the `harness` logger (every module logs to
`logging.getLogger(__name__)`), printed as they are by whoever runs the harness — the CLI
to stdout, the pytest plugin to the terminal even while output is captured."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

LOGGER = "harness"


def attach(handler: logging.Handler, level: int = logging.INFO) -> logging.Handler:
    """Print the harness's lines through `handler` (message only: each carries its prefix)."""
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler


def detach(handler: logging.Handler) -> None:
    logging.getLogger(LOGGER).removeHandler(handler)


def to_stream(stream: TextIO | None = None, level: int = logging.INFO) -> logging.Handler:
    """For command-line entry points: lines to stdout (once, however often called)."""
    logger = logging.getLogger(LOGGER)
    for handler in logger.handlers:
        if getattr(handler, "harness_console", False):
            return handler
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.harness_console = True  # type: ignore[attr-defined]
    return attach(handler, level)
