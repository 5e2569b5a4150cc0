"""pytest fixtures for the gate suite (tests/gates): one stack and one report per session."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from harness import config
from harness.errors import HarnessError
from harness.gates.runner import run_gate
from harness.report import RunReport
from harness.stack import make_stack
from harness.stack.base import Stack
from harness.verdict import GateResult

REPORT_KEY = pytest.StashKey[RunReport]()


def terminal_progress(pytest_config: pytest.Config):
    """Progress lines straight to the terminal, also while pytest captures output (a gate
    run takes minutes; silence would look like a hang)."""
    reporter = pytest_config.pluginmanager.getplugin("terminalreporter")
    capture = pytest_config.pluginmanager.getplugin("capturemanager")
    if reporter is None or capture is None:
        return print

    def progress(message: str) -> None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(message)
    return progress


@dataclass
class GateSession:
    stack: Stack
    report: RunReport
    profile: str
    progress: object

    def run(self, gate_id: str) -> GateResult:
        result = run_gate(gate_id, self.stack, self.profile, progress=self.progress)
        self.report.add(result)
        return result


@pytest.fixture(scope="session")
def gate_session(request: pytest.FixtureRequest, harness_settings: config.Settings) -> Iterator[GateSession]:
    profile = harness_settings.server_profile
    progress = terminal_progress(request.config)
    try:
        stack = make_stack(harness_settings, progress=progress).__enter__()
    except HarnessError as exc:
        pytest.fail(f"the stack did not come up: {exc}", pytrace=False)
    report = RunReport(harness_settings.reports_dir, stack.run_id, harness_settings.target.label,
                       stack.backend, profile)
    request.config.stash[REPORT_KEY] = report
    try:
        yield GateSession(stack, report, profile, progress)
    finally:
        report.collect_logs(stack.logs_dir())
        report.write()
        stack.__exit__(None, None, None)


def assert_gate_passed(result: GateResult) -> None:
    if result.verdict != "pass":
        pytest.fail(f"gate {result.id} {result.verdict.upper()}: {result.reason}", pytrace=False)


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    report = config.stash.get(REPORT_KEY, None)
    if report is None or not report.results:
        return
    terminalreporter.section(f"gate verdicts: {report.target} ({report.backend}, profile {report.profile})")
    for line in report.table().splitlines():
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"report: {report.dir}/summary.md")
