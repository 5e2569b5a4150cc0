"""The Cerbos server's config file, the user's `--set` overrides, and the knobs budgets come from.

The file is written as JSON: JSON is valid YAML and Cerbos reads it, so the harness needs no
YAML library. The network rule is built in: HTTP on 127.0.0.1, gRPC on a unix socket (one TCP
port only), telemetry off, no admin API; overrides may not undo any of it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from harness.errors import ConfigError

# Linux's sun_path is 108 bytes with the terminating NUL: a longer socket path cannot bind.
MAX_SOCKET_PATH = 107
GIT_PROTOCOLS = ("http", "https", "file", "ssh")
POLL_KEY = "storage.git.updatePollInterval"
TIMEOUT_KEY = "storage.git.operationTimeout"
# What an override may not touch, and why (matched on the lowercased key). Listen addresses
# and debug listeners would open ports beyond 127.0.0.1; telemetry and Hub reach the internet.
FORBIDDEN_KEYS = (("listenaddr", "a listen address"), ("debug", "a debug listener"),
                  ("telemetry", "telemetry"), ("hub", "Cerbos Hub"))


@dataclass
class CerbosConfig:
    http_port: int
    grpc_socket: Path
    driver: Literal["git", "disk"] = "git"
    git_url: str = ""
    branch: str = "main"
    sub_dir: str = "policies"
    checkout_dir: Path = Path()
    poll_interval_s: float = 1.0
    operation_timeout_s: float = 10.0
    disk_dir: Path = Path()
    watch_for_changes: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # more top-level sections, e.g. {"audit": {...}}
    # HTTP on a unix socket instead of 127.0.0.1:<http_port> (compose: the server's container
    # has no TCP listener at all; a proxy beside it publishes the socket on 127.0.0.1)
    http_socket: Path | None = None

    def document(self) -> dict[str, Any]:
        self.check()
        http = f"unix:{self.http_socket}" if self.http_socket is not None else f"127.0.0.1:{self.http_port}"
        return {"server": {"httpListenAddr": http,
                           "grpcListenAddr": f"unix:{self.grpc_socket}"},
                "telemetry": {"disabled": True},
                "storage": self._storage(),
                **self.extra}

    def _storage(self) -> dict[str, Any]:
        if self.driver == "disk":
            return {"driver": "disk", "disk": {"directory": str(self.disk_dir),
                                               "watchForChanges": self.watch_for_changes}}
        return {"driver": "git", "git": {"protocol": urlsplit(self.git_url).scheme, "url": self.git_url,
                                         "branch": self.branch, "subDir": self.sub_dir,
                                         "checkoutDir": str(self.checkout_dir),
                                         "updatePollInterval": go_duration(self.poll_interval_s),
                                         "operationTimeout": go_duration(self.operation_timeout_s)}}

    def check(self) -> None:
        for what, socket in (("gRPC", self.grpc_socket), ("HTTP", self.http_socket)):
            if socket is not None and len(str(socket).encode()) > MAX_SOCKET_PATH:
                raise ConfigError(f"{what} socket path {socket} is longer than {MAX_SOCKET_PATH} bytes: "
                                  f"use a shorter run root (HARNESS_RUN_ROOT)")
        if self.driver == "disk" and self.disk_dir == Path():
            raise ConfigError("the disk driver needs disk_dir: the directory holding the policies")
        if self.driver == "git":
            self._check_git()
        if self.extra.keys() & {"server", "telemetry", "storage"}:
            raise ConfigError(f"extra sections {sorted(self.extra)} replace what the harness sets: use the fields")

    def _check_git(self) -> None:
        scheme = urlsplit(self.git_url).scheme
        if scheme not in GIT_PROTOCOLS:
            raise ConfigError(f"Cerbos git url {self.git_url!r}: the scheme must be one of {', '.join(GIT_PROTOCOLS)} "
                              f"(no git://: serve the repos over http with harness.gitfront)")
        if self.checkout_dir == Path():
            raise ConfigError("the git driver needs checkout_dir: put it in the run dir")

    def render(self) -> str:
        return json.dumps(self.document(), indent=2) + "\n"

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.render())
        return path


def go_duration(seconds: float) -> str:
    """A Go duration string Cerbos parses (time.ParseDuration): 1s, 0.5s, 10s."""
    return f"{seconds:g}s"


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Seconds of a Go duration ("1s", "500ms", "1m30s", "0"); ConfigError on anything else."""
    text = text.strip()
    if text == "0":
        return 0.0
    parts = _PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ConfigError(f"duration {text!r}: write it the Go way, e.g. 1s, 500ms, 1m30s")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def check_override(key: str) -> None:
    """ConfigError naming the key when an override would break the network rule."""
    lowered = key.lower()
    for fragment, what in FORBIDDEN_KEYS:
        if fragment in lowered:
            raise ConfigError(f"CERBOS_SET {key}: sets {what}, which the harness fixes (network rule: "
                              f"listeners on 127.0.0.1 or a unix socket, telemetry off); remove it")


def set_args(overrides: Mapping[str, str]) -> list[str]:
    """`--set=key=value` arguments for the user's overrides (CERBOS_SET), checked first."""
    for key in overrides:
        check_override(key)
    return [f"--set={key}={value}" for key, value in overrides.items()]


def knobs(config: CerbosConfig | Path, overrides: Mapping[str, str] | None = None) -> dict[str, float]:
    """The poll interval and operation timeout in seconds, as the server will read them: from
    the config (a CerbosConfig or a written file), then the overrides (--set wins). The disk
    driver polls no remote: both are 0 (a disk-sync control's budget is its loop's interval)."""
    document = config.document() if isinstance(config, CerbosConfig) else json.loads(config.read_text())
    storage = document.get("storage", {})
    if storage.get("driver") != "git":
        return {"poll_interval_s": 0.0, "operation_timeout_s": 0.0}
    merged = {**{f"storage.git.{k}": v for k, v in storage.get("git", {}).items()}, **(overrides or {})}
    missing = [key for key in (POLL_KEY, TIMEOUT_KEY) if key not in merged]
    if missing:  # the harness writes both; a budget is never taken from a guessed default
        raise ConfigError(f"the Cerbos config sets no {', '.join(missing)}: write it with CerbosConfig")
    return {"poll_interval_s": parse_go_duration(str(merged[POLL_KEY])),
            "operation_timeout_s": parse_go_duration(str(merged[TIMEOUT_KEY]))}
