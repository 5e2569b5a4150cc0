"""opal-server as a local process: gunicorn with uvicorn workers from its own virtualenv."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

from harness import procs
from harness.servers.opal.recipe import GRACEFUL_TIMEOUT_S, RECIPE_DIR, gunicorn_argv, server_env
from harness.servers.opal.venvs import ServerVenv
from harness.services.base import LocalService


@dataclass
class OpalServerProcess(LocalService):
    """opal-server under gunicorn with uvicorn workers, from its own virtualenv."""

    venv: ServerVenv | None = None
    instance_dir: Path = Path()
    redis_url: str = ""
    broadcast_uri: str = ""
    workers: int = 1
    overrides: Mapping[str, str] = field(default_factory=dict)
    start_timeout: float = 60.0
    stop_grace: float = GRACEFUL_TIMEOUT_S + 5.0

    @property
    def base_dir(self) -> Path:
        return self.instance_dir / "base"

    @property
    def clones_dir(self) -> Path:
        """Where both releases keep scope clones: BASE_DIR/git_sources/<source id>."""
        return self.base_dir / "git_sources"

    def server_env(self) -> dict[str, str]:
        """The OPAL_* settings this instance runs with (recorded in reports)."""
        return server_env(redis_url=self.redis_url, broadcast_uri=self.broadcast_uri, base_dir=str(self.base_dir),
                          instance_dir=str(self.instance_dir), overrides=self.overrides)

    def env(self) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items()
                     if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE")}
        return {**inherited, **self.server_env(),
                "HARNESS_BIND": f"127.0.0.1:{self.port}",
                "HARNESS_WORKERS": str(self.workers),
                "HARNESS_GRACEFUL_TIMEOUT": str(GRACEFUL_TIMEOUT_S),
                "PYTHONUNBUFFERED": "1"}

    def prepare(self) -> None:
        for sub in ("base", "jwks"):
            (self.instance_dir / sub).mkdir(parents=True, exist_ok=True)

    def argv(self) -> list[str]:
        assert self.venv is not None
        return gunicorn_argv(str(self.venv.python), str(RECIPE_DIR))

    def ready(self) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{self.port}/healthcheck", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def launch(self) -> None:
        """Start without waiting for health (boot gates time the wait themselves)."""
        self.prepare()
        self.process = procs.start(self.name, self.argv(), self.run_dir, self.log_path, env=self.env())

    def worker_pids(self) -> list[int]:
        if not self.pid:
            return []
        try:
            return [p.pid for p in psutil.Process(self.pid).children()]
        except psutil.NoSuchProcess:
            return []
