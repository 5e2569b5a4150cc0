"""TCP listeners for faults, run as their own process: `python -m harness.tcplisteners MODE`.

  blackhole  accepts TCP and never answers (reads and discards, holds the connection)
  slowfail   accepts, answers nothing, closes after --close-after seconds
  latency    proxies to --upstream, delaying every chunk by --delay-ms in each direction

Each binds 127.0.0.1 (or --bind, e.g. 0.0.0.0 inside the stack's own container) on an
ephemeral port (or --port) and writes the port to --port-file once it listens. Every
connection is logged on stdout — how the harness proves that a fault took effect, and how
much of it:

  accepted N at=<unix time>     when connection N was accepted
  repo N /dead-0001.git         the repository its git:// request named (first chunk)
  closed N at=<unix time>       when it ended (either side closed)

`parse_connections` reads them back; a line without `at=` (an older listener) still counts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# One line per accepted connection on stdout: how the harness proves a fault took effect.
ACCEPTED_LINE = "accepted "
CLOSED_LINE = "closed "
REPO_LINE = "repo "
# git:// requests open with a pkt-line "git-upload-pack /path.git\0host=...\0"
GIT_REQUEST = re.compile(rb"git-(?:upload|receive)-pack (\S+?)\x00")
accepted = 0


def log_accept() -> int:
    global accepted
    accepted += 1
    print(f"{ACCEPTED_LINE}{accepted} at={time.time():.3f}", flush=True)
    return accepted


def log_close(number: int) -> None:
    print(f"{CLOSED_LINE}{number} at={time.time():.3f}", flush=True)


def log_repo(number: int, chunk: bytes) -> None:
    """The repository a git:// request names: which dead remote or which fetch it was."""
    if match := GIT_REQUEST.search(chunk):
        print(f"{REPO_LINE}{number} {match.group(1).decode(errors='replace')}", flush=True)


async def drain_forever(reader: asyncio.StreamReader, number: int) -> None:
    first = True
    while chunk := await reader.read(65536):
        if first:
            log_repo(number, chunk)
            first = False


async def blackhole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    number = log_accept()
    try:
        await drain_forever(reader, number)  # returns only when the client closes
    finally:
        writer.close()
        log_close(number)


def slowfail(close_after: float):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = log_accept()
        try:
            await asyncio.wait_for(drain_forever(reader, number), timeout=close_after)
        except asyncio.TimeoutError:
            pass
        writer.close()
        log_close(number)
    return handle


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float,
               number: int | None = None) -> None:
    try:
        while chunk := await reader.read(65536):
            if number is not None:
                log_repo(number, chunk)  # the client's first chunk names the repo
                number = None
            await asyncio.sleep(delay)
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


def latency(upstream_host: str, upstream_port: int, delay: float):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = log_accept()
        try:
            up_reader, up_writer = await asyncio.open_connection(upstream_host, upstream_port)
        except OSError:
            writer.close()
            log_close(number)
            return
        try:
            await asyncio.gather(pipe(reader, up_writer, delay, number), pipe(up_reader, writer, delay))
        finally:
            log_close(number)  # both directions done: the fetch through the proxy is over
    return handle


@dataclass
class Connection:
    """One connection a listener took, as its log tells: when it was accepted and closed
    (unix time; None when the line lacks it or it is still open) and the repo it asked for."""

    number: int
    accepted_at: float | None = None
    closed_at: float | None = None
    repo: str | None = None


LOG_LINE = re.compile(r"\b(accepted|closed|repo) (\d+)(?: at=([\d.]+)| (\S+))?\s*$")


def parse_connections(text: str) -> list[Connection]:
    """Every connection a listener's log records, in order. Lines may carry a prefix (a
    container log's timestamp); lines of other kinds are skipped."""
    found: dict[int, Connection] = {}
    for line in text.splitlines():
        match = LOG_LINE.search(line)
        if match is None:
            continue
        kind, number, at, repo = match.group(1), int(match.group(2)), match.group(3), match.group(4)
        conn = found.setdefault(number, Connection(number))
        if kind == "accepted":
            conn.accepted_at = float(at) if at else None
        elif kind == "closed":
            conn.closed_at = float(at) if at else None
        elif repo:
            conn.repo = repo
    return list(found.values())


async def serve(args: argparse.Namespace) -> None:
    if args.mode == "blackhole":
        handler = blackhole
    elif args.mode == "slowfail":
        handler = slowfail(args.close_after)
    else:
        handler = latency(args.upstream_host, args.upstream, args.delay_ms / 1000.0)
    server = await asyncio.start_server(handler, args.bind, args.port, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    tmp = Path(f"{args.port_file}.tmp")
    tmp.write_text(str(port))
    os.replace(tmp, args.port_file)
    print(f"{args.mode} listening on {args.bind}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.tcplisteners")
    parser.add_argument("mode", choices=["blackhole", "slowfail", "latency"])
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    parser.add_argument("--upstream-host", default="127.0.0.1", help="upstream host (latency)")
    parser.add_argument("--close-after", type=float, default=5.0)
    parser.add_argument("--upstream", type=int, help="upstream port (latency)")
    parser.add_argument("--delay-ms", type=float, default=150.0)
    args = parser.parse_args(argv)
    if args.mode == "latency" and not args.upstream:
        parser.error("latency needs --upstream PORT")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
