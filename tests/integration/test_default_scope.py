"""Self-test: no gate passes because the server has a `default` scope.

Once a scope named `default` is stored, OPAL answers GET /scopes/{id}/policy of a scope it does
not know (never stored, deleted, a PUT it lost) with 200 and the default's bundle. Every cell
here runs with HARNESS_DEFAULT_SCOPE=1 (Settings.default_scope: the runner stores `default` on
its own repo right after the fresh server is up, recorded as the fact `default_scope`) and must
give the outcome of the same cell without it (tests/integration/test_gate_matrix.py's table: the
verdict and every problem the checker must find):
the cells where the server loses or never has a scope stay the same FAIL, and a PASS stays a
PASS. Each cell also checks that the fallback was live: the server answered a scope nobody
stored as the fact records.

Measured on the local backend (2 cores, other engineers' stacks beside it), gate time as the
runner reports it, each with the default stored:
- leak, 0.9.9: PASS (3 cycles × 10 scopes), 14-34 s in four runs.
- redis-outage, 0.9.9: FAIL redis.put_after_not_served, 34-47 s in three runs. The PUT after the store returned
  (201) answered 503 to the end: stored, never cloned — not the default's bundle.
- broker-bounce kill, 0.9.6: FAIL bounce.put_after_not_served and put_lost_in_reconnect (16 of 16
  PUTs around Postgres's return), 59 s; before broker-bounce judged every PUT, put_after and
  put_during, 92 s and 94 s. The PUT after (201) answered 500 to the end: stored, never cloned.
- In every cell a scope nobody stored answered 200 with the default's bundle (0.9.6 as well).
So the PUTs these gates lose are stored and unserved, not unknown: a status-only check would
have failed them too. What the fallback does answer — a scope the server does not know — is
shown on 0.9.9 by the last test (12 s and 25 s): a deleted scope and a scope whose PUT the server never
got answer 200 with the default's bundle, and the served check says not served, naming it.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from harness.gates.base import DEFAULT_SCOPE_REPO, GateContext
from harness.heads import FOREIGN, OWN
from harness.report import schema_errors
from harness.runner.run import run_gate
from harness.seed import policy_repo_name, seeded_head
from harness.timeline import Timeline
from tests.integration.test_gate_matrix import BOUNCE_MODES, EXPECTED, R096, R099, _Stacks

pytestmark = [pytest.mark.integration, pytest.mark.selftest]

# (gate, server) -> what the server answers a scope nobody stored once `default` is stored
# (status, whether with the default's bundle), measured on the releases
CELLS = {
    ("leak", R099): (200, True),
    ("redis-outage", R099): (200, True),
    ("broker-bounce", BOUNCE_MODES["kill"][0]): (200, True),
}


def test_each_cell_is_a_cell_of_the_table_on_a_release_both_ways():
    for gate_id, server in CELLS:
        assert (gate_id, server) in EXPECTED
        assert not server.tree and not server.server_env
    assert {EXPECTED[cell].verdict for cell in CELLS} == {"pass", "fail"}
    assert R096.release == "0.9.6" and R099.release == "0.9.9"


@pytest.fixture(scope="module")
def default_stacks(harness_settings, tmp_path_factory):
    holder = _Stacks(replace(harness_settings, default_scope=True), tmp_path_factory.mktemp("default-scope-reports"),
                     tmp_path_factory.mktemp("default-scope-trees"))
    yield holder
    holder.close()


@pytest.mark.parametrize("gate_id,server", [pytest.param(g, s, id=f"{s.name.replace(' ', '-')}-{g}")
                                            for g, s in sorted(CELLS, key=lambda c: c[1].release)])
def test_a_stored_default_scope_changes_no_verdict(default_stacks, gate_id, server):
    stack, report = default_stacks.get("local", server)
    result = run_gate(gate_id, stack, profile="quick", overrides=dict(server.gate_settings),
                      server_env=dict(server.server_env))
    report.add(result)
    assert schema_errors(report.to_json()) == []
    default = result.timeline.facts.get("default_scope") if result.timeline else None
    assert default and default["served_s"] is not None, f"the default scope was not stored and served: {default}"
    status, with_default_bundle = CELLS[(gate_id, server)]
    assert default["unknown_scope_status"] == status, f"a scope nobody stored answered {default}"
    assert (default["unknown_scope_hash"] == seeded_head(DEFAULT_SCOPE_REPO)) is with_default_bundle
    expected = EXPECTED[(gate_id, server)]  # the same cell without a default: verdict and every problem
    wrong = expected.mismatches(result.verdict, result.category, result.problems)
    found = "; ".join(p["category"] for p in result.problems) or "no problems"
    assert not wrong, (f"{gate_id} on {server.name} with a default scope: expected {expected.describe()}, got "
                       f"{result.verdict} ({found}): {', '.join(wrong)}. Reason: {result.reason}")

def test_a_scope_the_server_no_longer_knows_answers_the_default_bundle_and_is_not_served(default_stacks):
    """On 0.9.9 itself: a deleted scope, and a scope whose PUT never reached the server, both
    answer 200 with the default's bundle; the served check says not served, and whose bundle."""
    stack, _ = default_stacks.get("local", R099)
    stack.server.restart(fresh_state=True)
    try:
        ctx = GateContext(stack, Timeline("served-check"), params=None)
        ctx.store_default_scope()
        url = stack.repo_url(policy_repo_name(5))
        assert stack.client.put_scope("gone", url) == 201
        assert ctx.served_within("gone", 60, "before the delete") is not None
        assert ctx.answer("gone", timeout=10).kind == OWN
        assert stack.client.delete_scope("gone") == 204
        ctx.book.given("lost", stack.repo_url(policy_repo_name(6)))  # as a PUT the server lost leaves it
        for scope in ("gone", "lost"):
            answer = ctx.client.get_policy(scope, timeout=10)
            judged = ctx.judge(scope, answer)
            assert (answer.status, judged.kind) == (200, FOREIGN), f"{scope}: {answer} judged {judged}"
            assert judged.seen == seeded_head(DEFAULT_SCOPE_REPO) and "scope default" in (judged.bundle_of or "")
        assert ctx.served_within("lost", 3, "a lost PUT") is None
        assert ctx.timeline.event("not_served")["wrong_content"] == seeded_head(DEFAULT_SCOPE_REPO)
    finally:
        stack.server.stop()
