"""Seeding policy repositories: N bare repos with distinct content, idempotently.

Each repo is written directly, without a git process: its objects (two files, a tree and a
commit with fixed author dates) as loose objects, and HEAD, config and the branch ref as three
small files. Spawning `git init` and `git fast-import` per repo was most of seeding's time:
about 175 repos/s here, a minute for 10,000. The loose-object format (zlib of
"<kind> <size>\\0<data>", named by its SHA-1) is written here rather than through gitdb
because this module runs in the tools image, which has no pip (standard library only);
tests/unit/test_seed.py checks the repos with git itself (fsck --strict, the SHAs git computes).

The same name always yields the same commit SHA, and no two names share one (the name is in
every file). A repo is built beside its final path and renamed into place, so an interrupted
seed never leaves a half-made repo under a real name.

Bulk repos are `policy-NNNN`; probe repos (`probe-N`) are reserved for single checks and
never touched by bulk operations.

Also the seed sidecar's entry point: `python -m harness.seed --root DIR --count N`
exits non-zero with the number of repos that failed.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

PROBE_REPOS = 4
# Threads writing repos: the writes are file system calls, which release the GIL.
PARALLEL = 4
FIXED_DATE = "1700000000 +0000"
# receive.denyDeleteCurrent: remote-transitions deletes the branch HEAD names and re-creates it.
BARE_CONFIG = ("[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n"
               "[receive]\n\tdenyDeleteCurrent = ignore\n")


def policy_repo_name(index: int) -> str:
    return f"policy-{index:04d}"


def dead_repo_name(index: int) -> str:
    """The repo path of a dead remote (never seeded: the blackhole logs it as asked for)."""
    return f"dead-{index:04d}"


def probe_repo_name(index: int) -> str:
    return f"probe-{index}"


@dataclass
class SeedResult:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return len(self.created) + len(self.existing) + len(self.failed)


def repo_files(name: str) -> dict[str, bytes]:
    """The seeded tree of repo `name`: a policy and a data file that both carry its name."""
    package = name.replace("-", "_")
    rego = (f"package harness.{package}\n\n"
            f"# seeded by the policy harness for repo {name}\n"
            f"default allow = false\n\nallow {{\n    input.repo == \"{name}\"\n}}\n")
    return {"data.json": f'{{"repo": "{name}"}}\n'.encode(), "policy.rego": rego.encode()}


def _object(kind: bytes, data: bytes) -> tuple[str, bytes]:
    """A loose object's hex SHA-1 and its raw form ("<kind> <size>\\0<data>")."""
    raw = kind + b" " + str(len(data)).encode() + b"\0" + data
    return hashlib.sha1(raw).hexdigest(), raw


def _store(objects: Path, kind: bytes, data: bytes) -> bytes:
    """Write one loose object; its binary SHA-1."""
    sha, raw = _object(kind, data)
    folder = objects / sha[:2]
    folder.mkdir(exist_ok=True)
    (folder / sha[2:]).write_bytes(zlib.compress(raw))
    return bytes.fromhex(sha)


def _commit_objects(name: str, store: Callable[[bytes, bytes], bytes]) -> str:
    """The repo's blobs, tree and commit, each passed to `store` (which returns its binary
    SHA-1); the commit's hex SHA."""
    # A tree lists its entries sorted by name: "<mode> <name>\0<20-byte sha>".
    tree = b"".join(b"100644 " + file.encode() + b"\0" + store(b"blob", content)
                    for file, content in sorted(repo_files(name).items()))
    signature = f"Policy Harness <harness@localhost> {FIXED_DATE}"
    commit = (f"tree {store(b'tree', tree).hex()}\nauthor {signature}\ncommitter {signature}\n\n"
              f"seed {name}\n").encode()
    return store(b"commit", commit).hex()


def _write_objects(objects: Path, name: str) -> str:
    """The repo's objects written as loose objects; the commit's hex SHA."""
    return _commit_objects(name, lambda kind, data: _store(objects, kind, data))


def seeded_head(name: str) -> str:
    """The commit SHA seeding gives repo `name` (on every git host: the same objects), computed
    without writing anything — what a scope on a freshly seeded repo must serve."""
    return _commit_objects(name, lambda kind, data: bytes.fromhex(_object(kind, data)[0]))


def _write_repo(path: Path, name: str) -> None:
    for sub in ("objects/info", "objects/pack", "refs/heads", "refs/tags", "info"):
        (path / sub).mkdir(parents=True)
    (path / "HEAD").write_text("ref: refs/heads/main\n")
    (path / "config").write_text(BARE_CONFIG)
    (path / "refs" / "heads" / "main").write_text(_write_objects(path / "objects", name) + "\n")


def head_sha(repo: Path) -> str | None:
    ref = repo / "refs" / "heads" / "main"
    if ref.is_file():
        return ref.read_text().strip() or None
    result = subprocess.run(["git", f"--git-dir={repo}", "rev-parse", "--verify", "-q", "refs/heads/main"],
                            capture_output=True, text=True, timeout=30)
    return result.stdout.strip() or None


def create_repo(root: Path, name: str) -> bool:
    """Make `root/<name>.git`; False if it already held a seeded main branch."""
    path = root / f"{name}.git"
    if path.exists():
        if head_sha(path):
            return False
        shutil.rmtree(path)  # half-made by a seed from before repos were renamed into place
    building = root / f".{name}.git.{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(building, ignore_errors=True)
    try:
        _write_repo(building, name)
        building.rename(path)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return True


def seed(root: Path, count: int, probes: int = PROBE_REPOS) -> SeedResult:
    root.mkdir(parents=True, exist_ok=True)
    names = [policy_repo_name(i) for i in range(count)] + [probe_repo_name(i) for i in range(probes)]
    result = SeedResult()
    started = time.monotonic()

    def one(name: str) -> None:
        try:
            (result.created if create_repo(root, name) else result.existing).append(name)
        except (subprocess.SubprocessError, OSError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            result.failed[name] = f"{exc} {detail.decode(errors='replace').strip()}".strip()

    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        list(pool.map(one, names))
    result.seconds = time.monotonic() - started
    log.info(f"[harness] seeded {len(names)} repos in {result.seconds:.1f} s "
             f"({len(result.created)} new, {len(result.existing)} already there, {len(result.failed)} failed)")
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.seed", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="directory of bare repos")
    parser.add_argument("--count", type=int, required=True, help="number of policy repos")
    parser.add_argument("--probes", type=int, default=PROBE_REPOS)
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(message)s", level=logging.INFO, stream=sys.stdout)
    result = seed(args.root, args.count, args.probes)
    for name, why in sorted(result.failed.items()):
        print(f"failed: {name}: {why}", file=sys.stderr)
    if result.failed:
        print(f"{len(result.failed)} of {result.total} repos failed to seed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
