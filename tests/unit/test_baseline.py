"""Baselines (harness/baseline.py): every case of the comparison and its exit status, the
file written by `harness baseline` and read by `--baseline` / HARNESS_BASELINE, the shipped
0.9.9 baseline, and what JUnit, the summaries and report.json say of known, new and fixed."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import baseline as bl
from harness import cli
from harness.baseline import Baseline, Outcome, annotate, from_reports, judge, parse, resolve
from harness.ci_outputs import step_summary, write_junit
from harness.config import Settings, Target, from_env
from harness.errors import ConfigError
from harness.report import RunReport, schema_errors
from harness.runinfo import settings_metadata
from harness.runner.batch import Batch
from harness.runner.parallel import merge
from harness.verdict import GateResult

SHIPPED = Path(bl.__file__).with_name("baselines") / "opal-server-0.9.9.json"
PACKS = Outcome("repeat_sync.packs_grew", ("repeat_sync.files_grew", "repeat_sync.packs_grew"))
BASE = Baseline("opal-server==0.9.9", {"repeat-sync": (PACKS,),
                                       "orphan-clones": (Outcome("orphan.fds_kept", ("orphan.fds_kept",)),
                                                         Outcome("orphan.clone_dirs_kept",
                                                                 ("orphan.clone_dirs_kept", "orphan.fds_kept"))),
                                       "zombie-cap": (Outcome("zombie.new_scope_not_served", None),)},
                path=Path("base.json"))


def _gate(gate_id: str, verdict: str, category: str = "", *problems: str) -> dict:
    listed = problems or ((category,) if category else ())
    return {"id": gate_id, "verdict": verdict, "category": category, "reason": f"{gate_id} said why",
            "problems": [{"category": p, "text": f"{p} text", "figures": {}} for p in listed]}


def _statuses(*gates: dict, strict: bool = False) -> tuple[dict[str, str], int]:
    judgement = judge(gates, BASE, strict)
    return {g.gate: g.status for g in judgement.gates}, judgement.exit_status()


# -- the comparison -------------------------------------------------------------------------

def test_a_known_failure_with_the_same_category_and_problems_exits_0():
    statuses, status = _statuses(_gate("repeat-sync", "fail", "repeat_sync.packs_grew", "repeat_sync.packs_grew",
                                       "repeat_sync.files_grew"), _gate("leak", "pass"))
    assert statuses == {"repeat-sync": "known", "leak": "pass"} and status == 0


def test_a_failure_the_baseline_does_not_list_is_new_and_exits_1():
    statuses, status = _statuses(_gate("leak", "fail", "leak.caches_kept"),
                                 _gate("repeat-sync", "fail", "repeat_sync.packs_grew", *PACKS.problems or ()))
    assert statuses == {"leak": "new", "repeat-sync": "known"} and status == 1


def test_a_known_failure_whose_category_or_problem_set_changed_exits_1():
    other_category, status = _statuses(_gate("repeat-sync", "fail", "repeat_sync.rss_slope"))
    assert other_category == {"repeat-sync": "changed"} and status == 1
    one_more, status = _statuses(_gate("repeat-sync", "fail", "repeat_sync.packs_grew", *PACKS.problems or (),
                                       "repeat_sync.rss_slope"))
    assert one_more == {"repeat-sync": "changed"} and status == 1
    one_less, status = _statuses(_gate("repeat-sync", "fail", "repeat_sync.packs_grew"))
    assert one_less == {"repeat-sync": "changed"} and status == 1


def test_a_gate_with_two_known_outcomes_matches_either_and_nothing_else():
    quiet, status = _statuses(_gate("orphan-clones", "fail", "orphan.fds_kept"))
    assert quiet == {"orphan-clones": "known"} and status == 0
    loaded, status = _statuses(_gate("orphan-clones", "fail", "orphan.clone_dirs_kept", "orphan.clone_dirs_kept",
                                     "orphan.fds_kept", "orphan.fds_kept"))  # one problem per phase: a set
    assert loaded == {"orphan-clones": "known"} and status == 0
    worse, status = _statuses(_gate("orphan-clones", "fail", "orphan.caches_kept", "orphan.caches_kept",
                                    "orphan.fds_kept"))
    assert worse == {"orphan-clones": "changed"} and status == 1


def test_problems_null_matches_any_problem_set_of_that_category():
    statuses, status = _statuses(_gate("zombie-cap", "fail", "zombie.new_scope_not_served",
                                       "zombie.new_scope_not_served", "zombie.something_else"))
    assert statuses == {"zombie-cap": "known"} and status == 0


def test_a_fixed_failure_is_reported_and_fails_only_when_strict():
    judgement = judge([_gate("repeat-sync", "pass")], BASE)
    (fixed,) = judgement.gates
    assert fixed.status == "fixed" and "remove it from the baseline" in fixed.text and "base.json" in fixed.text
    assert judgement.exit_status() == 0
    assert judge([_gate("repeat-sync", "pass")], BASE, strict=True).exit_status() == 1
    assert any("fixed" in line for line in judgement.lines())


def test_an_error_exits_2_unless_something_is_new_and_a_listed_error_is_no_known_failure():
    statuses, status = _statuses(_gate("repeat-sync", "error", "error.scenario"))
    assert statuses == {"repeat-sync": "error"} and status == 2
    _, status = _statuses(_gate("offline-repo", "error", "error.scenario"), _gate("leak", "fail", "leak.caches_kept"))
    assert status == 1  # a new failure is the regression: it wins over an error, as without a baseline
    _, status = _statuses(_gate("offline-repo", "error", "error.scenario"),
                          _gate("repeat-sync", "fail", "repeat_sync.packs_grew", *PACKS.problems or ()))
    assert status == 2
    assert judge([], BASE).exit_status() == 2  # nothing ran


def test_gates_the_baseline_lists_but_the_run_did_not_run_are_not_judged():
    judgement = judge([_gate("leak", "pass")], BASE)
    assert [g.gate for g in judgement.gates] == ["leak"] and judgement.exit_status() == 0


# -- the file ---------------------------------------------------------------------------------

def test_a_missing_or_broken_baseline_is_one_error_naming_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"does not exist: make one with `harness baseline REPORT_DIR -o"):
        bl.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="does not parse .*HARNESS_BASELINE=none"):
        bl.load(tmp_path / "bad.json")
    (tmp_path / "old.json").write_text(json.dumps({"schema_version": 99, "known_failures": {}}))
    with pytest.raises(ConfigError, match="not a schema_version 1 baseline"):
        bl.load(tmp_path / "old.json")
    (tmp_path / "odd.json").write_text(json.dumps({"schema_version": 1, "known_failures": {"leak": [{"x": 1}]}}))
    with pytest.raises(ConfigError, match="malformed"):
        bl.load(tmp_path / "odd.json")


def _run_report(tmp_path: Path, run: str, *results: GateResult, target: str = "0.9.9") -> RunReport:
    report = RunReport(tmp_path / "reports", run, f"opal-server=={target}", "local", "quick",
                       meta=settings_metadata(Settings(target=Target(version=target)), "local"))
    for result in results:
        report.add(result)
    return report


def _result(gate_id: str, verdict: str, category: str = "", *problems: str) -> GateResult:
    listed = problems or ((category,) if category else ())
    return GateResult(id=gate_id, verdict=verdict, reason=f"{gate_id}: why", category=category, duration_s=1.0,
                      metrics={}, thresholds={}, params={}, server_settings={},
                      problems=[{"category": p, "text": p, "figures": {}} for p in listed])


def test_harness_baseline_writes_every_outcome_of_its_runs_and_reads_back_the_same(tmp_path, capsys):
    quiet = _run_report(tmp_path, "run-quiet", _result("leak", "pass"), _result("orphan-clones", "fail",
                        "orphan.fds_kept"), _result("offline-repo", "error", "error.scenario"))
    loaded = _run_report(tmp_path, "run-loaded", _result("orphan-clones", "fail", "orphan.clone_dirs_kept",
                         "orphan.clone_dirs_kept", "orphan.fds_kept"), _result("orphan-clones", "fail",
                         "orphan.fds_kept"))
    out = tmp_path / "made.json"
    assert cli.main(["baseline", str(quiet.dir), str(loaded.dir), "-o", str(out)]) == 0
    printed = capsys.readouterr()
    assert "not recorded: offline-repo in run-quiet: ERROR" in printed.err and str(out) in printed.out
    made = bl.load(out)
    assert made.target == "opal-server==0.9.9" and made.made_from == ("run-quiet", "run-loaded")
    assert [(o.category, o.problems) for o in made.known["orphan-clones"]] == [
        ("orphan.fds_kept", ("orphan.fds_kept",)),
        ("orphan.clone_dirs_kept", ("orphan.clone_dirs_kept", "orphan.fds_kept"))]
    assert set(made.known) == {"orphan-clones"}  # a PASS and an ERROR are never known failures
    assert made.dumps() == out.read_text()  # the format is exactly what it reads
    # ... and the runs it was made from are known failures, every one
    for report in (quiet, loaded):
        gates = [g for g in report.to_json()["gates"] if g["verdict"] == "fail"]
        assert judge(gates, made).exit_status() == 0


def test_harness_baseline_refuses_runs_of_two_targets_and_a_dir_without_a_report(tmp_path):
    a = _run_report(tmp_path, "a", _result("leak", "fail", "leak.caches_kept"), target="0.9.6")
    b = _run_report(tmp_path, "b", _result("leak", "fail", "leak.caches_kept"))
    assert cli.main(["baseline", str(a.dir), str(b.dir)]) == 2
    assert cli.main(["baseline", str(tmp_path)]) == 2
    with pytest.raises(ConfigError, match="one target"):
        from_reports([("a", a.to_json()), ("b", b.to_json())], "test")


def test_the_shipped_0_9_9_baseline_is_in_the_format_harness_baseline_writes():
    text = SHIPPED.read_text()
    shipped = parse(json.loads(text), SHIPPED)
    assert shipped.dumps() == text  # regenerating it with `harness baseline` gives the same shape
    assert shipped.target == "opal-server==0.9.9"
    assert {g: {o.category for o in outcomes} for g, outcomes in shipped.known.items()} == {
        "repeat-sync": {"repeat_sync.packs_grew"}, "zombie-cap": {"zombie.new_scope_not_served"},
        "orphan-clones": {"orphan.clone_dirs_kept", "orphan.fds_kept"},
        "redis-outage": {"redis.put_after_not_served"}, "broker-bounce": {"bounce.put_lost_in_reconnect"},
        "bad-policy": {"bad_policy.not_kept"}, "source-repeat-sync": {"source_sync.files_grew"},
        "offline-remote": {"offline.not_followed"}}
    pyproject = (Path(bl.__file__).parents[1] / "pyproject.toml").read_text()
    assert '"baselines/*.json"' in pyproject  # package data: a pip install has it


def test_resolve_none_auto_a_shipped_name_or_a_path(tmp_path):
    assert resolve(None, Target()).baseline is None and resolve("none", Target()).baseline is None
    auto = resolve("auto", Target(version="0.9.9"))
    assert auto.baseline is not None and auto.baseline.path == SHIPPED
    assert "shipped baseline of opal-server==0.9.9" in auto.said and "HARNESS_BASELINE=none" in auto.said
    assert "repeat-sync (repeat_sync.packs_grew" in auto.said  # each known failure said at the start
    assert resolve("auto", Target(version="0.9.6")).baseline is None
    assert "no shipped baseline" in resolve("auto", Target(source=tmp_path)).said
    assert resolve("opal-server-0.9.9", Target(version="0.9.6")).baseline.path == SHIPPED
    (tmp_path / "mine.json").write_text(BASE.dumps())
    assert resolve(str(tmp_path / "mine.json"), Target()).baseline.known["repeat-sync"] == (PACKS,)


def test_harness_baseline_variable_and_flag(tmp_path):
    assert from_env({}).baseline is None
    assert from_env({"HARNESS_BASELINE": "none"}).baseline is None
    assert from_env({"HARNESS_BASELINE": "AUTO"}).baseline == "auto"
    assert from_env({"HARNESS_BASELINE": "auto"}, baseline="x.json").baseline == "x.json"  # the flag wins


def test_harness_gates_with_a_missing_baseline_exits_2_before_any_stack(tmp_path, capsys):
    assert cli.main(["gates", "--gate", "leak", "--baseline", str(tmp_path / "none.json")]) == 2
    assert "does not exist: make one with `harness baseline" in capsys.readouterr().err


# -- what a CI reads --------------------------------------------------------------------------

def _judged_report(tmp_path: Path, strict: bool = False) -> RunReport:
    report = _run_report(tmp_path, "judged")
    report.baseline, report.strict_baseline = BASE, strict
    for result in (_result("repeat-sync", "fail", "repeat_sync.packs_grew", *PACKS.problems or ()),
                   _result("leak", "fail", "leak.caches_kept"), _result("zombie-cap", "pass"),
                   _result("offline-repo", "pass")):
        report.add(result)
    return report


def test_junit_shows_a_known_failure_as_an_xfail_skip_a_new_one_as_a_failure(tmp_path):
    report = _judged_report(tmp_path)
    suite = ET.parse(write_junit(report.to_json(), report.dir, tmp_path / "gates.xml")).getroot()
    assert (suite.get("failures"), suite.get("skipped"), suite.get("errors")) == ("1", "1", "0")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    skipped = cases["repeat-sync"].find("skipped")
    assert skipped.get("type") == "pytest.xfail" and skipped.get("message").startswith("known failure: ")
    assert cases["repeat-sync"].find("failure") is None
    assert cases["leak"].find("failure").get("message").startswith("new failure leak.caches_kept")
    assert list(cases["zombie-cap"]) == [cases["zombie-cap"].find("properties")]  # fixed: a pass, not strict
    props = {p.get("name"): p.get("value") for p in cases["zombie-cap"].iter("property")}
    assert props["baseline"] == "fixed"
    strict = _judged_report(tmp_path / "strict", strict=True)
    case = ET.parse(write_junit(strict.to_json(), strict.dir, tmp_path / "s.xml")).getroot().find(
        "testcase[@name='zombie-cap']")
    assert "remove it from the baseline" in case.find("failure").get("message")


def test_summaries_separate_known_new_and_fixed_and_report_json_records_the_baseline(tmp_path):
    report = _judged_report(tmp_path)
    data = json.loads((report.dir / "report.json").read_text())
    assert schema_errors(data) == []
    assert data["baseline"]["path"] == "base.json" and data["baseline"]["exit_status"] == 1
    assert data["baseline"]["counts"] == {"known": 1, "new": 1, "changed": 0, "fixed": 1, "error": 0}
    assert {g["id"]: g["baseline"]["status"] for g in data["gates"]} == {
        "repeat-sync": "known", "leak": "new", "zombie-cap": "fixed", "offline-repo": "pass"}
    for text in (step_summary(data, report.dir), (report.dir / "summary.md").read_text()):
        new, fixed, known = (text.index(title) for title in ("**New failures", "**Fixed", "**Known failures"))
        assert new < fixed < known and "base.json" in text
        assert "**FAIL** (known)" in text and "**FAIL** (new)" in text
        assert "- `repeat-sync`: known failure: repeat_sync.packs_grew" in text


def test_a_batch_exits_by_the_baseline_and_a_merged_report_is_judged_once(tmp_path):
    gates = _judged_report(tmp_path).to_json()["gates"]
    assert Batch(gates=["leak"]).exit_status(gates) == 1
    known_only = [g for g in gates if g["id"] != "leak"]
    assert Batch(gates=["leak"], baseline=bl.Choice(BASE, "")).exit_status(known_only) == 0
    assert Batch(gates=["leak"], baseline=bl.Choice(BASE, ""), strict_baseline=True).exit_status(known_only) == 1
    part = _run_report(tmp_path / "parts", "p0", _result("repeat-sync", "fail", "repeat_sync.packs_grew",
                                                          *PACKS.problems or ()))
    merged = merge([part.dir], ["repeat-sync"], tmp_path / "merged", "m", BASE)
    assert merged["gates"][0]["baseline"]["status"] == "known" and schema_errors(merged) == []
    assert "**Known failures" in (tmp_path / "merged" / "summary.md").read_text()


def test_annotate_leaves_the_report_and_adds_status_per_gate():
    report = {"gates": [_gate("leak", "pass")], "target": "t"}
    annotated = annotate(report, BASE)
    assert "baseline" not in report["gates"][0] and annotated["gates"][0]["baseline"]["status"] == "pass"


def test_auto_finds_the_shipped_baseline_of_each_servers_release():
    cerbos = resolve("auto", Target(version="0.55.0", server="cerbos"))
    assert cerbos.baseline is not None and cerbos.baseline.target == "cerbos==0.55.0"
    assert set(cerbos.baseline.known) == {"bad-policy", "checkout-tampered", "boot-dead-remote", "remote-transitions",
                                          "source-repeat-sync", "source-remote-failures"}
    assert cerbos.baseline.dumps() == cerbos.baseline.path.read_text()  # as `harness baseline` wrote it
    assert resolve("auto", Target(version="0.51.0", server="cerbos")).baseline is None  # the newest only
