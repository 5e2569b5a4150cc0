"""Cerbos on the compose backend: a compose stack of its own that reuses the compose
backend's pieces (harness.stack.compose.ComposeStack: project, labels, ports on 127.0.0.1,
the engine lock, logs, teardown by label), with the Cerbos parts here.

The topology (stacks/compose/cerbos.yml): the bare git host, the git front and the fault
listeners as OPAL's compose stack has them, no Redis or Postgres, and the server from
`policy-harness/cerbos-offline:<version>` (harness/servers/cerbos/image.py, built with no
network from the cached npm binary) on an internal-only network, listening on unix sockets
only; a proxy beside it publishes the HTTP socket on 127.0.0.1. Its remote is the git front
(`http://gitfront:8080/<repo>.git`) over the git host's repos; a dead remote is the blackhole.

The probe offers the same SourceControl verbs as the local one (harness/servers/cerbos/local.py):
a new source is a bare repo made in the git host's container and pushed to over git:// on the
git host's published port; the checkout lives in the server's container (read with the
engine's archive API, changed with exec). A fresh attach gives the server a new checkout
directory (`checkout-<random>`): nothing of an earlier source is kept, without re-creating the
container.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from harness import STACKS_DIR, images
from harness.config import Settings
from harness.errors import ConfigError, HarnessError, ServiceFailed
from harness.seed import BARE_CONFIG, dead_repo_name
from harness.servers.base import Served, ServerKnobs
from harness.servers.cerbos.client import CerbosClient
from harness.servers.cerbos.config import POLL_KEY, TIMEOUT_KEY, CerbosConfig, knobs, set_args
from harness.servers.cerbos.image import build_image, image_ref
from harness.servers.cerbos.install import parse_version
from harness.servers.cerbos.local import BASE_SOURCE, DISK_SYNC, DISK_SYNC_UNTIMED, _index
from harness.servers.cerbos.source import MAIN_POLICY, CerbosSource
from harness.servers.cerbos.stats import checkout_stats
from harness.servers.repo_clone import BRANCH
from harness.stack.base import SERVICES, ServerProbe
from harness.stack.compose import (
    COMPOSE_DIR,
    ComposeStack,
    ContainerHandle,
    write_container_log,
)
from harness.waiting import poll_until

COMPOSE_FILE = COMPOSE_DIR / "cerbos.yml"
RECIPE_DIR = STACKS_DIR / "cerbos"
CONTAINER_CONFIG_DIR = PurePosixPath("/etc/cerbos")
SOCKET_DIR = PurePosixPath("/run/cerbos")
DATA_DIR = PurePosixPath("/data/cerbos")
CONTAINER_REPOS = PurePosixPath("/repos")
FRONT_PORT = 8080  # the git front's port inside the stack's networks
BLACKHOLE_PORT = 9418
START_TIMEOUT_S = 60.0
SOURCE_FILE = "source.json"  # in the config dir: what an attached process needs of the source
# The services of this stack, in the order of harness.stack.base.SERVICES (no redis, postgres).
CERBOS_SERVICES = tuple(name for name in SERVICES if name not in ("redis", "postgres"))


def stack_image_ref(settings: Settings) -> str:
    """The server image a Cerbos compose stack runs (HARNESS_IMAGES picks the set)."""
    return image_ref(settings.target.version, images.choose_image_set(settings.images))


def local_only_reason(settings: Settings) -> str | None:
    """Why BACKEND=auto keeps these settings on the local backend (None: compose can run them)."""
    if settings.cerbos_store != "git":
        return f"CERBOS_STORE={settings.cerbos_store} runs on the local backend only"
    return None


class CerbosComposeStack(ComposeStack):
    """SERVER=cerbos, BACKEND=compose."""

    def __init__(self, settings: Settings, githost: str | None = None):
        if (githost or settings.githost) not in (None, "bare"):
            raise ConfigError("SERVER=cerbos on compose needs the bare git host (the git front serves its repos): "
                              "unset HARNESS_GITHOST or set HARNESS_GITHOST=bare")
        super().__init__(settings, githost="bare")
        self.seeded = 0  # no OPAL repos at `up`: Cerbos's sources are made by its probe
        self.cerbos_state = SourceState()

    # -- lifecycle ----------------------------------------------------------------------
    def up(self) -> None:
        started = time.monotonic()
        self._connect()
        self._ensure_server_image()
        self.run_dir.mkdir(parents=True, exist_ok=False)
        (self.run_dir / "logs").mkdir()
        self.write_server_files()
        assert self._cli is not None and self._image_set is not None
        self._say(f"compose {self._cli.version} ({' '.join(self._cli.argv)}), images: {self._image_set.name}, "
                  f"server {self._server_image()}, project {self.project}: starting ...")
        self.starting = "githost"
        self.up_on_free_ports(("server", "githost", "gitfront"), ("ready", "serverport"))
        probe = self.server
        self.cerbos_state.source = probe.new_source(BASE_SOURCE)
        probe.write_config()
        self.starting = "server"
        step = time.monotonic()
        self._compose(["up", "-d", "--no-deps", "server"], timeout=600)
        probe.wait_healthy()
        self.starting = None
        self._say(f"server {self.settings.target.label} healthy on {self.published('server').url} "
                  f"({time.monotonic() - step:.1f} s); stack {self.run_id} up in {time.monotonic() - started:.1f} s "
                  f"(run dir {self.run_dir})")
        self.write_state(compose_project=self.project, endpoints=self.endpoints(), attach=self.attach_state())

    @classmethod
    def attached(cls, settings: Settings, run_dir: Path, state: Mapping[str, Any]) -> ComposeStack:
        """The owner's stack from another process (`harness gates --against`), with the source
        its server serves and the checkout it uses (saved at every config write)."""
        stack = super().attached(settings, run_dir, state)
        assert isinstance(stack, CerbosComposeStack)
        saved = stack.config_dir / SOURCE_FILE
        if saved.is_file():
            data = json.loads(saved.read_text())
            source = stack.server.source_of(data["name"])
            source.nonce = data["nonce"]
            stack.cerbos_state = SourceState(source=source, via=data["via"], checkout_name=data["checkout_name"],
                                             overrides=dict(data["overrides"]))
        return stack

    @property
    def config_dir(self) -> Path:
        return self.run_dir / "cerbos"

    def _files(self) -> list[Path]:
        return [COMPOSE_FILE]

    def _env(self) -> dict[str, str]:
        # the compose file's variables for the server's config dir and the proxy's script
        own = {"HARNESS_CERBOS_CONFIG_DIR": str(self.config_dir), "HARNESS_CERBOS_RECIPE_DIR": str(RECIPE_DIR)}
        return {**super()._env(), **own}

    def server_image_ref(self) -> str:
        return stack_image_ref(self.settings)

    def write_server_files(self) -> None:
        """The config dir the server's container mounts; its config is written by the probe
        once the source it serves exists (up, restart)."""
        self.config_dir.mkdir()
        (self.config_dir / "set-args").write_text("")

    def _ensure_server_image(self) -> None:
        """Built (or reused, by its inputs' digest) from the cached binary: no network."""
        assert self._image_set is not None
        result = build_image(self.settings.target.version, self._image_set, self.settings.cache_dir, self._docker)
        self._say(f"server image {result.image} {result.action} in {result.seconds:.1f} s (inputs {result.digest})")

    def dump_logs(self) -> Path:
        for service in (*CERBOS_SERVICES, "serverport", "seed"):
            try:
                write_container_log(self.container(service), self.run_dir / "logs" / f"{service}.log")
            except Exception:  # a service that never started has no container: nothing to keep
                continue
        return self.run_dir / "logs"

    # -- Stack contract -------------------------------------------------------------------
    def service_names(self) -> tuple[str, ...]:
        return CERBOS_SERVICES

    def service(self, name: str) -> ContainerHandle:
        if name not in CERBOS_SERVICES:
            raise ConfigError(f"unknown service {name!r} on a Cerbos stack; services: {', '.join(CERBOS_SERVICES)}")
        return ServerHandle(self, name) if name == "server" else ContainerHandle(self, name)

    @property
    def server(self) -> CerbosComposeProbe:  # type: ignore[override]
        return CerbosComposeProbe(self)

    def dead_url(self, index: int, kind: str = "blackhole") -> str:
        # Cerbos takes no git://: the blackhole's port over http (it never answers anyway).
        return f"http://{kind}:{BLACKHOLE_PORT}/{dead_repo_name(index)}.git"

    def git_push_url(self, repo: str) -> str:
        """Where this machine pushes a repo: the git daemon (receive-pack) on its published port."""
        return f"git://127.0.0.1:{self.ports['githost']}/{repo}.git"


class ServerHandle(ContainerHandle):
    """The server's container, with `process` (alive, exit code) as a gate reads a local one."""

    def start(self) -> None:
        self.stack.server.restart(fresh_state=False)  # type: ignore[attr-defined]

    @property
    def process(self) -> ContainerProcess:
        return ContainerProcess(self._container)


@dataclass
class ContainerProcess:
    container_of: Callable[[], Any]

    def _state(self) -> dict[str, Any]:
        container = self.container_of()
        container.reload()
        return dict(container.attrs.get("State", {}))

    def alive(self) -> bool:
        return bool(self._state().get("Running"))

    def exit_code(self) -> int | None:
        state = self._state()
        return None if state.get("Running") else int(state.get("ExitCode", 0))


@dataclass
class SourceState:
    """What the server serves and how, kept on the stack (a probe is made per access)."""

    source: CerbosSource | None = None
    via: str = "front"
    # the checkout directory's name: a fresh attach takes a new one (unique, so a process
    # attached with `harness gates --against` never reuses one its owner used)
    checkout_name: str = "checkout-boot"
    overrides: dict[str, str] = field(default_factory=dict)


@dataclass
class CerbosComposeSource(CerbosSource):
    """A Cerbos policy repo on the compose git host: the bare repo is made in the git host's
    container (`make_bare`), the working clone pushes to it over git:// (`push_url`)."""

    push_url: str = ""
    make_bare: Callable[[str], None] | None = None

    def create(self, policies: int = 0) -> CerbosComposeSource:
        from harness.servers.cerbos.policies import write_tree
        from harness.servers.cerbos.source import make_nonce
        assert self.make_bare is not None
        self.make_bare(str(CONTAINER_REPOS / f"{self.name}.git"))
        self.work.mkdir(parents=True)
        self.git(self.work, "init", "-q", f"--initial-branch={BRANCH}")
        self.git(self.work, "remote", "add", "origin", self.push_url)
        self.nonce = make_nonce()
        write_tree(self.work, self.nonce, extra_policies=policies)
        self.commit_all(f"harness: {self.name} with {policies + 1} policies")
        self.push()
        return self


class CerbosComposeProbe(ServerProbe):
    """The Cerbos container: its PID from `docker top`, its checkout through the engine."""

    stack: CerbosComposeStack

    @property
    def state(self) -> SourceState:
        return self.stack.cerbos_state

    @property
    def container(self):
        return self.stack.container("server")

    @property
    def checkout_dir(self) -> PurePosixPath:
        return DATA_DIR / self.state.checkout_name

    # -- ServerProbe ----------------------------------------------------------------------
    def pids(self) -> tuple[int | None, list[int]]:
        container = self.container
        container.reload()
        if container.status != "running":
            return None, []
        top = container.top(ps_args="-o pid,args")
        rows = [dict(zip(top["Titles"], row, strict=False)) for row in top["Processes"]]
        found = [int(r["PID"]) for r in rows if _is_server((r.get("COMMAND") or r.get("CMD") or "").split())]
        return (found[0], found[:1]) if found else (None, [])

    def settings(self) -> dict[str, str]:
        source = self.state.source
        return {"store": "git", "source": source.url(self.state.via) if source else "",
                **{k: str(v) for k, v in self.overrides.items()}}

    @property
    def overrides(self) -> dict[str, str]:
        return self.state.overrides or dict(self.stack.settings.server_env)

    def clone_dirs(self) -> list[str]:
        return [str(self.checkout_dir)] if self.checkout().get("head") else []

    def cpu_count(self) -> int:
        return int(self.stack.exec_in("server", ["nproc"], timeout=30).strip())

    def python(self, code: str, args: list[str], timeout: float = 300) -> str:
        raise HarnessError("Cerbos is a Go binary: it has no Python environment to run code in")

    def restart(self, fresh_state: bool, overrides: Mapping[str, str] | None = None,
                wait_healthy: bool = True, workers: int | None = None) -> None:
        """Stop the container, then start it on the config written now. `fresh_state`: a new
        checkout directory (nothing of an earlier source kept). `workers` does not apply."""
        self.container.stop(timeout=10)
        if fresh_state:
            self.state.checkout_name = f"checkout-{uuid.uuid4().hex[:12]}"
        if overrides is not None:
            self.state.overrides = dict(overrides)
        self.write_config()
        self.container.start()
        if wait_healthy:
            self.wait_healthy()

    def wait_healthy(self, timeout: float = START_TIMEOUT_S) -> None:
        def healthy_or_exited() -> bool:
            return self.client.healthy(timeout=2.0) or not ContainerProcess(lambda: self.container).alive()
        poll_until(healthy_or_exited, timeout, interval=0.3)
        if not self.client.healthy(timeout=2.0):
            log = self.stack.service("server").logs()
            raise ServiceFailed(f"the Cerbos server is not serving {timeout:g} s after its start; log: {log}",
                                service="server")

    def peer_ports(self) -> dict[int, str]:
        return {FRONT_PORT: "gitfront", BLACKHOLE_PORT: "blackhole, slowfail or latency"}

    @property
    def client(self) -> CerbosClient:  # type: ignore[override]
        return CerbosClient(self.stack.published("server").url)

    def installed_version(self) -> str:
        out = self.stack.exec_in("server", ["/usr/local/bin/cerbos", "--version"], timeout=30)
        binary = parse_version(Path("/usr/local/bin/cerbos"), out)
        return f"{binary.version} (build {binary.build})"

    def knobs(self) -> ServerKnobs:
        values = knobs(self.stack.config_dir / "config.json", self.overrides)
        return ServerKnobs(git_timeout_s=values["operation_timeout_s"], poll_interval_s=values["poll_interval_s"],
                           raw={TIMEOUT_KEY: values["operation_timeout_s"], POLL_KEY: values["poll_interval_s"]})

    # -- SourceControl --------------------------------------------------------------------
    def new_source(self, name: str, policies: int = 0) -> CerbosComposeSource:
        return self.source_of(name).create(policies)

    def source_of(self, name: str) -> CerbosComposeSource:
        """The source `name` (its repo on the git host, its working clone in the run dir)."""
        return CerbosComposeSource(name, Path(CONTAINER_REPOS), self.stack.run_dir / "sources",
                                   front_url=f"http://gitfront:{FRONT_PORT}/{name}.git",
                                   dead_url=self.stack.dead_url(_index(name)),
                                   push_url=self.stack.git_push_url(name), make_bare=self._make_bare)

    def _make_bare(self, path: str) -> None:
        """A bare repo in the git host's container, configured like the seeded ones."""
        script = ('test ! -e "$1" || { echo "policy repo $1 exists already: a source is made once per run"; exit 3; }; '
                  'git init -q --bare --initial-branch="$3" "$1" && printf "%s" "$2" > "$1/config"')
        self.stack.exec_in("githost", ["sh", "-c", script, "sh", path, BARE_CONFIG, BRANCH], timeout=60)

    def attach(self, source: CerbosSource, via: str = "front", fresh: bool = True,  # type: ignore[override]
               wait_healthy: bool = True) -> None:
        self.state.source, self.state.via = source, via
        self.restart(fresh_state=fresh, wait_healthy=wait_healthy)

    def served(self, timeout: float = 5.0) -> Served:
        return self.client.served(timeout)

    def checkout(self) -> dict[str, Any]:
        """The checkout in the container, copied out with the engine's archive API (works on a
        stopped container too) and read with git here."""
        import docker.errors
        with tempfile.TemporaryDirectory(prefix="checkout-", dir=self.stack.run_dir) as tmp:
            try:
                stream, _ = self.container.get_archive(str(self.checkout_dir))
            except docker.errors.NotFound:
                return checkout_stats(Path(tmp) / "none")
            archive = Path(tmp) / "checkout.tar"
            with open(archive, "wb") as out:
                for chunk in stream:
                    out.write(chunk)
            with tarfile.open(archive) as tar:
                if hasattr(tarfile, "tar_filter"):
                    tar.extractall(tmp, filter="tar")
                else:  # Python < 3.10.12: no extraction filters
                    tar.extractall(tmp)  # noqa: S202 - the harness's own container's checkout
            return checkout_stats(Path(tmp) / self.checkout_dir.name)

    def nudge(self) -> None:
        """Nothing: Cerbos polls its remote on its own (storage.git.updatePollInterval)."""

    def tamper(self, kind: str) -> str:
        """The main policy in the checkout: its mode flipped (`mode`) or a comment appended
        (`content`), in the container; git sees the tree dirty, the server's index does not change."""
        path = str(self.checkout_dir / MAIN_POLICY)
        if kind == "mode":
            script = ('test -f "$1" || { echo "no checkout to tamper with at $1"; exit 3; }; '
                      'if test -x "$1"; then chmod a-x "$1"; else chmod a+x "$1"; fi; stat -c %a "$1"')
            out = self.stack.exec_in("server", ["sh", "-c", script, "sh", path], timeout=30)
            return f"{MAIN_POLICY}: mode 0o{out.strip()}"
        if kind == "content":
            script = ('test -f "$1" || { echo "no checkout to tamper with at $1"; exit 3; }; '
                      'echo "# changed in the checkout by the harness" >> "$1"')
            self.stack.exec_in("server", ["sh", "-c", script, "sh", path], timeout=30)
            return f"{MAIN_POLICY}: a comment appended"
        raise ConfigError(f"tamper kind {kind!r}: one of mode, content")

    # -- the config --------------------------------------------------------------------------
    def write_config(self) -> None:
        """The config the container reads at its next start (the run dir, mounted read-only)."""
        if self.stack.settings.cerbos_store in (DISK_SYNC, DISK_SYNC_UNTIMED):
            raise ConfigError(f"CERBOS_STORE={self.stack.settings.cerbos_store} runs on the local backend only: "
                              "set BACKEND=local, or CERBOS_STORE=git on compose")
        source = self.state.source
        if source is None:
            raise HarnessError("no policy source attached to the Cerbos server")
        config = CerbosConfig(http_port=0, http_socket=Path(str(SOCKET_DIR / "http.sock")),
                              grpc_socket=Path(str(SOCKET_DIR / "grpc.sock")), driver="git",
                              git_url=source.url(self.state.via), checkout_dir=Path(str(self.checkout_dir)))
        config.write(self.stack.config_dir / "config.json")
        args = set_args(self.overrides)  # refuses what would break the network rule
        (self.stack.config_dir / "set-args").write_text("".join(f"{arg}\n" for arg in args))
        (self.stack.config_dir / SOURCE_FILE).write_text(json.dumps({
            "name": source.name, "nonce": source.nonce, "via": self.state.via,
            "checkout_name": self.state.checkout_name, "overrides": self.state.overrides}))


def _is_server(argv: list[str]) -> bool:
    """The Cerbos server's own process: its program is the binary (docker-init and the shell
    that execs it also carry "cerbos server" in their arguments)."""
    return len(argv) > 1 and argv[0].rsplit("/", 1)[-1] == "cerbos" and argv[1] == "server"


STACK = CerbosComposeStack
BUILD_COMMAND = "python -m harness.servers.cerbos.image"
