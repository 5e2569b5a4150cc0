"""The Cerbos server as a local process: one static binary, one config file, --set overrides."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness import procs
from harness.servers.cerbos.client import CerbosClient
from harness.servers.cerbos.config import CerbosConfig, set_args
from harness.services.base import LocalService

# Only what the binary needs from the harness's environment: CERBOS_CONFIG, CERBOS_HUB_* or
# OTEL_* inherited from a developer's shell would change what it reads or where it sends.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE")


@dataclass
class CerbosServerProcess(LocalService):
    """`cerbos server --config=<path>`; `port` is the HTTP port the config names."""

    binary: Path = Path()
    config_path: Path = Path()
    overrides: Mapping[str, str] = field(default_factory=dict)
    start_timeout: float = 60.0
    stop_grace: float = 10.0

    @property
    def checkout_dir(self) -> Path:
        """Where the config written for this instance puts the git checkout: in the run dir."""
        return self.run_dir / "cerbos" / "checkout"

    @property
    def grpc_socket(self) -> Path:
        return self.run_dir / "cerbos" / "grpc.sock"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def git_config(self, git_url: str, **changes) -> CerbosConfig:
        """A git-driver config for this instance: its port, socket and checkout dir."""
        return CerbosConfig(http_port=self.port, grpc_socket=self.grpc_socket, driver="git", git_url=git_url,
                            checkout_dir=self.checkout_dir, **changes)

    def disk_config(self, directory: Path, **changes) -> CerbosConfig:
        """A disk-driver config for this instance (the disk-sync control's clone)."""
        return CerbosConfig(http_port=self.port, grpc_socket=self.grpc_socket, driver="disk", disk_dir=directory,
                            **changes)

    def client(self) -> CerbosClient:
        return CerbosClient(self.base_url)

    def argv(self) -> list[str]:
        return [str(self.binary), "server", f"--config={self.config_path}", *set_args(self.overrides)]

    def env(self) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if k in INHERITED_ENV}
        # Both guards on telemetry: the config's telemetry.disabled and this variable.
        return {**inherited, "CERBOS_NO_TELEMETRY": "1"}

    def prepare(self) -> None:
        self.grpc_socket.parent.mkdir(parents=True, exist_ok=True)

    def ready(self) -> bool:
        return self.client().healthy(timeout=2.0)

    def launch(self) -> None:
        """Start without waiting for health (boot gates time the wait themselves)."""
        self.prepare()
        self.process = procs.start(self.name, self.argv(), self.run_dir, self.log_path, env=self.env())
