"""Scenario files: every shipped incident loads; bad input is one error naming the field, its
line and what it takes."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.replay.engine import plan
from harness.replay.scenario import ScenarioError, load, shipped_names

GOOD = '''title = "an outage"

[server]
name = "opal"

[sources]
count = 6
[sources.groups]
changing = "0-1"

[run]
duration = "20m"
speed = 30

[[schedule]]
action = "commit"
group = "changing"
every = "2m"

[[schedule]]
fault = "git-front"
mode = "error"
at = "5m"
for = "10m"

[[watch]]
figure = "freshness"
within_s = 20
'''


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return str(path)


def test_every_shipped_incident_loads_and_plans():
    assert {"git-host-outage", "offline-repo-hang"} <= set(shipped_names())
    for name in shipped_names():
        scenario = load(name)
        assert scenario.title and scenario.watches and plan(scenario, scenario.duration_s)


@pytest.fixture
def good_path(tmp_path) -> str:
    return _write(tmp_path, GOOD)


def test_a_good_file_reads_into_the_scenario_in_production_time(good_path):
    scenario = load(good_path)
    assert scenario.sources == 6 and scenario.groups["changing"].indexes() == range(0, 2)
    assert scenario.schedule[0].every_s == 120 and scenario.schedule[1].for_s == 600
    assert scenario.harness_s(scenario.duration_s) == 40


@pytest.mark.parametrize("change,message", [
    (("mode = \"error\"", "mode = \"eror\""),
     r"scenario.toml:22: schedule\[1\].mode: 'eror' is not one of error \| auth"),
    (("every = \"2m\"", "every = \"2 weeks\""), r"scenario.toml:18: schedule\[0\].every: '2 weeks' is not a duration"),
    (("changing = \"0-1\"", "changing = \"4-9\""), r"scenario.toml:9: sources.groups.changing: '4-9' is outside "
                                                   r"the 6 sources"),
    (("group = \"changing\"", "group = \"chaning\""), r"scenario.toml:17: schedule\[0\].group: 'chaning' is not one of "
                                                      r"all \| changing"),
    (("within_s = 20", "within = 20"),
     r"scenario.toml:28: watch\[0\].within: not a field of \[\[watch\]\] #1; fields:"),
    (("figure = \"freshness\"", "figure = \"memory\""),
     r"scenario.toml:27: watch\[0\].figure: 'memory' is not one of rss"),
    (("for = \"10m\"", "for = \"30m\""), r"scenario.toml:24: schedule\[1\].for: the fault ends after the run"),
    (("speed = 30", "speed = 0"), r"scenario.toml:13: run.speed: 0 is not a number in 1…10000"),
    (("title = \"an outage\"", "titel = \"an outage\""), r"scenario.toml:1: titel: not a field of the file"),
])
def test_bad_input_is_one_error_naming_the_field_its_line_and_what_it_takes(tmp_path, change, message):
    old, new = change
    assert old in GOOD
    with pytest.raises(ScenarioError, match=message):
        load(_write(tmp_path, GOOD.replace(old, new)))


def test_a_bound_of_another_figure_is_refused_with_the_figures_bounds(tmp_path):
    with pytest.raises(ScenarioError, match=r"watch\[0\].at_most: not a bound of freshness; its bounds: within_s"):
        load(_write(tmp_path, GOOD.replace("within_s = 20", "at_most = 20")))


def test_a_rate_faster_than_the_engine_can_fire_is_refused(tmp_path):
    with pytest.raises(ScenarioError, match=r"schedule\[0\].every: 1 s of production time is 0.033 s at speed 30"):
        load(_write(tmp_path, GOOD.replace('every = "2m"', 'every = "1s"')))


def test_an_unknown_name_lists_the_shipped_incidents():
    with pytest.raises(ScenarioError, match="no shipped incident of that name; shipped: .*git-host-outage"):
        load("no-such-incident")


def test_not_toml_is_said_so(tmp_path):
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load(_write(tmp_path, "title = \n"))


def test_a_soak_repeats_the_faults_with_the_files_period_and_the_rates_throughout(good_path):
    scenario = load(good_path)
    planned = plan(scenario, 3 * scenario.duration_s)
    opens = [p.at_h for p in planned if p.kind == "open"]
    assert opens == [10.0, 50.0, 90.0]
    assert sum(1 for p in planned if p.kind == "action") == 30  # every 2 m for 60 m
    assert planned == sorted(planned, key=lambda p: p.at_h)


def test_a_fault_on_a_service_the_servers_stack_lacks_is_refused_before_any_stack(tmp_path):
    from harness.replay.faults import check_faults
    text = GOOD.replace('fault = "git-front"\nmode = "error"', 'fault = "service"\nservice = "postgres"\nmode = "stop"')
    check_faults(load(_write(tmp_path, text)))  # OPAL's stack has postgres
    cerbos = text.replace('name = "opal"', 'name = "cerbos"').replace('count = 6', 'count = 1').replace(
        'changing = "0-1"', 'changing = "0"')
    with pytest.raises(Exception, match=r"service 'postgres' is not in a cerbos stack; its services: none"):
        check_faults(load(_write(tmp_path, cerbos)))


def test_scope_churn_on_a_server_without_runtime_sources_is_refused_before_any_stack(tmp_path):
    from harness.replay.command import refuse_missing
    text = ('title = "t"\n[server]\nname = "cerbos"\n[[schedule]]\naction = "delete"\nat = "1m"\n'
            '[[watch]]\nfigure = "freshness"\nwithin_s = 5\n')
    with pytest.raises(Exception, match="a schedule that deletes, puts or black-holes them on cerbos need "
                                        "runtime-sources"):
        refuse_missing(load(_write(tmp_path, text)), "local")
    refuse_missing(load(_write(tmp_path, text.replace('action = "delete"', 'action = "commit"'))), "local")


def test_the_readmes_example_file_is_a_valid_scenario(tmp_path):
    import re
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"```toml\n(.*?)```", text[text.index("### The file"):], re.S)
    assert block is not None
    scenario = load(_write(tmp_path, block.group(1)))
    assert {w.figure for w in scenario.watches} == {"freshness", "rss", "errors", "latency"}
    assert scenario.warmup == 120 and scenario.reported["per_hour"] == 129
