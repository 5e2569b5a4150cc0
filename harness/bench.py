"""Setup costs, measured: server virtualenv install, seeding, stack up and down.

`make bench` (= python -m harness.bench) times what a user waits for before a gate runs
and writes reports/bench-<time>.json. Figures are for this machine and run; seeding is
also given as a rate, which travels better between machines than seconds do.

  --cold       also install the server virtualenv into an empty cache (tens of seconds;
               pip's own download cache, if warm, still helps)
  --backend B  local (default) or compose (needs the images: make images-offline); on
               compose the seeding is the sidecar's, inside the stack-up time, so it is
               not timed on its own
  --repos N    repos to seed (default 200)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

from harness import config, console, seed
from harness.errors import HarnessError
from harness.servers.opal.venvs import ensure_server_venv
from harness.stack import make_stack

T = TypeVar("T")


@dataclass
class Bench:
    target: str
    backend: str
    figures: dict[str, float] = field(default_factory=dict)

    def time(self, name: str, action: Callable[[], T]) -> T:
        started = time.monotonic()
        result = action()
        self.figures[name] = round(time.monotonic() - started, 2)
        print(f"[bench] {name}: {self.figures[name]:.2f} s", flush=True)
        return result


def measure_venv(bench: Bench, settings: config.Settings, cold: bool) -> None:
    if cold:
        with tempfile.TemporaryDirectory(prefix="harness-bench-cache-") as empty:
            bench.time("venv_install_cold_s", lambda: ensure_server_venv(settings.target, Path(empty)))
    ensure_server_venv(settings.target, settings.cache_dir)  # make sure the cache is filled
    bench.time("venv_cached_s", lambda: ensure_server_venv(settings.target, settings.cache_dir))


def measure_seed(bench: Bench, repos: int) -> None:
    with tempfile.TemporaryDirectory(prefix="harness-bench-seed-") as root:
        first = bench.time(f"seed_{repos}_repos_s", lambda: seed.seed(Path(root), repos))
        bench.time(f"reseed_{repos}_repos_s", lambda: seed.seed(Path(root), repos))
    if first.failed:
        raise HarnessError(f"seeding failed for {len(first.failed)} repos: {next(iter(first.failed.items()))}")
    bench.figures["seed_repos_per_s"] = round(first.total / max(first.seconds, 1e-3), 1)


def measure_stack(bench: Bench, settings: config.Settings, runs: int = 2) -> None:
    """Up and down `runs` times: the first up may include one-time work (a venv, an image
    check); the later ones are what a user waits for every time."""
    for run in range(1, runs + 1):
        stack = make_stack(settings)
        try:
            bench.time(f"stack_up_{run}_s", stack.up)
        finally:
            bench.time(f"stack_down_{run}_s", stack.down)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="also time a server venv install into an empty cache")
    parser.add_argument("--backend", default="local", choices=("local", "compose"))
    parser.add_argument("--repos", type=int, default=200)
    args = parser.parse_args(argv)
    # The bench prints its own figures, not the steps inside them: the harness's lines only
    # when something goes wrong.
    console.to_stream(level=logging.WARNING)
    try:
        settings = config.from_env(backend=args.backend, seed_repos=args.repos)
        bench = Bench(settings.target.label, args.backend)
        if args.backend == "local":
            measure_venv(bench, settings, args.cold)
            measure_seed(bench, args.repos)
        measure_stack(bench, settings)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = settings.reports_dir / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**asdict(bench), "seed_repos": args.repos}, indent=2))
    print(f"[bench] written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
