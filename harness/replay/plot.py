"""A replay's plot: every watched figure over the run, one panel each, fault windows shaded and
labelled, commits marked along the bottom and scope deletes above them; freshness as each
commit's lag."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.replay.judge import lags, series, windows
from harness.replay.scenario import UNITS
from harness.report import PLOTTERS
from harness.timeline import Timeline


def plot_replay(timeline: Timeline, path: Path, result: Any = None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenario = timeline.facts.get("scenario") or {}
    figures = [w["figure"] for w in scenario.get("watches") or []] or ["rss"]
    fig, axes = plt.subplots(len(figures), 1, figsize=(10, 2.4 * len(figures) + 1), sharex=True, squeeze=False)
    commits = [c["t"] for c in timeline.of_kind("commit")]
    deletes = [c["t"] for c in timeline.of_kind("churn") if c.get("action") == "delete"]
    for ax, figure in zip(axes[:, 0], figures, strict=True):
        _panel(ax, timeline, figure, scenario)
        for start, end, label in windows(timeline):
            ax.axvspan(start, end, color="tab:red", alpha=0.12)
            if ax is axes[0, 0]:
                ax.text(start, 1.0, label, transform=ax.get_xaxis_transform(), fontsize=7, va="bottom",
                        color="tab:red")
        if commits:
            ax.plot(commits, [0.0] * len(commits), "|", color="tab:green", transform=ax.get_xaxis_transform(),
                    markersize=6, label="commits" if ax is axes[0, 0] else None)
        if deletes:
            ax.plot(deletes, [0.06] * len(deletes), "v", color="tab:gray", transform=ax.get_xaxis_transform(),
                    markersize=4, label="scope deletes" if ax is axes[0, 0] else None)
    axes[-1, 0].set_xlabel(f"harness seconds (× {scenario.get('speed', 1):g} = production seconds)")
    verdict = f": {result.verdict.upper()}" if result is not None else ""
    fig.suptitle(f"replay {Path(scenario.get('path', '')).stem}{verdict} — {scenario.get('title', '')}"[:140]
                 + "\n(red: fault windows; grey: warm-up, not judged; ticks: commits)", fontsize=9)
    handles = [h for h in axes[0, 0].get_legend_handles_labels()[0]]
    if handles:
        axes[0, 0].legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _panel(ax: Any, timeline: Timeline, figure: str, scenario: dict[str, Any]) -> None:
    if figure == "freshness":
        records = lags(timeline)
        served = [r for r in records if r["lag_s"] is not None]
        never = [r for r in records if r["lag_s"] is None]
        ax.scatter([r["t"] for r in served], [r["lag_s"] for r in served], s=8, label="served after (s)")
        if never:
            ax.scatter([r["t"] for r in never], [0] * len(never), marker="x", color="tab:red", s=16,
                       label="never served")
        bound = next((w["bounds"].get("within_s") for w in scenario.get("watches") or []
                      if w["figure"] == "freshness"), None)
        if bound is not None:
            ax.axhline(bound, color="tab:red", linestyle="--", linewidth=0.8, label=f"bound {bound:g} s")
        ax.set_ylabel("freshness (s)")
        ax.legend(loc="upper right", fontsize=7)
        return
    if figure == "errors":
        answers = timeline.of_kind("answers")
        ax.bar([a["t"] for a in answers], [a["errors"] for a in answers], width=0.3, color="tab:red")
        ax.set_ylabel("failed answers")
        if not answers:
            ax.set_ylim(0, 1)
            ax.text(0.5, 0.5, "no failed answers", transform=ax.transAxes, ha="center", color="tab:gray")
        return
    if figure == "latency":
        records = timeline.of_kind("latency")
        ax.plot([r["t"] for r in records], [r["p95"] for r in records], marker=".", label="p95")
        ax.plot([r["t"] for r in records], [r["max"] for r in records], marker=".", alpha=0.5, label="max")
        ax.set_ylabel("answer (s)")
        ax.legend(loc="upper right", fontsize=7)
        return
    found = series(timeline, figure, after_warmup=False)
    ax.plot(found.t, found.values, marker=".", color="tab:purple")
    if (since := timeline.facts.get("judged_from_t")) is not None and found.t:
        ax.axvspan(min(found.t), since, color="tab:gray", alpha=0.12)  # the warm-up: not judged
    ax.set_ylabel(f"{figure} ({UNITS.get(figure, 'entries')})")


PLOTTERS["replay"] = plot_replay  # the report draws a replay with this (imported by the engine)
