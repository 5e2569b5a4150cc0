"""The compose backend: the same topology as local, as a docker-compose project.

Lifecycle goes through the compose CLI (v2 or v1); control (stop/kill/pause/start, exec,
logs, the server's PIDs) through the Python docker SDK. Each run is its own project with
a unique name; every published port is on 127.0.0.1; every container, network and volume
carries the label io.policy-harness.run-id, which `harness clean` uses to find stale stacks.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import time
from abc import abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from harness import STACKS_DIR, images
from harness.config import Settings
from harness.errors import ConfigError, HarnessError, ServiceFailed
from harness.githost.bare import CONNECTION_LINE
from harness.images import docker_client
from harness.seed import dead_repo_name
from harness.servers.registry import SERVERS
from harness.stack.base import SERVICES, Address, Stack
from harness.stack.compose_cli import ComposeCli, detect
from harness.tcplisteners import ACCEPTED_LINE
from harness.waiting import GaveUp, free_port, wait_for

log = logging.getLogger(__name__)

COMPOSE_DIR = STACKS_DIR / "compose"
RUN_LABEL = "io.policy-harness.run-id"
# "<pid>:<start time>" of the process that owns the stack: `harness clean` removes only
# resources whose owner is gone, whichever run root that owner used.
OWNER_LABEL = "io.policy-harness.owner"
# Where every server image has the recipe (baked into the harness's images, mounted into a prebuilt one).
CONTAINER_RECIPE_DIR = "/opt/harness-recipe"
SERVER_COMMAND_FILE = "server-command.yml"
GITHOST_PROFILES = ("bare", "gitea")


class ComposeStack(Stack):
    """What every server's compose stack shares: the project, its engine and CLI, published
    ports, control of its containers, the git host and the fault listeners. Each server's
    own stack (harness/servers/<name>/compose.py) names its image and writes its launch."""

    backend = "compose"
    #: how a missing server image is built (named in the error)
    build_hint = "`make images-offline` (no registry) or `python -m harness.images build-public`"

    def __init__(self, settings, githost: str | None = None):
        super().__init__(settings)
        # None until up(): the default follows the image set (gitea with the public images,
        # bare with the offline set, which has no Gitea image).
        self.githost = githost or settings.githost
        self.project = "ph" + self.run_id.replace("-", "")
        self.ports: dict[str, int] = {}
        self.overrides: dict[str, str] = dict(settings.server_env)
        self.workers = settings.workers
        self.seeded = settings.seed_repos  # the seed sidecar seeds these at `up`
        self._docker = None
        self._cli: ComposeCli | None = None
        self._image_set: images.ImageSet | None = None
        self._server_ref = ""

    # -- lifecycle ----------------------------------------------------------------------
    def up(self) -> None:
        started = time.monotonic()
        self._connect()
        assert self._cli is not None and self._image_set is not None  # set by _connect
        self.githost = self.githost or ("bare" if self._image_set.name == "offline" else "gitea")
        self._ensure_server_image()
        self.run_dir.mkdir(parents=True, exist_ok=False)
        (self.run_dir / "logs").mkdir()
        self.write_server_files()
        self._say(f"compose {self._cli.version} ({' '.join(self._cli.argv)}), images: {self._image_set.name}, "
                  f"git host: {self.githost}, project {self.project}: starting ...")
        dependencies = SERVERS[self.settings.server].dependencies
        published = ("server", *dependencies, "githost") + (("gitfront",) if self.githost == "bare" else ())
        self.up_on_free_ports(published)
        if self.githost == "gitea":
            self._bootstrap_gitea()
        self._say(f"stack {self.run_id} up in {time.monotonic() - started:.1f} s (run dir {self.run_dir})")
        self.write_state(compose_project=self.project, endpoints=self.endpoints(), attach=self.attach_state())

    def _connect(self) -> None:
        """The engine, the compose CLI and the image set this stack runs on."""
        try:
            self._docker = docker_client()
        except HarnessError as exc:
            raise HarnessError(f"{exc}; or use BACKEND=local, which needs no Docker") from None
        self._cli = detect()
        self._image_set = images.choose_image_set(self.settings.images)

    def up_on_free_ports(self, published: tuple[str, ...], services: tuple[str, ...] = ()) -> None:
        """`compose up -d [services]` with `published` on free ports, until ready. Free ports
        are picked here and bound by the engine later: another process may take one in between
        (seen in CI with four test workers). Such an `up` is retried on new ports."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            self.ports = {name: free_port() for name in published}
            self.write_state(compose_project=self.project)
            try:
                self._compose(["up", "-d", *services], timeout=900)
                self._check_ready()
                return
            except HarnessError as exc:
                if attempt < PORT_ATTEMPTS and PORT_TAKEN in str(exc):
                    self._say(f"a published port was taken before the engine bound it; again on new ports "
                              f"(attempt {attempt + 1} of {PORT_ATTEMPTS})")
                    self._compose(["down", "-v", "--remove-orphans", "-t", "10"], timeout=300)
                    continue
                failed = self._failed_services_settled()
                raise ServiceFailed(f"{exc} (not healthy: {', '.join(failed) or 'none found'})",
                                    service=failed[0] if failed else None) from None

    def attach_state(self) -> dict[str, Any]:
        """What another harness process needs to drive this stack (`harness gates --against`)."""
        assert self._image_set is not None
        return {"project": self.project, "ports": self.ports, "githost": self.githost, "images": self._image_set.name,
                "server_image": self._server_image(), "workers": self.workers, "overrides": self.overrides,
                "seeded": self.seeded}

    @classmethod
    def attached(cls, settings: Settings, run_dir: Path, state: Mapping[str, Any]) -> ComposeStack:
        """This stack as seen from another process: the same project, ports and settings.
        The owner (`harness up --detach`) still tears it down."""
        stack = cls(settings, githost=state["githost"])
        stack.run_id, stack.run_dir, stack.keep = run_dir.name, run_dir, True
        stack.project, stack.ports = state["project"], {k: int(v) for k, v in state["ports"].items()}
        stack.workers, stack.overrides = int(state["workers"]), dict(state["overrides"])
        stack.seeded = int(state["seeded"])
        stack._docker, stack._cli = docker_client(), detect()
        stack._image_set = images.choose_image_set(state["images"])
        stack._server_ref = state["server_image"]
        return stack

    def down(self) -> None:
        if self._cli is not None and self.run_dir.exists():
            try:
                self.dump_logs()
                self._compose(["down", "-v", "--remove-orphans", "-t", "10"], timeout=300)
            except HarnessError as exc:
                self._say(f"compose down failed, removing by label instead: {exc}")
        if self._docker is not None:
            remove_labelled(self._docker, self.run_id)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self._cli = None

    def _say(self, message: str) -> None:
        log.info(f"[harness] {message}")

    def _files(self) -> list[Path]:
        files = [COMPOSE_DIR / "base.yml", COMPOSE_DIR / f"githost-{self.githost}.yml"]
        if self.settings.target.image:
            files.append(COMPOSE_DIR / "server-prebuilt.yml")
        return [*files, self.run_dir / SERVER_COMMAND_FILE]

    @abstractmethod
    def write_server_files(self) -> None:
        """What the server's container reads at create time (its env file, its launch line)."""

    @abstractmethod
    def server_image_ref(self) -> str:
        """The server image this stack runs for its settings."""

    def _env(self) -> dict[str, str]:
        image_set = self._image_set
        assert image_set is not None
        upstream = ("githost", "9418") if self.githost == "bare" else ("githost", "3000")
        return {
            # compose v1 gives the engine 60 s per API call by default; on vfs, creating a
            # stack's containers beside another stack can take longer (measured in CI with
            # two test workers). Your own COMPOSE_HTTP_TIMEOUT wins.
            "COMPOSE_HTTP_TIMEOUT": "600",
            **os.environ,
            "HARNESS_RUN_ID": self.run_id,
            "HARNESS_OWNER": f"{os.getpid()}:{psutil.Process().create_time()}",
            "HARNESS_REDIS_IMAGE": image_set.redis,
            "HARNESS_POSTGRES_IMAGE": image_set.postgres,
            "HARNESS_TOOLS_IMAGE": image_set.tools,
            "HARNESS_SEED_IMAGE": image_set.seed,
            "HARNESS_GITEA_IMAGE": self.settings.gitea_image,
            "HARNESS_SERVER_IMAGE": self._server_image(),
            "HARNESS_SERVER_ENV_FILE": str(self.run_dir / "server.env"),
            "HARNESS_RECIPE_DIR": str(STACKS_DIR / self.settings.server),
            "HARNESS_SEED_REPOS": str(self.settings.seed_repos),
            "HARNESS_GIT_UPSTREAM_HOST": upstream[0],
            "HARNESS_GIT_UPSTREAM_PORT": upstream[1],
            "HARNESS_LATENCY_MS": f"{self.settings.latency_ms:g}",
            **{f"HARNESS_{name.upper()}_PORT": str(port) for name, port in self.ports.items()},
        }

    def _compose(self, args: list[str], timeout: float = 600) -> str:
        assert self._cli is not None
        return self._cli.run(self.project, self._files(), args, self._env(), timeout=timeout,
                             log=self.run_dir / "logs" / "compose.log")

    def _server_image(self) -> str:
        if not self._server_ref:
            self._server_ref = self.server_image_ref()
        return self._server_ref

    def _ensure_server_image(self) -> None:
        if self.settings.target.image:
            return  # a prebuilt image: compose pulls it or finds it
        import docker.errors
        assert self._docker is not None
        try:
            self._docker.images.get(self._server_image())
        except docker.errors.ImageNotFound:
            raise HarnessError(f"image {self._server_image()} does not exist; build it with {self.build_hint}"
                               ) from None

    def _check_ready(self) -> None:
        ready = self.container("ready")
        code = ready.wait(timeout=60).get("StatusCode")
        if code != 0:
            raise ServiceFailed(f"the stack's `ready` service exited {code}; see {self.run_dir / 'logs'}")

    def _failed_services_settled(self, budget_s: float = 10.0) -> list[str]:
        """The failed services, once one shows: compose can return on a container's death a
        moment before the engine reports it exited (a loaded CI run named none)."""
        try:
            return wait_for(self._failed_services, budget_s, "a failed service", interval=0.5)
        except GaveUp:
            return []

    def _failed_services(self) -> list[str]:
        """Services of this project whose container exited non-zero or is unhealthy."""
        assert self._docker is not None
        failed = []
        for container in self._docker.containers.list(all=True, filters={
                "label": f"com.docker.compose.project={self.project}"}):
            state = container.attrs.get("State", {})
            service = container.labels.get("com.docker.compose.service", container.name)
            exited_badly = state.get("Status") == "exited" and state.get("ExitCode", 0) != 0
            if service != "ready" and (exited_badly or state.get("Health", {}).get("Status") == "unhealthy"):
                failed.append(service)
        return sorted(failed)

    def _bootstrap_gitea(self) -> None:
        """Admin user (gitea CLI in the container), token, then repos through the REST API."""
        from harness.githost import gitea
        from harness.seed import PROBE_REPOS, policy_repo_name, probe_repo_name
        admin = gitea.GiteaAdmin()
        created = self.container("githost").exec_run(gitea.admin_create_command(admin), user="git")
        if created.exit_code != 0 and b"already exists" not in created.output:
            raise HarnessError(f"creating the Gitea admin failed: {created.output.decode(errors='replace')[-300:]}")
        client = gitea.GiteaClient(f"http://127.0.0.1:{self.ports['githost']}")
        client.wait_ready(60)
        token = client.create_token(admin)
        client.use_token(token)
        names = ([policy_repo_name(i) for i in range(self.settings.seed_repos)]
                 + [probe_repo_name(i) for i in range(PROBE_REPOS)])
        result = gitea.seed_gitea(client, admin, token, names, self.run_dir / "gitea-seed")
        if result.failed:
            raise HarnessError(f"seeding Gitea failed for {len(result.failed)} of {result.total} repos; "
                               f"first: {next(iter(result.failed.items()))}")
        self._say(f"gitea seeded {result.total} repos in {result.seconds:.1f} s")

    # -- containers ---------------------------------------------------------------------
    def container(self, service: str):
        """The docker SDK's container of a service of this project."""
        assert self._docker is not None
        found = self._docker.containers.list(all=True, filters={"label": [
            f"com.docker.compose.project={self.project}", f"com.docker.compose.service={service}"]})
        if not found:
            raise ConfigError(f"no container for service {service!r} in project {self.project}")
        return found[0]

    def exec_in(self, service: str, argv: list[str], timeout: float = 120) -> str:
        """Run a command in a service's container; its output, or HarnessError on failure."""
        # The SDK's exec has no timeout; `timeout` (coreutils) bounds the command itself.
        result = self.container(service).exec_run(["timeout", str(int(timeout)), *argv], demux=False)
        if result.exit_code != 0:
            raise HarnessError(f"`{shlex.join(argv)}` in {service} exited {result.exit_code}: "
                               f"{result.output.decode(errors='replace')[-400:]}")
        return result.output.decode(errors="replace")

    # -- Stack contract -------------------------------------------------------------------
    def service(self, name: str) -> ContainerHandle:
        if name not in SERVICES:
            raise ConfigError(f"unknown service {name!r}; services: {', '.join(SERVICES)}")
        return ContainerHandle(self, name)

    def address(self, name: str) -> Address | None:
        if name not in SERVICES:
            raise ConfigError(f"unknown service {name!r}; services: {', '.join(SERVICES)}")
        if name not in self.ports:
            return None  # the fault listeners: only the stack's network reaches them
        port = self.ports[name]
        if name == "server":
            return Address("http", "127.0.0.1", port)
        if name == "redis":
            return Address("redis", "127.0.0.1", port)
        if name == "postgres":
            return Address("postgres", "127.0.0.1", port, userinfo="opal:opal", path="/postgres")
        if name == "gitfront":
            return Address("http", "127.0.0.1", port)
        return Address("git" if self.githost == "bare" else "http", "127.0.0.1", port, path="/")

    def engine_version(self) -> str | None:
        assert self._docker is not None
        try:
            return str(self._docker.version().get("Version"))
        except Exception:  # recorded as unknown; a busy engine must not fail the run
            return None


    def dump_logs(self) -> Path:
        for service in (*SERVICES, "seed"):
            try:
                write_container_log(self.container(service), self.run_dir / "logs" / f"{service}.log")
            except Exception:  # a service that never started has no container: nothing to keep
                continue
        return self.run_dir / "logs"

    def logs_dir(self) -> Path:
        return self.dump_logs()

    def repo_url(self, repo: str, via_latency: bool = False, via_front: bool = False) -> str:
        if via_front:
            if self.githost != "bare":
                raise ConfigError("the git front serves the bare git host's repos: run with HARNESS_GITHOST=bare")
            return f"http://gitfront:8080/{repo}.git"
        if self.githost == "bare":
            return f"git://{'latency' if via_latency else 'githost'}:9418/{repo}.git"
        host = "latency:9418" if via_latency else "githost:3000"
        return f"http://{host}/harness/{repo}.git"

    def dead_url(self, index: int, kind: str = "blackhole") -> str:
        return f"git://{kind}:9418/{dead_repo_name(index)}.git"

    def ensure_repos(self, count: int) -> None:
        if count <= self.seeded:
            return
        if self.githost != "bare":
            raise ConfigError(f"this gate needs {count} repos but the Gitea git host was seeded with "
                              f"{self.seeded}: set HARNESS_SEED_REPOS={count}")
        started = time.monotonic()
        self._compose(["run", "--rm", "-e", f"SEED_COUNT={count}", "seed"], timeout=900)
        self._say(f"seeded up to {count} repos in {time.monotonic() - started:.1f} s")
        self.seeded = count

    def rename_repo(self, repo: str, new_name: str) -> None:
        if self.githost != "bare":
            raise ConfigError("removing and restoring a repo needs the bare git host: run with HARNESS_GITHOST=bare")
        self.exec_in("githost", ["mv", "-T", f"/repos/{repo}.git", f"/repos/{new_name}.git"], timeout=30)


# An `up` whose published port another process took first is retried this many times in all.
PORT_ATTEMPTS = 3
PORT_TAKEN = "address already in use"

# What each service logs per accepted connection: git daemon --verbose (githost) and
# harness.tcplisteners (blackhole, slowfail, latency).
CONNECTION_MARKERS = {"githost": CONNECTION_LINE, "blackhole": ACCEPTED_LINE, "slowfail": ACCEPTED_LINE,
                      "latency": ACCEPTED_LINE, "gitfront": ACCEPTED_LINE}
# Services with a compose healthcheck: `start` waits until the engine reports them healthy.
HEALTHCHECKED = ("redis", "postgres", "server", "blackhole", "slowfail", "latency", "gitfront")


def write_container_log(container, path: Path) -> Path:
    path.write_bytes(container.logs(timestamps=True))
    return path


class ContainerHandle:
    """A compose service as a handle: control through the docker SDK, on the run's project."""

    def __init__(self, stack: ComposeStack, name: str):
        self.stack, self.name = stack, name

    def _container(self):
        return self.stack.container(self.name)

    def start(self) -> None:
        self._container().start()
        if self.name in HEALTHCHECKED:
            wait_for(self._healthy, 90, f"{self.name} healthy after start", interval=0.3, error=ServiceFailed)

    def _healthy(self) -> bool:
        container = self._container()
        container.reload()
        return container.attrs.get("State", {}).get("Health", {}).get("Status") == "healthy"

    def stop(self) -> None:
        self._container().stop(timeout=10)

    def kill(self) -> None:
        self._container().kill()

    def pause(self) -> None:
        self._container().pause()

    def resume(self) -> None:
        self._container().unpause()

    def logs(self) -> Path:
        return write_container_log(self._container(), self.stack.run_dir / "logs" / f"{self.name}.log")

    def accepted_connections(self) -> int:
        marker = CONNECTION_MARKERS.get(self.name)
        if marker is None:
            raise ConfigError(f"{self.name} does not count connections: only the fault listeners and the git host do")
        text = self._container().logs().decode(errors="replace")
        return sum(1 for line in text.splitlines() if marker in line)


def remove_labelled(client, run_id: str | None = None) -> list[str]:
    """Remove containers, networks and volumes labelled by the harness (one run, or all)."""
    label = f"{RUN_LABEL}={run_id}" if run_id else RUN_LABEL
    removed = []
    for container in client.containers.list(all=True, filters={"label": label}):
        container.remove(force=True, v=True)
        removed.append(f"container {container.name}")
    for network in client.networks.list(filters={"label": label}):
        remove_network(network)
        removed.append(f"network {network.name}")
    for volume in client.volumes.list(filters={"label": label}):
        volume.remove(force=True)
        removed.append(f"volume {volume.name}")
    return removed


def remove_network(network, budget_s: float = 30.0) -> None:
    """Remove a network whose containers are gone. The engine frees a removed container's
    endpoint a moment after the removal returns — under load long enough for the network's
    removal to be refused with "has active endpoints" (a CI run): retried within the budget,
    any endpoint left is disconnected by force."""
    from docker.errors import APIError, NotFound

    def removed() -> bool:
        try:
            network.remove()
        except NotFound:
            return True
        except APIError as exc:
            if "active endpoints" not in str(exc):
                raise
            network.reload()
            for container_id in (network.attrs.get("Containers") or {}):
                try:
                    network.disconnect(container_id, force=True)
                except (APIError, NotFound):
                    pass  # gone in the meantime
            return False
        return True
    wait_for(removed, budget_s, f"removing network {network.name} (it kept active endpoints)",
             interval=0.5, error=HarnessError)


def owner_alive(owner: str | None) -> bool:
    """Whether the process named by an owner label still runs (same PID and start time)."""
    from harness import procs
    try:
        pid, start = (owner or "").split(":", 1)
        return procs.still_running({"pid": int(pid), "create_time": float(start)}) is not None
    except ValueError:
        return False
