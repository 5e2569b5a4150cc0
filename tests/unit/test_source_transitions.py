"""The remote's transitions of both adapters' policy sources (harness.servers.repo_clone and
each source) on a bare repo in a temp dir, no server: the branch deleted and re-created on a
history of its own, the repo removed and restored, each seen on the host as the gate's
proof reads it; OPAL's source tells its hook of each, as a webhook would. What the real
servers do with them is the remote-transitions self-test."""

from __future__ import annotations

import subprocess

import pytest

from harness.errors import HarnessError
from harness.servers.cerbos.source import MAIN_POLICY, CerbosSource
from harness.servers.opal.source import OpalSource


def _make(kind, tmp_path, told):
    args = ("src-unit", tmp_path / "repos", tmp_path / "work")
    urls = {"front_url": "http://127.0.0.1:1/src-unit.git", "dead_url": "http://127.0.0.1:2/dead-0001.git"}
    if kind == "opal":
        source = OpalSource(*args, **urls)
        source.on_push = told.append
        return source.create()
    (tmp_path / "repos").mkdir()
    return CerbosSource(*args, **urls).create()


def _git(source, *args):
    return subprocess.run(["git", f"--git-dir={source.bare}", *args], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.parametrize("kind", ["opal", "cerbos"])
def test_every_transition_as_the_host_sees_it(kind, tmp_path):
    told: list[str | None] = []
    source = _make(kind, tmp_path, told)
    first = source.remote_head()
    assert first == source.head()
    committed = source.commit()
    before = source.remote_head()
    source.delete_branch()
    assert source.remote_head() is None and source.bare.is_dir()
    recreated = source.recreate_branch()
    assert recreated == source.nonce and recreated != committed
    head = source.remote_head()
    assert head is not None and head != before
    assert _git(source, "rev-list", "--parents", "-n", "1", head).split() == [head]  # a root commit
    assert _git(source, "rev-list", "--count", head) == "1"
    if kind == "cerbos":
        assert recreated in _git(source, "show", f"{head}:{MAIN_POLICY}")
    source.remove()
    assert source.remote_head() is None and not source.bare.exists()
    with pytest.raises(HarnessError, match="removed and never restored"):
        source.remove_bare()
    assert source.restore() == recreated and source.remote_head() == head
    after = source.commit()
    assert after not in (recreated, committed)
    assert _git(source, "merge-base", "--is-ancestor", head, source.remote_head()) == ""  # fast-forward
    if kind == "opal":
        assert told == [committed, None, recreated, None, recreated, after]
    with pytest.raises(HarnessError, match="nothing to restore"):
        source.restore_bare()
