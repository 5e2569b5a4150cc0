"""Rerun a recorded run: the same gates with the same parameters, thresholds, server profile
and OPAL_* settings, on the same target or another (`harness rerun reports/<run>`), so a CI
failure is reproduced on a laptop with one command."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.config import Settings, Target, validate_target
from harness.errors import HarnessError
from harness.runner.batch import Batch


def load_report(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "report.json"
    if not path.is_file():
        raise HarnessError(f"{run_dir} holds no report.json; pass a run directory under reports/")
    report = json.loads(path.read_text())
    if not report.get("gates"):
        raise HarnessError(f"{path} records no gate (the stack did not come up?): nothing to rerun")
    return report


def recorded_target(report: dict[str, Any]) -> Target | None:
    return Target.from_spec(report.get("target_spec") or {})


def rerun_plan(report: dict[str, Any], settings: Settings, target_given: bool) -> tuple[Settings, Batch]:
    """Settings and batch that repeat `report`: its target unless another was given, its
    backend unless BACKEND/--backend says otherwise, its profile, per-gate settings and
    OPAL_* settings (yours still win over the recorded ones)."""
    if not target_given:
        target = recorded_target(report)
        if target is None:
            raise HarnessError("this report records no target_spec (made by an older harness): give the target "
                               "with --opal-version, --opal-source or --opal-image")
        settings = replace(settings, target=validate_target(target, settings.backend))
    if settings.backend == "auto" and report.get("backend") in ("local", "compose"):
        settings = replace(settings, backend=report["backend"])
    settings = replace(settings, server_profile=report.get("server_profile", settings.server_profile))
    overrides = {g["id"]: {**g.get("params", {}), **g.get("thresholds", {})} for g in report["gates"]}
    recorded_env = {k: v for k, v in (report.get("server_env") or {}).items() if k not in settings.server_env}
    return settings, Batch(gates=[g["id"] for g in report["gates"]], overrides=overrides, run_env=recorded_env)


def compare_with_recorded(report: dict[str, Any], new_dir: Path | None) -> list[str]:
    """Lines saying, per gate, the recorded verdict and the new one."""
    if new_dir is None or not (new_dir / "report.json").is_file():
        return []
    new = {g["id"]: g for g in json.loads((new_dir / "report.json").read_text())["gates"]}
    lines = []
    for g in report["gates"]:
        now = new.get(g["id"], {})
        same = "same" if now.get("verdict") == g["verdict"] and now.get("category") == g["category"] else "CHANGED"
        lines.append(f"  {g['id']:<16} recorded {g['verdict']} {g['category'] or ''} -> now "
                     f"{now.get('verdict', 'not run')} {now.get('category') or ''}  ({same})")
    return lines
