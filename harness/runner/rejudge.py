"""Re-judging a recorded run: its saved timelines under the recorded or new thresholds,
without a stack (`harness report RUN_DIR --threshold GATE.NAME=VALUE`)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness.baseline import judge as judge_against
from harness.baseline import resolve
from harness.config import Target
from harness.errors import HarnessError
from harness.report import verdict_table
from harness.runner.batch import exit_status
from harness.runner.rerun import recorded_target
from harness.runner.run import REPLAY, build_settings, gate, judge
from harness.timeline import Timeline


def rejudge(run_dir: Path, overrides: dict[str, dict[str, str]], bounds: Path | None = None) -> list[dict[str, Any]]:
    """Verdicts of a recorded run under (possibly new) thresholds; a replay's under the
    [[watch]] bounds of the scenario file `bounds` when given."""
    report_path = run_dir / "report.json"
    if not report_path.is_file():
        raise HarnessError(f"{run_dir} holds no report.json; pass a directory under reports/")
    report = _read_json(report_path, "report.json")
    if report.get("error") and not report.get("gates"):
        raise HarnessError(f"{run_dir} is a run whose stack did not come up ({report['error'].get('message')}): "
                           "there is nothing to re-judge")
    unknown = set(overrides) - {g["id"] for g in report["gates"]}
    if unknown:
        raise HarnessError(f"this run has no gate {', '.join(sorted(unknown))}; "
                           f"it has {', '.join(g['id'] for g in report['gates'])}")
    judged = []
    for entry in report["gates"]:
        g = gate(entry["id"])
        timeline = Timeline.from_dict(_read_json(run_dir / entry["timeline"], f"gate {g.id}'s recording"))
        if bounds is not None and g.id == REPLAY:
            rebound(timeline, bounds)
        params = build_settings(g.params_type, entry.get("params", {}), g.id)
        thresholds = build_settings(g.thresholds_type, {**entry["thresholds"], **overrides.get(entry["id"], {})},
                                    g.id)
        verdict = judge(g, timeline, params, thresholds)
        judged.append({"id": g.id, "verdict": verdict.verdict, "reason": verdict.reason,
                       "category": verdict.category, "duration_s": entry["duration_s"],
                       "recorded_verdict": entry["verdict"], "thresholds": asdict(thresholds),
                       "metrics": verdict.metrics, "problems": [p.to_json() for p in verdict.problems]})
    return judged


def rebound(timeline: Timeline, bounds: Path) -> None:
    """A recorded replay's watches replaced by those of another scenario file (its bounds)."""
    from harness.replay.scenario import load
    recorded = timeline.facts.get("scenario")
    if recorded is None:
        raise HarnessError("this replay recorded no scenario: there are no bounds to replace")
    recorded["watches"] = [asdict(watch) for watch in load(str(bounds)).watches]


def _read_json(path: Path, what: str) -> dict[str, Any]:
    """A recorded file, or one HarnessError saying which is missing or damaged."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise HarnessError(f"{what} is missing: {path}; re-judge a complete run directory") from None
    except (OSError, ValueError) as exc:
        raise HarnessError(f"{what} cannot be read ({path}: {exc}); re-judge a complete run directory") from None


def parse_threshold_args(args: list[str]) -> dict[str, dict[str, str]]:
    overrides: dict[str, dict[str, str]] = {}
    for arg in args:
        name, sep, value = arg.partition("=")
        gate_id, dot, key = name.partition(".")
        if not sep or not dot:
            raise HarnessError(f"--threshold {arg!r}: use GATE.NAME=VALUE, e.g. leak.open_file_tolerance=8")
        overrides.setdefault(gate_id, {})[key] = value
    return overrides


def rejudge_command(run_dir: str, threshold_args: list[str], baseline: str | None = None,
                    strict: bool = False, bounds: str | None = None) -> int:
    """Re-judge, print, write rejudged.json; the exit status `harness gates` would give these
    verdicts (against `baseline` when given: a file, a shipped name, auto or none)."""
    path = Path(run_dir)
    judged = rejudge(path, parse_threshold_args(threshold_args), Path(bounds) if bounds else None)
    choice = resolve(baseline, recorded_target(_read_json(path / "report.json", "report.json")) or Target())
    print(verdict_table(judged))
    changed = [j for j in judged if j["verdict"] != j["recorded_verdict"]]
    for j in changed:
        print(f"  {j['id']}: recorded {j['recorded_verdict']}, now {j['verdict']}")
    (path / "rejudged.json").write_text(json.dumps(judged, indent=2, default=str))
    print(f"written: {path / 'rejudged.json'}")
    if choice.baseline is None:
        # the same statuses as `harness gates`: 1 a failure, 2 an ERROR that nothing failed beside
        return exit_status([j["verdict"] for j in judged])
    judgement = judge_against(judged, choice.baseline, strict)
    for line in judgement.lines():
        print(line)
    return judgement.exit_status()
