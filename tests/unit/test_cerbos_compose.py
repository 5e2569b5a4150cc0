"""Cerbos on the compose backend, without an engine: settings, the stack's choice, the image's
build, the compose file's network rule and the config's unix HTTP socket."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness import PROJECT_ROOT, config, images
from harness.errors import ConfigError
from harness.servers.cerbos import CerbosConfig
from harness.servers.registry import CERBOS
from harness.stack import choose_backend, compose_stack_class

COMPOSE_FILE = PROJECT_ROOT / "stacks" / "compose" / "cerbos.yml"
DOCKERFILE = PROJECT_ROOT / "stacks" / "images" / "cerbos.Dockerfile"


def test_cerbos_takes_the_compose_backend_with_its_git_store_only():
    assert "compose" in CERBOS.backends
    settings = config.from_env({"SERVER": "cerbos", "BACKEND": "compose"})
    assert (settings.backend, settings.target.version) == ("compose", CERBOS.default_version)
    with pytest.raises(ConfigError, match="CERBOS_STORE=disk-sync runs on the local backend only"):
        config.from_env({"SERVER": "cerbos", "BACKEND": "compose", "CERBOS_STORE": "disk-sync"})
    assert config.from_env({"SERVER": "cerbos", "BACKEND": "local", "CERBOS_STORE": "disk-sync"}).backend == "local"


def test_each_server_gets_its_own_compose_stack_class():
    from harness.servers.cerbos.compose import CerbosComposeStack
    from harness.servers.opal.compose import OpalComposeStack
    from harness.stack.compose import ComposeStack
    assert compose_stack_class("cerbos") is CerbosComposeStack
    assert compose_stack_class("opal") is OpalComposeStack
    assert issubclass(OpalComposeStack, ComposeStack) and issubclass(CerbosComposeStack, ComposeStack)


def test_auto_picks_local_for_cerbos_when_no_engine_answers(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    backend, why = choose_backend(config.from_env({"SERVER": "cerbos"}))
    assert (backend, why) == ("local", "no Docker engine answers")


def test_auto_picks_compose_for_cerbos_only_when_its_image_exists(monkeypatch):
    class Images:
        def __init__(self, present):
            self.present = present

        def get(self, ref):
            if ref not in self.present:
                raise LookupError(ref)

    class Client:
        images = Images(set())

    monkeypatch.setattr(images, "docker_client", lambda timeout=0: Client())
    settings = config.from_env({"SERVER": "cerbos", "HARNESS_IMAGES": "offline"})
    backend, why = choose_backend(settings)
    assert backend == "local" and "policy-harness/cerbos-offline:0.55.0 is missing" in why
    assert "python -m harness.servers.cerbos.image" in why
    Client.images = Images({"policy-harness/cerbos-offline:0.55.0"})
    assert choose_backend(settings)[0] == "compose"
    # The disk-sync controls run on the local backend only, whatever the engine has.
    disk_sync = config.from_env({"SERVER": "cerbos", "HARNESS_IMAGES": "offline", "CERBOS_STORE": "disk-sync"})
    assert choose_backend(disk_sync) == ("local", "CERBOS_STORE=disk-sync runs on the local backend only")


def test_the_image_is_built_from_the_cached_binary_with_no_network(monkeypatch, tmp_path):
    from harness.servers.cerbos import image
    from harness.servers.cerbos.install import CerbosBinary
    binary = tmp_path / "cerbos" / "0.55.0" / "cerbos"
    binary.parent.mkdir(parents=True)
    binary.write_bytes(b"\x7fELF")
    monkeypatch.setattr(image, "ensure_cerbos", lambda version, cache: CerbosBinary(binary, version, "abc"))
    calls = []
    monkeypatch.setattr(images, "build", lambda *args, **kwargs: calls.append((args, kwargs)))
    image.build_image("0.55.0", images.OFFLINE, tmp_path)
    (ref, dockerfile, build_args, inputs, _client), kwargs = calls[0]
    assert ref == "policy-harness/cerbos-offline:0.55.0" and dockerfile == DOCKERFILE
    assert build_args == {"BASE_IMAGE": images.OFFLINE_BASE, "CERBOS_VERSION": "0.55.0"}
    assert inputs == [binary] and kwargs == {"context": binary.parent, "network": "none"}
    # Nothing in the Dockerfile fetches: it copies the binary in and checks its version.
    steps = DOCKERFILE.read_text().lower()
    assert not any(word in steps for word in ("apt-get", "curl", "wget", "npm ", "add http"))


def test_the_compose_file_keeps_the_server_on_an_internal_network_and_ports_on_loopback():
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    services = document["services"]
    assert not {"redis", "postgres"} & set(services)
    server = services["server"]
    assert server["networks"] == ["policy"] and document["networks"]["policy"]["internal"] is True
    assert "ports" not in server and server["environment"]["CERBOS_NO_TELEMETRY"] == "1"
    # The server's remote and dead remote are reachable on its network.
    for name in ("gitfront", "blackhole"):
        assert "policy" in services[name]["networks"]
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published and all(port.startswith("127.0.0.1:") for port in published), published
    for service in services.values():
        labels = service.get("labels") or {}
        assert "extends" in service or labels.get("io.policy-harness.run-id") == "${HARNESS_RUN_ID}"


def test_the_config_can_put_http_on_a_unix_socket():
    cfg = CerbosConfig(http_port=0, http_socket=Path("/run/cerbos/http.sock"),
                       grpc_socket=Path("/run/cerbos/grpc.sock"), git_url="http://gitfront:8080/x.git",
                       checkout_dir=Path("/data/cerbos/checkout-1"))
    server = cfg.document()["server"]
    assert server == {"httpListenAddr": "unix:/run/cerbos/http.sock", "grpcListenAddr": "unix:/run/cerbos/grpc.sock"}
    with pytest.raises(ConfigError, match="HTTP socket path"):
        CerbosConfig(http_port=0, http_socket=Path("/" + "x" * 120), grpc_socket=Path("/g.sock"),
                     git_url="http://h/x.git", checkout_dir=Path("/c")).document()
    # Without a socket, HTTP stays on 127.0.0.1 (the local backend).
    local = CerbosConfig(http_port=3592, grpc_socket=Path("/g.sock"), git_url="http://h/x.git", checkout_dir=Path("/c"))
    assert local.document()["server"]["httpListenAddr"] == "127.0.0.1:3592"


def test_the_compose_probe_takes_the_cerbos_binary_not_the_init_or_shell_that_starts_it():
    from harness.servers.cerbos.compose import _is_server
    assert _is_server(["/usr/local/bin/cerbos", "server", "--config=/etc/cerbos/config.json"])
    assert not _is_server(["/sbin/docker-init", "--", "sh", "-c", "exec /usr/local/bin/cerbos server"])
    assert not _is_server(["sh", "-c", "rm -f /run/cerbos/http.sock; exec /usr/local/bin/cerbos server"])
