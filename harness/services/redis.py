"""Redis for the server's scope store: no persistence, loopback only."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from harness.services.base import LocalService
from harness.sysdeps import require


@dataclass
class RedisService(LocalService):
    def argv(self) -> list[str]:
        data_dir = self.run_dir / "redis"
        data_dir.mkdir(exist_ok=True)
        return [str(require("redis-server")), "--bind", "127.0.0.1", "--port", str(self.port),
                "--save", "", "--appendonly", "no", "--dir", str(data_dir),
                "--protected-mode", "no", "--daemonize", "no"]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def command(self, *args: str) -> bytes:
        """One RESP command over a plain socket (the harness keeps no redis client dep)."""
        payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(payload.encode())
            return sock.recv(65536)

    def ready(self) -> bool:
        try:
            return self.command("PING").startswith(b"+PONG")
        except OSError:
            return False

    def flush(self) -> None:
        self.command("FLUSHALL")

    def set(self, key: str, value: str) -> None:
        reply = self.command("SET", key, value)
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"redis SET {key} failed: {reply!r}")
