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


class StdoutHandler(logging.Handler):
    """Writes to whatever sys.stdout is when a line is logged (not when the handler was made):
    a caller that swaps stdout (a test capturing it) still gets the lines."""

    def __init__(self, stream: TextIO | None = None):
        super().__init__()
        self.fixed_stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = self.fixed_stream or sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


def to_stream(stream: TextIO | None = None, level: int = logging.INFO) -> logging.Handler:
    """For command-line entry points: lines to stdout (once, however often called)."""
    logger = logging.getLogger(LOGGER)
    for handler in logger.handlers:
        if isinstance(handler, StdoutHandler):
            logger.setLevel(level)
            return handler
    return attach(StdoutHandler(stream), level)
