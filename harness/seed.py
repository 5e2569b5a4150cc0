"""Seeding policy repositories: N bare repos with distinct content, idempotently.

Each repo is made with two git processes (`init --bare`, `fast-import`), four at a
time, with fixed author dates: the same name always yields the same commit SHA, and no
two names share one (the name is in every file). Bulk repos are `policy-NNNN`; probe
repos (`probe-N`) are reserved for single checks and never touched by bulk operations.

Also the seed sidecar's entry point: `python -m harness.seed --root DIR --count N`
exits non-zero with the number of repos that failed.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

PROBE_REPOS = 4
PARALLEL = 4
FIXED_DATE = "1700000000 +0000"


def policy_repo_name(index: int) -> str:
    return f"policy-{index:04d}"


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


def _data(text: str) -> str:
    return f"data {len(text.encode())}\n{text}"


def fast_import_stream(name: str) -> str:
    package = name.replace("-", "_")
    rego = (f"package harness.{package}\n\n"
            f"# seeded by the policy harness for repo {name}\n"
            f"default allow = false\n\nallow {{\n    input.repo == \"{name}\"\n}}\n")
    data = f'{{"repo": "{name}"}}\n'
    return (
        "commit refs/heads/main\n"
        f"author Policy Harness <harness@localhost> {FIXED_DATE}\n"
        f"committer Policy Harness <harness@localhost> {FIXED_DATE}\n"
        + _data(f"seed {name}\n")
        + "M 644 inline policy.rego\n" + _data(rego)
        + "M 644 inline data.json\n" + _data(data)
        + "\n"
    )


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
        shutil.rmtree(path)  # half-made by an interrupted seed
    subprocess.run(["git", "init", "--bare", "-q", "-b", "main", str(path)],
                   check=True, capture_output=True, timeout=60)
    subprocess.run(["git", "-C", str(path), "fast-import", "--quiet"],
                   input=fast_import_stream(name).encode(), check=True, capture_output=True, timeout=60)
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
