"""`harness gates --shard I/N` and `harness merge`: the split, what a shard records, and how
shard reports merge into one run (or are refused)."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import cli
from harness.baseline import Baseline, Outcome
from harness.config import Settings, Target
from harness.errors import ConfigError, HarnessError
from harness.gates.registry import GATES
from harness.report import RunReport, schema_errors
from harness.runinfo import settings_metadata
from harness.runner.parallel import EXPECTED_S, TIMED
from harness.runner.shards import Shard, record, select, split
from harness.verdict import GateResult


@pytest.mark.parametrize("text", ["0/2", "3/2", "abc", "1/0", "1/", "/2", "-1/2", "1.5/2", ""])
def test_bad_shard_input_is_one_error_saying_the_form(text):
    with pytest.raises(ConfigError, match=r"give I/N with 1 ≤ I ≤ N"):
        Shard.parse(text)


def test_shard_input_reads_i_of_n():
    assert Shard.parse("2/3") == Shard(2, 3) and str(Shard.parse(" 1 / 2 ")) == "1/2"


def test_the_split_covers_every_gate_once_and_keeps_boot_timing_alone():
    for count in range(1, 6):
        shards = split(list(GATES), count)
        assert len(shards) == count and all(shards)
        assert sorted(g for shard in shards for g in shard) == sorted(GATES)
        if count >= 2:
            assert list(TIMED) in shards  # timing the server must not share a machine's shard


def test_the_split_is_balanced_by_measured_durations():
    shards = split(list(GATES), 3)
    loads = sorted(sum(EXPECTED_S[g] for g in shard) for shard in shards if shard != list(TIMED))
    assert loads[-1] - loads[0] <= max(EXPECTED_S.values())  # greedy longest-first: within one gate


def test_the_split_does_not_depend_on_the_order_gates_were_given_in():
    gates = ["leak", "repeat-sync", "remote-transitions"]
    assert sorted(map(sorted, split(gates, 2))) == sorted(map(sorted, split(list(reversed(gates)), 2)))
    assert split(gates, 2) == [["leak"], ["repeat-sync", "remote-transitions"]]
    assert [select(gates, Shard(i, 2)) for i in (1, 2)] == split(gates, 2)


def test_more_shards_than_the_gates_fill_is_refused():
    with pytest.raises(ConfigError, match="fill at most 2 shards"):
        split(["leak", "boot-timing"], 3)
    with pytest.raises(ConfigError, match="fill at most 1 shards"):
        split(["boot-timing"], 2)


def test_a_shard_records_its_share_and_the_selection():
    assert record(["leak", "repeat-sync"], Shard(2, 2)) == {"index": 2, "count": 2, "gates": ["repeat-sync"],
                                                           "selected": ["leak", "repeat-sync"]}


def _shard_run(tmp_path, name, results, shard=None, target="0.9.9", version=None):
    meta = settings_metadata(Settings(target=Target(version=target)), "local")
    if version:
        meta["harness_version"] = version
    if shard:
        meta["shard"] = shard
    report = RunReport(tmp_path / name, f"run-{name}", f"opal-server=={target}", "local", "quick", meta=meta)
    for gate_id, verdict, category in results:
        report.add(GateResult(id=gate_id, verdict=verdict, reason=f"{gate_id} because", category=category,
                              duration_s=3.0, metrics={}, thresholds={}, params={}, server_settings={}))
    return tmp_path / name  # a reports dir: its `latest` is the run


SELECTED = ["leak", "repeat-sync", "remote-transitions"]


def _two_shards(tmp_path, **second):
    one = _shard_run(tmp_path, "s1", [("leak", "pass", "")], record(SELECTED, Shard(1, 2)))
    two = _shard_run(tmp_path, "s2", [("repeat-sync", "fail", "repeat_sync.packs_grew"),
                                      ("remote-transitions", "pass", "")], record(SELECTED, Shard(2, 2)), **second)
    return one, two


def _merge(tmp_path, *args):
    return cli.main(["merge", *map(str, args), "--reports-dir", str(tmp_path / "merged")])


def test_merge_makes_one_run_in_the_selection_s_order_with_every_ci_output(tmp_path, capsys, monkeypatch):
    one, two = _two_shards(tmp_path)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "step-summary.md"))
    status = cli.main(["merge", str(two), str(one), "--reports-dir", str(tmp_path / "merged"),
                       "--junitxml", str(tmp_path / "gates.xml")])
    assert status == 1  # repeat-sync failed, and no baseline says it is known
    merged_dir = (tmp_path / "merged" / "latest").resolve()
    merged = json.loads((merged_dir / "report.json").read_text())
    assert [g["id"] for g in merged["gates"]] == SELECTED and schema_errors(merged) == []
    assert "shard" not in merged and sorted(p["shard"] for p in merged["parts"]) == ["1/2", "2/2"]
    assert {e["name"] for e in json.loads((merged_dir / "benchmark.json").read_text())} == set()
    assert "| `repeat-sync` | **FAIL**" in (merged_dir / "summary.md").read_text()
    cases = {c.get("name"): c for c in ET.parse(tmp_path / "gates.xml").getroot().iter("testcase")}
    assert set(cases) == set(SELECTED) and cases["repeat-sync"].find("failure") is not None
    out = capsys.readouterr().out
    assert "merged from 2 reports: shard 2/2, shard 1/2" in out
    assert "::error title=repeat-sync::repeat-sync because" in out.splitlines()
    assert (tmp_path / "step-summary.md").read_text().count("### Gates on") == 1  # the merged run's, once


def test_merge_judges_against_a_baseline(tmp_path):
    one, two = _two_shards(tmp_path)
    known = Baseline("opal-server==0.9.9", {"repeat-sync": (Outcome("repeat_sync.packs_grew", None),)})
    (tmp_path / "base.json").write_text(known.dumps())
    assert cli.main(["merge", str(one), str(two), "--reports-dir", str(tmp_path / "m"),
                     "--baseline", str(tmp_path / "base.json")]) == 0
    merged = json.loads((tmp_path / "m" / "latest" / "report.json").read_text())
    assert {g["id"]: g["baseline"]["status"] for g in merged["gates"]}["repeat-sync"] == "known"


def test_merge_finds_runs_in_a_downloaded_artifact_without_latest(tmp_path):
    one, two = _two_shards(tmp_path)
    for reports in (one, two):
        (reports / "latest").unlink()  # the workflow uploads reports/ without the link
    assert _merge(tmp_path, one, two) == 1


def test_merge_refuses_shards_of_different_targets_or_harness_versions(tmp_path, capsys):
    one, two = _two_shards(tmp_path / "t", target="0.9.6")
    assert _merge(tmp_path / "t", one, two) == 2
    assert "different targets" in capsys.readouterr().err
    one, two = _two_shards(tmp_path / "v", version="0.0.1")
    assert _merge(tmp_path / "v", one, two) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "different harness versions" in err and "0.0.1" in err
    assert not (tmp_path / "t" / "merged").exists() and not (tmp_path / "v" / "merged").exists()


def test_merge_refuses_a_gate_twice_and_says_a_missing_shard(tmp_path, capsys):
    one, _ = _two_shards(tmp_path)
    with pytest.raises(HarnessError, match="gate leak is in two"):
        from harness.runner.shards import check_mergeable, read_reports
        paths = [(one / "latest").resolve()] * 2
        check_mergeable(read_reports(paths), [one, one])
    only = _shard_run(tmp_path, "only", [("leak", "pass", "")], record(SELECTED, Shard(1, 2)))
    assert _merge(tmp_path, only) == 2  # the other shard's gates have no verdict
    out = capsys.readouterr().out
    assert "missing shard reports: 2/2" in out and "no verdict for repeat-sync, remote-transitions" in out


def test_merge_of_a_directory_without_reports_is_one_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _merge(tmp_path, tmp_path / "empty") == 2
    assert "no report.json" in capsys.readouterr().err


def test_gates_shard_input_is_checked_before_any_stack(capsys):
    for bad in ("0/2", "3/2", "abc"):
        assert cli.main(["gates", "--gate", "leak", "--shard", bad]) == 2
    assert capsys.readouterr().err.count("give I/N") == 3
    assert cli.main(["gates", "--gate", "leak", "--gate", "boot-timing", "--shard", "1/3"]) == 2


def test_a_shard_with_jobs_runs_its_gates_in_groups_and_its_merged_report_is_the_shard(tmp_path, monkeypatch):
    """`--shard 2/2 --jobs 2`: the groups' children (canned here: no stack) run the shard's
    gates, and the merged run records the shard as any shard run does."""
    import harness.runner.parallel as parallel

    def children(argvs, drop_env=()):
        for argv in argvs.values():
            reports = argv[argv.index("--reports-dir") + 1]
            gates = [argv[i + 1] for i, a in enumerate(argv) if a == "--gate"]
            part = Path(reports)
            _shard_run(part.parent, part.name, [(g, "pass", "") for g in gates])
        return dict.fromkeys(argvs, 0)
    monkeypatch.setattr(parallel, "run_children", children)
    monkeypatch.setenv("HARNESS_REPORTS_DIR", str(tmp_path / "reports"))
    status = cli.main(["gates", "--opal-version", "0.9.9", "--backend", "local", "--jobs", "2", "--shard", "2/2",
                       *(a for g in SELECTED for a in ("--gate", g))])
    assert status == 0
    report = json.loads((tmp_path / "reports" / "latest" / "report.json").read_text())
    assert report["shard"] == record(SELECTED, Shard(2, 2)) and schema_errors(report) == []
    assert [g["id"] for g in report["gates"]] == ["repeat-sync", "remote-transitions"]
