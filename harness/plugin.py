"""The harness's pytest plugin (registered through the `pytest11` entry point).

- `--harness-require` (or HARNESS_REQUIRE=1, set by CI) turns every skip into a failure,
  so a test that needs something missing (a binary, a Docker engine) cannot pass quietly.
  An xfail (a known failure of a baseline) is left alone: it is not a skip.
- `--baseline FILE|NAME|auto|none` (default HARNESS_BASELINE): the gate suite's known
  failures become xfail with the reason, new or changed ones fail, fixed ones XPASS
  (`--strict-baseline`: fail). harness/runner/fixtures.py applies it.
- Fixtures: `harness_settings`, `stack_factory` (stacks torn down after the test), and the
  gate fixtures in `harness.runner.fixtures`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace

import pytest

from harness import config
from harness.errors import HarnessError
from harness.stack import make_stack
from harness.stack.base import Stack

pytest_plugins = ["harness.runner.fixtures"]


def pytest_configure(config: pytest.Config) -> None:
    from harness.gates.registry import markers
    for name, description in markers().items():
        config.addinivalue_line("markers", f"{name}: {description}")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("policy-harness")
    group.addoption("--harness-require", action="store_true",
                    default=config.require_switch(),
                    help="fail instead of skip when something a test needs is missing (CI sets this)")
    group.addoption("--baseline", dest="harness_baseline", default=None, metavar="FILE|NAME|auto|none",
                    help="known gate failures that do not fail the run (xfail): a baseline file, a shipped one's "
                         "name (opal-server-0.9.9), auto (the target release's shipped one) or none "
                         "(default: HARNESS_BASELINE, else none)")
    group.addoption("--strict-baseline", action="store_true", default=False,
                    help="with --baseline: a known failure that now passes fails (XPASS strict)")
    group.addoption("--keep-stack", action="store_true", default=False,
                    help="leave the gate stack up after the run for debugging (or HARNESS_KEEP_STACK=1)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and item.config.getoption("harness_require"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, but --harness-require / HARNESS_REQUIRE=1 forbids skips: {reason}"


@pytest.fixture(scope="session")
def harness_settings(pytestconfig: pytest.Config) -> config.Settings:
    try:
        settings = config.from_env()
    except HarnessError as exc:
        raise pytest.UsageError(str(exc)) from None
    if pytestconfig.getoption("keep_stack"):
        settings = replace(settings, keep_stack=True)
    return settings


@pytest.fixture
def stack_factory(harness_settings: config.Settings) -> Iterator[Callable[..., Stack]]:
    """make(version=..., source=..., image=..., backend="local", **settings) -> a running stack,
    torn down after the test. Tests name their backend: the default is local."""
    with ExitStack() as stacks:
        def make(version: str | None = None, source=None, image: str | None = None,
                 backend: str = "local", **changes) -> Stack:
            settings = replace(harness_settings, backend=backend)
            if version or source or image:
                target = config.Target(version=version or config.DEFAULT_OPAL_VERSION, source=source, image=image)
                settings = replace(settings, target=config.validate_target(target, backend))
            if changes:
                settings = replace(settings, **changes)
            return stacks.enter_context(make_stack(settings))
        yield make
