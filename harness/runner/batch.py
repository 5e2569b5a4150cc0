"""Gates run as a batch outside pytest (`harness gates`, `harness rerun`, each side of
`harness compare`): one stack, the chosen gates in order, one report, CI outputs, and an
exit status a CI job can act on.

Exit status: 0 every gate passed; 1 a gate FAILED (a regression: it wins over errors);
2 nothing failed but a gate could not judge (ERROR), the stack did not come up, or the
input was bad. Judged against a baseline (harness/baseline.py): 0 when every failure is a
known one, 1 on a new or changed failure (or a fixed one, when strict), 2 as above.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.baseline import Choice, judge
from harness.ci_outputs import append_step_summary, print_annotations, write_junit
from harness.config import Settings
from harness.errors import ConfigError, HarnessError
from harness.gates.registry import GATES
from harness.report import RunReport, verdict_table
from harness.runner.run import REPLAY, preflight, run_gate, skip_reason
from harness.stack import make_stack
from harness.stack.base import Stack

log = logging.getLogger(__name__)

KEEP_POLICIES = ("never", "on-failure", "always")
EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2


@dataclass
class Batch:
    """What to run: gate ids in order, per-gate settings (None: HARNESS_GATE_* variables),
    OPAL_* settings for this run on top of the user's, and what to do with the stack."""

    gates: Sequence[str]
    overrides: Mapping[str, Mapping[str, Any]] | None = None
    run_env: Mapping[str, str] = field(default_factory=dict)
    keep: str = "never"
    junit: Path | None = None
    # known failures that do not fail the run (--baseline / HARNESS_BASELINE), and whether a
    # fixed one does (--strict)
    baseline: Choice = field(default_factory=lambda: Choice(None, ""))
    strict_baseline: bool = False
    # `--shard I/N`: what the report records of the shard (harness/runner/shards.py)
    shard: Mapping[str, Any] | None = None
    # gates asked for that the server cannot take (validate() moves them here): id -> why
    skipped: dict[str, str] = field(default_factory=dict)

    def exit_status(self, gates: Sequence[Mapping[str, Any]]) -> int:
        """The run's exit status: from the verdicts, or judged against the baseline."""
        if self.baseline.baseline is None:
            return exit_status([g["verdict"] for g in gates])
        return judge(gates, self.baseline.baseline, self.strict_baseline).exit_status()

    def announce(self) -> None:
        """Said at the start of a run: which baseline judges it (or that none does)."""
        if self.baseline.said:
            log.info(f"[harness] baseline: {self.baseline.said}")

    def baseline_lines(self, gates: Sequence[Mapping[str, Any]]) -> list[str]:
        """Said at the end: known, new, changed and fixed failures (nothing without a baseline)."""
        if self.baseline.baseline is None:
            return []
        return judge(gates, self.baseline.baseline, self.strict_baseline).lines()

    def apply_baseline(self, report: RunReport) -> None:
        report.baseline, report.strict_baseline = self.baseline.baseline, self.strict_baseline

    def validate(self, settings: Settings) -> None:
        """Bad input refused before any stack comes up: the keep policy, the gate ids, each
        gate's settings (given here, or HARNESS_SCALE / HARNESS_GATE_*), and the machine
        holding their largest load (harness.limits)."""
        if self.keep not in KEEP_POLICIES:
            raise ConfigError(f"--keep-stack={self.keep} is not known; use one of {', '.join(KEEP_POLICIES)}")
        unknown = [g for g in self.gates if g not in GATES and g != REPLAY]
        if unknown or not self.gates:
            raise ConfigError(f"unknown gate {', '.join(unknown) or '(none given)'}; gates: {', '.join(GATES)}")
        self.sort_out(settings)
        preflight(settings, self.gates, self.overrides)

    def sort_out(self, settings: Settings) -> None:
        """Move the gates the server cannot take to `skipped`, each with why (said now, listed
        in the report); none left is one ConfigError — a run that judges nothing is no run."""
        for gate_id in list(self.gates):
            if gate_id in GATES and (reason := skip_reason(gate_id, settings)) is not None:  # unknown: validate says
                self.skipped[gate_id] = reason
                log.info(f"[harness] skipping {gate_id}: {reason}")
        self.gates = [g for g in self.gates if g not in self.skipped]
        if not self.gates:
            raise ConfigError(f"none of the gates asked for runs on {settings.target.label}: "
                              + "; ".join(self.skipped.values()))


def keep_policy(flag: str | None, settings: Settings) -> str:
    """--keep-stack when given, else HARNESS_KEEP_STACK (1 = always): every command that
    brings a stack up keeps it the same way (`harness up` keeps its stack anyway)."""
    if flag is not None:
        return flag
    return "always" if settings.keep_stack else "never"


def exit_status(verdicts: Sequence[str]) -> int:
    if "fail" in verdicts:
        return EXIT_FAIL
    if "error" in verdicts or not verdicts:
        return EXIT_ERROR
    return EXIT_PASS


def run_batch(settings: Settings, batch: Batch, stack: Stack | None = None) -> tuple[int, Path | None]:
    """(exit status, report dir). `stack`: an attached stack to run on (`--against`); by
    default a new one, torn down after (unless `batch.keep` says otherwise)."""
    batch.validate(settings)
    batch.announce()
    owned = stack is None  # an attached stack belongs to the `harness up --detach` that made it
    with ExitStack() as teardown:
        if stack is None:
            stack = make_stack(settings)
            batch.sort_out(stack.settings)  # BACKEND=auto is decided now: what the backend cannot take
            try:
                teardown.enter_context(stack)  # down at the end of the block, whatever happens in it
            except HarnessError as exc:
                log.error(f"[harness] the stack did not come up: {exc}")
                failed = settings.reports_dir / stack.run_id
                if not (failed / "report.json").is_file():
                    return EXIT_ERROR, None
                ci_outputs(json.loads((failed / "report.json").read_text()), failed, batch, settings)
                return EXIT_ERROR, failed
        shard = {"shard": batch.shard} if batch.shard else {}
        report = RunReport(settings.reports_dir, stack.run_id, settings.target.label, stack.backend,
                           settings.server_profile, meta={**stack.run_metadata(batch.run_env), **shard})
        batch.apply_baseline(report)
        for gate_id, reason in batch.skipped.items():
            report.skip(gate_id, reason)
        try:
            for gate_id in batch.gates:
                overrides = batch.overrides.get(gate_id) if batch.overrides is not None else None
                report.add(run_gate(gate_id, stack, settings.server_profile,
                                    overrides={k: str(v) for k, v in overrides.items()} if overrides is not None
                                    else None, server_env=batch.run_env))
        finally:
            try:  # the report first (the logs are still there); the stack goes down when the block ends
                report.collect_logs(stack.logs_dir())
                report.write()
            finally:
                if owned:
                    # on-failure goes by the verdicts, not the baseline: a known failure is still one to look at
                    any_failed = exit_status([r.verdict for r in report.results]) != EXIT_PASS
                    stack.keep = batch.keep == "always" or (batch.keep == "on-failure" and any_failed)
                else:  # leave the attached stack as `harness up` left it: a fresh server, serving
                    stack.server.restart(fresh_state=True, overrides=dict(settings.server_env),
                                         workers=settings.workers)
    status = batch.exit_status(report.to_json()["gates"])
    ci_outputs(report.to_json(), report.dir, batch, settings)
    return status, report.dir


def ci_outputs(data: Mapping[str, Any], report_dir: Path, batch: Batch, settings: Settings) -> None:
    """What a run gives CI, one run or a merged one (`--jobs`, shards): JUnit (if asked), the
    job summary (if the job has one), annotations, the verdict table and baseline lines."""
    if batch.junit is not None:
        write_junit(data, report_dir, batch.junit)
    append_step_summary(data, report_dir, settings.step_summary)
    print_annotations(data, settings.github_actions)
    print(verdict_table(data["gates"]))
    for line in batch.baseline_lines(data["gates"]):
        print(line)
    print(f"report: {report_dir}/summary.md")
