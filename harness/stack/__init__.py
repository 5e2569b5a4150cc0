"""Stacks: the server plus everything it depends on, as local processes or compose services."""

from __future__ import annotations

from harness.config import Settings
from harness.errors import ConfigError
from harness.stack.base import Stack


def make_stack(settings: Settings, progress=print) -> Stack:
    """The stack for the configured backend."""
    if settings.backend in ("local", "auto"):
        # `auto` settles on local until the compose backend lands (see README).
        from harness.stack.local import LocalStack
        return LocalStack(settings, progress=progress)
    raise ConfigError(f"BACKEND={settings.backend} is not available yet; use BACKEND=local")
