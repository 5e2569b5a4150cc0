"""Gate Params and Thresholds validate themselves when made: a bad value is one message that
names the gate, the setting and the variable, before any stack is touched."""

import re

import pytest

from harness.errors import ConfigError
from harness.gates.registry import GATES
from harness.runner.run import configure, gate


@pytest.mark.parametrize("gate_id", list(GATES))
def test_every_gate_s_defaults_are_valid(gate_id):
    g = gate(gate_id)
    g.params_type()
    g.thresholds_type()


def test_a_negative_number_is_refused_naming_the_variable():
    with pytest.raises(ConfigError, match=r"gate leak: settle_file_slack=-1 must be ≥ 0 "
                                          r"\(set with HARNESS_GATE_LEAK_SETTLE_FILE_SLACK\)"):
        configure(gate("leak"), {"settle_file_slack": "-1"})


def test_zero_is_refused_where_a_count_or_budget_must_be_positive():
    with pytest.raises(ConfigError, match="scopes=0 must be > 0"):
        configure(gate("leak"), {"scopes": "0"})
    with pytest.raises(ConfigError, match="HARNESS_GATE_BOOT_TIMING_MAX_RATIO"):
        configure(gate("boot-timing"), {"max_ratio": "0"})


def test_nan_and_infinity_are_refused():
    for raw in ("nan", "inf"):
        with pytest.raises(ConfigError, match="fill_budget_s"):
            configure(gate("leak"), {"fill_budget_s": raw})


def test_rules_across_fields():
    with pytest.raises(ConfigError, match=r"cycles=5 must be ≥ warmup_cycles \+ 3 = 6"):
        configure(gate("repeat-sync"), {"cycles": "5"})
    with pytest.raises(ConfigError, match="outage_s=2.0 must be ≥ 5 s"):
        configure(gate("broker-bounce"), {"outage_s": "2"})
    with pytest.raises(ConfigError, match="min_loaded_success=1.5 must be a share ≤ 1"):
        configure(gate("offline-repo"), {"min_loaded_success": "1.5"})


def test_valid_overrides_still_go_through():
    params, thresholds = configure(gate("repeat-sync"), {"cycles": "6", "scopes": "2"})
    assert (params.cycles, params.scopes) == (6, 2)


def test_an_unknown_broker_fault_mode_is_refused():
    with pytest.raises(ConfigError, match=re.escape("mode='freeze' must be stop | kill | pause | terminate "
                                                    "(set with HARNESS_GATE_BROKER_BOUNCE_MODE)")):
        configure(gate("broker-bounce"), {"mode": "freeze"})


def test_a_value_of_the_wrong_type_names_the_variable():
    with pytest.raises(ConfigError, match=re.escape("HARNESS_GATE_LEAK_CYCLES='abc' is not a whole number (gate "
                                                    "leak's cycles, default 3); set e.g. HARNESS_GATE_LEAK_CYCLES=3")):
        configure(gate("leak"), {"cycles": "abc"})
    with pytest.raises(ConfigError, match="HARNESS_GATE_LEAK_SERVE_BUDGET_S='soon' is not a number"):
        configure(gate("leak"), {"serve_budget_s": "soon"})


def test_a_float_setting_with_a_whole_default_takes_a_fraction():
    from dataclasses import dataclass

    from harness.gates.settings import GateSettings
    from harness.runner.run import build_settings

    @dataclass
    class Knobs(GateSettings):
        budget_s: float = 10
        strict: bool = False

    made = build_settings(Knobs, {"budget_s": "2.5", "strict": "0"}, "x")
    assert (made.budget_s, made.strict) == (2.5, False)
    with pytest.raises(ConfigError, match=r"HARNESS_GATE_X_STRICT='maybe' is not a switch \(1 or 0\)"):
        build_settings(Knobs, {"strict": "maybe"}, "x")


def test_preflight_refuses_an_unknown_gate_variable_before_any_stack(monkeypatch):
    from dataclasses import replace

    from harness.config import Settings
    from harness.runner.run import preflight
    settings = replace(Settings(), gate_vars={"LEEK_CYCLES": "5", "ZOMBIE_CAP_NOPE": "1"})
    with pytest.raises(ConfigError) as raised:
        preflight(settings, ["zombie-cap"])
    message = str(raised.value)
    assert "HARNESS_GATE_LEEK_CYCLES names no gate" in message and "LEAK, REPEAT_SYNC" in message
    assert "HARNESS_GATE_ZOMBIE_CAP_NOPE: gate zombie-cap has no setting nope" in message


def test_gates_list_shows_every_gate_its_needs_and_settings(capsys):
    from harness import cli
    assert cli.main(["gates", "--list"]) == 0
    out = capsys.readouterr().out
    for gate_id, g in GATES.items():
        assert f"{gate_id}: {g.title}" in out
    assert "HARNESS_GATE_LEAK_CYCLES" in out and "default 3" in out
    assert "2 gunicorn workers" in out  # broker-bounce needs two


def test_gates_list_json():
    import contextlib
    import io
    import json

    from harness import cli
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["gates", "--list", "--json"]) == 0
    listed = {g["id"]: g for g in json.loads(out.getvalue())}
    assert list(listed) == list(GATES)
    cycles = next(s for s in listed["leak"]["settings"] if s["name"] == "cycles")
    assert cycles == {"name": "cycles", "kind": "param", "type": "int", "default": 3,
                      "variable": "HARNESS_GATE_LEAK_CYCLES"}
    assert listed["broker-bounce"]["workers"] == 2
