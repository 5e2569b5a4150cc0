"""The `bare` git host: bare repositories served by a real `git daemon` on 127.0.0.1."""

from __future__ import annotations

from dataclasses import dataclass

from harness.services.base import LocalService
from harness.sysdeps import require

# What `git daemon --verbose` logs for every accepted client.
CONNECTION_LINE = "Connection from "


@dataclass
class BareGitHost(LocalService):
    @property
    def repos_dir(self):
        return self.run_dir / "repos"

    def prepare(self) -> None:
        self.repos_dir.mkdir(parents=True, exist_ok=True)

    def argv(self) -> list[str]:
        # --verbose logs one "Connection from" line per client (the gates count them);
        # receive-pack lets scenarios push new commits, force-pushes and branch changes.
        return [str(require("git")), "daemon", "--reuseaddr", "--export-all", "--informative-errors",
                "--verbose", "--enable=receive-pack",
                "--listen=127.0.0.1", f"--port={self.port}", f"--base-path={self.repos_dir}",
                "--max-connections=256", str(self.repos_dir)]

    def accepted_connections(self) -> int:
        """Clients the daemon has accepted so far (from its --verbose log)."""
        try:
            return self.log_path.read_text(errors="replace").count(CONNECTION_LINE)
        except OSError:
            return 0

    def url(self, repo: str, port: int | None = None) -> str:
        """git:// URL of a repo, optionally through another port (the latency proxy)."""
        return f"git://127.0.0.1:{port or self.port}/{repo}.git"
