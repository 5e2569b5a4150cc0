"""The setup benchmark's seeding figures (real git, a handful of repos)."""

from harness.bench import Bench, measure_seed


def test_seeding_is_timed_twice_and_given_as_a_rate():
    bench = Bench("opal-server==0.9.9", "local")
    measure_seed(bench, 5)
    assert set(bench.figures) == {"seed_5_repos_s", "reseed_5_repos_s", "seed_repos_per_s"}
    # measure_seed raises when any repo failed; the rate counts all 9 repos (5 policy + 4 probe).
    assert bench.figures["seed_repos_per_s"] > 0
    assert bench.figures["reseed_5_repos_s"] >= 0


def _run(verdicts, harness_s, duration_s):
    from harness.bench import SuiteRun
    return SuiteRun(verdicts, harness_s, duration_s)


def test_the_harness_share_is_per_gate_over_every_release_and_run():
    from harness.bench import harness_share_by_gate
    a = _run({"leak": ("pass", ""), "zombie-cap": ("fail", "zombie.cap_reached")},
             {"leak": 2.0, "zombie-cap": 1.0}, {"leak": 10.0, "zombie-cap": 40.0})
    b = _run({"leak": ("fail", "leak.caches_kept"), "zombie-cap": ("fail", "zombie.cap_reached")},
             {"leak": 4.0, "zombie-cap": 3.0}, {"leak": 10.0, "zombie-cap": 40.0})
    assert harness_share_by_gate([{"0.9.6": b, "0.9.9": a}]) == {"leak": 0.3, "zombie-cap": 0.05}


def test_a_category_that_changes_between_runs_is_a_difference():
    from harness.bench import _differences
    first = {"0.9.9": _run({"orphan-clones": ("fail", "orphan.fds_kept"), "leak": ("pass", "")}, {}, {})}
    same = {"0.9.9": _run({"orphan-clones": ("fail", "orphan.fds_kept"), "leak": ("pass", "")}, {}, {})}
    other = {"0.9.9": _run({"orphan-clones": ("fail", "orphan.clone_dirs_kept")}, {}, {})}
    assert _differences(first, same) == []
    assert _differences(first, other) == ["0.9.9 orphan-clones: fail orphan.fds_kept vs fail orphan.clone_dirs_kept",
                                          "0.9.9 leak: pass  vs missing "]


def test_the_stability_table_names_each_run_and_the_rows_that_differ():
    from harness.bench import SuiteRun, stability_table
    same = SuiteRun({"leak": ("fail", "leak.caches_kept", "leak.caches_kept", "leak.files_grew")}, {}, {})
    other = SuiteRun({"leak": ("fail", "leak.files_grew", "leak.files_grew")}, {}, {})
    table, differ = stability_table([{"0.9.6": same}, {"0.9.6": same}, {"0.9.6": other}])
    assert "| leak | 0.9.6 | fail: leak.caches_kept, leak.files_grew |" in table and "**no**" in table
    assert differ == ["leak on 0.9.6: fail: leak.caches_kept, leak.files_grew / fail: leak.caches_kept, "
                      "leak.files_grew / fail: leak.files_grew"]
    assert stability_table([{"0.9.9": SuiteRun({"leak": ("pass", "")}, {}, {})}] * 3)[1] == []


def test_a_process_tree_s_peak_memory_counts_its_children():
    import subprocess
    import sys

    from harness.bench import _sample_tree
    child = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
             "'import time; x = bytearray(80 * 2**20); time.sleep(1.5)'])")
    proc = subprocess.Popen([sys.executable, "-c", child])
    peak = _sample_tree(proc)
    assert proc.wait() == 0
    assert peak >= 80 * 2**20  # the grandchild's 80 MB, seen through its parent


def test_runs_that_differ_only_in_how_many_phases_showed_a_kind_are_the_same_outcome(tmp_path):
    import json

    from harness.bench import SuiteRun, _differences

    def report(folder: str, problems: list[str]) -> SuiteRun:
        latest = tmp_path / folder / "latest"
        latest.mkdir(parents=True)
        gate = {"id": "orphan-clones", "verdict": "fail", "category": problems[0], "duration_s": 60.0,
                "problems": [{"category": c, "text": "", "figures": {}} for c in problems]}
        (latest / "report.json").write_text(json.dumps({"gates": [gate]}))
        return SuiteRun.read(tmp_path / folder)

    serial = report("serial", ["orphan.fds_kept", "orphan.rss_grew", "orphan.fds_kept"])  # burst and mid-sync
    parallel = report("parallel", ["orphan.fds_kept", "orphan.rss_grew"])  # burst only
    assert serial.verdicts["orphan-clones"] == ("fail", "orphan.fds_kept", "orphan.fds_kept", "orphan.rss_grew")
    assert _differences({"0.9.9": serial}, {"0.9.9": parallel}) == []
    fewer = report("fewer", ["orphan.fds_kept"])
    assert _differences({"0.9.9": serial}, {"0.9.9": fewer}) == [
        "0.9.9 orphan-clones: fail orphan.fds_kept orphan.fds_kept orphan.rss_grew vs fail orphan.fds_kept "
        "orphan.fds_kept"]
