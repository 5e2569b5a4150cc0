"""The server seam: which server a run tests, what each can take, and the gates it cannot
take skipped with their reasons — in the report, never as verdicts."""

from __future__ import annotations

import json

import pytest

from harness import config
from harness.errors import ConfigError
from harness.gates.registry import GATES
from harness.report import RunReport, schema_errors
from harness.runner.batch import Batch
from harness.runner.run import catalogue, skip_reason
from harness.servers.base import Capability, ServerAdapter
from harness.servers.registry import CERBOS, OPAL, SERVERS


def test_every_gate_declares_what_it_needs_and_opal_takes_every_opal_gate():
    opal = config.from_env({})
    for gate_id, gate in GATES.items():
        assert gate.requires, f"{gate_id} declares no capability"
        if gate.requires <= OPAL.capabilities:
            assert skip_reason(gate_id, opal) is None


def test_a_gate_the_server_cannot_take_names_each_missing_capability():
    reason = skip_reason("broker-bounce", config.from_env({"SERVER": "cerbos"}))
    assert reason is not None
    assert reason.startswith("gate broker-bounce needs runtime-sources, broadcaster, workers, server-python: cerbos")
    assert "has no broadcaster between workers" in reason


def test_what_a_server_lacks_is_listed_in_one_order_whatever_the_gate_gave():
    adapter = ServerAdapter("x", "x", "x", "1", frozenset({Capability.POLLING}))
    assert adapter.lacks(frozenset({Capability.WORKERS, Capability.POLLING, Capability.BROADCASTER})) == [
        Capability.BROADCASTER, Capability.WORKERS]
    assert adapter.skip_reason("g", [Capability.POLLING]) is None


def test_a_batch_sorts_out_what_the_server_cannot_take_and_refuses_to_judge_nothing():
    cerbos = config.from_env({"SERVER": "cerbos"})
    batch = Batch(gates=["leak", "broker-bounce"])
    with pytest.raises(ConfigError, match="none of the gates asked for runs on cerbos==0.55.0"):
        batch.validate(cerbos)
    assert set(batch.skipped) == {"leak", "broker-bounce"}
    opal_batch = Batch(gates=["leak"])
    opal_batch.validate(config.from_env({}))
    assert opal_batch.gates == ["leak"] and opal_batch.skipped == {}


def test_the_catalogue_says_what_each_gate_needs_and_which_servers_take_it():
    entries = {g["id"]: g for g in catalogue()}
    assert entries["redis-outage"]["requires"] == ["runtime-sources", "scope-store"]
    assert entries["redis-outage"]["servers"] == ["opal"]


def test_skipped_gates_are_listed_in_the_report_and_its_summary_not_as_verdicts(tmp_path):
    report = RunReport(tmp_path, "run-1", "cerbos==0.55.0", "local", "quick")
    report.skip("leak", "gate leak needs cache-stats: cerbos reports no per-source cache sizes")
    data = json.loads((tmp_path / "run-1" / "report.json").read_text())
    assert data["skipped"] == [{"id": "leak", "reason": "gate leak needs cache-stats: cerbos reports no "
                                                       "per-source cache sizes"}]
    assert data["gates"] == [] and not [e for e in schema_errors(data) if "skipped" in e]
    summary = (tmp_path / "run-1" / "summary.md").read_text()
    assert "**Skipped: the server cannot take them** (1)" in summary and "- `leak`: gate leak needs" in summary


@pytest.mark.parametrize(("env", "message"), [
    ({"SERVER": "cerbos", "OPAL_VERSION": "0.9.9"}, "OPAL_VERSION: an OPAL target, and SERVER=cerbos tests Cerbos"),
    ({"CERBOS_VERSION": "0.51.0"}, "CERBOS_VERSION: a Cerbos setting, and the server under test is OPAL"),
    ({"SERVER": "cerbos", "CERBOS_VERSION": "latest"}, "CERBOS_VERSION='latest' is not a version number"),
    ({"SERVER": "nginx"}, "SERVER=nginx is not known; use one of opal, cerbos"),
    ({"SERVER": "cerbos", "CERBOS_SET": "novalue"}, "CERBOS_SET item 'novalue' is not key=value"),
    ({"SERVER": "cerbos", "CERBOS_STORE": "s3"},
     "CERBOS_STORE=s3 is not known; use one of git, disk-sync, disk-sync-untimed"),
])
def test_one_server_per_run_and_each_bad_setting_is_one_error(env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        config.from_env(env)


def test_the_target_names_its_server_and_survives_a_round_trip_through_a_report():
    settings = config.from_env({"SERVER": "cerbos", "CERBOS_VERSION": "0.51.0", "CERBOS_SET": "a.b=1 c=2"})
    assert settings.target.label == "cerbos==0.51.0" and settings.server_env == {"a.b": "1", "c": "2"}
    assert config.Target.from_spec(settings.target.to_spec()) == settings.target
    assert config.Target.from_spec({"version": "0.9.6"}) == config.Target(version="0.9.6")  # older reports
    assert config.from_env({}, server="cerbos", cerbos_version="0.51.0").target == settings.target
    assert set(SERVERS) == {OPAL.name, CERBOS.name}
