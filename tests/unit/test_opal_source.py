"""The OPAL policy source's own logic on a bare repo in a temp dir (no server): the nonce is
the head the harness pushed, every push tells its hook, the tree stays in OPAL's layout; and
the bad-policy checker's reading of a commit nonce on synthetic timelines. What the real
server serves is proven in tests/integration/test_opal_source.py and the gate runs."""

from __future__ import annotations

import subprocess

import pytest

from harness.errors import HarnessError
from harness.gates.bad_policy import BAD, BadPolicyGate
from harness.gates.bad_policy import Thresholds as BadThresholds
from harness.runner.run import build_settings
from harness.seed import seeded_head
from harness.servers.opal.source import OpalSource, bad_rego, package_of
from harness.timeline import Timeline


def _source(tmp_path, name="src-unit", pushes=None):
    source = OpalSource(name, tmp_path / "repos", tmp_path / "work", front_url=f"http://127.0.0.1:1/{name}.git",
                        dead_url="git://127.0.0.1:2/dead-0001.git")
    if pushes is not None:
        source.on_push = pushes.append
    return source


def _host_head(source) -> str:
    return subprocess.run(["git", f"--git-dir={source.bare}", "rev-parse", "refs/heads/main"], capture_output=True,
                          text=True, check=True).stdout.strip()


def _host_files(source) -> set[str]:
    out = subprocess.run(["git", f"--git-dir={source.bare}", "ls-tree", "--name-only", "main"], capture_output=True,
                         text=True, check=True).stdout
    return set(out.split())


def test_a_new_source_is_the_seeded_repo_and_its_nonce_is_the_seeded_head(tmp_path):
    pushes: list[str] = []
    source = _source(tmp_path, pushes=pushes).create()
    assert source.nonce == source.head() == _host_head(source) == seeded_head("src-unit")
    assert _host_files(source) == {"data.json", "policy.rego"}
    assert pushes == []  # nothing pushed: the seeded head is what the server clones
    assert source.nonce_names == "commit"


def test_every_change_returns_the_new_head_pushed_and_tells_the_hook(tmp_path):
    pushes: list[str] = []
    source = _source(tmp_path, pushes=pushes).create()
    first = source.nonce
    changed = source.commit()
    bad, content = source.bad_file("aaa")
    beside = source.commit_files({bad: content}, "bad")
    other, other_content = source.other_file("zzz_elsewhere")
    elsewhere = source.commit_files({other: other_content}, "elsewhere", new_nonce=False)
    fixed = source.commit_files({bad: None}, "fix", new_nonce=False)
    shas = [changed, beside, elsewhere, fixed]
    assert len({first, *shas}) == 5  # a commit is a new nonce, with or without new data
    assert pushes == shas and source.nonce == fixed == _host_head(source)
    assert _host_files(source) == {"data.json", "policy.rego", "zzz_elsewhere.rego"}


def test_a_commit_that_changes_nothing_is_still_a_new_nonce(tmp_path):
    source = _source(tmp_path).create()
    before = source.nonce
    assert source.commit_files({}, "nothing", new_nonce=False) != before


def test_force_push_rewrites_the_last_commit(tmp_path):
    pushes: list[str] = []
    source = _source(tmp_path, pushes=pushes).create()
    pushed = source.commit()
    rewritten = source.force_push()
    assert rewritten != pushed and _host_head(source) == rewritten and pushes == [pushed, rewritten]
    ancestry = subprocess.run(["git", f"--git-dir={source.bare}", "merge-base", "--is-ancestor", pushed, rewritten],
                              check=False)
    assert ancestry.returncode != 0  # the old head is no ancestor of the new one


def test_filler_policies_come_in_one_pushed_commit(tmp_path):
    pushes: list[str] = []
    source = _source(tmp_path, pushes=pushes).create(policies=3)
    assert pushes == [source.nonce]
    assert {"filler_0000.rego", "filler_0002.rego"} <= _host_files(source)


def test_a_source_is_made_once(tmp_path):
    _source(tmp_path).create()
    with pytest.raises(HarnessError, match="exists already"):
        _source(tmp_path).create()


def test_urls_front_and_dead(tmp_path):
    source = _source(tmp_path)
    assert source.url() == "http://127.0.0.1:1/src-unit.git"
    assert source.url("dead") == "git://127.0.0.1:2/dead-0001.git"


def test_the_bad_file_sorts_first_and_never_closes_and_other_files_are_new_each_time(tmp_path):
    source = _source(tmp_path)
    assert source.bad_file("aaa") == ("aaa.rego", bad_rego())
    assert bad_rego().count("{") > bad_rego().count("}")
    one, two = source.other_file("zzz_elsewhere"), source.other_file("zzz_elsewhere")
    assert one[0] == two[0] == "zzz_elsewhere.rego" and one[1] != two[1]
    assert "package harness.zzz_elsewhere" in one[1]
    assert package_of("9-x.y") == "p_9_x_y"


# -- the bad-policy checker with a commit nonce -------------------------------------------------
def _bad_policy_timeline(names: str, while_bad: list[str], after: str | None) -> Timeline:
    tl = Timeline("bad-policy")
    tl.fact("params", {})
    tl.fact("budget", {"seconds": 15.0, "how": "15 s (poll 0 s + operation timeout 10 s + slack 5 s)"})
    tl.fact("good_nonce", "good")
    tl.fact("nonce_names", names)
    tl.fact("bad_file", "aaa.rego")
    tl.fact("beside_bad_nonce", "beside")
    tl.fact("elsewhere_nonce", "elsewhere")
    for nonce in while_bad:
        tl.record("answer", label=BAD, nonce=nonce, status=200, healthy=True, seconds=0.01, error="")
    tl.fact("fix_nonce", "fix")
    if after is not None:
        tl.mark("served", label="after the fix", nonce=after, seconds=0.3, budget=15.0)
    else:
        tl.mark("not_served", label="after the fix", nonce="fix", seconds=None, budget=15.0,
                last={"nonce": "good", "status": 200, "healthy": True, "seconds": 0.01, "error": ""})
    return tl


def _check(tl):
    gate = BadPolicyGate()
    return gate.check(tl, build_settings(gate.params_type, {}, gate.id), BadThresholds())


def test_a_commit_nonce_with_the_bad_file_is_not_kept():
    verdict = _check(_bad_policy_timeline("commit", ["good", "beside", "elsewhere"], "fix"))
    assert verdict.verdict == "fail" and verdict.category == "bad_policy.not_kept"
    assert "2 of 3 answers" in verdict.reason and "the unparsable file served" in verdict.reason


def test_a_commit_nonce_kept_at_the_last_good_commit_passes():
    verdict = _check(_bad_policy_timeline("commit", ["good", "good"], "fix"))
    assert verdict.verdict == "pass", verdict.reason


def test_a_commit_nonce_fix_not_followed_names_the_fix_commit():
    verdict = _check(_bad_policy_timeline("commit", ["good"], None))
    assert verdict.category == "bad_policy.fix_not_followed"
    assert "the fix commit (fix)" in verdict.reason and "(the last good policy before the bad commit)" in verdict.reason


def test_a_content_nonce_beside_the_bad_file_is_still_good_content():
    """Cerbos's reading is unchanged: the nonce beside the bad file is the valid change applied;
    a timeline recorded before nonce_names existed reads the same."""
    verdict = _check(_bad_policy_timeline("content", ["good", "beside"], "beside"))
    assert verdict.verdict == "pass", verdict.reason
    old = _bad_policy_timeline("content", ["good", "beside"], None)
    del old.facts["nonce_names"]
    verdict = _check(old)
    assert verdict.category == "bad_policy.fix_not_followed"
    assert "the valid change committed beside it (beside)" in verdict.reason
