"""`harness gates --shard I/N` and `harness merge`: the selected gates split across N CI
machines, each machine's run a complete report, the reports merged back into one.

The split is `--jobs`' grouping (harness/runner/parallel.py), so both balance by the same
measured durations: the gates that time the server (boot-timing) get a shard of their own
when N ≥ 2, and the rest are spread longest first over the other shards. It depends only on
the selected gates and N, never on the machine, so every shard of a matrix computes the same
split. Each shard records `{"index", "count", "gates", "selected"}` in its report.json, which
is what lets `harness merge` keep the selection's order and notice a shard that is missing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.baseline import resolve
from harness.config import Settings, Target
from harness.errors import ConfigError, HarnessError
from harness.runner.batch import EXIT_ERROR, Batch
from harness.runner.parallel import TIMED, merge, plan, publish
from harness.servers.registry import DEFAULT_SERVER, SERVERS
from harness.stack.base import new_run_id

SHARD_FORMAT = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard `index` (1-based, as a CI matrix counts) of `count`."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`I/N` with 1 ≤ I ≤ N; anything else is one ConfigError saying the form."""
        found = SHARD_FORMAT.match(text)
        if found is None or not 1 <= int(found[1]) <= int(found[2]):
            raise ConfigError(f"--shard {text}: give I/N with 1 ≤ I ≤ N, e.g. --shard 1/3 (the first of 3 shards)")
        return cls(int(found[1]), int(found[2]))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def split(gates: Sequence[str], count: int) -> list[list[str]]:
    """The selected gates in `count` shards, each in the selection's order. Refused when
    there are more shards than the split can fill: an empty shard would be a CI job that
    judges nothing."""
    ordered = sorted(dict.fromkeys(gates))  # the split must not depend on the order --gate was given in
    if count == 1:
        groups = [ordered]
    else:
        timed = [g for g in ordered if g in TIMED]
        groups = plan(ordered, count - 1 if timed else count)
    if len(groups) < count:
        raise ConfigError(f"--shard …/{count}: the {len(ordered)} selected gates fill at most {len(groups)} shards "
                          f"({'; '.join(', '.join(g) for g in groups)}); use N ≤ {len(groups)}")
    position = {g: i for i, g in enumerate(gates)}
    return [sorted(group, key=position.__getitem__) for group in groups]


def select(gates: Sequence[str], shard: Shard) -> list[str]:
    """This shard's gates."""
    return split(gates, shard.count)[shard.index - 1]


def record(gates: Sequence[str], shard: Shard) -> dict[str, Any]:
    """What a shard's report.json says about it (harness/report.schema.json, `shard`)."""
    return {"index": shard.index, "count": shard.count, "gates": select(gates, shard), "selected": list(gates)}


def find_reports(dirs: Sequence[Path]) -> list[Path]:
    """The run dirs under what `harness merge` was given: a run dir (report.json), a reports
    dir's `latest`, or a downloaded artifact holding run dirs (the workflow uploads
    reports/ without its `latest` link)."""
    found: list[Path] = []
    for given in dirs:
        if (given / "report.json").is_file():
            found.append(given)
        elif (given / "latest" / "report.json").is_file():
            found.append((given / "latest").resolve())
        elif runs := sorted(p for p in given.glob("*/report.json") if p.parent.name != "latest"):
            found += [p.parent for p in runs]
        else:
            raise ConfigError(f"{given}: no report.json in it, in its latest/ or in a run dir under it")
    return list(dict.fromkeys(p.resolve() for p in found))


def check_mergeable(reports: Sequence[Mapping[str, Any]], paths: Sequence[Path]) -> None:
    """One error when the shard reports cannot make one run: different targets or harness
    versions, or a gate in two of them."""
    for key, what in (("target", "targets"), ("harness_version", "harness versions")):
        seen: dict[str, list[str]] = {}
        for report, path in zip(reports, paths, strict=True):
            seen.setdefault(str(report.get(key, "unknown")), []).append(str(path))
        if len(seen) > 1:
            raise HarnessError(f"the shard reports are of different {what}, so they are not one run: "
                               + "; ".join(f"{value} ({', '.join(where)})" for value, where in seen.items()))
    owner: dict[str, Path] = {}
    for report, path in zip(reports, paths, strict=True):
        for gate in report["gates"]:
            if gate["id"] in owner:
                raise HarnessError(f"gate {gate['id']} is in two of the reports ({owner[gate['id']]} and {path}): "
                                   "give each shard's report once")
            owner[gate["id"]] = path


def read_reports(paths: Sequence[Path]) -> list[dict[str, Any]]:
    reports = []
    for path in paths:
        try:
            reports.append(json.loads((path / "report.json").read_text()))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}/report.json cannot be read: {exc}") from None
    return reports


@dataclass(frozen=True)
class MergePlan:
    """What the shards were asked to run, in the selection's order, and what is missing:
    a shard's report absent, or a gate of a shard that did not run."""

    order: list[str]
    missing_shards: list[str]
    missing_gates: list[str]


def merge_plan(reports: Sequence[Mapping[str, Any]]) -> MergePlan:
    """The selection the shards recorded (the first shard's; reports without `shard`, e.g.
    plain runs, add their gates in their own order)."""
    order: list[str] = []
    counts: set[int] = set()
    indexes: set[int] = set()
    for report in reports:
        shard = report.get("shard")
        if shard:
            order += [g for g in shard["selected"] if g not in order]
            counts.add(shard["count"])
            indexes.add(shard["index"])
        order += [g["id"] for g in report["gates"] if g["id"] not in order]
    if len(counts) > 1:
        raise HarnessError(f"the shard reports split the gates {' and '.join(map(str, sorted(counts)))} ways: "
                           "give the shards of one matrix")
    missing_shards = [f"{i}/{c}" for c in counts for i in range(1, c + 1) if i not in indexes]
    ran = {g["id"] for report in reports for g in report["gates"]}
    return MergePlan(order, missing_shards, [g for g in order if g not in ran])


def report_target(report: Mapping[str, Any]) -> Target:
    """The target a report was made on, for `--baseline auto` (no validation: nothing runs)."""
    spec = report.get("target_spec") or {}
    target = Target.from_spec(spec, default_version=SERVERS[spec.get("server") or DEFAULT_SERVER].default_version)
    assert target is not None  # a default version always gives one
    return target


def merge_command(dirs: Sequence[Path], settings: Settings, junit: Path | None, baseline: str | None,
                  strict: bool) -> int:
    """`harness merge`: the shard reports as one run under settings.reports_dir, with what a
    single run gives CI (report, summary, benchmark JSON, JUnit, job summary, annotations)
    and its exit status; judged against `baseline` (else HARNESS_BASELINE; else none: the
    shards' own judgements are dropped with it)."""
    paths = find_reports(dirs)
    reports = read_reports(paths)
    check_mergeable(reports, paths)
    merging = merge_plan(reports)
    choice = resolve(baseline if baseline is not None else settings.baseline, report_target(reports[0]))
    batch = Batch(gates=merging.order, junit=junit, baseline=choice, strict_baseline=strict)
    batch.announce()
    run_id = f"{new_run_id()}-merged{len(paths)}"
    out_dir = settings.reports_dir / run_id
    merged = merge(paths, merging.order, out_dir, run_id, choice.baseline, strict)
    status = publish(merged, out_dir, settings, batch)
    if merging.missing_shards:
        print(f"missing shard reports: {', '.join(merging.missing_shards)} (their gates have no verdict)")
    print(f"report: {out_dir}/summary.md (merged from {len(paths)} reports: "
          + ", ".join(_part_label(r) for r in reports) + ")")
    return EXIT_ERROR if merging.missing_shards and status == 0 else status


def _part_label(report: Mapping[str, Any]) -> str:
    shard = report.get("shard")
    return f"shard {shard['index']}/{shard['count']}" if shard else str(report["run_id"])
