"""Gate `orphan-clones`: what deleting scopes leaves behind, at a scale that shows it.

Two phases, each judged against the state it started from:

1. **burst** — N scopes on distinct repos PUT and served, then N DELETEs at once (a few
   concurrent clients), then a bounded settle.
2. **mid-sync** — M scopes on repos behind the latency proxy, a new commit pushed to each
   repo and a refresh asked, then each scope DELETEd as soon as the proxy shows its fetch
   open (the rest when a deadline passes). The proxy's connections (accept and close
   times, repo) and each DELETE's send time are recorded: fewer than half of the M scopes
   with a fetch in flight when their DELETE was sent is ERROR `error.not_exercised` —
   no delete raced a sync.

A settle ends when the judged figures (caches, clone dirs, fds, threads) are back at the
phase's start or have stood still for three snapshots, at most `settle_s`
(harness.gates.settle); a figure still going down when the budget ran out is
`orphan.still_falling`, not kept. A clone-dir count that could not be taken is an ERROR.

Passes when, after each phase's settle, the three git-fetcher caches, the clone dirs on
disk, the worker's fds of every kind (files, sockets, pipes, anon inodes; a pipe to a live
`git cat-file` is noted, not kept: GitPython's batch reader closes when the collector runs) and
its threads are back to the phase's start, and its RSS within start + scopes × allowance + floor. A failure
names every kind of leftover with counts per phase, the peers of kept sockets, example
clone dirs and fd targets, and quotes the server's own warnings of the phase counted by
message — the code path to read.

`leak` asks whether one clean cycle at a small load is clean; this gate asks what bulk
deletes and deletes racing a sync leave behind at a load where timeouts and races happen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from harness.fds import fd_census
from harness.gates.base import Gate, GateContext, batches, cache_names, pre_fix_executor_size
from harness.gates.proof import (
    OLD_LISTENER,
    listener_connections,
    not_exercised,
    open_at,
    record_connections,
    without_detail,
)
from harness.gates.settings import GateSettings
from harness.gates.settle import settle, settle_record, still_falling
from harness.gitops import WorkingClones, push_base_url
from harness.probes import CountUnavailable
from harness.seed import policy_repo_name
from harness.serverlog import read_slice, summarize
from harness.serverlog import size as log_size
from harness.servers.base import Capability
from harness.stack.base import ServiceHandle
from harness.timeline import Timeline
from harness.verdict import ERROR, Problems, Verdict, load_failure

PHASES = ("burst", "mid-sync")
# what a deletes record keeps for the checker and the saved timeline, not for the metrics
RECORD_ONLY = ("kind", "t", "statuses", "connections", "delete_sent_t", "repos")
# A pipe's peer that is git's batch reader (harness.fds names a git child by its subcommand).
BATCH_PROCESS = "git cat-file"
# Mid-sync: a scope whose fetch the proxy has not shown by then is deleted anyway.
DELETE_DEADLINE_S = 30.0


@dataclass
class Params(GateSettings):
    positive = ("scopes", "mid_sync_scopes", "delete_clients", "settle_s", "one_clone_s")
    scopes: int = 500  # N, the burst
    mid_sync_scopes: int = 50  # M, deleted while their fetches run
    # A small round of both phases first, not judged: pools, connections and threads a
    # server makes lazily belong to the baseline, not to what a phase left behind.
    warmup_scopes: int = 20
    warmup_mid_sync_scopes: int = 5
    warmup_settle_s: float = 5.0
    delete_clients: int = 8
    settle_s: float = 30.0
    serve_budget_s: float = 0.0  # 0: derived from the load and the server's git concurrency
    one_clone_s: float = 0.05  # local git daemon; through the latency proxy it is measured


@dataclass
class Thresholds(GateSettings):
    cache_tolerance: int = 0
    clone_dir_tolerance: int = 0
    fd_tolerance: int = 4  # per kind of fd
    thread_tolerance: int = 4
    # RSS after ≤ start + scopes × this + floor: what loading a scope may leave in the
    # allocator after it is deleted (Python rarely hands freed memory back to the OS).
    rss_kb_per_scope: int = 256
    rss_floor_kb: int = 32 * 1024


def _settled_figures(snapshot: dict[str, Any], caches: tuple[str, ...]) -> dict[str, int | None]:
    """What a settle waits on: the counts that return when a purge is done (not RSS)."""
    counts = _counts(snapshot, caches)
    return {**{k: counts[k] for k in (*caches, "clone_dirs", "threads")}, "fds": snapshot.get("worker_fds")}


def _counts(snapshot: dict[str, Any], caches: tuple[str, ...]) -> dict[str, int]:
    return {**{c: snapshot.get(c, -1) for c in caches}, "clone_dirs": snapshot["clone_dirs"],
            "threads": snapshot.get("worker_threads", -1), "rss_kb": snapshot.get("worker_rss_kb", -1)}


def serve_budget(scopes: int, one_clone_s: float, concurrency: int) -> float:
    """Generous: every clone in rounds of the server's concurrency, twice over, plus HTTP."""
    return 60.0 + 2 * batches(scopes, concurrency) * one_clone_s + 0.05 * scopes


class OrphanClonesGate(Gate, id="orphan-clones", params=Params, thresholds=Thresholds,
                       title="bulk deletes and deletes mid-sync leave nothing behind",
                       requires=(Capability.MANY_SOURCES, Capability.RUNTIME_SOURCES, Capability.REFRESH_CALL,
                                 Capability.CACHE_STATS, Capability.SERVER_PYTHON)):

    def scenario(self, ctx: GateContext) -> None:
        p: Params = ctx.params
        ctx.require_one_worker()
        # (phase, scopes, first repo, settle): warm-up rounds first, then the judged phases.
        # Every round has repos of its own, so no scope reuses another round's clone.
        sizes = (("warm-up", p.warmup_scopes), ("warm-up mid-sync", p.warmup_mid_sync_scopes),
                 ("burst", p.scopes), ("mid-sync", p.mid_sync_scopes))
        firsts = [sum(n for _, n in sizes[:i]) for i in range(len(sizes))]
        ctx.stack.ensure_repos(sum(n for _, n in sizes))
        concurrency = ctx.knobs.git_workers or pre_fix_executor_size(ctx.stack.server.cpu_count())
        one_fetch = ctx.stack.server.clone_seconds(ctx.stack.repo_url(policy_repo_name(firsts[1]), via_latency=True))
        ctx.timeline.fact("derived", {"concurrency": concurrency, "scopes": p.scopes, "mid_sync_scopes":
                                      p.mid_sync_scopes, "one_fetch_via_proxy_s": round(one_fetch, 3)})
        for (name, count), first in zip(sizes, firsts, strict=True):
            settle = p.warmup_settle_s if name.startswith("warm-up") else p.settle_s
            repos = {f"{name.replace(' ', '-')}-{i}": policy_repo_name(first + i) for i in range(count)}
            if name.endswith("mid-sync"):
                urls = {scope: ctx.stack.repo_url(repo, via_latency=True) for scope, repo in repos.items()}
                budget = p.serve_budget_s or serve_budget(count, one_fetch, concurrency)
                delete = partial(self._delete_mid_sync, ctx, repos)
            else:
                urls = {scope: ctx.stack.repo_url(repo) for scope, repo in repos.items()}
                budget = p.serve_budget_s or serve_budget(count, p.one_clone_s, concurrency)
                delete = partial(self._delete_all, ctx, list(repos))
            if not self._phase(ctx, name, urls, budget, settle, delete):
                return

    # -- one phase ---------------------------------------------------------------------
    def _phase(self, ctx: GateContext, name: str, scopes: dict[str, str], budget: float, settle_s: float,
               delete: Callable[[], dict[str, Any]]) -> bool:
        tl = ctx.timeline
        start = self._observe(ctx, f"{name} start")
        log_start = log_size(ctx.stack.server.log())
        tl.mark("phase_start", phase=name, scopes=len(scopes))
        statuses = [ctx.client.put_scope(scope, url) for scope, url in scopes.items()]
        pending = ctx.all_served_within(list(scopes), budget, f"{name}: load")
        if pending:
            tl.fact("load_failure", f"{name}: {len(pending)} of {len(scopes)} scopes were not served within "
                                    f"{budget:.0f} s (PUT statuses {sorted(set(statuses))})")
            return False
        ctx.observe(f"{name} loaded")
        deletes = delete()
        tl.record("deletes", phase=name, **deletes)
        self._settle(ctx, name, start, settle_s)
        self._observe(ctx, f"{name} after")
        lines = read_slice(ctx.stack.server.log(), log_start)
        tl.fact(f"log {name}", [asdict(m) for m in summarize(lines)])
        tl.mark("phase_end", phase=name)
        return True

    def _observe(self, ctx: GateContext, label: str) -> dict[str, Any]:
        snapshot = ctx.observe(label)
        census = fd_census(snapshot["worker_pid"]) if snapshot.get("worker_pid") else None
        if census is not None:
            ctx.timeline.record("fds", label=label, by_kind=census.by_kind, examples=census.examples,
                                sockets_by_peer=census.sockets_by_peer, pipes_by_peer=census.pipes_by_peer,
                                peer_ports=ctx.stack.server.peer_ports())
        try:
            ctx.timeline.fact(f"clone dirs {label}", ctx.stack.server.clone_dirs())
        except CountUnavailable:
            pass  # the snapshot says why (clone_dirs_error); the checker makes it an ERROR
        return snapshot

    def _settle(self, ctx: GateContext, name: str, start: dict[str, Any], budget: float) -> None:
        """Until caches, clone dirs, fds and threads are back to the phase's start or stand
        still, at most `budget` s: a correct server may finish its purge a moment after
        answering DELETE."""
        caches = ctx.adapter.caches
        target = {k: v for k, v in _settled_figures(start, caches).items() if v is not None}
        settle(ctx.timeline, name, lambda: _settled_figures(ctx.observe(f"{name} settling"), caches), budget, target)

    # -- deleting ----------------------------------------------------------------------
    def _delete_all(self, ctx: GateContext, scopes: list[str]) -> dict[str, Any]:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=ctx.params.delete_clients) as pool:
            sent = list(pool.map(partial(_delete, ctx), scopes))
        return {"statuses": [status for _, status in sent], "seconds": round(time.monotonic() - started, 2)}

    def _delete_mid_sync(self, ctx: GateContext, repos: dict[str, str]) -> dict[str, Any]:
        """New commits pushed, refreshes asked, then each scope DELETEd as soon as the
        latency proxy shows its fetch open — the race the phase is about — and the rest when
        the deadline passes. Records the proxy's connections and each DELETE's send time."""
        clones = WorkingClones(ctx.stack.run_dir / "gitops", push_base_url(ctx.stack.published("githost").url))
        for repo in repos.values():
            clones.push_new_commit(repo)
        proxy = ctx.stack.service("latency")
        before = proxy.accepted_connections()
        ctx.timeline.mark("refresh_start")
        started = time.monotonic()
        # The refreshes go out on their own thread (a server may take a while to answer each),
        # so the first fetches are watched, and deleted, while the later refreshes are sent.
        with ThreadPoolExecutor(max_workers=1) as refresher:
            refreshing = refresher.submit(lambda: [ctx.client.refresh(scope) for scope in repos])
            ctx.timeline.mark("delete_start")
            sent = _delete_while_fetching(ctx, proxy, before, repos, refreshing, started + DELETE_DEADLINE_S)
            refreshes = refreshing.result()
        ctx.timeline.mark("delete_end")
        connections = record_connections(ctx.timeline, proxy, before)  # saved with the deletes
        return {"statuses": [sent[scope][1] for scope in repos], "seconds": round(time.monotonic() - started, 2),
                "refresh_statuses": sorted(set(refreshes)), "fetches_in_window": len(connections),
                "delete_sent_t": {scope: sent[scope][0] for scope in repos}, "repos": repos,
                "connections": connections}

    # -- judging -----------------------------------------------------------------------
    def check(self, timeline: Timeline, params: Params, thresholds: Thresholds) -> Verdict:
        if (failed := load_failure(timeline)) is not None and not _phase_data(timeline, "burst"):
            return failed
        results, problems, unraced = {}, Problems(), None
        for name in PHASES:
            data = _phase_data(timeline, name)
            if data is None:
                continue
            if (error := _phase_error(name, data)) is not None:
                return error
            if name == "mid-sync":
                unraced = _unraced(data)
            left, kinds = _leftovers(data, thresholds)
            results[name] = left
            falling = still_falling(settle_record(timeline, name))
            kinds = [kind for kind in kinds if not _falling_only(kind, falling, data["caches"])]
            if falling:
                problems.add("orphan.still_falling", f"{name}: still falling when the {params.settle_s:g} s settle ran "
                                                     "out: " + ", ".join(f"{k} {'→'.join(map(str, tail))}"
                                                                         for k, tail in falling.items()),
                             **{f"{k}_tail": tail for k, tail in falling.items()})
            for kind, text, figures in _describe(name, data, left, thresholds, kinds):
                problems.add(f"orphan.{kind}", text, **figures)
            if (batch := left.get("git_cat_file_pipes")) and batch[1] > batch[0]:
                problems.note(f"{name}: pipes to live {BATCH_PROCESS} processes {batch[0]} → {batch[1]}, not "
                              "counted as kept: GitPython's batch readers, closed when their repository objects "
                              "are collected")
            if kinds and (said := _server_said(timeline.facts.get(f"log {name}", []))):
                problems.note(f"{name}: the server said: {said}")
        if not results:
            return load_failure(timeline) or Verdict(ERROR, "no phase was recorded", "error.no_data")
        metrics = {"leftovers": results, **timeline.facts.get("derived", {}),
                   "deletes": {r["phase"]: {**{k: v for k, v in r.items() if k not in RECORD_ONLY},
                                            **({"in_flight_at_delete": in_flight_at_delete(r)} if "repos" in r else {})}
                               for r in timeline.of_kind("deletes")}}
        if not problems and (failed := load_failure(timeline)) is not None:
            return failed
        if unraced and not problems:
            return not_exercised(unraced)  # a PASS of mid-sync would claim a race that did not happen
        if unraced:
            problems.note(unraced)
        phases = ", ".join(f"{n} ({_size(timeline, n)} scopes)" for n in results)
        return problems.verdict(f"caches, clone dirs, fds of every kind, threads and RSS back to each phase's "
                                f"start after {phases}", metrics, separator=" | ")


def _delete_while_fetching(ctx: GateContext, proxy: ServiceHandle, before: int, repos: dict[str, str],
                           refreshing: Future[list[int]], deadline: float) -> dict[str, tuple[float, int | None]]:
    """DELETE each scope as soon as the proxy shows a fetch of its repo open (connections
    numbered above `before`); once the refreshes are sent and `deadline` has passed, the
    rest. scope -> (when its DELETE was sent, its status)."""
    futures: dict[str, Future[tuple[float, int | None]]] = {}
    with ThreadPoolExecutor(max_workers=ctx.params.delete_clients) as pool:
        while len(futures) < len(repos):
            fetching = {c.repo.strip("/").removesuffix(".git") for c in listener_connections(proxy)
                        if c.number > before and c.repo and c.closed_at is None}
            late = refreshing.done() and time.monotonic() >= deadline
            for scope, repo in repos.items():
                if scope not in futures and (late or repo in fetching):
                    futures[scope] = pool.submit(_delete, ctx, scope)
            time.sleep(0.05)
    return {scope: future.result() for scope, future in futures.items()}


def _delete(ctx: GateContext, scope: str) -> tuple[float, int | None]:
    """(when the DELETE was sent, on the timeline's clock; its status, None if it failed)."""
    sent_t = ctx.timeline.now()
    try:
        return sent_t, ctx.client.fresh(timeout=max(30.0, ctx.client.timeout)).delete_scope(scope)
    except Exception:  # a refused or dropped request is a recorded outcome
        return sent_t, None


def in_flight_at_delete(deletes: dict[str, Any]) -> int:
    """Scopes whose repo had a fetch open at the proxy (accepted, not closed) when their
    DELETE was sent."""
    connections, sent_t = deletes.get("connections") or [], deletes.get("delete_sent_t") or {}
    count = 0
    for scope, repo in (deletes.get("repos") or {}).items():
        mine = [c for c in connections if c.get("repo") and c["repo"].strip("/").removesuffix(".git") == repo]
        if scope in sent_t and open_at(mine, sent_t[scope]):
            count += 1
    return count


# settle figure(s) behind each kind of leftover ("caches": every cache the server names)
KIND_FIGURES: dict[str, tuple[str, ...]] = {"clone_dirs_kept": ("clone_dirs",), "fds_kept": ("fds",),
                                             "threads_kept": ("threads",)}


def _falling_only(kind: str, falling: dict[str, list[int]], caches: tuple[str, ...]) -> bool:
    """A leftover whose figures were all still going down: "still falling", not kept."""
    figures = caches if kind == "caches_kept" else KIND_FIGURES.get(kind, ())
    return bool(figures) and all(f in falling for f in figures)


def _size(timeline: Timeline, phase: str) -> int:
    event = next((e for e in timeline.events if e["name"] == "phase_start" and e["phase"] == phase), {})
    return event.get("scopes", 0)


def _phase_data(timeline: Timeline, phase: str) -> dict[str, Any] | None:
    snaps = {s["label"]: s for s in timeline.of_kind("snapshot")}
    fds = {s["label"]: s for s in timeline.of_kind("fds")}
    deletes = next((r for r in timeline.of_kind("deletes") if r["phase"] == phase), None)
    start, after = snaps.get(f"{phase} start"), snaps.get(f"{phase} after")
    if start is None or after is None or deletes is None:
        return None
    return {"start": start, "after": after, "loaded": snaps.get(f"{phase} loaded"), "deletes": deletes,
            "fds_start": fds.get(f"{phase} start"), "fds_after": fds.get(f"{phase} after"),
            "dirs_after": timeline.facts.get(f"clone dirs {phase} after", []),
            "dirs_start": timeline.facts.get(f"clone dirs {phase} start", []), "size": _size(timeline, phase),
            "caches": cache_names(timeline), "caches_on_load": cache_names(timeline, on_load=True)}


def _phase_error(name: str, data: dict[str, Any]) -> Verdict | None:
    """ERROR when the phase did not put the server under the condition it judges."""
    for label in ("start", "loaded", "after"):
        if data[label] is None or "stats_error" in data[label]:
            detail = (data[label] or {}).get("stats_error", "no snapshot")
            return Verdict(ERROR, f"{name}: the stats endpoint failed at {label}: {detail}", "error.no_stats")
    short = [c for c in data["caches_on_load"] if data["loaded"][c] < data["start"][c] + data["size"]]
    if short:
        seen = ", ".join(f"{c} {data['loaded'][c]} (start {data['start'][c]})" for c in short)
        return Verdict(ERROR, f"{name}: with {data['size']} scopes served the stats showed {seen}: the stats "
                              "endpoint does not see the caches the server fills", "error.caches_not_filled")
    bad = [s for s in data["deletes"]["statuses"] if s not in (200, 202, 204)]
    if bad:
        return Verdict(ERROR, f"{name}: {len(bad)} of {len(data['deletes']['statuses'])} DELETEs failed "
                              f"(statuses {sorted(set(bad), key=str)}): nothing to judge", "error.delete_failed")
    if name == "mid-sync" and not data["deletes"].get("fetches_in_window"):
        return Verdict(ERROR, "mid-sync: no fetch reached the git host between the refreshes and the end of "
                              "the deletes: no delete raced a sync", "error.no_overlap")
    for label in ("start", "loaded", "after"):
        if data[label].get("clone_dirs_error"):
            return Verdict(ERROR, f"{name}: the clone dirs could not be counted at {label}: "
                                  f"{data[label]['clone_dirs_error']}", "error.count_unavailable")
    if data["loaded"]["clone_dirs"] <= data["start"]["clone_dirs"]:
        return Verdict(ERROR, f"{name}: with {data['size']} scopes served the clone-dir count stayed at "
                              f"{data['loaded']['clone_dirs']} (start {data['start']['clone_dirs']}): it does not "
                              "see the server's clones, so their removal would prove nothing",
                       "error.count_unavailable")
    if data["fds_start"] is None or data["fds_after"] is None:
        return Verdict(ERROR, f"{name}: the worker's fds could not be read", "error.no_data")
    return None


def _unraced(data: dict[str, Any]) -> str | None:
    """Why the mid-sync phase's deletes did not race a sync (fewer than half of its scopes
    had a fetch in flight when their DELETE was sent), or None."""
    if without_detail(data["deletes"].get("connections") or []):
        return f"mid-sync: whether the deletes raced a fetch is unknown: {OLD_LISTENER}"
    raced = in_flight_at_delete(data["deletes"])
    if raced * 2 >= data["size"]:
        return None
    return (f"mid-sync: only {raced} of {data['size']} scopes had a fetch in flight at the proxy when their DELETE "
            f"was sent ({data['deletes'].get('fetches_in_window')} fetches through it): fewer than half of the "
            "deletes raced a sync")


def _leftovers(data: dict[str, Any], th: Thresholds) -> tuple[dict[str, Any], list[str]]:
    """What the phase left above its start, and the failure kinds in order of weight."""
    start, after = _counts(data["start"], data["caches"]), _counts(data["after"], data["caches"])
    caches = {c: after[c] - start[c] for c in data["caches"] if after[c] - start[c] > th.cache_tolerance}
    dirs = after["clone_dirs"] - start["clone_dirs"]
    fd_start, fd_after = data["fds_start"]["by_kind"], data["fds_after"]["by_kind"]
    batch_pipes = [_batch_process_pipes(data["fds_start"]), _batch_process_pipes(data["fds_after"])]
    grew = {k: fd_after.get(k, 0) - fd_start.get(k, 0) - (batch_pipes[1] - batch_pipes[0] if k == "pipe" else 0)
            for k in set(fd_start) | set(fd_after)}
    fds = {k: n for k, n in grew.items() if n > th.fd_tolerance}
    threads = after["threads"] - start["threads"]
    rss_bound = start["rss_kb"] + data["size"] * th.rss_kb_per_scope + th.rss_floor_kb
    left = {"caches": caches, "clone_dirs": dirs, "fds": fds, "threads": threads,
            "rss_kb": [start["rss_kb"], after["rss_kb"]], "rss_bound_kb": round(rss_bound),
            **({"git_cat_file_pipes": batch_pipes} if any(batch_pipes) else {})}
    kinds = [kind for kind, bad in (
        ("caches_kept", bool(caches)), ("clone_dirs_kept", dirs > th.clone_dir_tolerance), ("fds_kept", bool(fds)),
        ("threads_kept", threads > th.thread_tolerance), ("rss_grew", after["rss_kb"] > rss_bound)) if bad]
    return left, kinds


def _describe(name: str, data: dict[str, Any], left: dict[str, Any], th: Thresholds,
              kinds: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, sentence, figures) for each kind the phase left over its tolerance — every
    one of them, so a fixed socket leak or a new clone-dir leak shows whatever else is kept."""
    where = f"{name} ({data['size']} DELETEs in {data['deletes']['seconds']:g} s)"
    found: list[tuple[str, str, dict[str, Any]]] = []
    for kind in kinds:
        if kind == "caches_kept":
            found.append((kind, f"{where}: caches kept " + ", ".join(f"{c} +{n}" for c, n in left["caches"].items()),
                          {f"{c}_kept": n for c, n in left["caches"].items()}))
        elif kind == "clone_dirs_kept":
            new_dirs = sorted(set(data["dirs_after"]) - set(data["dirs_start"]))[:2]
            found.append((kind, f"{where}: {left['clone_dirs']} of {data['size']} clone dirs stayed on disk "
                                f"(e.g. {', '.join(new_dirs)})", {"clone_dirs_kept": left["clone_dirs"]}))
        elif kind == "fds_kept":
            found.append((kind, f"{where}: fds kept " + ", ".join(f"{k} +{n}" for k, n in sorted(left["fds"].items()))
                          + _socket_peers(data) + _pipe_peers(data),
                          {f"{k}_kept": n for k, n in left["fds"].items()}))
        elif kind == "threads_kept":
            found.append((kind, f"{where}: threads +{left['threads']}", {"threads_kept": left["threads"]}))
        elif kind == "rss_grew":
            start_rss, after_rss = left["rss_kb"]
            found.append((kind, f"{where}: RSS {start_rss // 1024}→{after_rss // 1024} MB "
                                f"(bound {left['rss_bound_kb'] // 1024} MB)", {"rss_kb_grew": after_rss - start_rss}))
    return found


def _batch_process_pipes(census: dict[str, Any]) -> int:
    """The census's pipes to live `git cat-file` children: the batch processes GitPython
    keeps for a repository object until the object is collected. Left out of the pipes a
    phase kept, on both sides: both releases' come and go with the collector (0.9.6: 78 pipes
    to them at mid-sync's start, 9 at its end; 0.9.9: the warm-up's two gone by the burst's
    end), so counted they made the problem set a matter of when the collector last ran."""
    return sum(n for peer, n in census.get("pipes_by_peer", {}).items() if peer.startswith(f"{BATCH_PROCESS} "))


def _server_said(log: list[dict[str, Any]]) -> str:
    """The server's own warnings of the phase, counted by message (the two commonest)."""
    return "; ".join(f"{m['count']}× {m['level']} {m['module']}: \"{m['example'][:160]}\"" for m in log[:2])


def _grown(before: dict[str, int], after: dict[str, int]) -> list[tuple[int, str]]:
    return sorted(((after[k] - before.get(k, 0), k) for k in after if after[k] > before.get(k, 0)), reverse=True)


def _pipe_peers(data: dict[str, Any]) -> str:
    """' (pipes to git fetch (pid 4242) +2)' — which processes hold the other ends of kept pipes
    (git's batch readers are not counted as kept, so not named)."""
    grown = [(n, peer) for n, peer in _grown(data["fds_start"].get("pipes_by_peer", {}),
                                             data["fds_after"].get("pipes_by_peer", {}))
             if not peer.startswith(f"{BATCH_PROCESS} ")]
    return f" (pipes to {'; '.join(f'{peer} +{n}' for n, peer in grown[:3])})" if grown else ""


def _socket_peers(data: dict[str, Any]) -> str:
    """' (sockets to 127.0.0.1:6379 redis ESTABLISHED +180)' — whom the kept sockets talk to."""
    grown = _grown(data["fds_start"].get("sockets_by_peer", {}), data["fds_after"].get("sockets_by_peer", {}))
    ports = {int(k): v for k, v in (data["fds_after"].get("peer_ports") or {}).items()}
    if not grown:
        return ""
    named = []
    for count, peer in grown[:3]:
        port = peer.split(" ")[0].rsplit(":", 1)[-1]
        service = ports.get(int(port)) if port.isdigit() else None
        named.append(f"{peer}{f' ({service})' if service else ''} +{count}")
    return f" (sockets to {'; '.join(named)})"
