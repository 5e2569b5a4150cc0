"""A checkout in OPAL's real layout gives verdicts, not just an install.

The tree (tests/integration/source_tree.py) has the placeholder version 0.0.0, OPAL's
requires.txt files, a root README.md and OPAL's own 4-field stats route (no `pid`, no key
lists), with the code of the 0.9.6 release: the leak gate must read that route and give
0.9.6's verdict, on both backends.
"""

from __future__ import annotations

import pytest

from harness.runner.run import run_gate
from tests.integration.compose_support import require_compose

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("backend", ["local", pytest.param("compose", marks=pytest.mark.compose)])
def test_a_real_layout_checkout_gives_the_leak_verdict_through_its_native_stats(
        stack_factory, opal_source_tree, backend):
    if backend == "compose":
        require_compose(["0.9.6"])
    stack = stack_factory(source=opal_source_tree, backend=backend, seed_repos=40)
    stats = stack.client.cache_stats()
    assert not stats.wrapper and stats.pid is None, "expected OPAL's native 4-field route to answer"

    result = run_gate("leak", stack, overrides={})

    assert (result.verdict, result.category) == ("fail", "leak.caches_kept"), result.reason
    snapshots = [s for s in result.timeline.of_kind("snapshot") if "stats_error" not in s]
    # The answering worker was identified from the process tree: the server's only worker.
    assert snapshots and all(s["worker_pids"] == [s["worker_pid"]] for s in snapshots)
    assert all(s["stats_missing"] == ["pid", "key lists"] for s in snapshots)
