"""A stack that fails to come up stops what it started, even when its report cannot be
written (seen in CI: a worker whose cwd was gone could not create ./reports, and the Redis
the stack had started was left running)."""

from dataclasses import replace

import pytest

from harness.config import Settings
from harness.errors import ServiceFailed
from harness.stack.base import Stack


class HalfStartedStack(Stack):
    backend = "fake"

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.downed = False

    def up(self) -> None:
        self.run_dir.mkdir(parents=True)
        raise ServiceFailed("postgres exited with code 1 while starting")

    def down(self) -> None:
        self.downed = True

    def service(self, name):
        raise NotImplementedError

    def address(self, name):
        return None

    @property
    def server(self):
        raise NotImplementedError

    def logs_dir(self):
        return self.run_dir / "logs"

    def repo_url(self, repo, via_latency=False):
        return ""

    def dead_url(self, index, kind="blackhole"):
        return ""

    def ensure_repos(self, count):
        pass

    def rename_repo(self, repo, new_name):
        pass


def test_a_failed_up_is_torn_down_even_when_its_report_cannot_be_written(tmp_path):
    not_a_dir = tmp_path / "reports"
    not_a_dir.write_text("a file where the reports dir should be")
    stack = HalfStartedStack(replace(Settings(), run_root=tmp_path / "runs", reports_dir=not_a_dir))
    with pytest.raises(ServiceFailed, match="postgres exited"):
        stack.__enter__()
    assert stack.downed
