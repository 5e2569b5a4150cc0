"""What the repeat-sync gate stands on: pushing new commits to a real git daemon (the bare
git host, receive-pack enabled) and counting the pack files a process has mapped."""

from __future__ import annotations

import contextlib
import mmap
import subprocess

import pytest

from harness import seed
from harness.errors import ConfigError
from harness.githost.bare import BareGitHost
from harness.gitops import GitOpError, WorkingClones, push_base_url
from harness.probes import mapped_pack_files
from harness.waiting import free_port


@pytest.fixture
def githost(tmp_path):
    host = BareGitHost("githost", tmp_path / "host", free_port())
    (tmp_path / "host").mkdir()
    host.start()
    try:
        seed.seed(host.repos_dir, 2, probes=0)
        yield host
    finally:
        host.stop()


def _host_head(host: BareGitHost, repo: str) -> str:
    return seed.head_sha(host.repos_dir / f"{repo}.git")


def test_each_push_lands_a_distinct_commit_on_the_host(githost, tmp_path):
    clones = WorkingClones(tmp_path / "clones", push_base_url(f"git://127.0.0.1:{githost.port}/"))
    seeded = _host_head(githost, "policy-0000")
    first = clones.push_new_commit("policy-0000")
    second = clones.push_new_commit("policy-0000")
    other = clones.push_new_commit("policy-0001")
    assert len({seeded, first, second, other}) == 4
    assert _host_head(githost, "policy-0000") == second == clones.head("policy-0000")
    # the working clone is kept and reused: one directory per repo
    assert sorted(p.name for p in (tmp_path / "clones").iterdir()) == ["policy-0000", "policy-0001"]
    parents = subprocess.run(["git", f"--git-dir={githost.repos_dir / 'policy-0000.git'}", "rev-parse",
                              f"{second}^"], capture_output=True, text=True, check=True).stdout.strip()
    assert parents == first


def test_force_push_rewrite_replaces_the_head_with_a_non_descendant(githost, tmp_path):
    clones = WorkingClones(tmp_path / "clones", push_base_url(f"git://127.0.0.1:{githost.port}/"))
    before = clones.push_new_commit("policy-0000")
    rewritten = clones.force_push_rewrite("policy-0000")
    assert rewritten != before and _host_head(githost, "policy-0000") == rewritten
    git_dir = f"--git-dir={githost.repos_dir / 'policy-0000.git'}"
    ancestor = subprocess.run(["git", git_dir, "merge-base", "--is-ancestor", before, rewritten], check=False)
    assert ancestor.returncode == 1
    # a later plain push builds on the rewritten history
    after = clones.push_new_commit("policy-0000")
    assert _host_head(githost, "policy-0000") == after


def test_the_branch_is_deleted_and_recreated_on_a_history_of_its_own(githost, tmp_path):
    """remote-transitions: HEAD's branch deleted on the host (the seeded config allows it),
    then re-created as a root commit whose data carries a fresh nonce."""
    clones = WorkingClones(tmp_path / "clones", push_base_url(f"git://127.0.0.1:{githost.port}/"))
    before = clones.push_new_commit("policy-0000")
    clones.delete_branch("policy-0000")
    with pytest.raises(GitOpError, match="no branch main"):
        clones.head("policy-0000")
    recreated = clones.recreate_branch("policy-0000")
    assert clones.head("policy-0000") == recreated != before
    git_dir = f"--git-dir={githost.repos_dir / 'policy-0000.git'}"
    parents = subprocess.run(["git", git_dir, "rev-list", "--parents", "-n1", recreated],
                             capture_output=True, text=True, check=True).stdout.split()
    assert parents == [recreated]  # a root commit: nothing served before is an ancestor
    data = subprocess.run(["git", git_dir, "show", f"{recreated}:data.json"], capture_output=True, text=True,
                          check=True).stdout
    assert clones.nonces["policy-0000"] in data
    # the next plain push builds on the re-created branch
    assert clones.push_new_commit("policy-0000") == clones.head("policy-0000")


def test_a_missing_repo_is_an_error_naming_the_repo(githost, tmp_path):
    clones = WorkingClones(tmp_path / "clones", f"git://127.0.0.1:{githost.port}/", timeout_s=10)
    with pytest.raises(GitOpError, match="policy-9999"):
        clones.push_new_commit("policy-9999")


def test_a_git_host_that_never_answers_costs_the_timeout_not_the_gate(tmp_path):
    import socket
    import time
    with socket.socket() as listener:  # accepts (kernel backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        clones = WorkingClones(tmp_path / "clones", f"git://127.0.0.1:{listener.getsockname()[1]}/",
                               timeout_s=1.5)
        started = time.monotonic()
        with pytest.raises(GitOpError, match="clone"):
            clones.push_new_commit("policy-0000")
        assert time.monotonic() - started < 10


def test_pushing_needs_the_bare_git_host():
    with pytest.raises(ConfigError, match="HARNESS_GITHOST=bare"):
        push_base_url("http://127.0.0.1:3000/")


def test_mapped_pack_files_counts_distinct_pack_and_idx_paths_of_a_process(tmp_path):
    import os
    baseline = mapped_pack_files(os.getpid())
    with contextlib.ExitStack() as held:
        for name in ("x.pack", "x.idx", "y.pack", "not-a-pack.txt"):
            path = tmp_path / name
            path.write_bytes(b"\0" * mmap.PAGESIZE * 2)
            handle = held.enter_context(open(path, "rb"))
            # two mappings of one file count once; the fd is closed, the mapping stays
            for _ in range(2):
                held.enter_context(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ))
        assert mapped_pack_files(os.getpid()) == baseline + 3
        # a deleted pack that is still mapped is still kept by the process
        (tmp_path / "y.pack").unlink()
        assert mapped_pack_files(os.getpid()) == baseline + 3
    assert mapped_pack_files(os.getpid()) == baseline


def test_mapped_pack_files_of_a_gone_process_is_none():
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert mapped_pack_files(proc.pid) is None


def test_pushes_from_several_threads_leave_the_process_where_it_was(githost, tmp_path):
    """Pushes run 4 at a time: nothing in them may move the process's working directory
    (gitpython's IndexFile.add chdirs into the clone; a worker left in a deleted clone made
    every later initdb fail)."""
    import os
    from concurrent.futures import ThreadPoolExecutor
    clones = WorkingClones(tmp_path / "clones", push_base_url(f"git://127.0.0.1:{githost.port}/"))
    before = os.getcwd()
    for _ in range(4):  # as the gate does: each repo once per cycle, the repos side by side
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(clones.push_new_commit, ["policy-0000", "policy-0001"]))
        assert os.getcwd() == before
