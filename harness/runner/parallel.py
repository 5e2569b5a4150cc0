"""`harness gates --jobs N`: the gates in N groups side by side, each group a `harness gates`
child on its own stack (own ports, run dir, compose project), the parts merged into one run
report. Most of a gate's time is the server's (git timeouts, outages, boots), so on 2 cores
groups overlap their waiting.

Groups are balanced by each gate's measured duration (longest first). Gates that time the
server (`TIMED`) run after the groups, alone: concurrency must not be what they measure.
`--jobs auto` is not the core count: it is the fewest groups that bring the run down to its
longest gate, never more than the most whose measured CPU (LOAD) fits the cores with
headroom over the run's length and whose stacks fit the memory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from harness.baseline import Baseline, annotate
from harness.children import run_children, target_flags
from harness.config import Settings
from harness.errors import HarnessError
from harness.report import benchmark_entries, point_latest, schema_errors, summary_markdown
from harness.runner.batch import EXIT_ERROR, Batch, ci_outputs
from harness.stack.base import new_run_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateLoad:
    """What one gate costs the machine, run alone (`harness gates --gate G`, its stack's
    start and stop included): wall seconds, CPU seconds of the harness, the server and its
    services together, and the peak of their summed resident memory."""

    wall_s: float
    cpu_s: float
    peak_mb: int

    @property
    def cores(self) -> float:
        """The cores the gate keeps busy on average: most gates wait on the server's own
        timeouts, so this is well under 1."""
        return self.cpu_s / max(self.wall_s, 1e-3)


# Measured on 0.9.9 (local backend), each gate alone with its process tree sampled every
# 0.25 s: `python -m harness.bench --gate-load --releases 0.9.9` (CPU: the reaped children's
# rusage, so git and other short-lived processes count; memory: summed RSS, an upper bound
# since shared pages count twice). Measured 2026-12-06 03:09–03:29 UTC on the 2-core, 23 GB
# dev machine while other engineers' runs kept its load average at 5–23: walls are
# stretched (orphan-clones 334 s here, 81 s in an earlier run), CPU seconds much less so.
# Every gate is well under one core on average (0.2–0.55): its time is the server's waits.
# Re-measured on a quiet machine (2026-12-06 14:55–15:02 UTC, load average under 1): CPU about
# half of the figures below (orphan-clones 45 s in 68.5 s, leak 5.9 s in 14 s; the 13 gates
# 0.9.9 runs side by side 138 s together), walls shorter. Those 138 CPU-seconds over the 100 s
# a group-per-gate run (13 groups) spent side by side are 1.4 of 2 cores, inside CPU_HEADROOM;
# over the quiet longest wall (68.5 s) they would read 2.0. The table stays the loaded
# machine's, a shared CI runner's figures: it only caps `auto`, which on 0.9.9 stops at 5
# groups, where the run is down to its longest gate (`default_jobs`), far under that cap.
LOAD: dict[str, GateLoad] = {
    "leak": GateLoad(wall_s=24.5, cpu_s=10.3, peak_mb=594),
    "repeat-sync": GateLoad(wall_s=48.8, cpu_s=21.7, peak_mb=883),
    "offline-repo": GateLoad(wall_s=38.2, cpu_s=11.1, peak_mb=609),
    "zombie-cap": GateLoad(wall_s=51.0, cpu_s=10.2, peak_mb=607),
    "boot-timing": GateLoad(wall_s=23.5, cpu_s=13.0, peak_mb=674),
    "boot-dead-scope": GateLoad(wall_s=37.4, cpu_s=9.4, peak_mb=607),
    "broker-bounce": GateLoad(wall_s=59.9, cpu_s=11.7, peak_mb=830),
    "orphan-clones": GateLoad(wall_s=334.4, cpu_s=80.4, peak_mb=805),
    "remote-transitions": GateLoad(wall_s=60.8, cpu_s=14.3, peak_mb=612),
    "remote-failures": GateLoad(wall_s=145.4, cpu_s=35.6, peak_mb=811),
    "redis-outage": GateLoad(wall_s=80.4, cpu_s=14.1, peak_mb=612),
    # The source gates, on Cerbos 0.55.0 (they need SOURCE_CONTROL: OPAL skips them), each alone
    # with bench's gate_load sampling (`SERVER=cerbos harness gates --cerbos-version 0.55.0 --gate
    # G`), 2026-12-06 05:46 UTC, load average 1.0–1.7. One Go process and the listeners: little
    # CPU, a small stack.
    "bad-policy": GateLoad(wall_s=34.8, cpu_s=3.7, peak_mb=245),
    "checkout-tampered": GateLoad(wall_s=35.0, cpu_s=4.1, peak_mb=249),
    "boot-dead-remote": GateLoad(wall_s=19.4, cpu_s=2.5, peak_mb=237),
    "offline-remote": GateLoad(wall_s=25.0, cpu_s=2.7, peak_mb=282),
    # boot-size: not benched — its walls from `harness gates --gate boot-size` (7 s on 0.55.0, 13 s
    # on 0.51.0), CPU taken as a busy core for its compile and boot, memory as the others'
    "boot-size": GateLoad(wall_s=13.0, cpu_s=10.0, peak_mb=400),
    # not benched either: walls of single `harness gates --gate G` runs (2026-12-06, a loaded
    # machine; source-repeat-sync scaled from 40 to its 30 cycles), CPU and memory taken as
    # OPAL's one-scope stack (its refresh per cycle) for source-repeat-sync, Cerbos's for the
    # other (it needs a polling server)
    "source-repeat-sync": GateLoad(wall_s=60.0, cpu_s=15.0, peak_mb=600),
    "source-remote-failures": GateLoad(wall_s=40.0, cpu_s=4.0, peak_mb=280),
}
# A gate the table does not know (a new one): taken as one busy core and a big stack, so
# `auto` errs towards fewer groups.
UNKNOWN = GateLoad(wall_s=60.0, cpu_s=60.0, peak_mb=1500)
# Seconds per gate, the slower release's, measured in a full local run on a quiet machine
# (README): what balancing the groups (and `--shard`) goes by. LOAD's walls were measured on
# a shared, loaded machine: good for CPU per second, too noisy to balance by.
EXPECTED_S = {"leak": 40, "repeat-sync": 18, "offline-repo": 49, "zombie-cap": 46, "boot-timing": 31,
              "boot-dead-scope": 60, "broker-bounce": 84, "orphan-clones": 146,
              "remote-transitions": 30, "remote-failures": 60, "redis-outage": 40,
              # the source gates on Cerbos 0.55.0 (offline-remote: 22 s on 0.51.0 too), from the
              # reports of the LOAD runs above (load average 1.0–1.7): not yet a full quiet run
              "bad-policy": 33, "checkout-tampered": 33, "boot-dead-remote": 16, "offline-remote": 22, "boot-size": 13,
              "source-repeat-sync": 60, "source-remote-failures": 40}
TIMED = ("boot-timing",)
# Gates whose judgement races the server (broker-bounce: the reconnect window's PUTs;
# remote-failures: the fetch throttle; orphan-clones: clone dirs removed while a sync runs):
# a loaded machine can move their outcome, so `plan` never puts two of them in one group,
# and `default_jobs` counts each at SENSITIVE_SHARE times its measured CPU, so the groups
# leave them more room than their averages ask for.
# In the bench of 2026-12-06 (load average 15–21 from others' runs), 10 groups gave the
# serial verdicts and categories, but orphan-clones reported fds kept in one scenario
# more than serially: its problem set moves with load even when alone in its group.
SENSITIVE = ("broker-bounce", "remote-failures", "orphan-clones")
SENSITIVE_SHARE = 2.0
# Of the cores, what the groups' summed average demand may use: the rest absorbs the
# bursts (stack starts, clone storms) that averages hide.
CPU_HEADROOM = 0.75
# Of the memory, what the groups' stacks may hold at their peaks together.
MEMORY_HEADROOM = 0.6
# How much longer than the longest gate a group may be expected to run: the estimates are
# one run's, and a group a little longer beats one stack more.
FLOOR_SLACK = 1.1


@dataclass(frozen=True)
class Machine:
    cores: int
    memory_mb: int

    @classmethod
    def this(cls) -> Machine:
        return cls(os.cpu_count() or 1, int(psutil.virtual_memory().total / 2**20))


def load_of(gate: str) -> GateLoad:
    return LOAD.get(gate, UNKNOWN)


def demand(groups: Sequence[Sequence[str]]) -> tuple[float, int]:
    """The groups side by side: (cores, MB). Cores: the groups' CPU-seconds over the run's
    length (the longest group's wall seconds), a sensitive gate's counted SENSITIVE_SHARE
    times; the CPU has to fit in that time, or the run stretches and the timing-sensitive
    gates feel it. Memory: each group's largest stack, all at once."""
    if not groups:
        return 0.0, 0
    cpu = sum(load_of(g).cpu_s * (SENSITIVE_SHARE if g in SENSITIVE else 1.0) for group in groups for g in group)
    length = max(sum(load_of(g).wall_s for g in group) for group in groups)
    return cpu / max(length, 1e-3), sum(max(load_of(g).peak_mb for g in group) for group in groups if group)


def default_jobs(gates: Sequence[str], machine: Machine | None = None) -> int:
    """The fewest groups that bring the run down to its floor — its longest gate — within
    FLOOR_SLACK, and never more than fit the machine (`most_groups_that_fit`): a group more
    than that does not shorten the run, it only adds a stack's load for the gates whose
    judgement races the server to feel (orphan-clones on 0.9.9 kept clone dirs, its sibling
    check failing, in 1 of 5 runs of 13 groups side by side; none serially)."""
    machine = machine or Machine.this()
    concurrent = [g for g in gates if g not in TIMED]
    most = most_groups_that_fit(concurrent, machine)
    if not concurrent:
        return most
    floor = max(expected_s(g) for g in concurrent) * FLOOR_SLACK
    return next((jobs for jobs in range(1, most + 1)
                 if max(sum(expected_s(g) for g in group) for group in plan(concurrent, jobs)) <= floor), most)


def most_groups_that_fit(concurrent: Sequence[str], machine: Machine) -> int:
    """The most groups whose summed CPU demand fits the cores with headroom and whose
    stacks fit the memory: from the measured table, not the core count (most gate time is
    the server's waiting)."""
    for jobs in range(len(concurrent), 1, -1):
        cores, memory = demand(plan(concurrent, jobs))
        if cores <= machine.cores * CPU_HEADROOM and memory <= machine.memory_mb * MEMORY_HEADROOM:
            return jobs
    return 1


def expected_s(gate: str) -> float:
    return EXPECTED_S.get(gate, 60)


def plan(gates: Sequence[str], jobs: int) -> list[list[str]]:
    """Groups of gates (longest first into the least loaded group, a sensitive gate into
    the least loaded group without one), then the timed gates as a last group of their own."""
    concurrent = sorted((g for g in gates if g not in TIMED), key=lambda g: -expected_s(g))
    count = max(1, min(jobs, len(concurrent))) if concurrent else 0
    groups: list[list[str]] = [[] for _ in range(count)]
    for gate in concurrent:
        candidates = [group for group in groups if gate not in SENSITIVE or not set(group) & set(SENSITIVE)]
        min(candidates or groups, key=lambda group: sum(expected_s(g) for g in group)).append(gate)
    timed = [g for g in gates if g in TIMED]
    return [group for group in groups if group] + ([timed] if timed else [])


def merge(parts: Sequence[Path], order: Sequence[str], out_dir: Path, run_id: str,
          baseline: Baseline | None = None, strict: bool = False,
          skipped: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One run report from the parts' reports (`--jobs` groups, xdist workers, `--shard`
    runs): gates in `order`, their timelines and plots, each part's logs under
    logs/<part run id>/; judged against `baseline` when one is given (the parts' own
    judgements, if any, are replaced; without one, dropped). A part's `shard` moves into `parts`: the merged run
    is no shard."""
    reports = [(part, json.loads((part / "report.json").read_text())) for part in parts]
    gates = {g["id"]: g for _, report in reports for g in report["gates"]}
    first = {k: v for k, v in reports[0][1].items() if k != "shard"}
    merged = {**first, "run_id": run_id, "started_at": min(r["started_at"] for _, r in reports),
              "ended_at": max(r["ended_at"] for _, r in reports),
              "gates": [gates[g] for g in order if g in gates],
              "parts": [_part_entry(r) for _, r in reports]}
    errors = [r["error"] for _, r in reports if r.get("error")]
    if errors:
        merged["error"] = errors[0]
    # the gates no part could take: the parts' own and the ones sorted out before they ran
    skips = {s["id"]: s["reason"] for _, r in reports for s in r.get("skipped", [])} | dict(skipped or {})
    merged.pop("skipped", None)
    if skips:
        merged["skipped"] = [{"id": gate_id, "reason": reason} for gate_id, reason in skips.items()]
    if baseline is not None:
        merged = annotate(merged, baseline, strict)
    else:  # judged without one: a part's judgement must not speak for the merged run
        merged.pop("baseline", None)
        merged["gates"] = [{k: v for k, v in g.items() if k != "baseline"} for g in merged["gates"]]
    out_dir.mkdir(parents=True, exist_ok=True)
    for part, report in reports:
        for sub in ("timelines", "plots"):
            if (part / sub).is_dir():
                shutil.copytree(part / sub, out_dir / sub, dirs_exist_ok=True)
        if (part / "logs").is_dir():
            shutil.copytree(part / "logs", out_dir / "logs" / report["run_id"], dirs_exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(merged, indent=2, default=str))
    (out_dir / "summary.md").write_text(summary_markdown(merged))
    (out_dir / "benchmark.json").write_text(json.dumps(benchmark_entries(merged), indent=2))
    if problems := schema_errors(merged):
        log.warning(f"[harness] the merged report breaks the schema: {'; '.join(problems[:3])}")
    return merged


def _part_entry(report: dict[str, Any]) -> dict[str, Any]:
    entry = {"run_id": report["run_id"], "gates": [g["id"] for g in report["gates"]]}
    if report.get("shard"):
        entry["shard"] = f"{report['shard']['index']}/{report['shard']['count']}"
    return entry


def publish(merged: dict[str, Any], out_dir: Path, settings: Settings, batch: Batch) -> int:
    """What a merged run gives CI, as a single run gives it: reports/latest, JUnit (if
    asked), the job summary, annotations, the verdict table; returns the exit status (an
    error when a selected gate has no verdict)."""
    point_latest(settings.reports_dir, out_dir)
    ci_outputs(merged, out_dir, batch, settings)
    status = batch.exit_status(merged["gates"])
    missing = [g for g in batch.gates if g not in {x["id"] for x in merged["gates"]}]
    if missing:
        print(f"no verdict for {', '.join(missing)}: the run is not judged in full")
    return EXIT_ERROR if missing and status == 0 else status


def _latest(parts_dir: Path) -> Path | None:
    latest = parts_dir / "latest"
    return latest.resolve() if (latest / "report.json").is_file() else None


def run_parallel(settings: Settings, batch: Batch, jobs: int, backend_flag: str | None) -> tuple[int, Path | None]:
    batch.validate(settings)
    batch.announce()
    if batch.keep != "never" or batch.overrides is not None:
        raise HarnessError("--jobs runs every group on a stack of its own and tears it down: "
                           "use --keep-stack only without --jobs")
    run_id = f"{new_run_id()}-jobs{jobs}"
    out_dir = settings.reports_dir / run_id
    groups = plan(batch.gates, jobs)
    log.info(f"[harness] {len(batch.gates)} gates in {len(groups)} groups: "
             + "; ".join(", ".join(group) for group in groups))
    started = time.monotonic()
    common = [*target_flags(settings.target), *(["--backend", backend_flag] if backend_flag else []),
              *(["--scale", str(settings.scale)] if settings.scale else [])]

    def argv(index: int, group: list[str]) -> list[str]:
        return ["gates", *common, "--reports-dir", str(out_dir / "parts" / str(index)),
                *(arg for g in group for arg in ("--gate", g))]
    concurrent = [group for group in groups if not set(group) & set(TIMED)]
    # The parts do not write the job summary: the merged report does, once.
    quiet = ("GITHUB_STEP_SUMMARY",)
    codes = run_children({f"job{i}": argv(i, group) for i, group in enumerate(concurrent)}, drop_env=quiet)
    for index, group in enumerate(groups[len(concurrent):], start=len(concurrent)):
        codes |= run_children({f"timed{index}": argv(index, group)}, drop_env=quiet)
    parts = [found for i in range(len(groups)) if (found := _latest(out_dir / "parts" / str(i))) is not None]
    if not parts:
        log.error(f"[harness] no group produced a report (exit statuses {codes})")
        return EXIT_ERROR, None
    merged = merge(parts, batch.gates, out_dir, run_id, batch.baseline.baseline, batch.strict_baseline,
                   batch.skipped)
    if batch.shard is not None:  # `--shard` with `--jobs`: the merged run is the shard's report
        merged["shard"] = dict(batch.shard)
        (out_dir / "report.json").write_text(json.dumps(merged, indent=2, default=str))
    status = publish(merged, out_dir, settings, batch)
    print(f"report: {out_dir}/summary.md ({len(groups)} groups, {time.monotonic() - started:.0f} s wall)")
    return status, out_dir
