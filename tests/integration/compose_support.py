"""What the compose tests need: an engine that answers and the images; else a skip reason
(which HARNESS_REQUIRE=1 turns into a failure)."""

from __future__ import annotations

import pytest

from harness import images
from harness.config import supported_versions
from harness.errors import HarnessError


def require_compose(versions=None) -> None:
    from harness.images import docker_client
    from harness.stack.compose_cli import detect
    try:
        client = docker_client(timeout=10)
        detect()
    except HarnessError as exc:
        pytest.skip(f"compose backend unavailable: {exc}")
    image_set = images.choose_image_set()
    wanted = [image_set.server(v) for v in (versions or supported_versions())] + [image_set.tools, image_set.seed]
    missing = []
    for ref in wanted:
        try:
            client.images.get(ref)
        except Exception:
            missing.append(ref)
    if missing:
        pytest.skip(f"images missing: {', '.join(missing)}; build them with `make images-offline`")


def labelled_resources(run_id: str) -> list[str]:
    from harness.images import docker_client
    from harness.stack.compose import RUN_LABEL
    client = docker_client()
    label = f"{RUN_LABEL}={run_id}"
    return ([f"container {c.name}" for c in client.containers.list(all=True, filters={"label": label})]
            + [f"network {n.name}" for n in client.networks.list(filters={"label": label})]
            + [f"volume {v.name}" for v in client.volumes.list(filters={"label": label})])
