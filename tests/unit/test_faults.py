"""Faults heal whatever the scenario does: a gate that fails mid-outage must not leave a
service down for the gates after it."""

from types import SimpleNamespace

import pytest

from harness.gates.base import GateContext
from harness.heads import RepoHeads, ScopeBook
from harness.servers.base import ServerKnobs
from harness.timeline import FAULT_END, FAULT_START, Timeline


class _Server:
    def knobs(self):
        return ServerKnobs()


class _Stack:
    """Just enough of a stack for a GateContext (the fault logic needs none of it)."""

    client = None
    server = _Server()
    settings = SimpleNamespace(server="opal")
    book = ScopeBook(RepoHeads(lambda repo: None))


def _ctx() -> GateContext:
    return GateContext(_Stack(), Timeline("x"), params=None)


def test_a_fault_heals_and_closes_its_window_when_the_scenario_raises():
    ctx, calls = _ctx(), []
    with pytest.raises(RuntimeError), ctx.fault("postgres stopped", start=lambda: calls.append("stop"),
                                                 heal=lambda: calls.append("start"), proof=lambda: True):
        raise RuntimeError("the scenario failed mid-outage")
    assert calls == ["stop", "start"]
    assert [e["name"] for e in ctx.timeline.events] == [FAULT_START, FAULT_END]
    assert ctx.timeline.facts["fault postgres stopped took effect"] is True


def test_a_fault_whose_start_fails_is_still_healed():
    ctx, healed = _ctx(), []

    def start():
        raise OSError("docker stop failed")
    with pytest.raises(OSError), ctx.fault("redis stopped", start=start, heal=lambda: healed.append(1)):
        pass
    assert healed == [1]


def test_the_proof_is_recorded():
    ctx = _ctx()
    with ctx.fault("blackhole", start=lambda: None, heal=lambda: None, proof=lambda: False) as fault:
        assert fault.took_effect is False
    assert ctx.timeline.fault_windows()[0][0] <= ctx.timeline.fault_windows()[0][1]


def test_a_heal_that_raises_still_closes_the_faults_window():
    ctx = _ctx()

    def heal():
        raise OSError("docker start failed")
    with pytest.raises(OSError), ctx.fault("postgres stopped", start=lambda: None, heal=heal):
        pass
    assert [e["name"] for e in ctx.timeline.events] == [FAULT_START, FAULT_END]


def test_a_settled_snapshot_waits_for_the_counts_to_stand_still(monkeypatch):
    """remote-failures reads what a failed attempt kept only once the worker's threads stop
    falling: a fetch still failing holds a thread that is not a leftover."""
    ctx = _ctx()
    threads = iter([9, 8, 7, 7, 7, 7, 7, 7])
    monkeypatch.setattr(ctx, "_sample", lambda label, **extra: {"label": label, "worker_threads": next(threads),
                                                                 **extra})
    snapshot = ctx.observe_settled("reset attempt 2", ("worker_threads",), budget=10, interval=0.01, attempt=2)
    assert snapshot["worker_threads"] == 7 and snapshot["settled"] == "stable" and snapshot["attempt"] == 2
    settle = next(r for r in ctx.timeline.of_kind("settle"))
    assert settle["series"]["worker_threads"] == [9, 8, 7, 7, 7]
