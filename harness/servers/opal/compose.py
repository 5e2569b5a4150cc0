"""OPAL on the compose backend: its server image (a release's, an OPAL_SOURCE tree's built
at `up`, or a prebuilt OPAL_IMAGE), its launch line and settings from the recipe both
backends use, and the probe of gunicorn in its container. The stack itself — Redis, Postgres,
the git host, the fault listeners — is the compose backend's (harness.stack.compose)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from harness import images
from harness.config import Settings
from harness.errors import ConfigError, HarnessError, ServiceFailed
from harness.probes import CountUnavailable
from harness.servers.opal.probe import OpalProbe
from harness.servers.opal.recipe import gunicorn_argv, server_env
from harness.stack.compose import CONTAINER_RECIPE_DIR, SERVER_COMMAND_FILE, ComposeStack
from harness.waiting import poll_until

CONTAINER_BASE_DIR = "/data/opal"
BUILD_COMMAND = "make images-offline"


def stack_image_ref(settings: Settings) -> str:
    """The server image a compose stack runs for these settings: OPAL_IMAGE, the image of
    the OPAL_SOURCE tree (built at `up`), or the release's image of the chosen set."""
    if settings.target.image:
        return settings.target.image
    image_set = images.choose_image_set(settings.images)
    if settings.target.source is not None:
        from harness.servers.opal.source_image import image_constraints, source_image_ref
        tree = settings.target.source
        return source_image_ref(image_set, tree, image_constraints(tree, settings.cache_dir, settings.constraints))
    return image_set.server(settings.target.version)


def local_only_reason(settings: Settings) -> str | None:
    """Why BACKEND=auto keeps these settings on the local backend (None: compose can run them)."""
    if settings.target.source is not None:
        # A source tree needs no image to exist first; BACKEND=compose builds one at `up`.
        return "OPAL_SOURCE runs on the local backend unless BACKEND=compose"
    return None


class OpalComposeStack(ComposeStack):
    """SERVER=opal, BACKEND=compose: gunicorn in the server image, beside Redis and Postgres."""

    def server_image_ref(self) -> str:
        return stack_image_ref(self.settings)

    def _ensure_server_image(self) -> None:
        if self.settings.target.source is None or self.settings.target.image:
            super()._ensure_server_image()
            return
        from harness.servers.opal.source_image import build_source_image
        assert self._image_set is not None
        self._say(f"server image from {self.settings.target.source} ({self._server_image()}) ...")
        result = build_source_image(self._image_set, self.settings.target.source, client=self._docker,
                                    cache_dir=self.settings.cache_dir, setting=self.settings.constraints)
        self._say(f"server image {result.action} in {result.seconds:.1f} s")

    def write_server_files(self) -> None:
        self.write_server_env()
        # the launch line from the one recipe both backends use (JSON is YAML)
        command = gunicorn_argv("python", CONTAINER_RECIPE_DIR)
        (self.run_dir / SERVER_COMMAND_FILE).write_text(json.dumps({"services": {"server": {"command": command}}}))

    def write_server_env(self) -> None:
        """server.env: OPAL's settings for this stack and the recipe's worker count."""
        opal = server_env(redis_url="redis://redis:6379",
                          broadcast_uri="postgres://opal:opal@postgres:5432/postgres",
                          base_dir=CONTAINER_BASE_DIR, instance_dir=CONTAINER_BASE_DIR,
                          overrides=self.overrides)
        launch = {"HARNESS_WORKERS": str(self.workers)}  # read by the recipe's gunicorn config
        (self.run_dir / "server.env").write_text("".join(f"{k}={v}\n" for k, v in {**opal, **launch}.items()))

    @property
    def server(self) -> OpalComposeProbe:
        return OpalComposeProbe(self)


class OpalComposeProbe(OpalProbe):
    """The server as a container: PIDs from `docker top`, its python through exec."""

    stack: OpalComposeStack

    def pids(self) -> tuple[int | None, list[int]]:
        """Host PIDs of gunicorn's master and workers (from `docker top`)."""
        container = self.stack.container("server")
        container.reload()
        if container.status != "running":
            return None, []
        top = container.top(ps_args="-o pid,ppid,args")
        rows = [dict(zip(top["Titles"], row, strict=False)) for row in top["Processes"]]
        gunicorn = [r for r in rows if "gunicorn" in (r.get("COMMAND") or r.get("CMD") or "")]
        pids = {int(r["PID"]) for r in gunicorn}
        master = next((int(r["PID"]) for r in gunicorn if int(r["PPID"]) not in pids), None)
        workers = [int(r["PID"]) for r in gunicorn if int(r["PPID"]) == master]
        return master, workers

    def settings(self) -> dict[str, str]:
        lines = (self.stack.run_dir / "server.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)

    def restart(self, fresh_state: bool, overrides: Mapping[str, str] | None = None,
                wait_healthy: bool = True, workers: int | None = None) -> None:
        """Stop, then start the server container. Its OPAL_BASE_DIR is a tmpfs, so every start
        is cold (no clones) either way; `fresh_state` also empties Redis. New settings need
        a new container (env_file is read at create time)."""
        stack = self.stack
        self.stop()
        if fresh_state:
            self.flush_store()
        wanted = dict(overrides) if overrides is not None else stack.overrides
        wanted_workers = workers or stack.workers
        if wanted != stack.overrides or wanted_workers != stack.workers:
            stack.overrides, stack.workers = wanted, wanted_workers
            stack.write_server_env()
            stack._compose(["up", "-d", "--no-deps", "--force-recreate", "server"], timeout=300)
        else:
            stack.container("server").start()
        if wait_healthy and poll_until(self.client.healthy, 90, interval=0.3) is None:
            raise ServiceFailed(f"server not healthy 90 s after restart; logs: {self.log()}")

    def clone_dirs(self) -> list[str]:
        # The clones' directory appears with the first clone (none yet: no dirs); the base
        # dir missing, or an exec that fails, is a count not taken — never 0.
        script = (f"test -d {CONTAINER_BASE_DIR} || {{ echo 'no {CONTAINER_BASE_DIR}'; exit 3; }}; "
                  f"test -d {CONTAINER_BASE_DIR}/git_sources || exit 0; ls -1 {CONTAINER_BASE_DIR}/git_sources")
        try:
            out = self.stack.exec_in("server", ["sh", "-c", script])
        except (HarnessError, ConfigError) as exc:
            raise CountUnavailable(f"the server's clone dirs could not be counted in its container: {exc}") from exc
        return sorted(line for line in out.splitlines() if line.strip())

    def cpu_count(self) -> int:
        return int(self.stack.exec_in("server", ["python", "-c", "import os; print(os.cpu_count())"]).strip())

    def python(self, code: str, args: list[str], timeout: float = 300) -> str:
        # stdout only (demux): stderr carries the server's import-time warnings.
        argv = ["timeout", str(int(timeout)), "python", "-c", code, *args]
        result = self.stack.container("server").exec_run(argv, demux=True)
        stdout, stderr = (part.decode(errors="replace") if part else "" for part in result.output)
        if result.exit_code != 0:
            raise HarnessError(f"the server's python exited {result.exit_code}: {stderr.strip()[-400:]}")
        return stdout

    def peer_ports(self) -> dict[int, str]:
        # Container-side ports: what the server's sockets see inside the stack's network.
        return {6379: "redis", 5432: "postgres", 9418: "git (githost, latency or blackhole)", 3000: "githost"}


STACK = OpalComposeStack
