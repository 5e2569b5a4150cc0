"""The server's own account of a phase: its log lines between two offsets, counted by
message (ids, paths, numbers folded), so a failing gate can quote what the server said
about what it kept — and a maintainer can go straight to the code path that logs it."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

# A compose stack's log is the engine's (`docker logs --timestamps`): each line starts with the
# engine's own RFC 3339 stamp, then the server's line. Optional in every pattern below.
ENGINE_STAMP = r"(?:\d{4}-\d\d-\d\dT[\d:.]+Z )?"
# OPAL (OPAL_LOG_FORMAT_INCLUDE_PID=true): "<time> | <pid> | <module> |<LEVEL> | <message>"
OPAL_LINE = re.compile(r"^" + ENGINE_STAMP
                       + r"\S+ \| *\d+ \| *(?P<module>\S+) *\| *(?P<level>[A-Z]+) *\| (?P<message>.*)$")
LEVELS = ("WARNING", "ERROR", "CRITICAL")
_FOLDS = (
    (re.compile(r"\b[a-z+]+://\S+"), "<url>"),
    (re.compile(r"'[^']*'|\"[^\"]*\""), "<str>"),
    (re.compile(r"(?:/[\w.@+-]+){2,}/?"), "<path>"),
    (re.compile(r"\b[0-9a-f]{12,}(?:-\d+)?\b"), "<hex>"),
    (re.compile(r"\b[\w-]*\d[\w.-]*\b"), "<id>"),
)


@dataclass(frozen=True)
class LogMessage:
    template: str
    count: int
    level: str
    module: str
    example: str


def size(path: Path) -> int:
    """The log's current length: an offset to slice from later."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def read_slice(path: Path, start: int, end: int | None = None) -> list[str]:
    try:
        with open(path, "rb") as log:
            log.seek(start)
            data = log.read(None if end is None else max(0, end - start))
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()


def template(message: str) -> str:
    """The message with its variable parts folded: one template per code path."""
    for pattern, placeholder in _FOLDS:
        message = pattern.sub(placeholder, message)
    return message[:240]


def summarize(lines: list[str], levels: tuple[str, ...] = LEVELS, most: int = 8) -> list[LogMessage]:
    """The most frequent warning/error messages among `lines`, by template."""
    counts: Counter[tuple[str, str, str]] = Counter()
    examples: dict[tuple[str, str, str], str] = {}
    for line in lines:
        match = OPAL_LINE.match(line)
        if not match or match["level"] not in levels:
            continue
        key = (template(match["message"]), match["level"], match["module"])
        counts[key] += 1
        examples.setdefault(key, match["message"][:400])
    return [LogMessage(key[0], n, key[1], key[2], examples[key]) for key, n in counts.most_common(most)]


# -- timed lines: which worker said what, when --------------------------------------------
# The same format with its time and PID captured (loguru's {time}: ISO 8601 with an offset).
TIMED_LINE = re.compile(r"^" + ENGINE_STAMP
                        + r"(?P<time>\d{4}-\d\d-\d\dT[\d:.]+[+-]\d{2}:?\d{2}) \| *(?P<pid>\d+) "
                        r"\| *(?P<module>\S+) *\| *(?P<level>[A-Z]+) *\| (?P<message>.*)$")


@dataclass(frozen=True)
class TimedLine:
    at: float  # wall clock (epoch seconds): comparable with the harness's time.time()
    pid: int
    level: str
    message: str


def timed_lines(lines: list[str]) -> list[TimedLine]:
    """The lines the server wrote in its own format, with when and which process; other
    output (gunicorn's, tracebacks) is skipped."""
    parsed = []
    for line in lines:
        match = TIMED_LINE.match(line)
        if match is None:
            continue
        try:
            at = datetime.fromisoformat(match["time"]).timestamp()
        except ValueError:
            continue
        parsed.append(TimedLine(at, int(match["pid"]), match["level"], match["message"]))
    return parsed
