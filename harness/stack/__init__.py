"""Stacks: the server plus everything it depends on, as local processes or compose services."""

from __future__ import annotations

import importlib
import logging
from dataclasses import replace
from types import ModuleType
from typing import TYPE_CHECKING

from harness.config import Settings
from harness.errors import HarnessError
from harness.servers.registry import SERVERS
from harness.stack.base import Stack

if TYPE_CHECKING:
    from harness.stack.compose import ComposeStack

log = logging.getLogger(__name__)


def choose_backend(settings: Settings) -> tuple[str, str]:
    """(backend, why) for BACKEND=auto: compose when a Docker engine answers and the
    server image exists, else local."""
    if settings.backend != "auto":
        return settings.backend, f"BACKEND={settings.backend}"
    adapter = SERVERS[settings.server]
    if "compose" not in adapter.backends:
        return "local", f"{adapter.name} runs on the local backend only"
    own = compose_module(settings.server)
    if (reason := own.local_only_reason(settings)) is not None:
        return "local", reason
    from harness.images import docker_client
    try:
        client = docker_client(timeout=10)
    except HarnessError:
        if settings.target.image:
            raise
        return "local", "no Docker engine answers"
    ref = own.stack_image_ref(settings)
    if settings.target.image:
        return "compose", f"a prebuilt server image: {ref}"
    try:
        client.images.get(ref)
    except Exception:
        return "local", f"a Docker engine answers but image {ref} is missing (`{own.BUILD_COMMAND}` builds it)"
    return "compose", f"a Docker engine answers and image {ref} exists"


def make_stack(settings: Settings) -> Stack:
    """The stack for the configured backend (BACKEND=auto decides and says why)."""
    backend, why = choose_backend(settings)
    log.info(f"[harness] backend: {backend} ({why})")
    settings = replace(settings, backend=backend)
    if backend == "compose":
        return compose_stack_class(settings.server)(settings)
    from harness.stack.local import LocalStack
    return LocalStack(settings)


def compose_module(server: str) -> ModuleType:
    """A server's own compose stack (harness/servers/<server>/compose.py: `STACK`, the stack
    class, a harness.stack.compose.ComposeStack; `stack_image_ref(settings)`, its server
    image; `local_only_reason(settings)`, why these settings run on the local backend only,
    or None; `BUILD_COMMAND`, what builds its image), found by name so the stacks import no
    server. Only a server whose adapter lists the compose backend has one."""
    return importlib.import_module(f"harness.servers.{SERVERS[server].name}.compose")


def compose_stack_class(server: str) -> type[ComposeStack]:
    return compose_module(server).STACK  # type: ignore[no-any-return]
