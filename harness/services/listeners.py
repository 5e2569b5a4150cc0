"""The fault listeners (blackhole, slowfail, latency proxy, the git front) as services of the stack."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from harness.services.base import LocalService
from harness.tcplisteners import ACCEPTED_LINE


@dataclass
class ListenerService(LocalService):
    """A `harness.tcplisteners` process. `port` is 0 until it has bound one itself."""

    mode: str = "blackhole"
    extra_args: tuple[str, ...] = ()

    @property
    def port_file(self):
        return self.run_dir / f"{self.name}.port"

    def prepare(self) -> None:
        self.port_file.unlink(missing_ok=True)

    def argv(self) -> list[str]:
        # -u: unbuffered, so "accepted N" lines reach the log as they happen.
        return [sys.executable, "-u", "-m", "harness.tcplisteners", self.mode,
                "--port-file", str(self.port_file), "--port", str(self.port), *self.extra_args]

    def ready(self) -> bool:
        if not self.port_file.exists():
            return False
        self.port = int(self.port_file.read_text())
        return True

    def accepted_connections(self) -> int:
        """Connections accepted so far: proof that traffic really reached the fault."""
        try:
            lines = self.log_path.read_text().splitlines()
        except OSError:
            return 0
        return sum(1 for line in lines if line.startswith(ACCEPTED_LINE))


@dataclass
class GitFrontService(ListenerService):
    """`harness.gitfront`: smart HTTP over the git host's repos, its failure mode switched
    by the gates (harness.gitfront.set_mode)."""

    repos_dir: Path = Path()

    def argv(self) -> list[str]:
        return [sys.executable, "-u", "-m", "harness.gitfront", "--repos", str(self.repos_dir),
                "--port-file", str(self.port_file), "--port", str(self.port)]
