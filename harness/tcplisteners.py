"""TCP listeners for faults, run as their own process: `python -m harness.tcplisteners MODE`.

  blackhole  accepts TCP and never answers (reads and discards, holds the connection)
  slowfail   accepts, answers nothing, closes after --close-after seconds
  latency    proxies to --upstream, delaying every chunk by --delay-ms in each direction

Each binds 127.0.0.1 (or --bind, e.g. 0.0.0.0 inside the stack's own container) on an
ephemeral port (or --port) and writes the port to --port-file once it listens. Every
accepted connection is logged as a line "accepted N" on stdout, which is how the harness
proves that a fault took effect.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

# One line per accepted connection on stdout: how the harness proves a fault took effect.
ACCEPTED_LINE = "accepted "
accepted = 0


def log_accept() -> None:
    global accepted
    accepted += 1
    print(f"{ACCEPTED_LINE}{accepted}", flush=True)


async def drain_forever(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


async def blackhole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    log_accept()
    try:
        await drain_forever(reader)  # returns only when the client closes
    finally:
        writer.close()


def slowfail(close_after: float):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        log_accept()
        try:
            await asyncio.wait_for(drain_forever(reader), timeout=close_after)
        except asyncio.TimeoutError:
            pass
        writer.close()
    return handle


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    try:
        while chunk := await reader.read(65536):
            await asyncio.sleep(delay)
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


def latency(upstream_host: str, upstream_port: int, delay: float):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        log_accept()
        try:
            up_reader, up_writer = await asyncio.open_connection(upstream_host, upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer, delay), pipe(up_reader, writer, delay))
    return handle


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
