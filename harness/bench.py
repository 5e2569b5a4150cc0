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
  --matrix     instead: the gate suite on two releases (--releases, default 0.9.6 0.9.9),
               one after another and then side by side (each release its own `harness
               gates --jobs J`, --jobs default 1), in one run: both wall times, their ratio,
               whether every verdict and category agrees, and the harness's share of the
               gates' time (report timing: harness_s over duration_s)
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
from typing import Any, TypeVar

from harness import config, console, seed
from harness.children import run_children
from harness.errors import HarnessError
from harness.servers.opal.venvs import ensure_server_venv
from harness.stack import make_stack

T = TypeVar("T")


@dataclass
class Bench:
    target: str
    backend: str
    figures: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

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


def _gates_argv(release: str, reports: Path, jobs: int) -> list[str]:
    return ["gates", "--opal-version", release, "--backend", "local", "--reports-dir", str(reports),
            "--jobs", str(jobs)]


def _verdicts(reports: Path) -> tuple[dict[str, tuple[str, str]], float, float]:
    """(gate -> (verdict, category), harness seconds, gate seconds) of a reports dir's latest run."""
    report = json.loads((reports / "latest" / "report.json").read_text())
    gates = report["gates"]
    return ({g["id"]: (g["verdict"], g["category"]) for g in gates},
            sum((g.get("timing") or {}).get("harness_s", 0.0) for g in gates), sum(g["duration_s"] for g in gates))


def measure_matrix(bench: Bench, releases: list[str], jobs: int, work: Path) -> None:
    """The suite on every release serially, then all releases side by side."""
    bench.time("matrix_serial_s", lambda: [run_children({r: _gates_argv(r, work / "serial" / r, jobs)})
                                           for r in releases])
    bench.time("matrix_parallel_s", lambda: run_children({r: _gates_argv(r, work / "parallel" / r, jobs)
                                                          for r in releases}))
    bench.figures["parallel_over_serial"] = round(bench.figures["matrix_parallel_s"]
                                                  / bench.figures["matrix_serial_s"], 3)
    serial = {r: _verdicts(work / "serial" / r) for r in releases}
    parallel = {r: _verdicts(work / "parallel" / r) for r in releases}
    differ = [f"{r} {g}: {serial[r][0][g]} vs {parallel[r][0].get(g)}" for r in releases
              for g in serial[r][0] if serial[r][0][g] != parallel[r][0].get(g)]
    bench.figures["verdicts_identical"] = float(not differ)
    harness_s = sum(s[1] for s in serial.values())
    bench.figures["harness_share"] = round(harness_s / max(1e-3, sum(s[2] for s in serial.values())), 3)
    bench.details = {"releases": releases, "jobs": jobs, "verdicts_differ": differ,
                     "serial": {r: {g: list(v) for g, v in s[0].items()} for r, s in serial.items()}}
    print(f"[bench] parallel / serial = {bench.figures['parallel_over_serial']}; verdicts "
          f"{'identical' if not differ else 'DIFFER: ' + '; '.join(differ)}; harness share "
          f"{bench.figures['harness_share']:.0%}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="also time a server venv install into an empty cache")
    parser.add_argument("--backend", default="local", choices=("local", "compose"))
    parser.add_argument("--repos", type=int, default=200)
    parser.add_argument("--matrix", action="store_true", help="time the two-release gate matrix, serial and parallel")
    parser.add_argument("--releases", nargs="+", default=["0.9.6", "0.9.9"])
    parser.add_argument("--jobs", type=int, default=1, help="--jobs of each release's harness gates (--matrix)")
    args = parser.parse_args(argv)
    # The bench prints its own figures, not the steps inside them: the harness's lines only
    # when something goes wrong.
    console.to_stream(level=logging.WARNING)
    try:
        settings = config.from_env(backend=args.backend, seed_repos=args.repos)
        bench = Bench(settings.target.label, args.backend)
        if args.matrix:
            bench.target = " ".join(args.releases)
            work = settings.reports_dir / f"bench-matrix-{time.strftime('%Y%m%d-%H%M%S')}"
            measure_matrix(bench, args.releases, args.jobs, work)
        else:
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
