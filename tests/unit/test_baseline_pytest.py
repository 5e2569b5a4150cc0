"""The pytest route of baselines (`pytest --pyargs harness.gates.suite --baseline FILE`): a
known failure is an xfail with its reason (JUnit `<skipped type="pytest.xfail">`, also under
HARNESS_REQUIRE=1), a new one fails, a fixed one XPASSes — a failure with --strict-baseline.
The gate cases here are GateSession.judge on recorded results, as the suite calls it."""

import xml.etree.ElementTree as ET

import pytest

from harness.baseline import Baseline, Outcome

pytest_plugins = ["pytester"]

BASE = Baseline("opal-server==0.9.9", {"repeat-sync": (Outcome("repeat_sync.packs_grew", ("repeat_sync.packs_grew",)),),
                                       "zombie-cap": (Outcome("zombie.new_scope_not_served", None),)})

CASES = '''
import pytest
from harness.runner.fixtures import GateSession, session_baseline, strict_baseline
from harness.report import RunReport
from harness.verdict import GateResult


@pytest.mark.parametrize("gate_id,verdict,category", [
    ("repeat-sync", "fail", "repeat_sync.packs_grew"), ("leak", "fail", "leak.caches_kept"),
    ("zombie-cap", "pass", ""), ("offline-repo", "pass", ""), ("boot-timing", "error", "error.scenario")])
def test_gate(request, tmp_path, gate_id, verdict, category):
    choice = session_baseline(request.config)
    report = RunReport(tmp_path, "run", "opal-server==0.9.9", "local", "quick")
    session = GateSession(None, report, "quick", choice.baseline, strict_baseline(request.config))
    result = GateResult(id=gate_id, verdict=verdict, reason=f"{gate_id} because", category=category,
                        duration_s=1.0, metrics={}, thresholds={}, params={}, server_settings={})
    report.add(result)
    session.judge(result, request.node)
'''


def _run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, ET.Element]:
    (pytester.path / "base.json").write_text(BASE.dumps())
    pytester.makepyfile(test_cases=CASES)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rxX", "--junitxml=out.xml", *args)
    return result, ET.parse(pytester.path / "out.xml").getroot()


def test_known_is_xfail_new_fails_fixed_xpasses(pytester, monkeypatch):
    monkeypatch.setenv("HARNESS_REQUIRE", "1")  # skips fail under it; an xfail is no skip
    monkeypatch.delenv("HARNESS_BASELINE", raising=False)
    result, junit = _run(pytester, "--baseline", "base.json")
    result.assert_outcomes(passed=1, failed=2, xfailed=1, xpassed=1)
    result.stdout.fnmatch_lines(["[[]harness[]] baseline: base.json (made on opal-server==0.9.9): known failures *",
                                 "*leak*new failure leak.caches_kept*",
                                 "*XPASS*zombie-cap*remove it from the baseline*"])
    skipped = junit.find(".//testcase[@name='test_gate[repeat-sync-fail-repeat_sync.packs_grew]']/skipped")
    assert skipped.get("type") == "pytest.xfail" and skipped.get("message").startswith("known failure: ")


def test_the_variable_is_the_default_and_strict_fails_a_fixed_one(pytester, monkeypatch):
    monkeypatch.setenv("HARNESS_BASELINE", "base.json")
    result, _ = _run(pytester, "--strict-baseline")
    result.assert_outcomes(passed=1, failed=3, xfailed=1)
    result.stdout.fnmatch_lines(["*test_gate?zombie-cap-pass-?*",
                                 "*XPASS(strict)*remove it from the baseline (base.json)"])


def test_without_a_baseline_every_failure_fails_and_a_bad_one_is_a_usage_error(pytester, monkeypatch):
    monkeypatch.delenv("HARNESS_BASELINE", raising=False)
    result, _ = _run(pytester)
    result.assert_outcomes(passed=2, failed=3)
    bad = pytester.runpytest("-p", "no:cacheprovider", "--baseline", "missing.json")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*baseline missing.json does not exist: make one with `harness baseline*"])
