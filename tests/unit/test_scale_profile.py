"""The scale profile (HARNESS_SCALE=N): which gates take N, what moves with it (repos,
budgets, time limits, the machine's limits), and bad input refused before a stack."""

import os
import resource
import subprocess
import sys
from types import SimpleNamespace

import pytest

from harness import config, limits
from harness.errors import ConfigError
from harness.gates import load as gate_load
from harness.gates.base import ServerKnobs
from harness.gates.registry import GATES
from harness.runner.run import configure, gate, needs_of, preflight, requested_settings
from harness.timeline import Timeline

SCALED = ("leak", "repeat-sync", "boot-timing")


def _settings(**env):
    return config.from_env({"BACKEND": "local", **env})


def test_the_scale_profile_sets_n_scopes_on_the_gates_whose_load_grows():
    settings = _settings(HARNESS_SCALE="1000")
    for gate_id in GATES:
        params, _ = configure(gate(gate_id), requested_settings(gate(gate_id), settings))
        if gate_id in SCALED:
            assert params.scopes == 1000, gate_id
        else:
            assert requested_settings(gate(gate_id), settings) == {}, gate_id


def test_explicit_gate_settings_win_over_the_profile():
    settings = _settings(HARNESS_SCALE="1000", HARNESS_GATE_REPEAT_SYNC_CYCLES="8")
    params, _ = configure(gate("repeat-sync"), requested_settings(gate("repeat-sync"), settings))
    assert (params.scopes, params.cycles) == (1000, 8)


def test_repeat_sync_runs_at_least_twenty_cycles_under_the_profile():
    params, _ = configure(gate("repeat-sync"), requested_settings(gate("repeat-sync"), _settings(HARNESS_SCALE="10")))
    assert params.cycles == 20


def test_a_bad_scale_is_one_message_naming_the_range():
    with pytest.raises(ConfigError, match="HARNESS_SCALE=0 is out of range"):
        _settings(HARNESS_SCALE="0")
    with pytest.raises(ConfigError, match="HARNESS_SCALE='many' is not a whole number"):
        _settings(HARNESS_SCALE="many")


def test_leak_reuses_one_set_of_repos_under_the_profile_and_distinct_ones_without():
    scaled, _ = configure(gate("leak"), gate("leak").scaled(500))
    assert scaled.repos == 500
    assert {scaled.repo_index(c, 7) for c in (1, 2, 3)} == {7}
    plain, _ = configure(gate("leak"), {})
    assert plain.repos == 30
    assert [plain.repo_index(c, 0) for c in (1, 2, 3)] == [0, 10, 20]


def test_a_repo_pool_smaller_than_the_live_scopes_is_refused():
    with pytest.raises(ConfigError, match=r"repo_pool=5 must be 0 \(distinct repos per cycle\) or ≥ scopes = 10"):
        configure(gate("leak"), {"repo_pool": "5"})


def test_repeat_sync_refuses_an_unknown_push_kind():
    with pytest.raises(ConfigError, match="push='amend' must be commit or force"):
        configure(gate("repeat-sync"), {"push": "amend"})


def test_a_gate_s_time_limit_grows_with_its_load():
    small = gate("repeat-sync").load(configure(gate("repeat-sync"), {})[0])
    large = gate("repeat-sync").load(configure(gate("repeat-sync"), gate("repeat-sync").scaled(1000))[0])
    assert small.time_limit_s() < 900 < large.time_limit_s()
    assert large.serves == 1000 * 21


def _ctx(git_workers=None, cpus=2, clone_s=0.05):
    timeline = Timeline("leak")
    server = SimpleNamespace(cpu_count=lambda: cpus, clone_seconds=lambda url: clone_s)
    return SimpleNamespace(knobs=ServerKnobs(git_workers=git_workers), stack=SimpleNamespace(server=server),
                           timeline=timeline)


def test_budgets_hold_at_a_small_load_and_are_derived_from_it_at_a_large_one():
    ctx = _ctx()
    assert gate_load.scaled_budgets(ctx, 10, {"serve_budget_s": 60.0}, "git://x") == {"serve_budget_s": 60.0}
    large = gate_load.scaled_budgets(ctx, 10_000, {"serve_budget_s": 60.0}, "git://x")
    # 2 × (10,000 × 0.05 s of requests + ceil(10,000 / 6 git ops at once) × 0.05 s per clone)
    assert large["serve_budget_s"] == pytest.approx(2 * (500 + 1667 * 0.05), abs=0.1)
    assert ctx.timeline.facts["budgets"]["git_concurrency"] == 6  # a pre-fix server: min(32, cpus + 4)


def test_a_server_s_git_worker_pool_sets_the_concurrency_budgets_assume():
    few, many = _ctx(git_workers=1), _ctx(git_workers=50)
    assert (gate_load.serve_budget(few, 1000, 1.0, 0.5) > gate_load.serve_budget(many, 1000, 1.0, 0.5))


def test_needs_follow_scopes_and_fetches():
    params, _ = configure(gate("repeat-sync"), gate("repeat-sync").scaled(1000))
    needs = needs_of("repeat-sync", gate("repeat-sync").load(params))
    assert needs.open_files == limits.FILES_BASE + 1000 * 21  # one per scope per fetch, the first clone included
    assert "repeat-sync at 1,000 scopes" in needs.why


def test_the_open_file_limit_is_raised_to_what_the_run_needs(monkeypatch):
    calls = []
    monkeypatch.setattr(resource, "getrlimit", lambda kind: (1024, 4096))
    monkeypatch.setattr(resource, "setrlimit", lambda kind, value: calls.append(value))
    limits.ensure_open_files(limits.Needs(3000, 1, 1, "a gate"))
    assert calls == [(3000, 4096)]


def test_an_open_file_need_over_the_hard_limit_names_the_number_when_it_cannot_be_raised(monkeypatch):
    monkeypatch.setattr(resource, "getrlimit", lambda kind: (1024, 4096))
    monkeypatch.setattr(limits.os, "geteuid", lambda: 1000)
    expected = r"needs 22,024 open files .* hard limit of 4,096: raise it \(ulimit -Hn 22024"
    with pytest.raises(ConfigError, match=expected):
        limits.ensure_open_files(limits.Needs(22_024, 1, 1, "gate repeat-sync at 1,000 scopes"))


def test_root_that_may_not_raise_the_hard_limit_gets_the_number_too(monkeypatch):
    def refuse(kind, value):
        raise ValueError("not allowed to raise maximum limit")
    monkeypatch.setattr(resource, "getrlimit", lambda kind: (20_000, 20_000))
    monkeypatch.setattr(resource, "setrlimit", refuse)
    monkeypatch.setattr(limits.os, "geteuid", lambda: 0)
    with pytest.raises(ConfigError, match=r"needs 21,256 open files .* may not raise \(no CAP_SYS_RESOURCE\)"):
        limits.ensure_open_files(limits.Needs(21_256, 1, 1, "gate repeat-sync at 1,000 scopes × 21 fetches"))


def test_root_raises_the_hard_limit_too(monkeypatch):
    calls = []
    monkeypatch.setattr(resource, "getrlimit", lambda kind: (1024, 4096))
    monkeypatch.setattr(resource, "setrlimit", lambda kind, value: calls.append(value))
    monkeypatch.setattr(limits.os, "geteuid", lambda: 0)
    limits.ensure_open_files(limits.Needs(22_024, 1, 1, "a gate"))
    assert calls == [(22_024, 22_024)]


def test_not_enough_disk_stops_the_run_with_the_number(monkeypatch, tmp_path):
    monkeypatch.setattr(limits.shutil, "disk_usage", lambda path: SimpleNamespace(free=100 * 2**20))
    with pytest.raises(ConfigError, match=r"needs 2,000 MB of disk .* has 100 MB free"):
        limits.ensure(limits.Needs(10, 2000, 1, "a gate"), tmp_path / "not-yet")


def test_a_running_server_under_the_need_is_named_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "process_open_file_limit", lambda pid: 1024)
    short = limits.server_shortfall(limits.Needs(5000, 1, 1, "a gate"), [42])
    assert "server process 42 may open 1,024" in short and "--default-ulimit nofile=5000:5000" in short


def test_this_process_s_limit_is_read_from_proc():
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert limits.process_open_file_limit(os.getpid()) == soft


def test_preflight_refuses_a_bad_setting_before_any_stack(tmp_path):
    settings = _settings(HARNESS_GATE_LEAK_REPO_POOL="3", HARNESS_RUN_ROOT=str(tmp_path))
    with pytest.raises(ConfigError, match="repo_pool=3"):
        preflight(settings, ["leak"])


MARKER_PRINTER = '''
def pytest_collection_finish(session):
    for item in session.items:
        marker = item.get_closest_marker("timeout")
        print("TIMEOUT", item.callspec.params["gate_id"], marker.args[0] if marker else None)
'''


def _collected_timeouts(tmp_path, **env):
    (tmp_path / "conftest.py").write_text(MARKER_PRINTER)
    (tmp_path / "pytest.ini").write_text("[pytest]\ntimeout = 900\n")
    run_env = {**os.environ, "BACKEND": "local", "HARNESS_RUN_ROOT": str(tmp_path / "runs"), **env}
    out = subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "harness.gates.suite", "--collect-only", "-q",
                          "-m", "repeat_sync or offline_repo", "-p", "no:cacheprovider"],
                         cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return {line.split()[1]: line.split()[2] for line in out.stdout.splitlines() if line.startswith("TIMEOUT")}


def test_the_gate_suite_gives_a_large_gate_a_time_limit_that_fits_its_load(tmp_path):
    """A per-test timeout must not kill a long gate before its verdict reaches the report:
    under the profile the gate's own limit replaces the run's 900 s; without it, nothing."""
    assert _collected_timeouts(tmp_path) == {"repeat-sync": "None", "offline-repo": "None"}
    scaled = _collected_timeouts(tmp_path, HARNESS_SCALE="500")
    assert scaled["offline-repo"] == "None"
    assert float(scaled["repeat-sync"]) == gate("repeat-sync").load(
        configure(gate("repeat-sync"), gate("repeat-sync").scaled(500))[0]).time_limit_s() > 900


def test_the_gate_suite_refuses_a_bad_scale_setting_before_any_stack(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "harness.gates.suite", "--collect-only", "-q",
                          "-p", "no:cacheprovider"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "BACKEND": "local", "HARNESS_GATE_LEAK_REPO_POOL": "3"})
    assert out.returncode != 0
    assert "repo_pool=3 must be 0 (distinct repos per cycle) or ≥ scopes = 10" in out.stdout + out.stderr


def test_a_gitea_host_seeded_with_fewer_repos_than_the_load_reads_is_refused_before_any_stack(tmp_path):
    settings = _settings(HARNESS_SCALE="500", HARNESS_GITHOST="gitea", HARNESS_RUN_ROOT=str(tmp_path))
    with pytest.raises(ConfigError, match="gate leak reads 500 repos, and the Gitea git host is seeded with 60: "
                                          "set HARNESS_SEED_REPOS=500"):
        preflight(settings, ["leak"])
