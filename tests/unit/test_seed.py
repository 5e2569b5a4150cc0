import subprocess

from harness import seed


def test_every_repo_has_a_distinct_commit_and_reseeding_changes_nothing(tmp_path):
    first = seed.seed(tmp_path, 30)
    shas = {p.name: seed.head_sha(p) for p in tmp_path.iterdir()}
    again = seed.seed(tmp_path, 30)

    assert len(first.created) == 30 + seed.PROBE_REPOS and not first.failed
    assert len(set(shas.values())) == len(shas) == 30 + seed.PROBE_REPOS
    assert again.created == [] and len(again.existing) == len(shas)
    assert {p.name: seed.head_sha(p) for p in tmp_path.iterdir()} == shas


def test_probe_repos_are_separate_from_bulk_repos(tmp_path):
    seed.seed(tmp_path, 3)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["policy-0000.git", "policy-0001.git", "policy-0002.git",
                     "probe-0.git", "probe-1.git", "probe-2.git", "probe-3.git"]


def test_a_seeded_repo_clones_with_its_policy(tmp_path):
    seed.seed(tmp_path / "repos", 1, probes=0)
    subprocess.run(["git", "clone", "-q", str(tmp_path / "repos" / "policy-0000.git"), str(tmp_path / "wc")],
                   check=True, timeout=60)
    assert "package harness.policy_0000" in (tmp_path / "wc" / "policy.rego").read_text()


def test_a_half_made_repo_is_recreated(tmp_path):
    broken = tmp_path / "policy-0000.git"
    broken.mkdir()
    result = seed.seed(tmp_path, 1, probes=0)
    assert result.created == ["policy-0000"]
    assert seed.head_sha(broken)


def test_sidecar_entry_point_exits_nonzero_with_the_failure_count(tmp_path, capsys):
    root = tmp_path / "repos"
    root.mkdir()
    (root / "policy-0001.git").write_text("a file where a repo should be")
    assert seed.main(["--root", str(root), "--count", "3", "--probes", "0"]) == 1
    assert "1 of 3 repos failed" in capsys.readouterr().err
    assert seed.main(["--root", str(tmp_path / "ok"), "--count", "3"]) == 0


def test_a_written_repo_is_what_git_itself_makes_of_the_same_content(tmp_path):
    """The direct writer against git: fsck --strict is clean, and `git fast-import` of the
    same files, dates and message gives the same commit SHA (so repos seeded by either stay
    valid for the other: reseeding stays idempotent)."""
    seed.seed(tmp_path / "written", 1, probes=0)
    written = tmp_path / "written" / "policy-0000.git"
    subprocess.run(["git", "--git-dir", str(written), "fsck", "--strict", "--no-dangling"], check=True,
                   capture_output=True, timeout=60)

    by_git = tmp_path / "by-git.git"
    subprocess.run(["git", "init", "--bare", "-q", "-b", "main", str(by_git)], check=True, timeout=60)
    signature = f"Policy Harness <harness@localhost> {seed.FIXED_DATE}"
    stream = f"commit refs/heads/main\nauthor {signature}\ncommitter {signature}\n"
    stream += f"data {len(b'seed policy-0000' + bytes([10]))}\nseed policy-0000\n"
    for name, content in seed.repo_files("policy-0000").items():
        stream += f"M 644 inline {name}\ndata {len(content)}\n{content.decode()}"
    subprocess.run(["git", "-C", str(by_git), "fast-import", "--quiet"], input=(stream + "\n").encode(),
                   check=True, capture_output=True, timeout=60)

    assert seed.head_sha(written) == seed.head_sha(by_git)
    assert subprocess.run(["git", "--git-dir", str(written), "show", "main:policy.rego"], capture_output=True,
                          text=True, check=True, timeout=60).stdout.startswith("package harness.policy_0000")
