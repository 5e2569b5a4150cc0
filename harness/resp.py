"""A minimal Redis (RESP) client over a plain socket: the harness needs three commands
(PING, SET, FLUSHALL) and keeps no redis client dependency for them."""

from __future__ import annotations

import socket


def command(port: int, *args: str, host: str = "127.0.0.1", timeout: float = 10.0) -> bytes:
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(payload.encode())
        return sock.recv(65536)


def ping(port: int) -> bool:
    try:
        return command(port, "PING", timeout=2).startswith(b"+PONG")
    except OSError:
        return False


def set_key(port: int, key: str, value: str) -> None:
    reply = command(port, "SET", key, value)
    if not reply.startswith(b"+OK"):
        raise RuntimeError(f"redis SET {key} failed: {reply!r}")


def flush_all(port: int) -> None:
    reply = command(port, "FLUSHALL")
    if not reply.startswith(b"+OK"):
        raise RuntimeError(f"redis FLUSHALL failed: {reply!r}")
