"""Run reports: reports/<run-id>/ with report.json, summary.md, benchmark.json, plots,
timelines and logs.

report.json follows harness/report.schema.json (`schema_version` 1), which ships with the
package; `schema_errors` checks a report against it. `harness report <run dir>` re-judges
the saved timelines with the same or new thresholds, without running the stack.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from harness.baseline import Baseline, annotate
from harness.figures import figures
from harness.servers.registry import DEFAULT_SERVER, SERVERS
from harness.timeline import Timeline
from harness.verdict import GateResult

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("report.schema.json")

SYMBOL = {"pass": "PASS", "fail": "FAIL", "error": "ERROR"}


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


class RunReport:
    """Collects gate results of one run and writes them out."""

    def __init__(self, reports_dir: Path, run_id: str, target: str, backend: str, profile: str,
                 meta: Mapping[str, Any] | None = None):
        """`meta`: what the run was made on (harness/runinfo.py: harness and server versions,
        host, target spec, server env), recorded as top-level fields of report.json."""
        self.dir = reports_dir / run_id
        self.run_id, self.target, self.backend, self.profile = run_id, target, backend, profile
        self.meta: dict[str, Any] = dict(meta or {})
        self.error: dict[str, Any] | None = None
        self.started_at = time.time()
        self.results: list[GateResult] = []
        # gates the server cannot take (harness.servers.base): id -> why; not verdicts
        self.skipped: dict[str, str] = {}
        # known failures (harness/baseline.py): report.json records each gate's status against it
        self.baseline: Baseline | None = None
        self.strict_baseline = False
        self.dir.mkdir(parents=True, exist_ok=True)
        point_latest(reports_dir, self.dir)

    def stack_failed(self, service: str | None, message: str) -> None:
        """The stack did not come up: the report says which service and why."""
        self.error = {"service": service, "message": message}
        self.write()

    def add(self, result: GateResult) -> None:
        self.results.append(result)
        if result.timeline is not None:
            result.timeline.save(self.dir / "timelines" / f"{result.id}.json")
            try:
                plot_timeline(result.timeline, self.dir / "plots" / f"{result.id}.png", result)
            except Exception as exc:  # a plot is a convenience; never lose a verdict over it
                (self.dir / "plots").mkdir(exist_ok=True)
                (self.dir / "plots" / f"{result.id}.error.txt").write_text(f"plot failed: {exc}\n")
        self.write()

    def skip(self, gate_id: str, reason: str) -> None:
        self.skipped[gate_id] = reason
        self.write()

    def collect_logs(self, logs_dir: Path) -> None:
        if logs_dir.is_dir():
            shutil.copytree(logs_dir, self.dir / "logs", dirs_exist_ok=True)

    def to_json(self) -> dict[str, Any]:
        settings = next((r.server_settings for r in self.results if r.server_settings), {})
        data = {"schema_version": SCHEMA_VERSION, "run_id": self.run_id, "target": self.target,
                "backend": self.backend, "server_profile": self.profile, "server_settings": settings,
                "started_at": _iso(self.started_at), "ended_at": _iso(time.time()),
                "harness_version": "unknown", "host": {}, **self.meta,
                "gates": [dict(r.to_json(), timeline=f"timelines/{r.id}.json", plot=f"plots/{r.id}.png",
                               figures=[{"name": f.name, "unit": f.unit, "value": f.value}
                                        for f in figures(r.id, r.metrics)])
                          for r in self.results]}
        if self.error is not None:
            data["error"] = self.error
        if self.skipped:
            data["skipped"] = [{"id": gate_id, "reason": reason} for gate_id, reason in self.skipped.items()]
        return annotate(data, self.baseline, self.strict_baseline) if self.baseline is not None else data

    def write(self) -> None:
        data = self.to_json()
        (self.dir / "report.json").write_text(json.dumps(data, indent=2, default=str))
        (self.dir / "summary.md").write_text(summary_markdown(data))
        (self.dir / "benchmark.json").write_text(json.dumps(benchmark_entries(data), indent=2))

    def table(self) -> str:
        return verdict_table(self.to_json()["gates"])


def point_latest(reports_dir: Path, run_dir: Path) -> None:
    """reports/latest -> this run (what the README's `reports/latest/...` paths read).

    Swapped atomically: a symlink under a name of this process's own, renamed over
    `latest` (rename(2) replaces a symlink in one step), so runs finishing together
    (`--jobs`, `compare`, CI shards on one disk) never see it missing or collide."""
    latest = reports_dir / "latest"
    if latest.is_dir() and not latest.is_symlink():
        log.warning(f"[harness] {latest} is a directory, not the harness's symlink: left as it is")
        return
    temp = reports_dir / f".latest-{os.getpid()}-{threading.get_ident()}-{secrets.token_hex(4)}"
    temp.symlink_to(run_dir.name)
    try:
        os.replace(temp, latest)
    except OSError:
        temp.unlink(missing_ok=True)
        raise


def verdict_table(gates: Iterable[dict[str, Any]]) -> str:
    rows = [f"{'gate':<16} {'verdict':<7} {'time':>6}  reason"]
    for g in gates:
        status = (g.get("baseline") or {}).get("status", "")
        tag = f"[{status}] " if status and status not in ("pass", "error") else ""
        rows.append(f"{g['id']:<16} {SYMBOL[g['verdict']]:<7} {g['duration_s']:>5.0f}s  {tag}{g['reason']}")
        problems = g.get("problems") or []
        if len(problems) > 1:
            rows += [f"{'':<16} {'':<7} {'':>6}  - {p['category']}" for p in problems]
    return "\n".join(rows)


def benchmark_entries(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """github-action-benchmark's `customSmallerIsBetter` entries: every gate's figures."""
    return [{"name": f"{g['id']}: {f['name']}", "unit": f["unit"], "value": f["value"],
             "extra": f"verdict {g['verdict']}; target {report['target']}"}
            for g in report["gates"] for f in g.get("figures", [])]


def schema_errors(report: Mapping[str, Any]) -> list[str]:
    """Where a report.json breaks harness/report.schema.json (empty: it conforms)."""
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message}"
            for error in validator.iter_errors(json.loads(json.dumps(report, default=str)))]


def summary_markdown(report: dict[str, Any]) -> str:
    settings = report.get("server_settings", {})
    # the settings the server profile names (harness.servers.registry: each adapter's profiles)
    adapter = SERVERS.get((report.get("target_spec") or {}).get("server") or DEFAULT_SERVER)
    named = set(adapter.profiles.get(report.get("server_profile") or "", {})) if adapter else set()
    knobs = {k: v for k, v in settings.items() if k in named}
    lines = [f"# Gate run {report['run_id']}", "",
             f"- target: `{report['target']}`", f"- backend: {report['backend']}",
             f"- server profile: {report['server_profile']} "
             f"({', '.join(f'{k}={v}' for k, v in sorted(knobs.items())) or 'server defaults'})",
             f"- server version: {report.get('server_version') or 'unknown'}; harness "
             f"{report.get('harness_version', 'unknown')}",
             f"- started {report['started_at']}, ended {report['ended_at']}", ""]
    if report.get("error"):
        error = report["error"]
        lines += [f"**The stack did not come up** ({error.get('service') or 'unknown service'}): "
                  f"{error['message']}", "", "Every service's log is in `logs/`.", ""]
    lines += ["| gate | verdict | time (server + harness) | reason |", "|---|---|---|---|"]
    for g in report["gates"]:
        reason = g["reason"].replace("|", "\\|")
        timing = g.get("timing") or {}
        split = f" ({timing['server_s']:.0f} + {timing['harness_s']:.0f})" if "server_s" in timing else ""
        lines.append(f"| `{g['id']}` | **{SYMBOL[g['verdict']]}**{baseline_tag(g)} | {g['duration_s']:.0f} s{split} "
                     f"| {reason} |")
    lines += baseline_section(report)
    if report.get("skipped"):
        lines += ["", f"**Skipped: the server cannot take them** ({len(report['skipped'])})", ""]
        lines += [f"- `{s['id']}`: {s['reason']}" for s in report["skipped"]]
    listed = [g for g in report["gates"] if len(g.get("problems") or []) > 1]
    if listed:
        lines += ["", "Every problem a gate found (the first names its category):", ""]
        for g in listed:
            lines += [f"- `{g['id']}`:"] + [f"  - `{p['category']}` {p['text']}" for p in g["problems"]]
    lines += ["", "Plots: `plots/<gate>.png`; recordings: `timelines/<gate>.json`; logs: `logs/`.",
              "Re-judge without the stack: `harness report <this dir> --threshold GATE.NAME=VALUE`.", ""]
    return "\n".join(lines)


def baseline_tag(gate: Mapping[str, Any]) -> str:
    """` (known)`, ` (new)` ... after a verdict judged against a baseline; empty without one."""
    status = (gate.get("baseline") or {}).get("status", "")
    return f" ({status})" if status and status not in ("pass", "error") else ""


BASELINE_GROUPS = (("new", "New failures (fail the run)"), ("changed", "Known failures that changed (fail the run)"),
                   ("fixed", "Fixed: remove them from the baseline"), ("known", "Known failures (do not fail the run)"))


def baseline_section(report: Mapping[str, Any]) -> list[str]:
    """Markdown: the baseline a run was judged against, then known, new, changed and fixed
    gates apart, each with its sentence. Empty for a run without a baseline."""
    baseline = report.get("baseline")
    if not baseline:
        return []
    lines = ["", f"Judged against the baseline `{baseline['path']}` (made on `{baseline['target']}`)"
             + (", strict: a fixed failure fails the run" if baseline.get("strict") else "") + ":"]
    for status, title in BASELINE_GROUPS:
        found = [g for g in report["gates"] if (g.get("baseline") or {}).get("status") == status]
        if found:
            lines += ["", f"**{title}** ({len(found)}):", ""]
            lines += [f"- `{g['id']}`: {g['baseline']['text'].replace(chr(10), ' ')}" for g in found]
    if not any((g.get("baseline") or {}).get("status") in ("new", "changed", "fixed", "known")
               for g in report["gates"]):
        lines += ["", "No known, new or fixed failures."]
    return lines


# Gates whose figures the generic plot below cannot draw register their own plot here
# (harness/replay/plot.py: a replay's figures are its scenario's watches).
PLOTTERS: dict[str, Callable[[Timeline, Path, GateResult | None], None]] = {}


def plot_timeline(timeline: Timeline, path: Path, result: GateResult | None = None) -> None:
    if (plotter := PLOTTERS.get(timeline.gate)) is not None:
        plotter(timeline, path, result)
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    snaps = [s for s in timeline.of_kind("snapshot") if "stats_error" not in s]
    polls = timeline.of_kind("poll")
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    t = [s["t"] for s in snaps]
    for cache in ("repo_locks", "repos", "repos_last_fetched", "clone_dirs"):
        axes[0].plot(t, [s.get(cache) for s in snaps], marker=".", label=cache)
    if polls:
        axes[0].scatter([p["t"] for p in polls], [0 if p["ok"] else -1 for p in polls], s=8,
                        c=["tab:green" if p["ok"] else "tab:red" for p in polls], label="policy poll ok / failed")
    axes[0].set_ylabel("entries")
    axes[0].legend(loc="upper left", fontsize=7)
    axes[1].plot(t, [(s.get("worker_rss_kb") or 0) / 1024 for s in snaps], marker=".", color="tab:purple")
    axes[1].set_ylabel("worker RSS (MB)")
    axes[2].plot(t, [s.get("worker_fds") for s in snaps], marker=".", label="open fds")
    axes[2].plot(t, [s.get("worker_files") for s in snaps], marker=".", label="open files")
    axes[2].plot(t, [s.get("worker_threads") for s in snaps], marker=".", label="threads")
    axes[2].set_ylabel("worker")
    axes[2].set_xlabel("seconds since gate start")
    axes[2].legend(loc="upper left", fontsize=7)
    for ax in axes:
        for start, end in timeline.fault_windows():
            ax.axvspan(start, end, color="tab:red", alpha=0.12)
    title = f"gate {timeline.gate}"
    if result is not None:
        title += f": {SYMBOL[result.verdict]}"
    fig.suptitle(title + "  (shaded: fault windows)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
