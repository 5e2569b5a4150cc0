"""What a CI job reads of a gate run: JUnit properties per gate, a JUnit file for `harness
gates`, the verdict table appended to GitHub's job summary ($GITHUB_STEP_SUMMARY), and
GitHub annotations (`::error title=leak::<reason>`) inside GitHub Actions.
The benchmark trend file (benchmark.json) is written with every report (harness/report.py).

Judged against a baseline (harness/baseline.py), a known failure is a skipped testcase in
pytest's xfail convention (`<skipped type="pytest.xfail" message="known failure: ...">`), a
new or changed one a <failure>, a fixed one a pass (a <failure> when strict); the job
summary lists known, new, changed and fixed apart.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.report import SYMBOL, baseline_section, baseline_tag

Report = Mapping[str, Any]


def junit_properties(gate: Mapping[str, Any], report_dir: Path) -> list[tuple[str, str]]:
    """(name, value) pairs for one gate's testcase: verdict, category, time, report path,
    and every figure (`figure.<name> [unit]`)."""
    props = [("verdict", gate["verdict"]), ("category", gate["category"] or "none"),
             *([("baseline", gate["baseline"]["status"])] if gate.get("baseline") else []),
             ("problems", ",".join(p["category"] for p in gate.get("problems") or []) or "none"),
             ("duration_s", f"{gate['duration_s']:g}"), ("report", str(report_dir / "report.json")),
             ("plot", str(report_dir / gate.get("plot", f"plots/{gate['id']}.png")))]
    props += [(f"figure.{f['name']} [{f['unit']}]", f"{f['value']:g}") for f in gate.get("figures", [])]
    return props


def problem_lines(gate: Mapping[str, Any]) -> str:
    """Every problem of a gate, a line each (`category: text`); the reason when none is listed."""
    problems = gate.get("problems") or []
    if not problems:
        return str(gate["reason"])
    return "\n".join(f"{p['category']}: {p['text']}" for p in problems)


def write_junit(report: Report, report_dir: Path, path: Path) -> Path:
    """One testsuite, one testcase per gate: a FAIL is a <failure>, an ERROR an <error>, and
    a stack that never came up one <error> testcase naming the service."""
    gates = list(report["gates"])
    outcomes = [_outcome(g, report) for g in gates]
    suite = ET.Element("testsuite", name="policy-harness gates", tests=str(len(gates) or 1),
                       failures=str(outcomes.count("failure")),
                       errors=str(outcomes.count("error") + (1 if report.get("error") else 0)),
                       skipped=str(outcomes.count("skipped")),
                       time=f"{sum(g['duration_s'] for g in gates):.1f}")
    for gate, outcome in zip(gates, outcomes, strict=True):
        case = ET.SubElement(suite, "testcase", classname=f"harness.gates.{report['target']}", name=gate["id"],
                             time=f"{gate['duration_s']:.1f}")
        properties = ET.SubElement(case, "properties")
        for name, value in junit_properties(gate, report_dir):
            ET.SubElement(properties, "property", name=name, value=value)
        judged = gate.get("baseline") or {}
        if outcome == "skipped":  # pytest's xfail convention: CI tools show it as an expected failure
            ET.SubElement(case, "skipped", type="pytest.xfail", message=judged["text"][:500]).text = problem_lines(gate)
        elif outcome != "pass":
            message = judged["text"] if judged.get("status") in ("new", "changed", "fixed") else gate["reason"]
            ET.SubElement(case, outcome, message=message[:500], type=gate["category"] or outcome).text = (
                problem_lines(gate))
    if report.get("error"):
        case = ET.SubElement(suite, "testcase", classname="harness.stack", name="stack up")
        ET.SubElement(case, "error", message=report["error"]["message"][:500],
                      type=f"service {report['error'].get('service') or 'unknown'}").text = report["error"]["message"]
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
    return path


def _outcome(gate: Mapping[str, Any], report: Report) -> str:
    """The testcase's element: pass, failure, error or skipped (a known failure)."""
    status = (gate.get("baseline") or {}).get("status")
    if status == "known":
        return "skipped"
    if status == "fixed":
        return "failure" if report["baseline"].get("strict") else "pass"
    return {"pass": "pass", "fail": "failure"}.get(gate["verdict"], "error")


def step_summary(report: Report, report_dir: Path) -> str:
    """The markdown GitHub shows on the job page: the verdict table, then every reason."""
    lines = [f"### Gates on `{report['target']}` ({report['backend']})", ""]
    if report.get("error"):
        lines += [f"**The stack did not come up** ({report['error'].get('service') or 'unknown service'}): "
                  f"{report['error']['message']}", ""]
    lines += ["| gate | verdict | category | time |", "|---|---|---|---|"]
    for g in report["gates"]:
        lines.append(f"| `{g['id']}` | **{SYMBOL[g['verdict']]}**{baseline_tag(g)} | {g['category'] or ''} "
                     f"| {g['duration_s']:.0f} s |")
    lines += baseline_section(report)
    lines.append("")
    for g in report["gates"]:
        lines.append(f"- **{g['id']}** {SYMBOL[g['verdict']]}: {g['reason']}")
        problems = g.get("problems") or []
        if len(problems) > 1:
            lines += [f"  - `{p['category']}` {p['text']}" for p in problems]
    lines += ["", f"Report: `{report_dir}`", ""]
    return "\n".join(lines)


def append_step_summary(report: Report, report_dir: Path, summary_file: Path | None) -> None:
    """Append to $GITHUB_STEP_SUMMARY when the job has one (Settings.step_summary)."""
    if summary_file is None:
        return
    with open(summary_file, "a", encoding="utf-8") as out:
        out.write(step_summary(report, report_dir))


def _escape(text: str, in_property: bool = False) -> str:
    """GitHub's workflow-command escaping: a message may not hold %, CR or LF as they are,
    a property (the title) also no ':' or ','."""
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if in_property else text


def annotation_lines(report: Report) -> list[str]:
    """GitHub annotations (workflow commands) for the gates that need a look, titled with the
    gate's id, the reason (or, judged by a baseline, its sentence: "new failure ...",
    "known failure ...") as the message: `::error` for a failure that fails the run (without a baseline
    every FAIL; with one a new or changed failure, a fixed one when strict) and for an
    ERROR or a stack that never came up; `::notice` for a known failure and a fixed one
    (not strict). A passing gate says nothing."""
    lines = []
    if report.get("error"):
        error = report["error"]
        lines.append(f"::error title={_escape('stack up', True)}::"
                     + _escape(f"the stack did not come up ({error.get('service') or 'unknown service'}): "
                               f"{error['message']}"))
    for gate in report["gates"]:
        level = _annotation_level(gate, report)
        if level is None:
            continue
        judged = gate.get("baseline") or {}
        reason = judged["text"] if judged.get("status") in ("known", "new", "changed", "fixed") else gate["reason"]
        lines.append(f"::{level} title={_escape(gate['id'], True)}::{_escape(reason)}")
    return lines


def _annotation_level(gate: Mapping[str, Any], report: Report) -> str | None:
    """error, notice or None (nothing to say), by the same outcome the JUnit file gives."""
    outcome = _outcome(gate, report)
    if outcome in ("failure", "error"):
        return "error"
    if outcome == "skipped" or (gate.get("baseline") or {}).get("status") == "fixed":
        return "notice"
    return None


def print_annotations(report: Report, github_actions: bool) -> None:
    """On stdout, where the runner reads workflow commands; only inside GitHub Actions
    (Settings.github_actions), where anything else would be noise."""
    if github_actions:
        for line in annotation_lines(report):
            print(line, flush=True)
