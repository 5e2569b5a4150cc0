"""Attach to a stack another harness process runs (`harness up --detach`): `harness gates
--against RUN_ID` drives it without owning it — the owner still tears it down."""

from __future__ import annotations

import json
from dataclasses import replace

from harness import procs
from harness.config import Settings, Target
from harness.errors import HarnessError
from harness.stack.base import STATE_FILE, Stack


def attach(settings: Settings, run_id: str) -> Stack:
    run_dir = settings.run_root / run_id
    try:
        state = json.loads((run_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        raise HarnessError(f"no run {run_id} under {settings.run_root}; see `harness status` "
                           "(start one with `harness up --detach`)") from None
    owner = {"pid": state.get("owner_pid", -1), "create_time": state.get("owner_create_time", 0)}
    if procs.still_running(owner) is None:
        raise HarnessError(f"run {run_id} is stale (its `harness up` is gone); `harness clean` removes it")
    if "attach" not in state:
        raise HarnessError(f"run {run_id} is not up yet (or was made by an older harness); wait for "
                           "`harness up --detach` to return")
    spec = state.get("target_spec") or {}
    target = Target.from_spec(spec, default_version=settings.target.version) or settings.target
    settings = replace(settings, backend=state["backend"], target=target)
    if state["backend"] == "compose":
        from harness.stack import compose_stack_class
        return compose_stack_class(settings.server).attached(settings, run_dir, state["attach"])
    from harness.stack.local import LocalStack
    return LocalStack.attached(settings, run_dir, state["attach"])
