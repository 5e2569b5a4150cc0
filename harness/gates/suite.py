"""The gate suite as a pytest module: each gate one test case with its own marker.

From any directory where the harness is installed (no files to copy):

    pytest --pyargs harness.gates.suite -m leak --strict-markers --junitxml=gates.xml

Every gate's verdict, category, figures and report path are JUnit properties: the
testcase's under `-o junit_family=xunit1`, the testsuite's (`<gate>.<name>`) under pytest's
default xunit2, which has no testcase properties — either way without a warning, so the
suite runs under `filterwarnings = error`. `tests/gates/test_gates.py` in this checkout is
the same suite (`make gates`).

With `--baseline FILE` (or HARNESS_BASELINE) a known failure is an xfail with its reason
(JUnit: `<skipped type="pytest.xfail">`), a new one fails, a fixed one XPASSes.
"""

import pytest

from harness.gates.registry import GATES, marker
from harness.runner.fixtures import GateSession


def _case(gate_id: str):
    return pytest.param(gate_id, marks=getattr(pytest.mark, marker(gate_id)), id=gate_id)


@pytest.mark.parametrize("gate_id", [_case(gate_id) for gate_id in GATES])
def test_gate(gate_session: GateSession, gate_id: str, request: pytest.FixtureRequest) -> None:
    result = gate_session.run(gate_id)
    gate_session.record(gate_id, request)
    gate_session.judge(result, request.node)
