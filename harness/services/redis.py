"""Redis for the server's scope store: no persistence, loopback only."""

from __future__ import annotations

from dataclasses import dataclass

from harness import redisdb
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

    def ready(self) -> bool:
        return redisdb.ping(self.url)
