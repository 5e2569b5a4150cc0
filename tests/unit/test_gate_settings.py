"""Gate Params and Thresholds validate themselves when made: a bad value is one message that
names the gate, the setting and the variable, before any stack is touched."""

import re

import pytest

from harness.errors import ConfigError
from harness.gates.registry import GATES
from harness.gates.runner import configure, gate


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
