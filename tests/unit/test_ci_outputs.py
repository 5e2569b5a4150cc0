"""What CI reads of a run: figures, JUnit, the job summary, the benchmark file, the report
schema, compare's judgement, rerun's plan and the exit status. Reports are built the way a
run builds them (RunReport), with metrics in the shape the checkers record."""

import json
import xml.etree.ElementTree as ET

import pytest
import yaml

from harness import PROJECT_ROOT
from harness.children import target_flags
from harness.ci_outputs import append_step_summary, write_junit
from harness.compare import comparison, spec_target
from harness.config import Settings, Target
from harness.errors import ConfigError, HarnessError
from harness.figures import figures
from harness.report import RunReport, schema_errors
from harness.runinfo import settings_metadata
from harness.runner.batch import Batch, exit_status
from harness.runner.rerun import rerun_plan
from harness.verdict import GateResult

pytest_plugins = ["pytester"]

LEAK_FAIL = {"baseline": {"repo_locks": 1, "repos": 1, "repos_last_fetched": 1, "clone_dirs": 1, "worker_files": 4},
             "after_each_cycle": {"repo_locks": [11, 21], "repos": [11, 21], "repos_last_fetched": [11, 21],
                                  "clone_dirs": [11, 21], "worker_files": [14, 24]}}
LEAK_PASS = {"baseline": dict.fromkeys(LEAK_FAIL["baseline"], 0),
             "after_each_cycle": {k: [0, 0] for k in LEAK_FAIL["after_each_cycle"]}}


def _result(gate_id, verdict, metrics, category="", params=None):
    return GateResult(id=gate_id, verdict=verdict, reason=f"{gate_id} {verdict} | because", category=category,
                      duration_s=12.3, metrics=metrics, thresholds={"cache_tolerance": 0},
                      params=params or {"cycles": 2}, server_settings={"OPAL_SCOPES": "1"})


def _report(tmp_path, *results, target="0.9.9", env=None) -> RunReport:
    settings = Settings(target=Target(version=target), server_env=env or {})
    report = RunReport(tmp_path / target, f"run-{target}", f"opal-server=={target}", "local", "quick",
                       meta=settings_metadata(settings, "local"))
    for result in results:
        report.add(result)
    return report


def test_figures_are_read_from_the_recorded_metrics():
    kept = {f.name: f.value for f in figures("leak", LEAK_FAIL)}
    assert kept == {"cache entries kept": 60.0, "clone dirs kept": 20.0, "open files kept": 20.0}
    assert [f.value for f in figures("repeat-sync", {"per_scope_per_fetch": {"mapped_packs": 2.0}})] == [2.0]
    assert figures("boot-timing", {"ratio": 1.07, "boot_s": None})[0].value == 1.07
    assert figures("leak", {}) == []  # a failed load records no figures, and nothing crashes


def test_junit_carries_verdict_category_and_figures_and_marks_fail_and_error(tmp_path):
    report = _report(tmp_path, _result("leak", "fail", LEAK_FAIL, "leak.caches_kept"),
                     _result("offline-repo", "error", {}, "error.scenario"))
    path = write_junit(report.to_json(), report.dir, tmp_path / "out.xml")
    suite = ET.parse(path).getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "1", "1")
    leak, offline = suite.iter("testcase")
    props = {p.get("name"): p.get("value") for p in leak.iter("property")}
    assert props["verdict"] == "fail" and props["category"] == "leak.caches_kept"
    assert props["figure.cache entries kept [entries]"] == "60"
    assert props["report"].endswith("report.json")
    assert leak.find("failure").get("type") == "leak.caches_kept" and offline.find("error") is not None


def test_a_stack_that_never_came_up_is_one_error_testcase_naming_the_service(tmp_path):
    report = _report(tmp_path)
    report.stack_failed("postgres", "postgres exited with code 1 while starting")
    data = json.loads((report.dir / "report.json").read_text())
    assert schema_errors(data) == []
    case = ET.parse(write_junit(data, report.dir, tmp_path / "x.xml")).getroot().find("testcase")
    assert case.get("name") == "stack up" and case.find("error").get("type") == "service postgres"
    assert "did not come up" in (report.dir / "summary.md").read_text()


def test_the_step_summary_is_appended_not_overwritten(tmp_path):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    report = _report(tmp_path, _result("leak", "pass", LEAK_PASS))
    append_step_summary(report.to_json(), report.dir, summary)
    append_step_summary(report.to_json(), report.dir, None)  # no GITHUB_STEP_SUMMARY: nothing
    text = summary.read_text()
    assert text.startswith("earlier step\n") and "| `leak` | **PASS** |" in text and "because" in text


def test_benchmark_json_is_custom_smaller_is_better(tmp_path):
    report = _report(tmp_path, _result("leak", "fail", LEAK_FAIL, "leak.caches_kept"))
    entries = json.loads((report.dir / "benchmark.json").read_text())
    names = {e["name"] for e in entries}
    assert names == {"leak: cache entries kept", "leak: clone dirs kept", "leak: open files kept"}
    assert all(set(e) >= {"name", "unit", "value"} and isinstance(e["value"], float) for e in entries)


def test_the_schema_refuses_a_report_that_breaks_it(tmp_path):
    data = _report(tmp_path, _result("leak", "pass", LEAK_PASS)).to_json()
    assert schema_errors(data) == []
    data["gates"][0]["verdict"] = "maybe"
    del data["host"]["cores"]
    errors = schema_errors(data)
    assert any("gates/0/verdict" in e for e in errors) and any("cores" in e for e in errors)


def test_compare_flags_b_worse_only_where_a_passes(tmp_path):
    a = _report(tmp_path, _result("leak", "pass", LEAK_PASS), _result("boot-timing", "fail", {"ratio": 1.0}),
                target="0.9.9").to_json()
    b = _report(tmp_path, _result("leak", "fail", LEAK_FAIL, "leak.caches_kept"),
                _result("boot-timing", "fail", {"ratio": 0.5}), target="0.9.6").to_json()
    rows = {row["id"]: row for row in comparison(a, b)}
    assert rows["leak"]["b_worse"] is True and rows["boot-timing"]["b_worse"] is False
    assert rows["boot-timing"]["figures"][0]["ratio_b_over_a"] == 0.5
    assert {f["name"]: f["ratio_b_over_a"] for f in rows["leak"]["figures"]}["cache entries kept"] is None  # 0 → 60


def test_compare_targets_are_a_release_a_tree_or_an_image(tmp_path):
    assert target_flags(spec_target("0.9.6")) == ["--server", "opal", "--opal-version", "0.9.6"]
    assert target_flags(spec_target("0.51.0", "cerbos")) == ["--server", "cerbos", "--cerbos-version", "0.51.0"]
    assert target_flags(spec_target(str(tmp_path))) == ["--opal-source", str(tmp_path.resolve())]
    assert target_flags(spec_target("my/opal:dev")) == ["--opal-image", "my/opal:dev"]
    with pytest.raises(ConfigError, match="neither a release"):
        spec_target("not-a-thing")


def test_exit_status_a_fail_wins_over_an_error():
    assert exit_status(["pass", "pass"]) == 0
    assert exit_status(["pass", "error"]) == 2
    assert exit_status(["error", "fail"]) == 1
    assert exit_status([]) == 2


def test_a_batch_refuses_bad_input_before_any_stack():
    with pytest.raises(ConfigError, match="unknown gate nope"):
        Batch(gates=["nope"]).validate(Settings())
    with pytest.raises(ConfigError, match="keep-stack=sometimes"):
        Batch(gates=["leak"], keep="sometimes").validate(Settings())
    with pytest.raises(ConfigError, match="HARNESS_GATE_LEAK_SCOPES"):
        Batch(gates=["leak"], overrides={"leak": {"scopes": 0}}).validate(Settings())


def test_rerun_repeats_target_profile_settings_and_env_but_yours_win(tmp_path):
    recorded = _report(tmp_path, _result("leak", "fail", LEAK_FAIL, "leak.caches_kept", params={"cycles": 2}),
                       target="0.9.6", env={"OPAL_A": "recorded", "OPAL_B": "recorded"}).to_json()
    settings, batch = rerun_plan(recorded, Settings(server_env={"OPAL_B": "mine"}), target_given=False)
    assert settings.target.version == "0.9.6" and settings.backend == "local" and settings.server_profile == "quick"
    assert batch.gates == ["leak"] and batch.overrides["leak"]["cycles"] == 2
    assert batch.overrides["leak"]["cache_tolerance"] == 0
    assert batch.run_env == {"OPAL_A": "recorded"}  # OPAL_B: your own setting wins
    other, _ = rerun_plan(recorded, Settings(target=Target(version="0.9.9")), target_given=True)
    assert other.target.version == "0.9.9"
    del recorded["target_spec"]
    with pytest.raises(HarnessError, match="--opal-version"):
        rerun_plan(recorded, Settings(), target_given=False)


def _workflow() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "examples" / "github-actions.yml").read_text())


def _workflow_commands() -> tuple[list[dict], list[str]]:
    """The `gates` job's steps, and every job's commands in order (each once: the jobs share
    their setup lines)."""
    jobs = _workflow()["jobs"]
    commands = [step["run"].strip() for job in jobs.values() for step in job["steps"] if "run" in step]
    return jobs["gates"]["steps"], list(dict.fromkeys(commands))


def _uploads(job: dict) -> list[dict]:
    return [s for s in job["steps"] if s.get("uses") == "actions/upload-artifact@v4"]


def test_the_example_workflow_is_valid_yaml_compares_and_gates_the_pr_against_its_committed_baseline():
    steps, commands = _workflow_commands()
    assert any(c.startswith("harness compare base pr") for c in commands)
    [gates] = [c for c in commands if c.startswith("harness gates")]
    assert "--opal-source pr" in gates and "--junitxml" in gates
    assert "--baseline pr/.github/policy-harness-baseline.json" in gates  # the PR's own committed file
    assert {"actions/cache@v4", "actions/upload-artifact@v4"} <= {s.get("uses") for s in steps}
    for job in _workflow()["jobs"].values():
        for upload in _uploads(job):  # reports/latest links to a run the artifact already holds
            assert upload["with"]["path"].split() == ["reports/", "!reports/latest"] and upload["if"] == "always()"


def test_the_example_workflow_shards_the_gates_and_merges_them_judged_by_the_baseline():
    jobs = _workflow()["jobs"]
    shards = jobs["gates"]["strategy"]["matrix"]["shard"]
    assert shards == list(range(1, len(shards) + 1)) and len(shards) >= 2
    assert jobs["gates"]["strategy"]["fail-fast"] is False
    [gates] = [s["run"] for s in jobs["gates"]["steps"] if s.get("run", "").startswith("harness gates")]
    assert f"--shard ${{{{ matrix.shard }}}}/{len(shards)}" in gates
    assert _uploads(jobs["gates"])[0]["with"]["name"] == "policy-gate-shard-${{ matrix.shard }}"
    merge = jobs["merge"]
    assert merge["needs"] == "gates" and merge["if"] == "always()"
    download = next(s for s in merge["steps"] if s.get("uses") == "actions/download-artifact@v4")
    assert download["with"] == {"pattern": "policy-gate-shard-*", "path": "shards"}
    [merging] = [s["run"] for s in merge["steps"] if s.get("run", "").startswith("harness merge")]
    assert merging.startswith("harness merge shards/* ") and "--junitxml" in merging
    assert "--baseline pr/.github/policy-harness-baseline.json" in merging


def test_the_example_workflow_publishes_the_benchmark_and_the_a_b_table():
    jobs = _workflow()["jobs"]
    bench = next(s for s in jobs["merge"]["steps"]
                 if s.get("uses") == "benchmark-action/github-action-benchmark@v1")
    assert bench["with"]["tool"] == "customSmallerIsBetter"  # what report.benchmark_entries writes
    assert bench["with"]["output-file-path"] == "reports/latest/benchmark.json" and bench["if"] == "always()"
    # the history in a cached file: a PR's job needs no gh-pages branch and pushes nothing
    history = next(s for s in jobs["merge"]["steps"] if s.get("uses") == "actions/cache@v4")
    assert bench["with"]["external-data-json-path"].startswith(history["with"]["path"] + "/")
    assert "auto-push" not in bench["with"]
    summary = next(s for s in jobs["compare"]["steps"] if "GITHUB_STEP_SUMMARY" in s.get("run", ""))
    assert summary["run"].strip() == 'cat reports/compare-*/compare.md >> "$GITHUB_STEP_SUMMARY"'
    assert summary["if"] == "always()"


def test_the_example_workflow_runs_the_commands_the_readme_documents():
    _, commands = _workflow_commands()
    readme = (PROJECT_ROOT / "README.md").read_text()
    block = readme.split("## Gate your own fork's CI", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    assert commands == [line.strip() for line in block.strip().splitlines()]


def test_annotations_name_each_failed_gate_and_its_reason_and_say_nothing_of_a_pass(tmp_path, capsys):
    from harness.ci_outputs import annotation_lines, print_annotations
    report = _report(tmp_path, _result("leak", "fail", LEAK_FAIL, "leak.caches_kept"),
                     _result("offline-repo", "error", {}, "error.scenario"), _result("zombie-cap", "pass", LEAK_PASS))
    lines = annotation_lines(report.to_json())
    # the reason's "|" stays (only %, CR and LF are escaped in a message)
    assert lines == ["::error title=leak::leak fail | because",
                     "::error title=offline-repo::offline-repo error | because"]
    print_annotations(report.to_json(), github_actions=False)  # outside GitHub Actions: nothing
    assert capsys.readouterr().out == ""
    print_annotations(report.to_json(), github_actions=True)
    assert capsys.readouterr().out.splitlines() == lines


def test_annotations_judged_by_a_baseline_a_known_failure_is_a_notice(tmp_path):
    from harness.baseline import Baseline, Outcome
    from harness.ci_outputs import annotation_lines
    report = _report(tmp_path, _result("leak", "fail", LEAK_FAIL, "leak.caches_kept"),
                     _result("repeat-sync", "fail", {}, "repeat_sync.packs_grew"), _result("zombie-cap", "pass", {}))
    report.baseline = Baseline("opal-server==0.9.9", {"repeat-sync": (Outcome("repeat_sync.packs_grew", None),),
                                                      "zombie-cap": (Outcome("zombie.new_scope_not_served", None),)})
    leak, repeat, zombie = annotation_lines(report.to_json())
    assert leak.startswith("::error title=leak::new failure")
    assert repeat.startswith("::notice title=repeat-sync::known failure")
    assert zombie.startswith("::notice title=zombie-cap::passes now")


def test_annotations_escape_newlines_and_say_a_stack_that_never_came_up(tmp_path):
    from harness.ci_outputs import annotation_lines
    report = _report(tmp_path)
    report.stack_failed("postgres", "exited 1\nsee logs: 100%")
    assert annotation_lines(report.to_json()) == [
        "::error title=stack up::the stack did not come up (postgres): exited 1%0Asee logs: 100%25"]


def test_github_actions_is_read_with_the_step_summary_in_config():
    from harness.config import from_env
    assert from_env({"GITHUB_ACTIONS": "true"}).github_actions is True
    assert from_env({}).github_actions is False and from_env({"GITHUB_ACTIONS": "false"}).github_actions is False


# The pytest route (harness.gates.suite's test_gate, the fixtures' real record path) in a
# fresh pytest process, as a user runs it, on a session whose gates return canned results:
# no stack comes up.
CANNED_SESSION = '''
import os

import pytest
from harness.runner.fixtures import PART_KEY, REPORT_KEY, GateSession
from harness.report import RunReport
from harness.verdict import GateResult

METRICS = {"baseline": {"repo_locks": 1, "repos": 1, "repos_last_fetched": 1, "clone_dirs": 1, "worker_files": 4},
           "after_each_cycle": {"repo_locks": [1, 1], "repos": [1, 1], "repos_last_fetched": [1, 1],
                                "clone_dirs": [1, 1], "worker_files": [4, 4]}}


class Canned(GateSession):
    def run(self, gate_id):
        result = GateResult(id=gate_id, verdict="pass", reason="canned", category="", duration_s=1.0,
                            metrics=METRICS, thresholds={}, params={}, server_settings={})
        self.report.add(result)
        return result


@pytest.fixture(scope="session")
def gate_session(request, tmp_path_factory):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    session = Canned(None, RunReport(tmp_path_factory.mktemp("reports"), f"run-{worker}", "opal-server==0.9.9",
                                     "local", "quick"), "quick")
    request.config.stash[REPORT_KEY] = session.report  # as the real fixture: the terminal summary reads it
    yield session
    session.report.write()
    if hasattr(request.config, "workeroutput"):  # as the real fixture: the controller merges the parts
        request.config.workeroutput[PART_KEY] = str(session.report.dir)
'''


@pytest.mark.parametrize("family", ["xunit2", "xunit1"])
def test_the_pytest_route_records_junit_properties_without_a_warning(pytester, monkeypatch, family):
    monkeypatch.delenv("HARNESS_BASELINE", raising=False)
    pytester.makeconftest(CANNED_SESSION)
    pytester.makepyfile(test_gates="from harness.gates.suite import test_gate  # noqa: F401\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error", "-m", "leak",
                                           "--junitxml=out.xml", "-o", f"junit_family={family}")
    result.assert_outcomes(passed=1, warnings=0)
    assert "::" not in result.stdout.str()  # a passing gate has no annotation (nor outside GitHub Actions)
    suite = ET.parse(pytester.path / "out.xml").getroot().find("testsuite")
    [case] = suite.iter("testcase")
    if family == "xunit2":  # pytest's default: no testcase properties, so the testsuite's, per gate
        props = {p.get("name"): p.get("value") for p in suite.find("properties").iter("property")}
        assert props["leak.verdict"] == "pass" and props["leak.report"].endswith("report.json")
        assert case.find("properties") is None
    else:
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        assert props["verdict"] == "pass" and props["figure.cache entries kept [entries]"] == "0"


def test_the_pytest_route_on_xdist_workers_records_every_gate_s_properties_on_the_controller(pytester, monkeypatch):
    monkeypatch.delenv("HARNESS_BASELINE", raising=False)
    pytester.makeconftest(CANNED_SESSION)
    pytester.makepyfile(test_gates="from harness.gates.suite import test_gate  # noqa: F401\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error", "-n", "2",
                                           "-m", "leak or repeat_sync", "--junitxml=out.xml")
    result.assert_outcomes(passed=2, warnings=0)
    assert "::" not in result.stdout.str()
    suite = ET.parse(pytester.path / "out.xml").getroot().find("testsuite")
    props = {p.get("name"): p.get("value") for p in suite.find("properties").iter("property")}
    assert props["leak.verdict"] == "pass" and props["repeat-sync.verdict"] == "pass"
    assert "-xdist2" in props["leak.report"]  # the merged report's path, not a worker's


def test_the_pytest_route_annotates_a_failed_gate_inside_github_actions(pytester, monkeypatch):
    monkeypatch.delenv("HARNESS_BASELINE", raising=False)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    failing = 'verdict="fail", reason="kept 60 entries", category="leak.caches_kept"'
    pytester.makeconftest(CANNED_SESSION.replace('verdict="pass", reason="canned", category=""', failing))
    pytester.makepyfile(test_gates="from harness.gates.suite import test_gate  # noqa: F401\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error", "-m", "leak")
    result.assert_outcomes(failed=1, warnings=0)
    assert "::error title=leak::kept 60 entries" in result.stdout.lines


def test_record_property_under_xunit2_is_what_warned(pytester):
    """The control: the way the suite recorded before is a test error under `-W error`."""
    pytester.makepyfile(test_old="def test_old(record_property):\n    record_property('verdict', 'pass')\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error", "--junitxml=out.xml")
    result.assert_outcomes(errors=1)
