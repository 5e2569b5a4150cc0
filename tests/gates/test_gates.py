"""The gate suite. Each gate is one test case with its own marker, e.g.
`pytest tests/gates -m leak` or `-m "leak or repeat_sync"` (the main job)."""

import pytest

from harness.gates.fixtures import assert_gate_passed
from harness.gates.registry import GATES, marker


def _case(gate_id: str):
    return pytest.param(gate_id, marks=getattr(pytest.mark, marker(gate_id)), id=gate_id)


@pytest.mark.parametrize("gate_id", [_case(gate_id) for gate_id in GATES])
def test_gate(gate_session, gate_id):
    assert_gate_passed(gate_session.run(gate_id))
