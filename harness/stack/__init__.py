"""Stacks: the server plus everything it depends on, as local processes or compose services."""

from __future__ import annotations

import logging
from dataclasses import replace

from harness.config import Settings
from harness.errors import HarnessError
from harness.servers.registry import SERVERS
from harness.stack.base import Stack

log = logging.getLogger(__name__)


def choose_backend(settings: Settings) -> tuple[str, str]:
    """(backend, why) for BACKEND=auto: compose when a Docker engine answers and the
    server image exists, else local."""
    if settings.backend != "auto":
        return settings.backend, f"BACKEND={settings.backend}"
    adapter = SERVERS[settings.server]
    if "compose" not in adapter.backends:
        return "local", f"{adapter.name} runs on the local backend only"
    if settings.target.source is not None:
        # A source tree needs no image to exist first; BACKEND=compose builds one at `up`.
        return "local", "OPAL_SOURCE runs on the local backend unless BACKEND=compose"
    from harness.images import docker_client
    from harness.stack.compose import server_image_ref
    try:
        client = docker_client(timeout=10)
    except HarnessError:
        if settings.target.image:
            raise
        return "local", "no Docker engine answers"
    ref = server_image_ref(settings)
    if settings.target.image:
        return "compose", f"OPAL_IMAGE={ref}"
    try:
        client.images.get(ref)
    except Exception:
        return "local", f"a Docker engine answers but image {ref} is missing (`make images-offline` builds it)"
    return "compose", f"a Docker engine answers and image {ref} exists"


def make_stack(settings: Settings) -> Stack:
    """The stack for the configured backend (BACKEND=auto decides and says why)."""
    backend, why = choose_backend(settings)
    log.info(f"[harness] backend: {backend} ({why})")
    settings = replace(settings, backend=backend)
    if backend == "compose":
        from harness.stack.compose import ComposeStack
        return ComposeStack(settings)
    from harness.stack.local import LocalStack
    return LocalStack(settings)
