"""Setup costs, measured: server virtualenv install, seeding, stack up and down.

`make bench` (= python -m harness.bench) times what a user waits for before a gate runs
and writes reports/bench-<time>.json. Figures are for this machine and run; seeding is
also given as a rate, which travels better between machines than seconds do.

  --cold       also install the server virtualenv into an empty cache (tens of seconds;
               pip's own download cache, if warm, still helps)
  --backend B  local (default) or compose (needs the images: make images-offline); on
               compose: stack up/down with the default seed, then the seed sidecar adding
               --repos repos to a running stack and running over them again
  --repos N    repos to seed (default 200)
  --matrix     instead: the gate suite on two releases (--releases, default 0.9.6 0.9.9)
               serially (one gate at a time, one release after another), then --repeats
               times (default 3) side by side (each release its own `harness gates --jobs
               J`, default auto), in one run: the wall times, the slowest parallel run over
               the serial one, whether every verdict, category and kind of problem agrees
               across the parallel runs and with the serial one, and the harness's share of
               each gate's time (report timing: harness_s over duration_s)
  --installs   instead: the server's venv installed the way it was (pip, a tree rebuilt whole)
               and the way it is (uv where present, a tree on its cached third-party layer),
               in one run, each in an empty cache of its own: 0.9.9 cold (empty installer
               cache) and warm (the venv removed, the installer's cache kept), a source tree's
               first install and its install after a one-line change (--tree DIR, else
               OPAL_SOURCE, else a tree built from 0.9.9's wheels by the checkout's
               tests/integration/source_tree.py; the tree is copied, never edited)
  --stability  instead: the gate suite on every release (--releases) --repeats times
               (default 3), the releases side by side, each `harness gates --jobs J`: per
               gate and release, each run's verdict, category and problem set, and whether
               the runs agree (reports/bench-stability-<time>/stability.md)
  --gate-load  instead: each gate of the first of --releases alone (`harness gates --gate
               G`), its process tree sampled: wall seconds, CPU seconds (harness, server,
               services, git) and peak summed memory — the table `--jobs auto` plans by
               (harness.runner.parallel.LOAD)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import psutil

from harness import config, console, seed
from harness.children import run_children
from harness.errors import HarnessError
from harness.servers.registry import adapter_module
from harness.stack import compose_stack_class, make_stack
from harness.stack.local_runtime import local_runtime

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
    """The server's local install (OPAL: its venv; Cerbos: its npm binary), into an empty
    cache with --cold, and from the filled cache."""
    runtime = local_runtime(settings.server)
    if cold:
        with tempfile.TemporaryDirectory(prefix="harness-bench-cache-") as empty:
            bench.time("venv_install_cold_s", lambda: runtime.install(replace(settings, cache_dir=Path(empty))))
    runtime.install(settings)  # make sure the cache is filled
    bench.time("venv_cached_s", lambda: runtime.install(settings))


def measure_seed(bench: Bench, repos: int) -> None:
    with tempfile.TemporaryDirectory(prefix="harness-bench-seed-") as root:
        first = bench.time(f"seed_{repos}_repos_s", lambda: seed.seed(Path(root), repos))
        bench.time(f"reseed_{repos}_repos_s", lambda: seed.seed(Path(root), repos))
    if first.failed:
        raise HarnessError(f"seeding failed for {len(first.failed)} repos: {next(iter(first.failed.items()))}")
    bench.figures["seed_repos_per_s"] = round(first.total / max(first.seconds, 1e-3), 1)


def measure_sidecar_seed(bench: Bench, settings: config.Settings, repos: int) -> None:
    """The compose seed sidecar (`compose run seed`) adding `repos` repos to a running stack's
    git host, then running again over them (idempotent: nothing new). Wall time, container
    start included: what a gate that needs more repos waits for."""
    stack = compose_stack_class(settings.server)(settings)
    try:
        stack.up()
        bench.time(f"sidecar_seed_{repos}_repos_s", lambda: stack.ensure_repos(repos))
        stack.seeded = 0  # forget them: the sidecar runs over all again
        bench.time(f"sidecar_reseed_{repos}_repos_s", lambda: stack.ensure_repos(repos))
    finally:
        stack.down()
    bench.figures["sidecar_seed_repos_per_s"] = round(repos / max(bench.figures[f"sidecar_seed_{repos}_repos_s"],
                                                                  1e-3), 1)


def measure_stack(bench: Bench, settings: config.Settings, runs: int = 2) -> None:
    """Up and down `runs` times: the first up may include one-time work (a venv, an image
    check); the later ones are what a user waits for every time."""
    for run in range(1, runs + 1):
        stack = make_stack(settings)
        try:
            bench.time(f"stack_up_{run}_s", stack.up)
        finally:
            bench.time(f"stack_down_{run}_s", stack.down)


def _gates_argv(release: str, reports: Path, jobs: str) -> list[str]:
    return ["gates", "--opal-version", release, "--backend", "local", "--reports-dir", str(reports),
            "--jobs", jobs]


@dataclass(frozen=True)
class SuiteRun:
    """One release's suite as its report tells it."""

    # gate -> (verdict, category, the kinds of problem, sorted): what a test's cell expects. How
    # many phases or modes showed a kind is a figure, and moves with the load (orphan-clones on
    # 0.9.9 showed fds_kept in both phases in a serial run, in the burst only beside 16 groups)
    verdicts: dict[str, tuple[str, ...]]
    harness_s: dict[str, float]  # gate -> the harness's seconds (fresh server, snapshots, teardown)
    duration_s: dict[str, float]  # gate -> the gate's seconds
    parts: int = 1  # the stacks the run used one after another or side by side (`--jobs` groups)

    @classmethod
    def read(cls, reports: Path) -> SuiteRun:
        report = json.loads((reports / "latest" / "report.json").read_text())
        gates = report["gates"]
        return cls({g["id"]: (g["verdict"], g["category"], *sorted({p["category"] for p in g.get("problems") or []}))
                    for g in gates},
                   {g["id"]: float((g.get("timing") or {}).get("harness_s", 0.0)) for g in gates},
                   {g["id"]: float(g["duration_s"]) for g in gates}, len(report.get("parts") or [None]))


def _differences(reference: dict[str, SuiteRun], other: dict[str, SuiteRun]) -> list[str]:
    return [f"{r} {g}: {' '.join(v)} vs {' '.join(other[r].verdicts.get(g, ('missing', '')))}"
            for r, run in reference.items() for g, v in run.verdicts.items() if other[r].verdicts.get(g) != v]


def _harness_seconds(runs: list[dict[str, SuiteRun]]) -> dict[str, tuple[float, float]]:
    """Per gate, (the harness's seconds, the gate's seconds), summed over releases and runs."""
    spent: dict[str, tuple[float, float]] = {}
    for by_release in runs:
        for run in by_release.values():
            for gate, seconds in run.duration_s.items():
                harness, total = spent.get(gate, (0.0, 0.0))
                spent[gate] = (harness + run.harness_s[gate], total + seconds)
    return spent


def _share(harness: float, total: float) -> float:
    return round(harness / max(total, 1e-3), 3)


def harness_share_by_gate(runs: list[dict[str, SuiteRun]]) -> dict[str, float]:
    """Per gate, the harness's seconds over the gate's seconds, summed over releases and runs."""
    return {gate: _share(*pair) for gate, pair in _harness_seconds(runs).items()}


def measure_matrix(bench: Bench, releases: list[str], jobs: str, repeats: int, work: Path) -> None:
    """The suite on every release one gate at a time, one release after another; then
    `repeats` times every release side by side, each with `--jobs jobs`. The ratio is the
    slowest parallel run over the serial one; verdicts, categories and the kinds of problem
    must agree across all of the parallel runs (and are compared with the serial run)."""
    bench.figures["loadavg_1m_start"] = round(os.getloadavg()[0], 2)
    bench.time("matrix_serial_s", lambda: [run_children({r: _gates_argv(r, work / "serial" / r, "1")})
                                           for r in releases])
    serial = {r: SuiteRun.read(work / "serial" / r) for r in releases}
    parallel: list[dict[str, SuiteRun]] = []
    for n in range(1, repeats + 1):
        argvs = {r: _gates_argv(r, work / f"parallel-{n}" / r, jobs) for r in releases}
        bench.time(f"matrix_parallel_{n}_s", partial(run_children, argvs))
        parallel.append({r: SuiteRun.read(work / f"parallel-{n}" / r) for r in releases})
    # The machine may be shared: its load, beside the figures, says how far they travel.
    bench.figures["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    if jobs == "auto":  # what the runs picked for the gates the release takes (boot-timing's own group too)
        bench.figures["auto_groups"] = float(max(run.parts for by_release in parallel for run in by_release.values()))
    slowest = max(bench.figures[f"matrix_parallel_{n}_s"] for n in range(1, repeats + 1))
    bench.figures["matrix_parallel_slowest_s"] = slowest
    bench.figures["parallel_over_serial"] = round(slowest / bench.figures["matrix_serial_s"], 3)
    across = [d for later in parallel[1:] for d in _differences(parallel[0], later)]
    vs_serial = _differences(serial, parallel[0])
    bench.figures["parallel_runs_identical"] = float(not across)
    bench.figures["verdicts_identical"] = float(not across and not vs_serial)
    shares = harness_share_by_gate([serial])
    spent = _harness_seconds([serial]).values()
    bench.figures["harness_share"] = _share(sum(h for h, _ in spent), sum(t for _, t in spent))
    bench.figures.update({f"harness_share.{gate}": share for gate, share in shares.items()})
    bench.details = {"releases": releases, "jobs": jobs, "repeats": repeats,
                     "parallel_runs_differ": across, "serial_vs_parallel_differ": vs_serial,
                     "serial": {r: {g: list(v) for g, v in run.verdicts.items()} for r, run in serial.items()},
                     "parallel": [{r: {g: list(v) for g, v in run.verdicts.items()} for r, run in by_release.items()}
                                  for by_release in parallel],
                     "gate_seconds_serial": {r: run.duration_s for r, run in serial.items()}}
    print(f"[bench] slowest parallel / serial = {bench.figures['parallel_over_serial']} (--jobs {jobs}"
          + (f": {bench.figures['auto_groups']:.0f} groups" if "auto_groups" in bench.figures else "")
          + f"; load average {bench.figures['loadavg_1m_start']} → {bench.figures['loadavg_1m_end']})"
          + f"; the {repeats} parallel "
          f"runs {'agree' if not across else 'DIFFER: ' + '; '.join(across)}; serial vs parallel "
          f"{'agree' if not vs_serial else 'differ: ' + '; '.join(vs_serial)}", flush=True)
    print("[bench] harness share of each gate's time (serial run): "
          + ", ".join(f"{gate} {share:.0%}" for gate, share in shares.items())
          + f"; suite {bench.figures['harness_share']:.0%}", flush=True)


def _outcome(verdict: tuple[str, ...]) -> str:
    """'pass', or 'fail: leak.caches_kept, leak.files_grew' (every problem, the category first)."""
    problems = verdict[2:] or verdict[1:2]
    return f"{verdict[0]}: {', '.join(p for p in problems if p)}" if any(problems) else verdict[0]


def stability_table(runs: list[dict[str, SuiteRun]]) -> tuple[str, list[str]]:
    """A markdown table — gate, release, then each run's verdict and problem set — and the
    rows whose runs differ."""
    header = "| gate | release | " + " | ".join(f"run {n}" for n in range(1, len(runs) + 1)) + " | same |"
    lines = [header, "|---|---|" + "---|" * len(runs) + "---|"]
    differ = []
    releases = list(runs[0]) if runs else []
    gates = list(dict.fromkeys(g for by_release in runs for run in by_release.values() for g in run.verdicts))
    for gate in gates:
        for release in releases:
            outcomes = [by_release[release].verdicts.get(gate, ("missing",)) for by_release in runs]
            cells = [_outcome(o) for o in outcomes]
            same = len(set(outcomes)) == 1
            if not same:
                differ.append(f"{gate} on {release}: " + " / ".join(cells))
            lines.append(f"| {gate} | {release} | " + " | ".join(cells) + f" | {'yes' if same else '**no**'} |")
    return "\n".join(lines), differ


def measure_stability(bench: Bench, releases: list[str], jobs: str, repeats: int, work: Path) -> None:
    """Every release's suite `repeats` times (releases side by side): is each gate's outcome
    — verdict, category, problem set — the same in every run?"""
    runs: list[dict[str, SuiteRun]] = []
    for n in range(1, repeats + 1):
        argvs = {r: _gates_argv(r, work / f"run-{n}" / r, jobs) for r in releases}
        bench.time(f"stability_run_{n}_s", partial(run_children, argvs))
        runs.append({r: SuiteRun.read(work / f"run-{n}" / r) for r in releases})
    table, differ = stability_table(runs)
    (work / "stability.md").write_text(table + "\n")
    bench.figures["stability_rows_differ"] = float(len(differ))
    bench.details = {"releases": releases, "jobs": jobs, "repeats": repeats, "differ": differ,
                     "runs": [{r: {g: list(v) for g, v in run.verdicts.items()} for r, run in by_release.items()}
                              for by_release in runs]}
    print(table, flush=True)
    print(f"[bench] {len(differ)} gate × release rows differ across the {repeats} runs"
          + (": " + "; ".join(differ) if differ else "") + f"; table: {work / 'stability.md'}", flush=True)


SAMPLE_S = 0.25


def _cpu_s(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def _sample_tree(proc: subprocess.Popen[bytes]) -> int:
    """Until `proc` ends: the peak of its process tree's summed resident memory, bytes."""
    peak = 0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        resident = 0
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for member in tree:
            try:
                resident += member.memory_info().rss
            except psutil.Error:  # ended between listing and reading
                pass
        peak = max(peak, resident)
        time.sleep(SAMPLE_S)
    return peak


def gate_load(release: str, gate: str, reports: Path) -> dict[str, float]:
    """One gate alone: wall seconds, CPU seconds of everything it started (the reaped
    children's rusage: every process of the stack is reaped by its parent on the way down),
    peak summed RSS in MB."""
    before, started = _cpu_s(resource.getrusage(resource.RUSAGE_CHILDREN)), time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "harness", "gates", "--opal-version", release,
                             "--backend", "local", "--reports-dir", str(reports / gate), "--gate", gate],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = _sample_tree(proc)
    proc.wait()
    return {"wall_s": round(time.monotonic() - started, 1),
            "cpu_s": round(_cpu_s(resource.getrusage(resource.RUSAGE_CHILDREN)) - before, 1),
            "peak_mb": round(peak / 2**20), "exit": proc.returncode}


def measure_gate_load(bench: Bench, release: str, work: Path) -> None:
    """Every gate alone, one after another: the table `--jobs auto` plans by."""
    from harness.gates.registry import GATES
    table = {}
    for gate in GATES:
        table[gate] = gate_load(release, gate, work)
        print(f"[bench] {gate}: {table[gate]}", flush=True)
    bench.details = {"release": release, "gate_load": table, "loadavg": os.getloadavg()}
    bench.figures.update({f"cpu_s.{g}": row["cpu_s"] for g, row in table.items()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="also time a server venv install into an empty cache")
    parser.add_argument("--backend", default="local", choices=("local", "compose"))
    parser.add_argument("--repos", type=int, default=200)
    parser.add_argument("--matrix", action="store_true", help="time the two-release gate matrix, serial and parallel")
    parser.add_argument("--installs", action="store_true",
                        help="server venv installs before (pip, whole rebuilds) and after (uv, reused layer)")
    parser.add_argument("--tree", type=Path, default=None, help="the source tree --installs copies and installs")
    parser.add_argument("--stability", action="store_true",
                        help="each release's suite --repeats times: verdict, category and problem set per run")
    parser.add_argument("--gate-load", action="store_true",
                        help="each gate alone: wall, CPU seconds and peak memory (the --jobs auto table)")
    parser.add_argument("--releases", nargs="+", default=["0.9.6", "0.9.9"])
    parser.add_argument("--jobs", default="auto", metavar="N|auto",
                        help="--jobs of each release's harness gates in the parallel runs (--matrix)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="parallel runs, each compared with the others (--matrix)")
    args = parser.parse_args(argv)
    # The bench prints its own figures, not the steps inside them: the harness's lines only
    # when something goes wrong.
    console.to_stream(level=logging.WARNING)
    try:
        settings = config.from_env(backend=args.backend, seed_repos=args.repos)
        bench = Bench(settings.target.label, args.backend)
        if args.installs:
            bench.target = "0.9.9 and a source tree"
            installs = adapter_module(settings.server, "install_bench")
            if installs is None:
                raise HarnessError(f"--installs compares the installers of a server installed into a venv; "
                                   f"{settings.server} has none")
            work = Path(tempfile.mkdtemp(prefix="harness-bench-installs-"))
            try:
                installs.measure_installs(bench, settings, args.tree or settings.target.source, work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        elif args.gate_load:
            bench.target = args.releases[0]
            work = settings.reports_dir / f"bench-gate-load-{time.strftime('%Y%m%d-%H%M%S')}"
            measure_gate_load(bench, args.releases[0], work)
        elif args.stability:
            bench.target = " ".join(args.releases)
            work = settings.reports_dir / f"bench-stability-{time.strftime('%Y%m%d-%H%M%S')}"
            measure_stability(bench, args.releases, args.jobs, args.repeats, work)
        elif args.matrix:
            bench.target = " ".join(args.releases)
            work = settings.reports_dir / f"bench-matrix-{time.strftime('%Y%m%d-%H%M%S')}"
            measure_matrix(bench, args.releases, args.jobs, args.repeats, work)
        else:
            if args.backend == "local":
                measure_venv(bench, settings, args.cold)
                measure_seed(bench, args.repos)
                measure_stack(bench, settings)
            else:
                measure_stack(bench, config.from_env(backend=args.backend))
                measure_sidecar_seed(bench, config.from_env(backend=args.backend), args.repos)
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
