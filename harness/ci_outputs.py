"""What a CI job reads of a gate run: JUnit properties per gate, a JUnit file for `harness
gates`, and the verdict table appended to GitHub's job summary ($GITHUB_STEP_SUMMARY).
The benchmark trend file (benchmark.json) is written with every report (harness/report.py).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.report import SYMBOL

Report = Mapping[str, Any]


def junit_properties(gate: Mapping[str, Any], report_dir: Path) -> list[tuple[str, str]]:
    """(name, value) pairs for one gate's testcase: verdict, category, time, report path,
    and every figure (`figure.<name> [unit]`)."""
    props = [("verdict", gate["verdict"]), ("category", gate["category"] or "none"),
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
    suite = ET.Element("testsuite", name="policy-harness gates", tests=str(len(gates) or 1),
                       failures=str(sum(g["verdict"] == "fail" for g in gates)),
                       errors=str(sum(g["verdict"] == "error" for g in gates) + (1 if report.get("error") else 0)),
                       time=f"{sum(g['duration_s'] for g in gates):.1f}")
    for gate in gates:
        case = ET.SubElement(suite, "testcase", classname=f"harness.gates.{report['target']}", name=gate["id"],
                             time=f"{gate['duration_s']:.1f}")
        properties = ET.SubElement(case, "properties")
        for name, value in junit_properties(gate, report_dir):
            ET.SubElement(properties, "property", name=name, value=value)
        if gate["verdict"] != "pass":
            tag = "failure" if gate["verdict"] == "fail" else "error"
            ET.SubElement(case, tag, message=gate["reason"][:500], type=gate["category"] or tag).text = (
                problem_lines(gate))
    if report.get("error"):
        case = ET.SubElement(suite, "testcase", classname="harness.stack", name="stack up")
        ET.SubElement(case, "error", message=report["error"]["message"][:500],
                      type=f"service {report['error'].get('service') or 'unknown'}").text = report["error"]["message"]
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
    return path


def step_summary(report: Report, report_dir: Path) -> str:
    """The markdown GitHub shows on the job page: the verdict table, then every reason."""
    lines = [f"### Gates on `{report['target']}` ({report['backend']})", ""]
    if report.get("error"):
        lines += [f"**The stack did not come up** ({report['error'].get('service') or 'unknown service'}): "
                  f"{report['error']['message']}", ""]
    lines += ["| gate | verdict | category | time |", "|---|---|---|---|"]
    for g in report["gates"]:
        lines.append(f"| `{g['id']}` | **{SYMBOL[g['verdict']]}** | {g['category'] or ''} | {g['duration_s']:.0f} s |")
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
