"""What a run report records about where it ran: the harness and server versions, the host,
the target as given and the server settings given on top of the profile — so a report read
later (`harness rerun`, a CI artifact) says what it was made on."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from typing import Any

import psutil

from harness import harness_version
from harness.config import Settings


def host_info(backend: str, engine_version: str | None = None) -> dict[str, Any]:
    return {"cores": os.cpu_count() or 1, "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(), "python": platform.python_version(), "backend": backend,
            "engine_version": engine_version}


def target_spec(settings: Settings) -> dict[str, str | None]:
    return settings.target.to_spec()


def settings_metadata(settings: Settings, backend: str,
                      run_env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What is known before a stack exists (also what a report of a failed `up` records);
    Stack.run_metadata adds what the running stack says."""
    return {"harness_version": harness_version(), "host": host_info(backend), "target_spec": target_spec(settings),
            "server_env": {**settings.server_env, **(run_env or {})}}
