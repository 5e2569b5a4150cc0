"""`harness scale` / `make scale`: what each scope costs the server, from 10 to 10,000 scopes.

For each release and each N (ascending), on one stack per release:
1. a fresh server; N scopes PUT (each its own seeded repo); timed until every one is served;
   then a snapshot of the worker: RSS, open fds and files, mapped pack files, threads, and
   the clone dirs on disk;
2. a fresh server with the same N scopes stored in Redis and no clones on disk, restarted
   cold (as a pod that lost its disk) and timed until every stored scope is served; a
   second snapshot.
A step that does not finish within its budget, or a server that dies, ends that release's
curve at that N with what stopped it (the server log's "Too many open files", a thread or
memory error, or the budget): a larger N would only hit the same limit harder.

Writes `reports/<run>/scale.json` (points, per-scope slopes, where each cost stops being
linear, what stopped a curve) and `reports/<run>/plots/scale.png` (both releases on one
plot). The per-scope cost of a figure is its least-squares slope over N; a segment's
marginal cost (its rise over the scopes it added) more than LINEAR_FACTOR times the first
segment's, or under 1/LINEAR_FACTOR of it, is where that cost stops being linear.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import config, limits
from harness.errors import ConfigError, HarnessError
from harness.gates.base import GateContext, cold_boot
from harness.gates.load import BUDGET_MARGIN, HARNESS_S_PER_SCOPE, for_each_scope
from harness.probes import mapped_pack_files
from harness.seed import policy_repo_name, probe_repo_name
from harness.servers.base import Capability
from harness.servers.registry import OPAL, SERVERS
from harness.stack import make_stack
from harness.stack.base import Stack, new_run_id
from harness.timeline import Timeline

log = logging.getLogger(__name__)

# The scale curve runs OPAL (scopes by the thousand) with its quick profile: short git
# timeouts keep each step quick.
QUICK_PROFILE = dict(OPAL.profiles["quick"])

DEFAULT_SCOPES = (10, 100, 1000, 5000, 10000)
DEFAULT_VERSIONS = ("0.9.6", "0.9.9")
LINEAR_FACTOR = 2.0
# Less than one more per 100 scopes: a bounded figure (a thread pool), not a per-scope cost.
FLAT_PER_SCOPE = 0.01
# Serving N scopes may take this long before the step counts as stopped (the budget a gate
# would give the same load, with a floor for the smallest N).
SERVE_FLOOR_S = 60.0
# The figures of a snapshot the curve follows, and how each is named in the report.
FIGURES = {"worker_rss_kb": "worker RSS (KB)", "worker_fds": "open fds", "worker_files": "open files",
           "mapped_packs": "mapped pack files", "worker_threads": "threads", "clone_dirs": "clone dirs"}
TIMES = {"serve_s": "time to serve all (s)", "boot_s": "boot until all served (s)"}
# What a server log says when it hit a limit, and which limit that is.
LIMIT_SIGNS = {"Too many open files": "file descriptors (EMFILE)", "can't start new thread": "threads",
               "Cannot allocate memory": "memory", "MemoryError": "memory"}


@dataclass
class Point:
    scopes: int
    serve_s: float | None = None
    boot_s: float | None = None
    boot_healthy_s: float | None = None
    served: dict[str, Any] = field(default_factory=dict)  # the snapshot after serving
    booted: dict[str, Any] = field(default_factory=dict)  # the snapshot after the boot


@dataclass
class Curve:
    target: str
    points: list[Point] = field(default_factory=list)
    stopped: str | None = None  # what ended the curve before its largest N, with the N

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(N, value) of a figure over the points that have it."""
        pairs = [(p.scopes, _value(p, key)) for p in self.points]
        kept = [(n, v) for n, v in pairs if v is not None]
        return [n for n, _ in kept], [v for _, v in kept]


def _value(point: Point, key: str) -> float | None:
    value = getattr(point, key) if key in TIMES else point.served.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def slope(xs: list[int], ys: list[float]) -> float | None:
    """Least-squares slope of ys over xs (None for fewer than two points)."""
    if len(xs) < 2:
        return None
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    return None if spread == 0 else sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def linear_until(xs: list[int], ys: list[float]) -> dict[str, Any]:
    """Marginal cost per scope of each segment, and the N where it departs from the first
    segment's by more than LINEAR_FACTOR (None: linear over the whole range, or flat)."""
    marginal = [(ys[i] - ys[i - 1]) / (xs[i] - xs[i - 1]) for i in range(1, len(xs))]
    result: dict[str, Any] = {"marginal_per_scope": [round(m, 4) for m in marginal], "breaks_at": None}
    if not marginal or marginal[0] <= 0:
        return result  # flat (threads, a constant): no per-scope cost to stay linear
    for i, m in enumerate(marginal[1:], start=1):
        if not marginal[0] / LINEAR_FACTOR <= m <= marginal[0] * LINEAR_FACTOR:
            result["breaks_at"] = xs[i + 1]
            result["ratio_to_first"] = round(m / marginal[0], 2)
            break
    return result


def analyse(curve: Curve) -> dict[str, Any]:
    figures = {}
    for key in (*TIMES, *FIGURES):
        xs, ys = curve.series(key)
        per_scope = slope(xs, ys)
        flat = per_scope is not None and abs(per_scope) < FLAT_PER_SCOPE
        shape = linear_until(xs, ys)
        if flat:  # a bounded figure has no per-scope cost to stop being linear
            shape = {"marginal_per_scope": shape["marginal_per_scope"], "breaks_at": None}
        figures[key] = {"label": {**TIMES, **FIGURES}[key], "scopes": xs, "values": ys, "flat": flat,
                        "per_scope": None if per_scope is None else round(per_scope, 4), **shape}
    return figures


class ScaleRun:
    """One release's curve on its own stack."""

    def __init__(self, stack: Stack, curve: Curve):
        self.stack, self.curve = stack, curve
        self.stack.server.restart(fresh_state=True, overrides=QUICK_PROFILE)
        self.ctx = GateContext(stack, Timeline("scale"), None)
        self.one_clone_s = stack.server.clone_seconds(stack.repo_url(probe_repo_name(0)))

    def budget(self, scopes: int) -> float:
        """As a gate's serve budget, but for a server that clones one at a time (0.9.6 boots
        serially): a step that runs out of it is a limit reached, not a slow server."""
        serial = BUDGET_MARGIN * scopes * (HARNESS_S_PER_SCOPE + self.one_clone_s)
        return max(SERVE_FLOOR_S, round(serial, 1))

    def measure(self, scopes: int) -> Point:
        point = Point(scopes)
        self.curve.points.append(point)
        urls = {f"scale-{i}": self.stack.repo_url(policy_repo_name(i)) for i in range(scopes)}
        self.stack.server.restart(fresh_state=True, overrides=QUICK_PROFILE)
        started = time.monotonic()
        for_each_scope(lambda scope: self.ctx.client.put_scope(scope, urls[scope]), urls)
        pending = self.ctx.all_served_within(list(urls), self.budget(scopes), f"{scopes} scopes")
        point.serve_s = None if pending else round(time.monotonic() - started, 2)
        point.served = self._snapshot(f"served {scopes}")
        if pending:
            self._stop(scopes, f"{len(pending)} of {scopes} scopes not served within {self.budget(scopes):g} s")
            return point
        log.info(f"[scale] {self.curve.target}: {scopes} scopes served in {point.serve_s:.1f} s "
                 f"(RSS {point.served.get('worker_rss_kb')} KB, {point.served.get('worker_files')} open files)")
        self.stack.server.restart(fresh_state=True, overrides=QUICK_PROFILE)
        self.stack.server.stage_scopes(urls)
        boot = cold_boot(self.ctx, list(urls), self.budget(scopes), f"boot with {scopes} stored")
        point.boot_s, point.boot_healthy_s = boot.served_s, boot.healthy_s
        point.booted = self._snapshot(f"booted {scopes}")
        if boot.served_s is None:
            self._stop(scopes, f"a cold boot with {scopes} stored served {scopes - boot.not_served} of them within "
                               f"{self.budget(scopes):g} s" + ("" if boot.healthy_s else ", never healthy"))
        else:
            log.info(f"[scale] {self.curve.target}: boot with {scopes} stored served all in {boot.served_s:.1f} s")
        return point

    def _snapshot(self, label: str) -> dict[str, Any]:
        _, workers = self.stack.server.pids()
        packs = [mapped_pack_files(pid) for pid in workers]
        snapshot = self.ctx.observe(label, mapped_packs=sum(p for p in packs if p is not None) if packs else None)
        return {k: v for k, v in snapshot.items() if k != "processes"}

    def _stop(self, scopes: int, what: str) -> None:
        limit = self._limit_hit()
        self.curve.stopped = f"at {scopes:,} scopes: {what}" + (f"; the server log shows the limit: {limit}"
                                                                if limit else "")
        log.warning(f"[scale] {self.curve.target}: stopped {self.curve.stopped}")

    def _limit_hit(self) -> str | None:
        try:
            text = self.stack.server.log().read_text(errors="replace")
        except OSError:
            return None
        return next((limit for sign, limit in LIMIT_SIGNS.items() if sign in text), None)


def run_release(settings: config.Settings, scopes: list[int]) -> Curve:
    curve = Curve(settings.target.label)
    with make_stack(settings) as stack:
        stack.ensure_repos(max(scopes))
        run = ScaleRun(stack, curve)
        for n in scopes:
            run.measure(n)
            if curve.stopped:
                break
        stack.server.stop()
    return curve


def fd_headroom(figures: dict[str, Any], limit: int) -> dict[str, Any]:
    """Where the open-file limit the servers ran with stops the curve: the scopes at which a
    worker holding this many fds per scope (plus what it holds at the smallest N) reaches it.
    Every fetch that brings a new pack takes one more per scope (repeat-sync), so a server
    that refreshes its scopes meets it sooner."""
    fds = figures["worker_fds"]
    if not fds["per_scope"] or not fds["values"]:
        return {"open_file_limit": limit, "scopes_at_limit": None}
    base = fds["values"][0] - fds["per_scope"] * fds["scopes"][0]
    return {"open_file_limit": limit, "fds_per_scope": fds["per_scope"],
            "scopes_at_limit": int((limit - base) / fds["per_scope"])}


def write(out_dir: Path, curves: list[Curve], scopes: list[int]) -> dict[str, Any]:
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]  # what the servers started here inherit
    releases = []
    for curve in curves:
        figures = analyse(curve)
        releases.append({"target": curve.target, "stopped": curve.stopped, "figures": figures,
                         "open_files": fd_headroom(figures, limit), "points": [asdict(p) for p in curve.points]})
    data = {"scopes": scopes, "releases": releases}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "scale.json").write_text(json.dumps(data, indent=2) + "\n")
    plot(data, out_dir / "plots" / "scale.png")
    (out_dir / "scale.md").write_text(summary_markdown(data))
    return data


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = [*TIMES, *FIGURES]
    fig, axes = plt.subplots(2, 4, figsize=(18, 8))
    for ax, key in zip(axes.flat, keys, strict=True):
        for release in data["releases"]:
            figure = release["figures"][key]
            if figure["scopes"]:
                ax.plot(figure["scopes"], figure["values"], marker="o",
                        label=f"{release['target']} ({figure['per_scope']} per scope)")
        ax.set_title({**TIMES, **FIGURES}[key])
        ax.set_xscale("log")
        ax.set_yscale("log")  # every figure is a positive count or time
        ax.set_xlabel("scopes")
        ax.legend(fontsize=7)
    fig.suptitle("server cost per scope")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def summary_markdown(data: dict[str, Any]) -> str:
    lines = ["# Scale: what each scope costs the server", ""]
    for release in data["releases"]:
        lines += [f"## {release['target']}", "", "| scopes | serve s | boot s | RSS KB | fds | files | mapped packs "
                                                  "| threads | clone dirs |", "|---|---|---|---|---|---|---|---|---|"]
        for p in release["points"]:
            s = p["served"]
            lines.append(f"| {p['scopes']:,} | {p['serve_s']} | {p['boot_s']} | {s.get('worker_rss_kb')} | "
                         f"{s.get('worker_fds')} | {s.get('worker_files')} | {s.get('mapped_packs')} | "
                         f"{s.get('worker_threads')} | {s.get('clone_dirs')} |")
        lines += ["", "| figure | per scope | stops being linear at |", "|---|---|---|"]
        for figure in release["figures"].values():
            lines.append(f"| {figure['label']} | {figure['per_scope']} | {_break_text(figure)} |")
        lines += ["", f"Stopped: {release['stopped'] or 'no: every N ran to completion'}", ""]
        headroom = release.get("open_files") or {}
        if headroom.get("scopes_at_limit"):
            lines += [f"Open-file limit {headroom['open_file_limit']:,}: at {headroom['fds_per_scope']} fds per scope "
                      f"the worker reaches it at about {headroom['scopes_at_limit']:,} scopes fetched once; each "
                      "further fetch of every scope that brings a new pack takes one more fd per scope.", ""]
    return "\n".join(lines) + "\n"


def _break_text(figure: dict[str, Any]) -> str:
    if figure.get("flat"):
        return "flat: bounded, not a per-scope cost"
    if figure["breaks_at"] is None:
        return "linear over the range"
    return f"{figure['breaks_at']:,} (marginal cost ×{figure['ratio_to_first']} the first segment's)"


def parse_scopes(text: str) -> list[int]:
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ConfigError(f"--scopes {text}: give scope counts separated by commas, e.g. 10,100,1000") from None
    if not values or values[0] < 1 or values[-1] > config.MAX_SCALE:
        raise ConfigError(f"--scopes {text}: counts from 1 to {config.MAX_SCALE:,}")
    return values


# What the cost curve drives: N scopes stored, churned and refreshed through the server's API.
SCALE_NEEDS = (Capability.MANY_SOURCES, Capability.RUNTIME_SOURCES, Capability.REFRESH_CALL, Capability.SCOPE_STORE)


def cmd_scale(args: argparse.Namespace) -> int:
    server = config.from_env().server if not (args.version or args.source) else OPAL.name
    if (reason := SERVERS[server].skip_reason("scale", SCALE_NEEDS)) is not None:
        raise ConfigError(f"`harness scale` measures OPAL's cost curve over N scopes: {reason.replace('gate ', '', 1)} "
                          "(unset SERVER, or SERVER=opal)")
    scopes = parse_scopes(args.scopes)
    versions = args.version or ([] if args.source else list(DEFAULT_VERSIONS))
    targets: list[dict[str, Any]] = [{"version": v} for v in versions]
    targets += [{"source": args.source}] if args.source else []
    base = {k: v for k, v in (("backend", args.backend), ("reports_dir", args.reports_dir)) if v}
    settings_list = [config.from_env(**base, **target) for target in targets]
    # Every release holds the largest N: its clones, repos, one open file per scope.
    limits.ensure(limits.Needs.of(max(scopes), max(scopes), 1, f"the scale run at {max(scopes):,} scopes"),
                  settings_list[0].run_root)
    out_dir = settings_list[0].reports_dir / f"{new_run_id()}-scale"
    curves = []
    for settings in settings_list:
        log.info(f"[scale] {settings.target.label}: N = {', '.join(f'{n:,}' for n in scopes)}")
        try:
            curves.append(run_release(settings, scopes))
        except HarnessError as exc:
            curves.append(Curve(settings.target.label, stopped=f"the stack did not run: {exc}"))
        write(out_dir, curves, scopes)  # after each release: a later failure keeps what was measured
    print((out_dir / "scale.md").read_text())
    print(f"report: {out_dir}/scale.json, plot: {out_dir}/plots/scale.png")
    return 0 if all(c.points for c in curves) else 2


def add_parser(sub: Any) -> None:
    scale = sub.add_parser("scale", help="the server's cost per scope at N = 10 … 10,000 scopes, per release: "
                                         "scale.json and plots/scale.png")
    scale.add_argument("--scopes", default=",".join(map(str, DEFAULT_SCOPES)),
                       help=f"scope counts (default {','.join(map(str, DEFAULT_SCOPES))})")
    scale.add_argument("--opal-version", dest="version", action="append",
                       help=f"a PyPI release (repeatable; default {' and '.join(DEFAULT_VERSIONS)})")
    scale.add_argument("--opal-source", dest="source", help="an OPAL source tree, after the releases given")
    scale.add_argument("--backend", help="local (default: BACKEND or auto) | compose")
    scale.add_argument("--reports-dir", dest="reports_dir", help="where the report goes (default ./reports)")
    scale.set_defaults(func=cmd_scale)

