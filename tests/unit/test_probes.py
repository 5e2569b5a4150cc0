import os
import socket

import pytest

from harness.probes import clone_dirs, sample_server
from harness.servers.opal import CacheStats, StatsContractError

NATIVE_099 = {"pid": 7, "repo_locks": 2, "repos": 1, "repos_last_fetched": 0, "rss_kb": 900,
              "repo_locks_keys": ["a", "b"], "repos_keys": ["/x/a"], "repos_last_fetched_keys": []}


def test_stats_contract_parses_sizes_and_keys():
    stats = CacheStats.from_json(NATIVE_099)
    assert stats.sizes() == {"repo_locks": 2, "repos": 1, "repos_last_fetched": 0}
    assert stats.keys["repo_locks"] == ["a", "b"] and not stats.wrapper


def test_a_response_without_the_contract_fields_is_an_error_naming_them():
    with pytest.raises(StatsContractError, match="lacks the field.s. repos_last_fetched"):
        CacheStats.from_json({"pid": 1, "repo_locks": 0, "repos": 0, "rss_kb": 1})


def test_opal_debug_stats_shape_without_pid_or_keys_is_read():
    """OPAL's own debug_stats route (test-bed and fix branches) answers four fields only."""
    stats = CacheStats.from_json({"repo_locks": 3, "repos": 2, "repos_last_fetched": 1, "rss_kb": 500})
    assert stats.sizes() == {"repo_locks": 3, "repos": 2, "repos_last_fetched": 1}
    assert stats.pid is None and stats.keys == {}
    assert stats.missing_fields == ["pid", "key lists"]
    assert CacheStats.from_json(NATIVE_099).missing_fields == []


def test_process_samples_read_real_metrics_of_a_pid(tmp_path):
    [before] = sample_server(os.getpid(), [])
    assert before.role == "master" and before.rss_kb > 0 and before.open_fds > 0 and before.threads >= 1
    with open(tmp_path / "held", "w"), socket.socket():
        [during] = sample_server(os.getpid(), [])
    # A held file counts as an open file; a socket counts only among all fds.
    assert during.open_files == before.open_files + 1
    assert during.open_fds == before.open_fds + 2


def test_clone_dirs_lists_directories_only(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "file").write_text("")
    assert clone_dirs(tmp_path) == ["one"]
    assert clone_dirs(tmp_path / "missing") == []
