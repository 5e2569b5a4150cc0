"""The orphan-clones checker on synthetic timelines, and the probes it reads (real fds,
real log lines): both outcomes, each leftover kind named with counts and the server's words."""

import os
import socket

from harness.fds import fd_census, fd_kind
from harness.gates.orphan_clones import OrphanClonesGate, Thresholds
from harness.runner.run import build_settings
from harness.serverlog import summarize, template
from harness.timeline import Timeline


def check(gate, timeline, thresholds):
    """Judge as the runner does: with the parameters the timeline was recorded with."""
    return gate.check(timeline, build_settings(gate.params_type, timeline.facts.get("params", {}), gate.id),
                      thresholds)


SIBLING = ("Local sibling check for 0a1b2c3d4e5f60718293a4b5c6d7e8f9-0 failed after deleting scope orphan-3; "
           "keeping this worker's clone (it stays until PER-15612's sweep lands): TimeoutError()")


def _snap(tl, label, caches, dirs, threads=20, rss=90_000, fds=50):
    tl.record("snapshot", label=label, repo_locks=caches, repos=caches, repos_last_fetched=caches,
              clone_dirs=dirs, worker_threads=threads, worker_rss_kb=rss, worker_fds=fds, worker_pid=7)


def _fds(tl, label, sockets=10, pipes=4, files=30, redis=5):
    tl.record("fds", label=label, by_kind={"socket": sockets, "pipe": pipes, "file": files},
              examples={"socket": ["socket:[1]"]}, peer_ports={"6379": "redis"},
              sockets_by_peer={"127.0.0.1:6379 ESTABLISHED": redis, "listening LISTEN": 1})


def _phase(tl, name, size, after_caches=0, after_dirs=0, after_sockets=10, after_redis=5, after_threads=20,
           after_rss=95_000, statuses=None, fetches=10, raced=None):
    tl.mark("phase_start", phase=name, scopes=size)
    _snap(tl, f"{name} start", 0, 0)
    _fds(tl, f"{name} start")
    tl.fact(f"clone dirs {name} start", [])
    _snap(tl, f"{name} loaded", size, size)
    deletes = {"statuses": statuses or [204] * size, "seconds": 12.5}
    if name == "mid-sync":
        deletes.update(fetches_in_window=fetches, **_mid_sync_race(size, size if raced is None else raced))
    tl.record("deletes", phase=name, **deletes)
    _snap(tl, f"{name} after", after_caches, after_dirs, threads=after_threads, rss=after_rss)
    _fds(tl, f"{name} after", sockets=after_sockets, redis=after_redis)
    tl.fact(f"clone dirs {name} after", [f"dir-{i}" for i in range(after_dirs)])
    tl.fact(f"log {name}", [{"template": "Local sibling check for <hex> failed ...", "count": after_dirs,
                             "level": "WARNING", "module": "opal_server.scopes.service", "example": SIBLING}]
            if after_dirs else [])


def _mid_sync_race(size, raced):
    """Every scope's DELETE sent at 10 s; the first `raced` had their fetch open then, the
    rest had finished theirs before (accepted 9.0, closed 9.2)."""
    repos = {f"mid-sync-{i}": f"policy-{i:04d}" for i in range(size)}
    connections = [{"n": i + 1, "accepted_t": 9.5 if i < raced else 9.0, "closed_t": 10.5 if i < raced else 9.2,
                    "repo": f"/{repo}.git"} for i, repo in enumerate(repos.values())]
    return {"repos": repos, "delete_sent_t": {scope: 10.0 for scope in repos}, "connections": connections}


def test_passes_when_every_phase_returns_to_its_start():
    tl = Timeline("orphan-clones")
    _phase(tl, "burst", 500)
    _phase(tl, "mid-sync", 50)
    verdict = check(OrphanClonesGate(), tl, Thresholds())
    assert verdict.verdict == "pass", verdict.reason
    assert "burst (500 scopes), mid-sync (50 scopes)" in verdict.reason


def test_names_every_leftover_per_phase_with_the_servers_own_words():
    tl = Timeline("orphan-clones")
    _phase(tl, "burst", 500, after_dirs=328, after_sockets=346, after_redis=341, after_threads=24)
    _phase(tl, "mid-sync", 50)
    verdict = check(OrphanClonesGate(), tl, Thresholds())
    assert (verdict.verdict, verdict.category) == ("fail", "orphan.clone_dirs_kept")
    assert "328 of 500 clone dirs stayed on disk (e.g. dir-0, dir-1)" in verdict.reason
    assert "fds kept socket +336 (sockets to 127.0.0.1:6379 ESTABLISHED (redis) +336)" in verdict.reason
    assert "threads" not in verdict.reason  # +4 is within the tolerance
    assert '328× WARNING opal_server.scopes.service: "Local sibling check for' in verdict.reason
    assert verdict.metrics["leftovers"]["burst"]["clone_dirs"] == 328


def test_kept_cache_entries_weigh_first():
    tl = Timeline("orphan-clones")
    _phase(tl, "burst", 500, after_caches=500, after_dirs=500)
    verdict = check(OrphanClonesGate(), tl, Thresholds())
    assert verdict.category == "orphan.caches_kept" and "repo_locks +500" in verdict.reason


def test_rss_is_judged_against_a_bound_derived_from_the_start():
    tl = Timeline("orphan-clones")
    _phase(tl, "burst", 500, after_rss=90_000 * 3)
    verdict = check(OrphanClonesGate(), tl, Thresholds(rss_kb_per_scope=100, rss_floor_kb=0))
    assert verdict.category == "orphan.rss_grew" and "RSS 87→263 MB (bound 136 MB)" in verdict.reason


def test_errors_when_nothing_raced_or_deletes_failed_or_caches_never_filled():
    tl = Timeline("orphan-clones")
    _phase(tl, "burst", 500)
    _phase(tl, "mid-sync", 50, fetches=0)
    assert check(OrphanClonesGate(), tl, Thresholds()).category == "error.no_overlap"
    tl = Timeline("orphan-clones")
    _phase(tl, "burst", 5, statuses=[204, 204, 500, 204, None])
    assert check(OrphanClonesGate(), tl, Thresholds()).category == "error.delete_failed"
    tl = Timeline("orphan-clones")
    _phase(tl, "burst", 5)
    tl.samples[2]["repos"] = 0  # "burst loaded"
    assert check(OrphanClonesGate(), tl, Thresholds()).category == "error.caches_not_filled"


def test_a_failed_load_is_an_error():
    tl = Timeline("orphan-clones")
    tl.fact("load_failure", "burst: 12 of 500 scopes were not served within 110 s")
    verdict = check(OrphanClonesGate(), tl, Thresholds())
    assert (verdict.verdict, verdict.category) == ("error", "error.load")


def test_a_pipe_to_a_git_child_names_its_subcommand(tmp_path):
    import subprocess

    from harness.fds import _git_subcommand
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    child = subprocess.Popen(["git", "-C", str(tmp_path), "-c", "core.quotePath=false", "cat-file", "--batch-check"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        census = fd_census(os.getpid())
        assert census.pipes_by_peer.get(f"git cat-file (pid {child.pid})") == 2  # its stdin and stdout
    finally:
        child.communicate(b"")
    assert _git_subcommand(["--no-pager", "-C", "/x", "fetch", "origin"]) == "fetch"
    assert _git_subcommand(["--version"]) is None


def test_fd_census_counts_kinds_and_names_tcp_peers():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.create_connection(server.getsockname())
    read_end, write_end = os.pipe()
    try:
        census = fd_census(os.getpid())
        port = server.getsockname()[1]
        assert census.by_kind["socket"] >= 2 and census.by_kind["pipe"] >= 2
        assert census.sockets_by_peer.get(f"127.0.0.1:{port} ESTABLISHED", 0) >= 1
        assert census.sockets_by_peer.get("listening LISTEN", 0) >= 1
    finally:
        for fd in (read_end, write_end):
            os.close(fd)
        client.close()
        server.close()
    assert [fd_kind(t) for t in ("socket:[1]", "pipe:[2]", "anon_inode:[eventfd]", "/dev/null", "/x/y")] == [
        "socket", "pipe", "anon_inode:eventfd", "dev", "file"]


def test_server_log_lines_are_counted_by_message_with_ids_folded():
    line = "2026-11-23T16:28:52.091959+0000 | 8011 | opal_server.scopes.service | WARNING | {}"
    lines = [line.format(SIBLING.replace("orphan-3", f"orphan-{i}")) for i in range(3)]
    lines.append(line.format("Could not clone repo at git://127.0.0.1:4242/dead-0001.git: TimeoutError()"))
    lines.append(line.replace("WARNING", "INFO").format("fetched"))
    [first, second] = summarize(lines)
    assert (first.count, first.level, first.module) == (3, "WARNING", "opal_server.scopes.service")
    assert "orphan-<id>" not in first.template and "<hex>" in first.template
    assert second.template == "Could not clone repo at <url> TimeoutError()"
    assert template("keeping clone /tmp/a/b/c for scope s-12") == "keeping clone <path> for scope <id>"


def _pipes_after(tl, phase, peers):
    """The phase's after-census with `peers` ({"git cat-file (pid 9)": 3, ...}) added."""
    censuses = {s["label"]: s for s in tl.samples if s.get("kind") == "fds"}
    censuses[f"{phase} start"]["pipes_by_peer"] = {"none (own pipe)": 4}
    censuses[f"{phase} after"]["by_kind"]["pipe"] = 4 + sum(peers.values())
    censuses[f"{phase} after"]["pipes_by_peer"] = {"none (own pipe)": 4, **peers}


def test_pipes_to_git_s_batch_readers_are_noted_not_kept_but_a_fetch_s_are_kept():
    tl = Timeline("orphan-clones")
    _phase(tl, "burst", 500)
    _phase(tl, "mid-sync", 50)
    _pipes_after(tl, "mid-sync", {"git cat-file (pid 18323)": 3, "git cat-file (pid 18140)": 3})
    verdict = check(OrphanClonesGate(), tl, Thresholds())
    assert verdict.verdict == "pass", verdict.reason  # 0.9.9's serial bench run read these as +6 pipes kept
    assert verdict.metrics["leftovers"]["mid-sync"]["git_cat_file_pipes"] == [0, 6]

    _pipes_after(tl, "mid-sync", {"git cat-file (pid 18323)": 3, "git fetch (pid 18400)": 3,
                                  "git fetch (pid 18401)": 3})
    verdict = check(OrphanClonesGate(), tl, Thresholds())
    assert (verdict.verdict, verdict.category) == ("fail", "orphan.fds_kept")
    assert "fds kept pipe +6 (pipes to git fetch (pid 18401) +3; git fetch (pid 18400) +3)" in verdict.reason
    assert "mid-sync: pipes to live git cat-file processes 0 → 3, not counted as kept" in verdict.reason


def test_batch_readers_gone_by_the_end_do_not_hide_pipes_kept_to_others():
    tl = Timeline("orphan-clones")
    _phase(tl, "burst", 500)
    _phase(tl, "mid-sync", 50)
    _pipes_after(tl, "mid-sync", {"git fetch (pid 18400)": 3, "git fetch (pid 18401)": 3})
    start = next(s for s in tl.samples if s.get("kind") == "fds" and s["label"] == "mid-sync start")
    start["by_kind"]["pipe"] += 15  # five batch readers at the start, collected during the phase
    start["pipes_by_peer"] = {"none (own pipe)": 4, **{f"git cat-file (pid {n})": 3 for n in range(5)}}
    verdict = check(OrphanClonesGate(), tl, Thresholds())
    assert (verdict.verdict, verdict.category) == ("fail", "orphan.fds_kept")  # the net count fell by 9
    assert "fds kept pipe +6" in verdict.reason and "cat-file processes" not in verdict.reason
