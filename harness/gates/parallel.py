"""`harness gates --jobs N`: the gates in N groups side by side, each group a `harness gates`
child on its own stack (own ports, run dir, compose project), the parts merged into one run
report. Most of a gate's time is the server's (git timeouts, outages, boots), so on 2 cores
groups overlap their waiting.

Groups are balanced by each gate's measured duration (longest first). Gates that time the
server (`TIMED`) run after the groups, alone: concurrency must not be what they measure.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from harness.baseline import Baseline, annotate
from harness.children import run_children, target_flags
from harness.config import Settings
from harness.errors import HarnessError
from harness.gates.batch import EXIT_ERROR, Batch, ci_outputs
from harness.report import benchmark_entries, point_latest, schema_errors, summary_markdown
from harness.stack.base import new_run_id

log = logging.getLogger(__name__)

# Seconds per gate, the slower release's, measured in the last full local run (README):
# what balancing the groups goes by.
EXPECTED_S = {"leak": 40, "repeat-sync": 18, "offline-repo": 49, "zombie-cap": 46, "boot-timing": 31,
              "boot-dead-scope": 60, "broker-bounce": 84, "orphan-clones": 146,
              "remote-transitions": 30, "remote-failures": 60, "redis-outage": 40}
TIMED = ("boot-timing",)
# A stack with its server needs about this much memory (Redis, Postgres, git, gunicorn).
GB_PER_STACK = 2


def default_jobs(gates: Sequence[str]) -> int:
    """As many groups as the machine holds: one per core, one per GB_PER_STACK of memory,
    at most one per gate that may run concurrently."""
    concurrent = [g for g in gates if g not in TIMED]
    memory = int(psutil.virtual_memory().total / 2**30 // GB_PER_STACK)
    return max(1, min(len(concurrent), os.cpu_count() or 1, memory))


def plan(gates: Sequence[str], jobs: int) -> list[list[str]]:
    """Groups of gates (longest first into the least loaded group), then the timed gates
    as a last group of their own."""
    concurrent = sorted((g for g in gates if g not in TIMED), key=lambda g: -EXPECTED_S.get(g, 60))
    groups: list[list[str]] = [[] for _ in range(max(1, min(jobs, len(concurrent))))] if concurrent else []
    for gate in concurrent:
        min(groups, key=lambda group: sum(EXPECTED_S.get(g, 60) for g in group)).append(gate)
    timed = [g for g in gates if g in TIMED]
    return [group for group in groups if group] + ([timed] if timed else [])


def merge(parts: Sequence[Path], order: Sequence[str], out_dir: Path, run_id: str,
          baseline: Baseline | None = None, strict: bool = False) -> dict[str, Any]:
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
    merged = merge(parts, batch.gates, out_dir, run_id, batch.baseline.baseline, batch.strict_baseline)
    if batch.shard is not None:  # `--shard` with `--jobs`: the merged run is the shard's report
        merged["shard"] = dict(batch.shard)
        (out_dir / "report.json").write_text(json.dumps(merged, indent=2, default=str))
    status = publish(merged, out_dir, settings, batch)
    print(f"report: {out_dir}/summary.md ({len(groups)} groups, {time.monotonic() - started:.0f} s wall)")
    return status, out_dir
