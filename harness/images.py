"""Which images a compose stack uses, and building them.

Two image sets:

  public   redis:7.0.15-bookworm, postgres:15.8-bookworm from Docker Hub;
           the tools and server images built here from stacks/images/*.Dockerfile on their
           public bases (debian:bookworm-slim, python:3.11-slim-bookworm), and the seed
           sidecar from seed/Dockerfile on the tools image.
  offline  everything built here from policy-harness/debian:bookworm, a debootstrap'd base
           made by stacks/images/build-offline-base.sh: for machines that reach the package
           registries (PyPI, Debian) but no container registry.

`HARNESS_IMAGES=public|offline|auto` picks one (auto: offline when the offline base image
exists locally, else public).

Every image built here carries the label io.policy-harness.inputs=<digest of what went
into it> (Dockerfile, copied files, build arguments, local base image). A build whose
image already carries the same digest is skipped ("reused").

  python -m harness.images build-offline [--version V ...]
  python -m harness.images build-public  [--version V ...] [--dry-run]
  python -m harness.images which
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from harness import PROJECT_ROOT, STACKS_DIR, config, console
from harness.config import supported_versions
from harness.errors import ConfigError, HarnessError, MissingDependency

log = logging.getLogger(__name__)

ImageExists = Callable[[str], bool]

INPUTS_LABEL = "io.policy-harness.inputs"
OFFLINE_BASE = "policy-harness/debian:bookworm"
IMAGES_DIR = STACKS_DIR / "images"
BASE_SCRIPT = IMAGES_DIR / "build-offline-base.sh"
BUILD_TIMEOUT_S = 1800
BASE_TIMEOUT_S = 1800
# Per API call. On vfs a container's create or remove copies a whole image: with two stacks
# side by side it has taken over 30 s.
DOCKER_API_TIMEOUT_S = 180
IMAGE_SET_NAMES = ("public", "offline", "auto")


@dataclass(frozen=True)
class ImageSet:
    """The images of one compose stack: services by role, the server by release."""

    name: str  # "public" | "offline"
    redis: str
    postgres: str
    tools: str
    seed: str  # the seed sidecar (seed/Dockerfile): the tools image plus its entry point
    server_repo: str

    def server(self, version: str) -> str:
        return f"{self.server_repo}:{version}"

    def all_images(self, versions: Iterable[str]) -> list[str]:
        return [self.redis, self.postgres, self.tools, self.seed, *(self.server(v) for v in versions)]


# The public set: services from Docker Hub, tools and server built here on public bases.
PUBLIC = ImageSet(
    name="public",
    redis="redis:7.0.15-bookworm",
    postgres="postgres:15.8-bookworm",
    tools="policy-harness/tools:public",
    seed="policy-harness/seed:public",
    server_repo="policy-harness/opal-server",
)
# The offline set: all built here from the debootstrap'd base.
# Tags differ from the public set's, so both can live on one engine without one
# rebuild replacing the other.
OFFLINE = ImageSet(
    name="offline",
    redis="policy-harness/redis:7.0",
    postgres="policy-harness/postgres:15",
    tools="policy-harness/tools:offline",
    seed="policy-harness/seed:offline",
    server_repo="policy-harness/opal-server-offline",
)
PUBLIC_TOOLS_BASE = "debian:bookworm-slim"
PUBLIC_SERVER_BASE = "python:3.11-slim-bookworm"


# --- the Docker engine ---------------------------------------------------------------------

def docker_client(timeout: int = DOCKER_API_TIMEOUT_S):
    """A docker SDK client that has answered a ping, or HarnessError naming the fix."""
    import docker  # the SDK; imported here so `harness.images` loads without an engine

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except docker.errors.DockerException as exc:
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise HarnessError(
            f"no Docker engine answers at {host} ({_short(exc)}); start one "
            "(`sudo systemctl start docker`, or `sudo dockerd &`) or point DOCKER_HOST at it"
        ) from None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:200] if text else type(exc).__name__


def image_labels(ref: str, client=None) -> dict[str, str] | None:
    """The labels of a local image, or None when no image has that reference."""
    import docker

    client = client or docker_client()
    try:
        image = client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as exc:
        if getattr(exc, "status_code", None) == 404:
            return None
        raise HarnessError(f"the Docker engine could not look up {ref}: {_short(exc)}") from None
    return dict(image.labels or {})


def image_id(ref: str, client=None) -> str | None:
    import docker

    client = client or docker_client()
    try:
        return client.images.get(ref).id
    except docker.errors.ImageNotFound:
        return None


def docker_image_exists(ref: str) -> bool:
    return image_labels(ref) is not None


# --- choosing a set ------------------------------------------------------------------------

def choose_image_set(wanted: str | None = None, image_exists: ImageExists | None = None) -> ImageSet:
    """public | offline | auto (HARNESS_IMAGES, default auto: offline when its base exists here)."""
    wanted = config.image_set_choice() if wanted is None else wanted.strip().lower()
    if wanted not in IMAGE_SET_NAMES:
        raise ConfigError(f"HARNESS_IMAGES={wanted} is not known; use one of {', '.join(IMAGE_SET_NAMES)}")
    if wanted == "public":
        return PUBLIC
    if wanted == "offline":
        return OFFLINE
    exists = image_exists or docker_image_exists
    return OFFLINE if exists(OFFLINE_BASE) else PUBLIC


# --- inputs and building -------------------------------------------------------------------

def _files(paths: Iterable[Path | str]) -> list[Path]:
    """Files of `paths`, directories expanded; caches and bytecode left out."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            for child in path.rglob("*"):
                if child.is_file() and "__pycache__" not in child.parts and child.suffix != ".pyc":
                    found.append(child)
        else:
            found.append(path)
    return found


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def inputs_digest(paths: Iterable[Path | str], extra: Mapping[str, str] | None = None,
                  root: Path = PROJECT_ROOT) -> str:
    """sha256 over the files (sorted by path relative to `root`, path + content), 12 hex.

    Directories are expanded (without __pycache__ / *.pyc); `extra` (build arguments, a
    base image id) is hashed after the files, sorted by key. A missing file is an error.
    """
    sha = hashlib.sha256()
    entries = sorted((_relative(p, root), p) for p in _files(paths))
    for rel, path in entries:
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise HarnessError(f"an input of an image is missing or unreadable: {path} ({exc.strerror})") from None
        sha.update(f"file {rel} {len(content)}\0".encode())
        sha.update(content)
        sha.update(b"\0")
    for key, value in sorted((extra or {}).items()):
        sha.update(f"extra {key}={value}\0".encode())
    return sha.hexdigest()[:12]


@dataclass(frozen=True)
class BuildResult:
    image: str
    action: str  # "built" | "reused"
    seconds: float
    digest: str
    log: Path | None = None

    def __str__(self) -> str:
        return f"{self.image:<44} {self.action:<7} {self.seconds:7.1f} s  inputs {self.digest}"


def cache_dir() -> Path:
    return config.default_cache_dir()


def log_dir() -> Path:
    path = cache_dir() / "image-logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _log_path(image_ref: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", image_ref)
    return log_dir() / f"{safe}.log"


def _build_lock(image_ref: str) -> FileLock:
    """One build of an image at a time across processes (a test and `make` side by side)."""
    return FileLock(log_dir() / f".{re.sub(r'[^A-Za-z0-9_.-]+', '_', image_ref)}.lock")


_STEP = re.compile(r"^(Step \d+/\d+ : .*|#\d+ \[[^\]]+\] .*)$")  # legacy builder | BuildKit plain


def _docker_cli() -> str:
    cli = shutil.which("docker")
    if cli is None:
        raise MissingDependency("the docker CLI is not installed; install it with: "
                                "sudo apt-get install -y docker.io (or Docker Engine from docs.docker.com)")
    return cli


def _run_logged(command: Sequence[str], log_path: Path, timeout_s: float,
                what: str, step_pattern: re.Pattern | None = _STEP,
                env: Mapping[str, str] | None = None) -> None:
    """Run `command` with its output in `log_path`; step lines go to the log."""
    with open(log_path, "w") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        proc = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", cwd=PROJECT_ROOT,
                                env=dict(env) if env is not None else None)
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout_s, expire)
        timer.daemon = True
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                out.flush()
                line = line.rstrip()
                if step_pattern is None or step_pattern.match(line):
                    log.info(f"[images]   {what}: {line[:160]}")
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
    if timed_out.is_set():
        raise HarnessError(f"{what} did not finish within {timeout_s:.0f} s and was stopped; "
                           f"full log: {log_path}")
    if code != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise HarnessError(f"{what} failed (exit {code}); full log: {log_path}\n{tail}")


def _local_base_id(build_args: Mapping[str, str], dockerfile: Path, client) -> dict[str, str]:
    """What a policy-harness/* base was made from (its inputs label, else its id), so a
    base built from other inputs rebuilds its children."""
    base = build_args.get("BASE_IMAGE")
    if base is None:
        match = re.search(r"^FROM\s+(\S+)", dockerfile.read_text(), re.M)
        base = match.group(1) if match and "$" not in match.group(1) else None
    if base and base.startswith("policy-harness/"):
        labels = image_labels(base, client)
        if labels is None:
            raise HarnessError(f"the base image {base} does not exist; build it first: "
                               "python -m harness.images build-offline (or make images-offline)")
        if labels.get(INPUTS_LABEL):
            return {"base-image-inputs": labels[INPUTS_LABEL]}
        return {"base-image-id": image_id(base, client) or ""}
    return {}


def _remove_superseded(previous: str | None, image_ref: str, client) -> None:
    """Drop the image a rebuild untagged (on vfs each is a full copy), unless still in use."""
    import docker

    if previous is None or previous == image_id(image_ref, client):
        return
    try:
        client.images.remove(previous)
    except docker.errors.APIError as exc:
        why = getattr(exc, "explanation", None) or _short(exc)
        log.info(f"[images] {image_ref}: kept the previous image {previous[7:19]} ({str(why)[:160]}); "
                 f"`docker rmi {previous[7:19]}` once nothing uses it")
    else:
        log.info(f"[images] {image_ref}: removed the previous image {previous[7:19]}")


def build(image_ref: str, dockerfile: Path, build_args: Mapping[str, str], inputs: Sequence[Path],
          client=None, context: Path = PROJECT_ROOT, network: str | None = None) -> BuildResult:
    """`docker build` one image from `context` (the project root unless given), unless it
    is already up to date.

    Up to date = an image `image_ref` exists with label io.policy-harness.inputs equal to
    the digest of the Dockerfile, `inputs`, the build arguments and a local base's id.
    Inputs are named relative to `context`, so a digest does not depend on where the
    checkout lives. `network="none"`: the build's RUN steps get no network at all.
    """
    started = time.monotonic()
    client = client or docker_client()
    dockerfile = Path(dockerfile)
    extra = {f"arg {k}": v for k, v in build_args.items()}
    extra.update(_local_base_id(build_args, dockerfile, client))
    ignore_file = [PROJECT_ROOT / ".dockerignore"] if context == PROJECT_ROOT else []
    inputs = [dockerfile, *ignore_file, *inputs]
    digest = inputs_digest(inputs, extra, root=context)
    with _build_lock(image_ref):
        labels = image_labels(image_ref, client)
        if labels is not None and labels.get(INPUTS_LABEL) == digest:
            log.info(f"[images] {image_ref}: up to date (inputs {digest}), reused")
            return BuildResult(image_ref, "reused", time.monotonic() - started, digest)
        was = "absent" if labels is None else f"inputs {labels.get(INPUTS_LABEL, 'unlabelled')}"
        log_path = _log_path(image_ref)
        log.info(f"[images] {image_ref}: building (inputs {digest}; was {was}); log: {log_path}")
        command = [_docker_cli(), "build", "--pull=false", "-f", str(dockerfile), "-t", image_ref,
                   "--label", f"{INPUTS_LABEL}={digest}"]
        if network is not None:
            command.append(f"--network={network}")
        for key, value in build_args.items():
            command += ["--build-arg", f"{key}={value}"]
        command.append(str(context))
        previous = image_id(image_ref, client)
        _run_logged(command, log_path, BUILD_TIMEOUT_S, f"build {image_ref}")
        _remove_superseded(previous, image_ref, client)
        seconds = time.monotonic() - started
        log.info(f"[images] {image_ref}: built in {seconds:.1f} s")
        return BuildResult(image_ref, "built", seconds, digest, log_path)


def base_digest() -> str:
    """The offline base's inputs digest, as the build script computes it."""
    result = subprocess.run(["bash", str(BASE_SCRIPT), "--print-digest"], capture_output=True,
                            text=True, timeout=60)
    if result.returncode != 0 or not re.fullmatch(r"[0-9a-f]{12}", result.stdout.strip()):
        raise HarnessError(f"{BASE_SCRIPT} --print-digest failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.strip()


class NeedsRoot(HarnessError):
    """An action needs root privileges."""


def _require_base_prerequisites() -> None:
    if shutil.which("debootstrap") is None and not os.access("/usr/sbin/debootstrap", os.X_OK):
        raise MissingDependency("building the offline base image needs debootstrap; install it with: "
                                "sudo apt-get install -y debootstrap")
    if os.geteuid() != 0:
        raise NeedsRoot("building the offline base image runs debootstrap, which needs root; run "
                           "`sudo make images-offline` (or sudo .venv/bin/python -m harness.images build-offline)")


def build_offline_base(client=None) -> BuildResult:
    """policy-harness/debian:bookworm via build-offline-base.sh, reused by its inputs label."""
    started = time.monotonic()
    client = client or docker_client()
    digest = base_digest()
    with _build_lock(OFFLINE_BASE):
        labels = image_labels(OFFLINE_BASE, client)
        if labels is not None and labels.get(INPUTS_LABEL) == digest:
            log.info(f"[images] {OFFLINE_BASE}: up to date (inputs {digest}), reused")
            return BuildResult(OFFLINE_BASE, "reused", time.monotonic() - started, digest)
        _require_base_prerequisites()
        _docker_cli()
        log_path = _log_path(OFFLINE_BASE)
        log.info(f"[images] {OFFLINE_BASE}: building with debootstrap (inputs {digest}); log: {log_path}")
        previous = image_id(OFFLINE_BASE, client)
        _run_logged(["bash", str(BASE_SCRIPT), OFFLINE_BASE], log_path, BASE_TIMEOUT_S,
                    f"build {OFFLINE_BASE}", step_pattern=re.compile(r"^\[offline-base\]"))
        _remove_superseded(previous, OFFLINE_BASE, client)
        labels = image_labels(OFFLINE_BASE, client) or {}
        if labels.get(INPUTS_LABEL) != digest:
            raise HarnessError(f"{BASE_SCRIPT} finished but {OFFLINE_BASE} does not carry inputs {digest}; "
                               f"see {log_path}")
        seconds = time.monotonic() - started
        return BuildResult(OFFLINE_BASE, "built", seconds, digest, log_path)


def _versions(versions: Iterable[str] | None) -> list[str]:
    known = supported_versions()
    chosen = list(versions) if versions else known
    unknown = [v for v in chosen if v not in known]
    if unknown:
        raise ConfigError(f"no constraints for opal-server {', '.join(unknown)}; supported: {', '.join(known)} "
                          "(add stacks/constraints/opal-server-<version>.txt to support another)")
    return chosen


def _server_inputs(version: str) -> list[Path]:
    return [STACKS_DIR / "constraints" / f"opal-server-{version}.txt", STACKS_DIR / "opal"]


# The only harness modules the tools image runs (standard library only): edits elsewhere
# in harness/ must not rebuild it.
TOOLS_MODULES = [PROJECT_ROOT / "harness" / name
                 for name in ("__init__.py", "seed.py", "tcplisteners.py", "gitfront.py")]
SEED_DIR = PROJECT_ROOT / "seed"
SEED_DOCKERFILE = SEED_DIR / "Dockerfile"
SEED_INPUTS = [SEED_DIR / "entrypoint.sh"]


def build_offline(versions: Iterable[str] | None = None) -> list[BuildResult]:
    """The whole offline set: base, tools, seed, redis, postgres, one server per release."""
    chosen = _versions(versions)
    client = docker_client()
    results = [build_offline_base(client)]
    base = {"BASE_IMAGE": OFFLINE_BASE}
    results.append(build(OFFLINE.tools, IMAGES_DIR / "tools.Dockerfile", base,
                         TOOLS_MODULES, client))
    results.append(build(OFFLINE.seed, SEED_DOCKERFILE, {"BASE_IMAGE": OFFLINE.tools},
                         SEED_INPUTS, client))
    results.append(build(OFFLINE.redis, IMAGES_DIR / "redis.Dockerfile", {}, [], client))
    results.append(build(OFFLINE.postgres, IMAGES_DIR / "postgres.Dockerfile", {},
                         [IMAGES_DIR / "postgres-entrypoint.sh"], client))
    for version in chosen:
        results.append(build(OFFLINE.server(version), IMAGES_DIR / "opal-server.Dockerfile",
                             {**base, "OPAL_VERSION": version}, _server_inputs(version), client))
    return results


def public_plan(versions: Iterable[str] | None = None) -> list[tuple[str, Path, dict[str, str], list[Path]]]:
    """(image, Dockerfile, build args, inputs) for the images the public set builds here."""
    plan = [(PUBLIC.tools, IMAGES_DIR / "tools.Dockerfile", {"BASE_IMAGE": PUBLIC_TOOLS_BASE},
             TOOLS_MODULES),
            (PUBLIC.seed, SEED_DOCKERFILE, {"BASE_IMAGE": PUBLIC.tools}, SEED_INPUTS)]
    for version in _versions(versions):
        plan.append((PUBLIC.server(version), IMAGES_DIR / "opal-server.Dockerfile",
                     {"BASE_IMAGE": PUBLIC_SERVER_BASE, "OPAL_VERSION": version}, _server_inputs(version)))
    return plan


def build_public(versions: Iterable[str] | None = None) -> list[BuildResult]:
    """Tools and server images on the public bases (pulled from Docker Hub by `docker build`).

    redis and postgres of the public set are used as published; compose pulls them.
    """
    client = docker_client()
    return [build(ref, dockerfile, args, inputs, client)
            for ref, dockerfile, args, inputs in public_plan(versions)]


# --- command line --------------------------------------------------------------------------

def _print_results(results: list[BuildResult], seconds: float) -> None:
    print("\nimage                                        action   time     inputs")
    for result in results:
        print(result)
    built = sum(r.action == "built" for r in results)
    print(f"{len(results)} images ({built} built, {len(results) - built} reused) in {seconds:.1f} s")


def cmd_which() -> int:
    wanted = config.image_set_choice()
    chosen = choose_image_set(wanted)
    print(f"image set: {chosen.name} (HARNESS_IMAGES={wanted})")
    client = docker_client()
    refs = chosen.all_images(supported_versions())
    if chosen.name == "offline":
        refs.insert(0, OFFLINE_BASE)
    for ref in refs:
        labels = image_labels(ref, client)
        state = "missing" if labels is None else f"present (inputs {labels.get(INPUTS_LABEL, '-')})"
        print(f"  {ref:<44} {state}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.images",
                                     description="Build and inspect the compose backend's images.")
    sub = parser.add_subparsers(dest="command", required=True)
    offline = sub.add_parser("build-offline", help="build the offline image set (base via debootstrap)")
    offline.add_argument("--version", action="append", dest="versions", metavar="V",
                         help="an opal-server release (repeatable; default: every supported one)")
    public = sub.add_parser("build-public", help="build the public set's tools and server images")
    public.add_argument("--version", action="append", dest="versions", metavar="V")
    public.add_argument("--dry-run", action="store_true", help="print the builds, run nothing")
    sub.add_parser("which", help="print the chosen image set and which of its images exist")
    args = parser.parse_args(argv)
    try:
        if args.command == "which":
            return cmd_which()
        started = time.monotonic()
        if args.command == "build-public" and args.dry_run:
            for ref, dockerfile, build_args, _ in public_plan(args.versions):
                print(f"{ref}: docker build -f {dockerfile.relative_to(PROJECT_ROOT)} "
                      + " ".join(f"--build-arg {k}={v}" for k, v in build_args.items()))
            return 0
        console.to_stream()
        builder = build_offline if args.command == "build-offline" else build_public
        results = builder(args.versions)
        _print_results(results, time.monotonic() - started)
        return 0
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
