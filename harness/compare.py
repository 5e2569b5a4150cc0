"""A/B in one run: `harness compare A B` runs the chosen gates on two targets side by side
(each its own `harness gates` process on its own stack) and writes compare.md, compare.json
and overlay plots: per gate the verdict of A and of B, and each figure with the ratio B/A.

This is how a fix PR is judged against its base. Exit status 1 when B fails a gate that A
passes (B regressed); else 2 when a gate could not be judged (an ERROR on B or a gate B did
not run, an ERROR on A where B did not pass, a side whose stack did not come up or that
produced no report); else 0.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.children import run_children, target_flags
from harness.config import Target
from harness.errors import ConfigError, HarnessError
from harness.report import SYMBOL
from harness.servers.registry import DEFAULT_SERVER
from harness.timeline import Timeline

log = logging.getLogger(__name__)

SIDES = ("A", "B")


def spec_target(spec: str, server: str = DEFAULT_SERVER) -> Target:
    """A target given as a release (of `server`), a source tree or an image."""
    if Path(spec).expanduser().exists():
        return Target(source=Path(spec).expanduser().resolve())
    if re.fullmatch(r"\d+(\.\d+)*([a-z]+\d*)?", spec):
        return Target(version=spec, server=server)
    if ":" in spec or "/" in spec:
        return Target(image=spec)
    raise ConfigError(f"{spec!r} is neither a release (0.9.9), an existing source tree nor an image (repo:tag)")


def run_sides(specs: Sequence[str], gates: Sequence[str], out_dir: Path, extra: Sequence[str],
              server: str = DEFAULT_SERVER) -> dict[str, int]:
    """Both `harness gates` runs at once; their exit statuses by side."""
    return run_children({side: ["gates", *target_flags(spec_target(spec, server)),
                                "--reports-dir", str(out_dir / side),
                                *(arg for g in gates for arg in ("--gate", g)), *extra]
                         for side, spec in zip(SIDES, specs, strict=True)})


def side_report(out_dir: Path, side: str) -> tuple[dict[str, Any], Path] | None:
    latest = out_dir / side / "latest"
    path = latest / "report.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text()), latest.resolve()


def comparison(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Per gate of A: both verdicts and every figure with B/A."""
    b_gates = {g["id"]: g for g in b["gates"]}
    rows = []
    for ga in a["gates"]:
        gb = b_gates.get(ga["id"], {})
        b_figures = {f["name"]: f for f in gb.get("figures", [])}
        figures = []
        for fa in ga.get("figures", []):
            fb = b_figures.get(fa["name"])
            value_b = fb["value"] if fb else None
            ratio = (value_b / fa["value"]) if value_b is not None and fa["value"] else None
            figures.append({"name": fa["name"], "unit": fa["unit"], "a": fa["value"], "b": value_b,
                            "ratio_b_over_a": None if ratio is None else round(ratio, 3)})
        rows.append({"id": ga["id"], "a": ga["verdict"], "b": gb.get("verdict", "not run"),
                     "a_category": ga["category"], "b_category": gb.get("category", ""),
                     # an ERROR (or a gate not run) on B is not judged, not a regression
                     "b_worse": ga["verdict"] == "pass" and gb.get("verdict") == "fail", "figures": figures})
    return rows


def compare_markdown(a: dict[str, Any], b: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [f"# Compare: A = `{a['target']}`, B = `{b['target']}`", "",
             "| gate | A | B | B worse |", "|---|---|---|---|"]
    for row in rows:
        b_verdict = SYMBOL.get(row["b"], row["b"])
        lines.append(f"| `{row['id']}` | **{SYMBOL[row['a']]}** {row['a_category']} | **{b_verdict}** "
                     f"{row['b_category']} | {'yes' if row['b_worse'] else ''} |")
    lines += ["", "| figure | A | B | B/A |", "|---|---|---|---|"]
    for row in rows:
        for f in row["figures"]:
            ratio = "" if f["ratio_b_over_a"] is None else f"{f['ratio_b_over_a']:g}"
            b_value = "" if f["b"] is None else f"{f['b']:g}"
            lines.append(f"| {row['id']}: {f['name']} [{f['unit']}] | {f['a']:g} | {b_value} | {ratio} |")
    return "\n".join(lines) + "\n"


def overlay_plot(gate_id: str, a_dir: Path, b_dir: Path, path: Path, labels: tuple[str, str]) -> None:
    """Cache sizes, worker RSS and open files over time: A solid, B dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    for run_dir, style, label in ((a_dir, "-", labels[0]), (b_dir, "--", labels[1])):
        timeline = run_dir / "timelines" / f"{gate_id}.json"
        if not timeline.is_file():
            continue
        snaps = [s for s in Timeline.load(timeline).of_kind("snapshot") if "stats_error" not in s]
        t = [s["t"] for s in snaps]
        for cache, color in (("repos", "tab:blue"), ("clone_dirs", "tab:orange")):
            axes[0].plot(t, [s.get(cache) for s in snaps], style, color=color, marker=".", label=f"{label} {cache}")
        axes[1].plot(t, [(s.get("worker_rss_kb") or 0) / 1024 for s in snaps], style, color="tab:purple",
                     marker=".", label=label)
        axes[2].plot(t, [s.get("worker_files") for s in snaps], style, color="tab:green", marker=".", label=label)
    for ax, ylabel in zip(axes, ("entries", "worker RSS (MB)", "open files"), strict=True):
        ax.set_ylabel(ylabel)
        ax.legend(loc="upper left", fontsize=7)
    axes[2].set_xlabel("seconds since gate start")
    fig.suptitle(f"gate {gate_id}: A solid, B dashed")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def new_out_dir(reports_dir: Path) -> Path:
    """compare-<time>-<random>/, made here: unique even for compares started in the same second."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(8):
        out_dir = reports_dir / f"compare-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        try:
            out_dir.mkdir()
            return out_dir
        except FileExistsError:
            continue
    raise HarnessError(f"could not make a new compare-* folder under {reports_dir}")


def status_of(rows: list[dict[str, Any]], a: dict[str, Any], b: dict[str, Any]) -> tuple[int, list[str], list[str]]:
    """(exit status, gates B regressed on, gates not judged). 1 when B regressed on any
    gate; else 2 when any gate could not be judged on either side (an ERROR on B, a gate
    B did not run, an ERROR on A where B did not pass, a side whose stack did not come up);
    else 0."""
    worse = [row["id"] for row in rows if row["b_worse"]]
    unjudged = [row["id"] for row in rows if row["b"] in ("error", "not run")
                or (row["a"] == "error" and row["b"] != "pass")]
    if worse:
        return 1, worse, unjudged
    if unjudged or a.get("error") or b.get("error") or not rows:
        return 2, worse, unjudged
    return 0, worse, unjudged


def compare_command(spec_a: str, spec_b: str, gates: Sequence[str], reports_dir: Path,
                    extra: Sequence[str] = (), server: str = DEFAULT_SERVER) -> int:
    """Run both sides; the caller validated the specs, gates and settings, so a folder is
    made only for a comparison that can start — and removed when neither side wrote a report."""
    out_dir = new_out_dir(reports_dir)
    try:
        codes = run_sides((spec_a, spec_b), gates, out_dir, extra, server)
    except BaseException:
        _remove_if_empty(out_dir)
        raise
    sides = {side: side_report(out_dir, side) for side in SIDES}
    missing = [side for side, found in sides.items() if found is None]
    if missing:
        kept = _remove_if_empty(out_dir)
        raise HarnessError(f"side {' and '.join(missing)} produced no report (exit {codes}); see the lines above"
                           + (f" and {out_dir}" if kept else ""))
    (a, a_dir), (b, b_dir) = sides["A"], sides["B"]  # type: ignore[misc]
    rows = comparison(a, b)
    for row in rows:
        overlay_plot(row["id"], a_dir, b_dir, out_dir / "plots" / f"{row['id']}.png", ("A", "B"))
    status, worse, unjudged = status_of(rows, a, b)
    result = {"a": {"spec": spec_a, "target": a["target"], "report": str(a_dir), "exit": codes["A"]},
              "b": {"spec": spec_b, "target": b["target"], "report": str(b_dir), "exit": codes["B"]},
              "gates": rows, "b_worse": worse, "b_error": unjudged, "exit_status": status}
    (out_dir / "compare.json").write_text(json.dumps(result, indent=2))
    markdown = compare_markdown(a, b, rows)
    (out_dir / "compare.md").write_text(markdown)
    print(markdown)
    print(f"compare: {out_dir}/compare.md" + (f"; B is worse on {', '.join(worse)}" if worse else "")
          + (f"; not judged (ERROR or not run): {', '.join(unjudged)}" if unjudged else ""))
    for side, data in (("A", a), ("B", b)):
        if data.get("error"):
            print(f"compare: side {side}'s stack did not come up: {data['error'].get('message')}")
    return status


def _remove_if_empty(out_dir: Path) -> bool:
    """Remove a compare folder no side wrote a report into (an input error a child found,
    Ctrl-C before any stack); True when something worth keeping is there."""
    if any(out_dir.glob("*/*/report.json")):
        return True
    shutil.rmtree(out_dir, ignore_errors=True)
    return False
