"""pytest fixtures for the gate suite (tests/gates): one stack and one report per session.

Under pytest-xdist (`-n N`) every worker is a session of its own: its own stack (ports, run
dir, compose project) and its own report. The controller then merges the workers' reports
into one, like `harness gates --jobs` does (`reports/<run>-xdist<N>/`, the parts under
`parts/`), points `reports/latest` at it and writes the job summary once. Unlike `--jobs`,
xdist does not keep `boot-timing` apart; in `make test` its cells give the expected verdicts
with three other stacks beside them on 2 cores.

With a baseline (`--baseline`, HARNESS_BASELINE; harness/baseline.py) a known failure is an
xfail with its reason, a new or changed one fails, a fixed one XPASSes (strict with
`--strict-baseline`); the report and the job summary record each gate's status.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness import config, console
from harness.baseline import CHANGED, FIXED, KNOWN, NEW, Baseline, Choice, judge, judge_gate, resolve
from harness.ci_outputs import append_step_summary, junit_properties
from harness.errors import HarnessError
from harness.report import RunReport
from harness.runner.run import run_gate, skip_reason
from harness.stack import make_stack
from harness.stack.base import Stack
from harness.verdict import GateResult

REPORT_KEY = pytest.StashKey[RunReport]()
BASELINE_KEY = pytest.StashKey[Choice]()
SKIPPED_KEY = pytest.StashKey[dict[str, str]]()  # gate id -> why the chosen server cannot take it
PART_KEY = "policy_harness_report_dir"  # a worker's report dir, in xdist's workeroutput


class TerminalHandler(logging.Handler):
    """The harness's lines straight to the terminal, also while pytest captures output (a
    gate run takes minutes; silence would look like a hang)."""

    def __init__(self, pytest_config: pytest.Config):
        super().__init__()
        self.reporter = pytest_config.pluginmanager.getplugin("terminalreporter")
        self.capture = pytest_config.pluginmanager.getplugin("capturemanager")

    def emit(self, record: logging.LogRecord) -> None:
        if self.reporter is None or self.capture is None:
            return
        with self.capture.global_and_fixture_disabled():
            self.reporter.write_line(self.format(record))


@dataclass
class GateSession:
    stack: Stack
    report: RunReport
    profile: str
    baseline: Baseline | None = None
    strict_baseline: bool = False

    def __post_init__(self) -> None:
        self.report.baseline, self.report.strict_baseline = self.baseline, self.strict_baseline

    def run(self, gate_id: str) -> GateResult:
        # Collection deselected what the server cannot take; BACKEND=auto is decided only when
        # the stack comes up, and a backend can lack what the server has on another (OPAL's
        # source control on compose): such a gate is skipped here, with its reason in the report.
        if (reason := skip_reason(gate_id, self.stack.settings)) is not None:
            self.report.skip(gate_id, reason)
            pytest.skip(reason)
        try:
            result = run_gate(gate_id, self.stack, self.profile)
        except HarnessError as exc:  # a bad HARNESS_GATE_* value: one line, no traceback
            pytest.fail(str(exc), pytrace=False)
        self.report.add(result)
        return result

    def properties(self, gate_id: str) -> list[tuple[str, str]]:
        """JUnit properties of a gate that ran: verdict, category, figures, report path."""
        gate = next(g for g in self.report.to_json()["gates"] if g["id"] == gate_id)
        return junit_properties(gate, self.report.dir)

    def record(self, gate_id: str, request: pytest.FixtureRequest) -> None:
        """The gate's JUnit properties, where pytest's JUnit family holds them without a
        warning (a warning is a test error under `filterwarnings = error`): on the testcase
        under xunit1/legacy (`record_property`); under xunit2, pytest's default, whose
        testcases have no properties, on the testsuite (`record_testsuite_property`) as
        `<gate>.<name>` (under xdist the controller records them from the merged report:
        see suite_properties)."""
        properties = self.properties(gate_id)
        if junit_family(request.config) in ("xunit1", "legacy"):
            record = request.getfixturevalue("record_property")
            for name, value in properties:
                record(name, value)
            return
        record_suite = request.getfixturevalue("record_testsuite_property")
        for name, value in properties:
            record_suite(f"{gate_id}.{name}", value)

    def judge(self, result: GateResult, node: pytest.Item) -> None:
        """The test case's outcome: without a baseline, pass or fail by the verdict; with one,
        a known failure is an xfail with its reason, a new or changed one a failure, a fixed
        one an XPASS (a failure with --strict-baseline). An ERROR always fails."""
        if self.baseline is None or result.verdict == "error":
            assert_gate_passed(result)
            return
        gate = next(g for g in self.report.to_json()["gates"] if g["id"] == result.id)
        status = judge_gate(gate, self.baseline)
        if status.status == KNOWN:
            pytest.xfail(status.text)
        if status.status in (NEW, CHANGED):
            pytest.fail(f"gate {result.id} FAIL, {status.text}", pytrace=False)
        if status.status == FIXED:  # pytest reports a passing xfail-marked test as XPASS
            node.add_marker(pytest.mark.xfail(reason=status.text, strict=self.strict_baseline))


@pytest.fixture(scope="session")
def gate_session(request: pytest.FixtureRequest, harness_settings: config.Settings) -> Iterator[GateSession]:
    profile = harness_settings.server_profile
    handler = console.attach(TerminalHandler(request.config))
    request.addfinalizer(lambda: console.detach(handler))
    with ExitStack() as teardown:  # the stack goes down when the session's block ends, whatever raised
        try:
            stack = teardown.enter_context(make_stack(harness_settings))
        except HarnessError as exc:
            pytest.fail(f"the stack did not come up: {exc}", pytrace=False)
        report = RunReport(harness_settings.reports_dir, stack.run_id, harness_settings.target.label,
                           stack.backend, profile, meta=stack.run_metadata())
        request.config.stash[REPORT_KEY] = report
        for gate_id, reason in request.config.stash.get(SKIPPED_KEY, {}).items():
            report.skip(gate_id, reason)
        choice = session_baseline(request.config)
        try:
            yield GateSession(stack, report, profile, choice.baseline, strict_baseline(request.config))
        finally:  # the report first: the logs are still there
            report.collect_logs(stack.logs_dir())
            report.write()
            worker_output = getattr(request.config, "workeroutput", None)
            if worker_output is not None:
                worker_output[PART_KEY] = str(report.dir)  # the controller merges and summarises
            else:
                append_step_summary(report.to_json(), report.dir, harness_settings.step_summary)


def junit_family(pytest_config: pytest.Config) -> str:
    """pytest's `junit_family` ini (xunit2 by default; empty when the junitxml plugin is off)."""
    try:
        return str(pytest_config.getini("junit_family") or "xunit2")
    except ValueError:  # -p no:junitxml: the ini is not registered
        return ""


def session_baseline(pytest_config: pytest.Config) -> Choice:
    """The run's baseline: --baseline, else HARNESS_BASELINE (read once; a missing or broken
    file is a usage error naming the fix)."""
    if BASELINE_KEY not in pytest_config.stash:
        try:
            settings = config.from_env()
            option = pytest_config.getoption("harness_baseline", None)
            pytest_config.stash[BASELINE_KEY] = resolve(option if option is not None else settings.baseline,
                                                        settings.target)
        except HarnessError as exc:
            raise pytest.UsageError(str(exc)) from None
    return pytest_config.stash[BASELINE_KEY]


def strict_baseline(pytest_config: pytest.Config) -> bool:
    return bool(pytest_config.getoption("strict_baseline", False))


def baseline_lines(pytest_config: pytest.Config, gates: list[dict]) -> list[str]:
    choice = session_baseline(pytest_config)
    if choice.baseline is None:
        return []
    return judge(gates, choice.baseline, strict_baseline(pytest_config)).lines()


def assert_gate_passed(result: GateResult) -> None:
    if result.verdict != "pass":
        pytest.fail(f"gate {result.id} {result.verdict.upper()}: {result.reason}", pytrace=False)


@dataclass
class XdistReports:
    """On the xdist controller: the workers' reports, merged into one run report."""

    parts: list[Path] = field(default_factory=list)
    merged: dict | None = None
    merged_dir: Path | None = None
    config: pytest.Config | None = None

    def pytest_testnodedown(self, node, error) -> None:
        part = getattr(node, "workeroutput", {}).get(PART_KEY)
        if part:
            self.parts.append(Path(part))

    @pytest.hookimpl(tryfirst=True)  # before the junitxml plugin writes its file
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.parts:
            return
        from harness.gates.registry import GATES
        from harness.report import point_latest
        from harness.runner.parallel import merge
        from harness.stack.base import new_run_id
        reports_dir = self.parts[0].parent
        run_id = f"{new_run_id()}-xdist{len(self.parts)}"
        self.merged_dir = reports_dir / run_id
        self.merged = merge(sorted(self.parts), list(GATES), self.merged_dir, run_id,
                            session_baseline(session.config).baseline, strict_baseline(session.config))
        self.config = session.config
        for part in self.parts:
            shutil.move(str(part), self.merged_dir / "parts" / part.name)
        point_latest(reports_dir, self.merged_dir)
        append_step_summary(self.merged, self.merged_dir, config.step_summary_path())
        suite_properties(session.config, self.merged, self.merged_dir)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.merged is None:
            return
        from harness.report import verdict_table
        terminalreporter.section(f"gate verdicts: {len(self.parts)} xdist workers, one stack each")
        for line in verdict_table(self.merged["gates"]).splitlines():
            terminalreporter.write_line(line)
        for line in baseline_lines(self.config, self.merged["gates"]) if self.config is not None else []:
            terminalreporter.write_line(line)
        write_annotations(terminalreporter, self.merged)
        terminalreporter.write_line(f"report: {self.merged_dir}/summary.md")


def suite_properties(pytest_config: pytest.Config, merged: dict, report_dir: Path) -> None:
    """Under xunit2 the workers' testsuite properties never reach the controller's JUnit
    file (a worker writes none): the controller records every gate's from the merged report,
    as a single session would (`<gate>.<name>`)."""
    from _pytest.junitxml import xml_key  # the junitxml plugin's own handle on its file

    xml = pytest_config.stash.get(xml_key, None)
    if xml is None or junit_family(pytest_config) in ("xunit1", "legacy"):
        return  # no JUnit file; or the testcases carry them (user properties travel from workers)
    for gate in merged["gates"]:
        for name, value in junit_properties(gate, report_dir):
            xml.add_global_property(f"{gate['id']}.{name}", value)


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(XdistReports(), "policy-harness-xdist-reports")
    if _baseline_asked(config):  # a missing or broken baseline stops the run before anything starts
        session_baseline(config)


def _baseline_asked(pytest_config: pytest.Config) -> bool:
    from harness.config import baseline_setting
    return bool(pytest_config.getoption("harness_baseline", None) or baseline_setting())


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Said at the start (also by an xdist controller): which baseline judges the gates."""
    if not _baseline_asked(config):
        return []
    return [f"[harness] baseline: {session_baseline(config).said}"]


def _gate_case(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec is None or "gate_session" not in getattr(item, "fixturenames", ()):
        return None
    return callspec.params.get("gate_id")


def _run_timeout(pytest_config: pytest.Config) -> float:
    """The run's per-test timeout (--timeout, else the ini's; 0: none)."""
    try:
        return float(pytest_config.getoption("timeout", None) or pytest_config.getini("timeout") or 0)
    except (ValueError, TypeError):  # pytest-timeout not installed
        return 0.0


@pytest.hookimpl(trylast=True)  # after -m / -k deselected what will not run
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Before any stack comes up: the selected gates' settings are checked and the machine
    is checked for the largest of their loads (the open-file limit raised, or one error
    with the number needed), and a gate whose load needs longer than the run's per-test
    timeout gets a time limit that fits it — a timeout must not kill a long gate before its
    verdict reaches the report."""
    from harness.config import from_env
    from harness.runner.run import configure, gate, preflight, requested_settings
    cases = [(item, gate_id) for item in items if (gate_id := _gate_case(item))]
    if not cases:
        return
    try:
        settings = from_env()
        cases = _deselect_what_the_server_cannot_take(config, items, cases, settings)
        if not cases:
            return
        preflight(settings, sorted({gate_id for _, gate_id in cases}))
    except HarnessError as exc:
        raise pytest.UsageError(str(exc)) from None
    timeout = _run_timeout(config)
    for item, gate_id in cases:
        g = gate(gate_id)
        load = g.load(configure(g, requested_settings(g, settings))[0])
        if timeout and load is not None and load.time_limit_s() > timeout:
            item.add_marker(pytest.mark.timeout(load.time_limit_s()))


def _deselect_what_the_server_cannot_take(pytest_config: pytest.Config, items: list[pytest.Item],
                                          cases: list[tuple[pytest.Item, str]],
                                          settings: config.Settings) -> list[tuple[pytest.Item, str]]:
    """A gate the chosen server cannot take (harness.servers.base) is deselected, not
    skipped — a skip fails under HARNESS_REQUIRE=1, and this one is by design — with its
    reason kept for the report's `skipped` and the terminal summary."""
    from harness.runner.run import skip_reason
    reasons = {gate_id: reason for _, gate_id in cases if (reason := skip_reason(gate_id, settings)) is not None}
    if not reasons:
        return cases
    dropped = [item for item, gate_id in cases if gate_id in reasons]
    pytest_config.hook.pytest_deselected(items=dropped)
    items[:] = [item for item in items if item not in dropped]
    pytest_config.stash[SKIPPED_KEY] = reasons
    return [(item, gate_id) for item, gate_id in cases if gate_id not in reasons]


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    for gate_id, reason in config.stash.get(SKIPPED_KEY, {}).items():
        terminalreporter.write_line(f"[harness] deselected {gate_id}: {reason}")
    report = config.stash.get(REPORT_KEY, None)
    if report is None or not report.results:
        return
    terminalreporter.section(f"gate verdicts: {report.target} ({report.backend}, profile {report.profile})")
    for line in report.table().splitlines():
        terminalreporter.write_line(line)
    for line in baseline_lines(config, report.to_json()["gates"]):
        terminalreporter.write_line(line)
    write_annotations(terminalreporter, report.to_json())
    terminalreporter.write_line(f"report: {report.dir}/summary.md")


def write_annotations(terminalreporter, data: dict) -> None:
    """Inside GitHub Actions, the gates' `::error` / `::notice` lines (harness/ci_outputs.py)
    on the terminal, which is the step's stdout: the PR page shows them."""
    from harness.ci_outputs import annotation_lines
    from harness.config import github_actions
    for line in annotation_lines(data) if github_actions() else []:
        terminalreporter.write_line(line)
