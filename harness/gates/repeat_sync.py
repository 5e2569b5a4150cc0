"""Gate `repeat-sync`: R cycles of a new commit in each repo, fetched and served.

Every cycle pushes a new commit to each scope's repo (over git:// to the git host), asks
the server to refresh each scope, and counts only when GET /scopes/{id}/policy serves a
bundle whose `hash` is the pushed commit, for every scope. After each served cycle it
records the caches, the worker's RSS, open files and mapped pack files.

Judged after `warmup_cycles` with a Theil–Sen slope per cycle (robust to one odd cycle).
Each cycle is one fetch per scope, so a slope divided by the number of scopes is what the
server keeps *per scope per fetch* — the unit in which a retention scales with a
deployment (43,026 scopes in the production incident, see shared/OPAL.md). Passes when
the caches are constant and every per-scope-per-fetch slope is under its bound.

When a scope does not serve the new commit within `sync_budget_s`:
- it answered 200 with another commit all along, after the server accepted the refresh:
  FAIL `repeat_sync.stale_commit`. The push is on the git host and the server is up and
  answering, so the only party not doing its job is the server: it never fetched (or
  never served what it fetched). This is the defect the gate exists to catch, so it must
  not read as "the harness could not judge".
- it did not answer with a bundle at all (timeouts, 5xx), a refresh was refused, or a
  push failed: ERROR (`load_failure`). The server is down or jammed, or the harness could
  not drive the workload; other gates judge availability, this one has nothing to measure.
"""

from __future__ import annotations

import logging
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from harness.gates.base import Gate, GateContext, cache_names
from harness.gates.load import Load, for_each_scope, scaled_budgets
from harness.gates.settings import GateSettings
from harness.gitops import GitOpError, WorkingClones, push_base_url
from harness.probes import mapped_pack_files
from harness.seed import policy_repo_name, probe_repo_name
from harness.servers.base import Capability, PolicyResult
from harness.timeline import Timeline
from harness.verdict import ERROR, FAIL, Problems, Verdict, load_failure
from harness.waiting import poll_until

log = logging.getLogger(__name__)

PUSH_PARALLEL = 4  # git pushes at once: the git daemon and 2 cores keep up with this
PUSH_KINDS = ("commit", "force")
SCALE_CYCLES = 20  # under the scale profile: the production leak needs fetches to pile up


@dataclass
class Params(GateSettings):
    positive = ("scopes", "cycles", "serve_budget_s", "sync_budget_s", "git_timeout_s")
    scopes: int = 10
    cycles: int = 12
    warmup_cycles: int = 3
    serve_budget_s: float = 60.0  # initial load: every scope served once
    sync_budget_s: float = 30.0  # per cycle: every scope serves its new commit
    git_timeout_s: float = 30.0  # each clone, fetch, commit or push of the harness
    # policy-0040.. by default: repos no other gate uses, so the commits pushed here never
    # change what another gate clones (boot-timing times clones of policy-0000..)
    first_repo: int = 40
    # what each cycle pushes: "commit" (a new commit on top) or "force" (the last commit
    # rewritten and force-pushed: the served head is no longer an ancestor of the new one)
    push: str = "commit"

    def validate(self) -> None:
        if self.cycles < self.warmup_cycles + 3:  # a slope needs 3 measured cycles
            self.refuse("cycles", f"≥ warmup_cycles + 3 = {self.warmup_cycles + 3}")
        if self.push not in PUSH_KINDS:
            self.refuse("push", " or ".join(PUSH_KINDS))


@dataclass
class Thresholds(GateSettings):
    """Bounds per scope per fetch (slope per cycle / scopes), after warm-up.

    A server that keeps one more pack file per fetch for each cached repository shows
    1.0 (open files) or 2.0 (mapped .pack + .idx) per scope per fetch; a correct one 0.
    The bounds sit well below 1 and above the noise of a flat series (a Theil–Sen slope
    of a constant count is exactly 0). RSS: 32 KB per scope per fetch is 1.3 GB per day
    for 43k scopes refreshed hourly. A server that keeps its packs mapped also grows RSS by
    the pages it touched in them: 0.9.9 showed 15 to 34 KB with the gate's tiny repos, so
    there the RSS slope is a second reading of the packs leak, not a separate finding.
    """

    cache_tolerance: int = 0  # entries the caches may move by across measured cycles
    files_per_scope_per_fetch: float = 0.1
    packs_per_scope_per_fetch: float = 0.1
    rss_kb_per_scope_per_fetch: float = 32.0


# snapshot key -> (threshold name, failure category, what one unit is), in judging order:
# the most specific first (mapped packs explain open files, both explain RSS).
GROWTH = {
    "mapped_packs": ("packs_per_scope_per_fetch", "repeat_sync.packs_grew", "mapped pack file"),
    "worker_files": ("files_per_scope_per_fetch", "repeat_sync.files_grew", "open file"),
    "worker_rss_kb": ("rss_kb_per_scope_per_fetch", "repeat_sync.rss_slope", "KB of RSS"),
}


def theil_sen_slope(xs: list[float], ys: list[float]) -> float:
    """Median of pairwise slopes: one outlier cycle does not tilt the fit."""
    slopes = [(y2 - y1) / (x2 - x1) for (x1, y1), (x2, y2) in combinations(zip(xs, ys, strict=True), 2) if x2 != x1]
    return statistics.median(slopes) if slopes else 0.0


def _short(sha: str | None) -> str:
    return sha[:10] if sha else "none"


class RepeatSyncGate(Gate, id="repeat-sync", params=Params, thresholds=Thresholds,
                     title="new commits fetched and served over and over keep caches, files and memory flat",
                     requires=(Capability.MANY_SOURCES, Capability.RUNTIME_SOURCES, Capability.REFRESH_CALL)):

    # -- scenario ---------------------------------------------------------------------------
    def scenario(self, ctx: GateContext) -> None:
        p: Params = ctx.params
        tl = ctx.timeline
        ctx.require_one_worker()
        ctx.stack.ensure_repos(p.first_repo + p.scopes)  # the load's repos, seeded on demand
        repos = {f"sync-{i}": policy_repo_name(p.first_repo + i) for i in range(p.scopes)}
        clones = WorkingClones(ctx.stack.run_dir / "gitops", push_base_url(ctx.stack.published("githost").url),
                               timeout_s=p.git_timeout_s)
        budgets = scaled_budgets(ctx, p.scopes, {"serve_budget_s": p.serve_budget_s, "sync_budget_s": p.sync_budget_s},
                                 ctx.stack.repo_url(probe_repo_name(0)))
        for_each_scope(lambda scope: ctx.client.put_scope(scope, ctx.stack.repo_url(repos[scope])), repos)
        pending = ctx.all_served_within(list(repos), budgets["serve_budget_s"], "initial load")
        if pending:
            tl.fact("load_failure", f"{len(pending)} of {p.scopes} scopes were not served "
                                    f"within {budgets['serve_budget_s']:g} s")
            return
        served: dict[str, str | None] = {scope: ctx.client.policy_hash(scope).hash for scope in repos}
        self._observe(ctx, "loaded", cycle=0)
        for cycle in range(1, p.cycles + 1):
            tl.mark("cycle_start", cycle=cycle)
            try:
                pushed = self._push(clones, repos, p.push)
            except GitOpError as exc:
                tl.fact("load_failure", f"cycle {cycle}: pushing the new commits failed: {exc}")
                return
            refreshes = dict(zip(repos, for_each_scope(ctx.client.refresh, repos), strict=True))
            unsynced, seconds = self._wait_synced(ctx, pushed, budgets["sync_budget_s"])
            tl.record("sync", cycle=cycle, pushed={s: _short(h) for s, h in pushed.items()},
                      refreshes=refreshes, seconds=seconds,
                      unsynced={s: {"status": r.status, "hash": _short(r.hash), "error": r.error}
                                for s, r in unsynced.items()})
            if unsynced:
                self._record_unsynced(tl, cycle, p, budgets["sync_budget_s"], pushed, served, refreshes, unsynced)
                return
            served = dict(pushed)
            snapshot = self._observe(ctx, f"cycle {cycle}", cycle=cycle)
            tl.mark("cycle_end", cycle=cycle)
            log.info(f"[gate repeat-sync] cycle {cycle}/{p.cycles}: {p.scopes} new commits ({p.push}) served in "
                     f"{seconds:.1f} s; worker {snapshot.get('worker_files')} open files, "
                     f"{snapshot.get('mapped_packs')} mapped packs, {snapshot.get('worker_rss_kb')} KB RSS")

    def scaled(self, scopes: int) -> dict[str, str]:
        return {"scopes": str(scopes), "cycles": str(SCALE_CYCLES)}

    def load(self, params: Params) -> Load:
        return Load(scopes=params.scopes, repos=params.first_repo + params.scopes,
                    fetches=params.cycles + 1, rounds=params.cycles + 1)

    def _push(self, clones: WorkingClones, repos: dict[str, str], kind: str) -> dict[str, str]:
        """A new commit (or a rewritten one) in each scope's repo, pushed; scope -> its SHA."""
        push = clones.push_new_commit if kind == "commit" else clones.force_push_rewrite
        with ThreadPoolExecutor(max_workers=PUSH_PARALLEL) as pool:
            shas = list(pool.map(push, repos.values()))
        return dict(zip(repos, shas, strict=True))

    def _wait_synced(self, ctx: GateContext, pushed: dict[str, str],
                     budget: float) -> tuple[dict[str, PolicyResult], float | None]:
        """Poll until every scope serves its pushed commit; (the scopes that did not, with
        their last answer; seconds it took or None). Each request is bounded by what is left."""
        last: dict[str, PolicyResult] = {}
        pending = list(pushed)

        def synced() -> bool:
            nonlocal pending
            still = []
            for scope in pending:
                last[scope] = result = ctx.client.policy_hash(scope, timeout=5.0)
                if result.hash != pushed[scope]:
                    still.append(scope)
            pending = still
            return not pending
        seconds = poll_until(synced, budget, interval=0.2)
        return {scope: last[scope] for scope in pending}, seconds

    def _record_unsynced(self, tl: Timeline, cycle: int, p: Params, budget: float, pushed: dict[str, str],
                         served_before: dict[str, str | None], refreshes: dict[str, int],
                         unsynced: dict[str, PolicyResult]) -> None:
        """Stale (FAIL) or no answer / refused refresh (ERROR): see the module docstring."""
        refused = {s: code for s, code in refreshes.items() if not 200 <= code < 300}
        stale = all(r.status == 200 and r.hash for r in unsynced.values())
        if stale and not refused:
            tl.fact("stale_commit", {
                "cycle": cycle, "budget_s": budget, "scopes": p.scopes,
                "refresh_statuses": sorted(set(refreshes.values())),
                "unsynced": {s: {"served": r.hash, "pushed": pushed[s], "before": served_before.get(s)}
                             for s, r in unsynced.items()}})
            return
        answers = ", ".join(f"{s}: {r.status if r.status is not None else r.error}"
                            + (f" {_short(r.hash)}" if r.hash else (f" ({r.error})" if r.error else ""))
                            for s, r in list(unsynced.items())[:5])
        why = (f"refresh refused ({', '.join(f'{s}: {c}' for s, c in list(refused.items())[:5])})"
               if refused else "no bundle served")
        tl.fact("load_failure", f"cycle {cycle}: {len(unsynced)} of {p.scopes} scopes did not serve the "
                                f"new commit within {budget:g} s, {why}; last answers: {answers}")

    def _observe(self, ctx: GateContext, label: str, cycle: int) -> dict[str, Any]:
        """A snapshot plus the pack files the server's workers have mapped (summed: the
        worker that fetches is the one that keeps them, whichever it is)."""
        _, workers = ctx.stack.server.pids()
        packs = {pid: mapped_pack_files(pid) for pid in workers}
        counts = [n for n in packs.values() if n is not None]
        total = sum(counts) if packs and len(counts) == len(packs) else None
        return ctx.observe(label, cycle=cycle, mapped_packs=total, mapped_packs_by_pid=packs)

    # -- checker ----------------------------------------------------------------------------
    def check(self, timeline: Timeline, params: Params, thresholds: Thresholds) -> Verdict:
        if (failed := load_failure(timeline)) is not None:
            return failed
        scopes = params.scopes
        if (stale := timeline.facts.get("stale_commit")) is not None:
            return _stale_verdict(stale)
        warmup = params.warmup_cycles
        measured = [s for s in timeline.of_kind("snapshot") if s.get("cycle", 0) > warmup]
        if len(measured) < 3:
            return Verdict(ERROR, f"only {len(measured)} served cycles after {warmup} warm-up cycles "
                                  "(at least 3 are needed for a slope)", "error.no_data")
        if errors := [s["stats_error"] for s in measured if "stats_error" in s]:
            return Verdict(ERROR, f"the stats contract did not answer during the gate: {errors[0]}",
                           "error.no_stats")
        pids = sorted({int(s["worker_pid"]) for s in measured if s.get("worker_pid")})
        if len(pids) > 1:
            return Verdict(ERROR, f"the worker restarted during the gate (pids {pids}): counts of "
                                  "different processes cannot be fitted", "error.restart")
        caches = cache_names(timeline)
        missing = [key for key in (*caches, *GROWTH) if any(s.get(key) is None for s in measured)]
        if missing:
            return Verdict(ERROR, f"{', '.join(missing)} not recorded for every cycle (mapped packs need "
                                  "/proc/<worker pid>/maps: run as root or as the server's user)",
                           "error.no_data")
        sync_s = [s.get("seconds") for s in timeline.of_kind("sync")]
        return _judge_growth(measured, scopes, thresholds, sync_s, caches)


# The production incident (public report on OPAL's repository, PR #950, 0.9.9; see
# shared/OPAL.md): 43,026 scopes, anonymous memory +129 MB/h with the scope count flat.
PRODUCTION_SCOPES = 43_026
PRODUCTION_MB_PER_HOUR = 129.0


def production_projection(per_scope: dict[str, float]) -> dict[str, Any]:
    """The measured per-scope-per-fetch costs carried onto the production deployment: what
    one fetch of a new commit for every scope would keep there, and how many such fetches an
    hour would explain its growth — a rate a maintainer can hold against how often the
    deployment's repos change (0.9.9 at 1,000 scopes: one new commit per scope every 3.1 h)."""
    rss_kb = per_scope.get("worker_rss_kb", 0.0)
    per_round_mb = rss_kb * PRODUCTION_SCOPES / 1024
    rounds_per_hour = PRODUCTION_MB_PER_HOUR / per_round_mb if per_round_mb > 0 else None
    projection: dict[str, Any] = {
        "scopes": PRODUCTION_SCOPES, "mb_per_hour": PRODUCTION_MB_PER_HOUR,
        "rss_mb_per_fetch_of_every_scope": round(per_round_mb, 1),
        "open_files_per_fetch_of_every_scope": round(per_scope.get("worker_files", 0.0) * PRODUCTION_SCOPES),
        "mapped_packs_per_fetch_of_every_scope": round(per_scope.get("mapped_packs", 0.0) * PRODUCTION_SCOPES),
        "fetches_of_every_scope_per_hour_for_129_mb": None if rounds_per_hour is None else round(rounds_per_hour, 2)}
    if rounds_per_hour is None:
        rate = "no RSS growth per fetch was measured, so fetches alone do not explain its 129 MB/h"
    else:
        rate = (f"its 129 MB/h is what {rounds_per_hour:.2f} such fetches of every scope an hour keep, i.e. one new "
                f"commit per scope every {1 / rounds_per_hour:.1f} h")
    projection["sentence"] = (
        f"at the production incident's {PRODUCTION_SCOPES:,} scopes, one fetch of a new commit for every scope keeps "
        f"{per_round_mb:.1f} MB RSS, {projection['open_files_per_fetch_of_every_scope']:,} open files and "
        f"{projection['mapped_packs_per_fetch_of_every_scope']:,} mapped pack files: {rate}")
    return projection


def _stale_verdict(stale: dict[str, Any]) -> Verdict:
    unsynced = stale["unsynced"]
    scope, first = next(iter(unsynced.items()))
    kept = ("the commit it served before the push" if first.get("served") == first.get("before")
            else "another commit")
    return Verdict(
        FAIL, f"cycle {stale['cycle']}: {len(unsynced)} of {stale['scopes']} scopes never served the new "
              f"commit: {scope} still served {_short(first.get('served'))} ({kept}) {stale['budget_s']:g} s "
              f"after {_short(first.get('pushed'))} was pushed and the refresh was accepted "
              f"({'/'.join(map(str, stale['refresh_statuses']))}): the server does not fetch on refresh",
        "repeat_sync.stale_commit", {"stale_commit": stale})


def _judge_growth(measured: list[dict[str, Any]], scopes: int, thresholds: Thresholds,
                  sync_s: list[float | None], caches: tuple[str, ...]) -> Verdict:
    xs = [float(s["cycle"]) for s in measured]
    cycles = f"cycles {int(xs[0])}–{int(xs[-1])} of {scopes} scopes"
    series = {key: [s[key] for s in measured] for key in (*caches, *GROWTH, "worker_fds", "worker_threads")
              if all(s.get(key) is not None for s in measured)}
    per_scope = {key: theil_sen_slope(xs, [float(v) for v in values]) / max(1, scopes)
                 for key, values in series.items()}
    projection = production_projection(per_scope)
    metrics = {"series": series, "per_scope_per_fetch": {k: round(v, 3) for k, v in per_scope.items()},
               "production_projection": projection, "cycles": [int(x) for x in xs], "scopes": scopes,
               "sync_seconds": [round(x, 2) if x is not None else None for x in sync_s]}
    problems = Problems()
    drift = {c: series[c] for c in caches if max(series[c]) - min(series[c]) > thresholds.cache_tolerance}
    if drift:
        problems.add("repeat_sync.caches_grew", "caches changed while re-syncing the same scopes: " + ", ".join(
            f"{c} {v[0]} → {v[-1]} ({per_scope[c]:+.2f} per scope per fetch)" for c, v in drift.items())
            + f" over {cycles}", **{f"{c}_per_scope_per_fetch": round(per_scope[c], 3) for c in drift})
    for key, (bound_name, kind, unit) in GROWTH.items():
        bound = getattr(thresholds, bound_name)
        if per_scope[key] > bound:
            values = series[key]
            problems.add(kind, f"worker keeps {per_scope[key]:.1f} more {unit}{'' if unit.startswith('KB') else 's'} "
                            f"per scope per fetch: {values[0]} → {values[-1]} over {cycles} "
                            f"(bound {bound:g})", per_scope_per_fetch=round(per_scope[key], 3))
    if problems:
        problems.note(projection["sentence"])
    flat = ", ".join(f"{c}={series[c][0]}" for c in caches)
    return problems.verdict(f"every cycle's new commits served; caches constant ({flat}); per scope per fetch: "
                         f"{per_scope['mapped_packs']:+.2f} mapped packs, {per_scope['worker_files']:+.2f} "
                         f"open files, {per_scope['worker_rss_kb']:+.1f} KB RSS over {cycles}; "
                         + projection["sentence"], metrics)
