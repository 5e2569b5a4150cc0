"""What counts as served: a scope's own bundle, never any 200 (harness/heads.py and the
served checks of harness/gates/base.py, with a fake server that answers like OPAL 0.9.9 with
a `default` scope stored)."""

from __future__ import annotations

import subprocess
import time
from types import SimpleNamespace

from harness import seed
from harness.gates.base import DEFAULT_SCOPE_REPO, GateContext, Poller, foreign_answers
from harness.gates.offline_repo import OfflineRepoGate
from harness.gates.offline_repo import Thresholds as OfflineThresholds
from harness.heads import FOREIGN, NOT_200, OWN, STALE, UNKNOWN_SCOPE, RepoHeads, ScopeBook, repo_of
from harness.runner.run import build_settings, judge
from harness.servers.base import ServerKnobs
from harness.servers.opal import PolicyResult
from harness.timeline import Timeline

DEFAULT_HEAD = seed.seeded_head(DEFAULT_SCOPE_REPO)


def _book(host: dict[str, str] | None = None, asked: list[str] | None = None) -> ScopeBook:
    def host_head(repo: str) -> str | None:
        if asked is not None:
            asked.append(repo)
        return (host or {}).get(repo)
    return ScopeBook(RepoHeads(host_head))


def test_the_seeded_head_is_the_commit_git_finds_in_the_seeded_repo(tmp_path):
    seed.seed(tmp_path, 2)
    for name in ("policy-0000", "policy-0001", "probe-3"):
        out = subprocess.run(["git", f"--git-dir={tmp_path / f'{name}.git'}", "rev-parse", "refs/heads/main"],
                             capture_output=True, text=True, check=True).stdout.strip()
        assert seed.seeded_head(name) == out
    assert seed.seeded_head("policy-0000") != seed.seeded_head("policy-0001")


def test_the_repo_of_a_url_is_the_same_through_the_host_the_proxy_and_the_front():
    assert {repo_of("git://127.0.0.1:9418/policy-0031.git"), repo_of("git://latency:9418/policy-0031.git"),
            repo_of("http://127.0.0.1:8080/policy-0031.git"), repo_of("http://githost:3000/harness/policy-0031.git")
            } == {"policy-0031"}


def test_a_200_with_the_default_scopes_bundle_is_not_served_and_says_whose_it_is():
    book = _book()
    book.given("default", f"git://h/{DEFAULT_SCOPE_REPO}.git")
    book.given("after", "git://h/policy-0032.git")
    judged = book.judge("after", 200, DEFAULT_HEAD)
    assert (judged.kind, judged.served) == (FOREIGN, False)
    assert judged.bundle_of == f"repo {DEFAULT_SCOPE_REPO} (scope default)"
    assert "200 with another bundle" in judged.describe() and DEFAULT_HEAD[:10] in judged.describe()


def test_the_scopes_own_seeded_head_is_served_without_asking_the_host():
    asked: list[str] = []
    book = _book(asked=asked)
    book.given("s", "git://h/policy-0007.git")
    assert book.judge("s", 200, seed.seeded_head("policy-0007")).kind == OWN
    assert asked == []


def test_a_head_pushed_by_an_earlier_gate_is_learned_once_from_the_host():
    asked: list[str] = []
    book = _book({"policy-0040": "c0ffee" * 6 + "abcd"}, asked)
    book.given("w", "git://h/policy-0040.git")
    assert book.judge("w", 200, "c0ffee" * 6 + "abcd").kind == OWN
    assert book.judge("w", 200, "c0ffee" * 6 + "abcd").kind == OWN
    # the seeded commit is now an older head of its own repo: stale, not served
    assert book.judge("w", 200, seed.seeded_head("policy-0040")).kind == STALE
    assert book.judge("w", 200, seed.seeded_head("policy-0040")).kind == STALE
    assert asked == ["policy-0040", "policy-0040"]  # once per hash seen, not per answer


def test_a_foreign_hash_is_checked_against_the_host_once_not_per_poll():
    asked: list[str] = []
    book = _book({"policy-0032": seed.seeded_head("policy-0032")}, asked)
    book.given("default", f"git://h/{DEFAULT_SCOPE_REPO}.git")
    book.given("after", "git://h/policy-0032.git")
    for _ in range(50):
        assert book.judge("after", 200, DEFAULT_HEAD).kind == FOREIGN
    assert asked == ["policy-0032"]


def test_no_answer_or_a_scope_the_harness_never_stored_is_never_served():
    book = _book()
    assert book.judge("nobody", 200, DEFAULT_HEAD).kind == UNKNOWN_SCOPE
    book.given("s", "git://h/policy-0001.git")
    assert book.judge("s", 503, None).kind == NOT_200
    assert book.judge("s", None, None).kind == NOT_200


# -- the gates' served checks, against a server that answers the default's bundle ------------

class _DefaultAnsweringClient:
    """OPAL 0.9.9 with a `default` scope stored: 200 and the default's bundle for any scope
    it does not know; its own bundle for the scopes in `own`."""

    base_url = "http://127.0.0.1:1"

    def __init__(self, own: dict[str, str]):
        self.own = own

    def get_policy(self, scope_id: str, timeout: float | None = None) -> PolicyResult:
        return PolicyResult(200, 0.01, hash=self.own.get(scope_id, DEFAULT_HEAD))

    def healthy(self, timeout: float = 2.0) -> bool:
        return True

    def fresh(self, timeout: float | None = None) -> _DefaultAnsweringClient:
        return self


def _context(client: _DefaultAnsweringClient) -> GateContext:
    book = _book()
    stack = SimpleNamespace(client=client, book=book, server=SimpleNamespace(knobs=ServerKnobs),
                            settings=SimpleNamespace(server="opal"))
    ctx = GateContext(stack, Timeline("offline-repo"), params=None)  # type: ignore[arg-type]
    book.given("default", f"git://h/{DEFAULT_SCOPE_REPO}.git")
    return ctx


def test_served_within_does_not_take_the_default_scopes_bundle_for_a_lost_put():
    ctx = _context(_DefaultAnsweringClient({}))
    ctx.book.given("after", "git://h/policy-0032.git")  # PUT, and lost by the server
    assert ctx.served_within("after", 0.8, "PUT after the bounce") is None
    mark = ctx.timeline.event("not_served")
    assert mark["wrong_content"] == DEFAULT_HEAD and "scope default" in mark["bundle_of"]
    assert ctx.all_served_within(["after"], 0.8, "window") == ["after"]
    assert ctx.timeline.event("not_all_served")["wrong_content_count"] == 1


def test_served_within_serves_the_scopes_own_bundle():
    ctx = _context(_DefaultAnsweringClient({"s": seed.seeded_head("policy-0001")}))
    ctx.book.given("s", "git://h/policy-0001.git")
    assert ctx.served_within("s", 2.0, "load") is not None
    assert ctx.all_served_within(["s"], 2.0, "load") == []


def test_a_poll_answered_with_the_default_bundle_counts_as_stalled_and_the_fail_says_so(monkeypatch):
    """offline-repo on a server that lost its loaded scope but has a default: every poll is a
    200, none is the loaded scope's own bundle, and the FAIL names whose bundle it was."""
    client = _DefaultAnsweringClient({})  # its fresh() is itself: the poller's own client
    ctx = _context(client)
    ctx.book.given("loaded", "git://h/policy-0000.git")
    tl = ctx.timeline
    tl.fact("params", {})
    tl.fact("derived", {"dead_remotes": 12, "new_scope_budget_s": 30.0, "budget_how": "30 s"})
    tl.fact("blackhole_connections", 12)
    tl.fact("new_scope_served_s", 1.0)
    with Poller(ctx, "loaded", interval=0.05, timeout=1.0):
        time.sleep(0.4)
    polls = tl.of_kind("poll")
    assert polls and all(p["status"] == 200 and not p["ok"] for p in polls)
    gate = OfflineRepoGate()
    verdict = judge(gate, tl, build_settings(gate.params_type, {}, gate.id), OfflineThresholds())
    assert (verdict.verdict, verdict.category) == ("fail", "offline.loaded_scope_stalled")
    assert "answered 200 with another bundle" in verdict.reason and "scope default" in verdict.reason
    assert foreign_answers(tl)


def test_harness_default_scope_switches_the_default_scope_on():
    from harness import config
    assert config.from_env({"HARNESS_DEFAULT_SCOPE": "1"}).default_scope is True
    assert config.from_env({}).default_scope is False
