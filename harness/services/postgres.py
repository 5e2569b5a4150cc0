"""Postgres for the server's broadcaster: a cluster made with initdb in the run directory.

The postmaster runs in the foreground (not via `pg_ctl start`, which daemonizes) so it is
a child the harness stops by PID. Postgres refuses to run as root: when the harness is
root it runs initdb and postgres as the `postgres` system user (or `nobody`), with the
cluster in a temp dir of its own under /tmp (that user may not be able to traverse the
run root, e.g. under /root); the dir is registered with the run and removed with it.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness import procs
from harness.errors import ServiceFailed
from harness.services.base import LocalService
from harness.sysdeps import find_binary, require

DB_USER = "opal"
DB_PASSWORD = "opal"  # trust auth on loopback: the password is only there for URL shape
DB_NAME = "postgres"


# The protocol's SSLRequest: a server that runs answers it with one byte ('S' or 'N') at once.
SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")


def answers(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """Whether a Postgres on host:port answers the protocol, not just the TCP handshake (a
    paused server's kernel still accepts connections: only an answer shows it runs)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(SSL_REQUEST)
            return conn.recv(1) in (b"S", b"N")
    except OSError:
        return False


def accepts_sessions(port: int, host: str = "127.0.0.1", user: str = DB_USER, database: str = DB_NAME,
                     timeout: float = 1.0) -> bool:
    """Whether Postgres on host:port accepts sessions now: its first reply to a startup
    message is an authentication request ('R'), not an error ('E': "the database system is
    starting up" comes before authentication). Finer than pg_isready in a poll loop: it
    names the moment a client can LISTEN or NOTIFY again to within a few milliseconds."""
    params = f"user\0{user}\0database\0{database}\0\0".encode()
    body = (196608).to_bytes(4, "big") + params  # protocol 3.0
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall((len(body) + 4).to_bytes(4, "big") + body)
            return conn.recv(1) == b"R"
    except OSError:
        return False


def _unprivileged_user() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise ServiceFailed("running as root but no 'postgres' or 'nobody' user exists to run Postgres")


@dataclass
class PostgresService(LocalService):
    # SIGINT is Postgres's "fast shutdown": it disconnects clients instead of waiting for them.
    stop_signal: int = signal.SIGINT
    _run_as: str | None = field(default_factory=_unprivileged_user, init=False)
    _cluster_dir: Path | None = field(default=None, init=False)

    @property
    def cluster_dir(self) -> Path:
        if self._cluster_dir is None:
            if self._run_as:
                self._cluster_dir = Path(tempfile.mkdtemp(prefix=f"harness-pg-{self.run_dir.name}-"))
                procs.register_dir(self.run_dir, self._cluster_dir)
            else:
                self._cluster_dir = self.run_dir / "postgres"
        return self._cluster_dir

    @property
    def data_dir(self) -> Path:
        return self.cluster_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.cluster_dir / "sock"

    @property
    def url(self) -> str:
        return f"postgres://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{self.port}/{DB_NAME}"

    def user(self) -> str | None:
        return self._run_as

    def prepare(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if self._run_as:
            record = pwd.getpwnam(self._run_as)
            for path in (self.cluster_dir, self.socket_dir):
                os.chown(path, record.pw_uid, record.pw_gid)
        log = open(self.log_path, "ab")
        with log:
            result = subprocess.run(
                [str(require("initdb")), "-D", str(self.data_dir), "-U", DB_USER,
                 "--auth=trust", "--no-sync", "-E", "UTF8"],
                stdout=log, stderr=subprocess.STDOUT, user=self._run_as, timeout=120,
            )
        if result.returncode != 0:
            raise ServiceFailed(f"initdb failed (exit {result.returncode}); see {self.log_path}")

    def argv(self) -> list[str]:
        return [str(require("postgres")), "-D", str(self.data_dir), "-p", str(self.port),
                "-h", "127.0.0.1", "-k", str(self.socket_dir), "-c", "fsync=off",
                "-c", "max_connections=200"]

    def ready(self) -> bool:
        pg_isready = find_binary("pg_isready")
        if pg_isready is None:
            return super().ready()
        result = subprocess.run([str(pg_isready), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
                                timeout=10)
        return result.returncode == 0
