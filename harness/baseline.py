"""Known failures: a baseline file says which gates fail, and how, so a CI fails only on
what changed (`harness gates --baseline FILE`, HARNESS_BASELINE, the pytest option
`--baseline`).

The file (`schema_version` 1) is what `harness baseline REPORT_DIR... -o FILE` writes:

    {"schema_version": 1, "target": "opal-server==0.9.9", "made_from": ["<run id>", ...],
     "harness_version": "0.1.0",
     "known_failures": {"repeat-sync": [{"category": "repeat_sync.packs_grew",
                                         "problems": ["repeat_sync.files_grew", "repeat_sync.packs_grew"],
                                         "seen": "<the reason when it was recorded>"}]}}

Each gate lists the outcomes it is known to fail with: the verdict's category and the set of
problem categories (sorted, distinct; absent or null: any set). A gate whose outcome depends
on the machine (orphan-clones on 0.9.9: clone dirs kept under load, not on a quiet machine)
lists one outcome per case — made from several runs at once. `seen` is for people; it is
never compared. The comparison, per gate that ran:

    pass, not listed             pass
    pass, listed                 fixed    (remove it from the baseline; exit 1 only when strict)
    fail, an outcome matches     known    (exit 0)
    fail, listed, none matches   changed  (exit 1)
    fail, not listed             new      (exit 1)
    error                        error    (exit 2 unless something is new or changed)

A gate listed in the baseline that did not run is not judged (a CI may run a subset).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import BASELINE_AUTO, BASELINE_OFF, Target
from harness.errors import ConfigError
from harness.servers.registry import SERVERS

SCHEMA_VERSION = 1
SHIPPED_DIR = Path(__file__).with_name("baselines")
KNOWN, NEW, CHANGED, FIXED, PASSED, ERRORED = "known", "new", "changed", "fixed", "pass", "error"
EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2
MAKE_ONE = "make one with `harness baseline REPORT_DIR -o {path}`, or run without a baseline (HARNESS_BASELINE=none)"


@dataclass(frozen=True)
class Outcome:
    """One way a gate is known to fail."""

    category: str
    problems: tuple[str, ...] | None = None  # sorted distinct problem categories; None: any set
    seen: str = ""  # the reason when it was recorded: for people, never compared

    def matches(self, category: str, problems: Sequence[str]) -> bool:
        return category == self.category and (self.problems is None or tuple(sorted(set(problems))) == self.problems)

    def describe(self) -> str:
        if self.problems is None:
            return f"{self.category} (any problems)"
        others = [p for p in self.problems if p != self.category]
        return self.category + (f" + {', '.join(others)}" if others else "")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"category": self.category, "problems": list(self.problems)
                                if self.problems is not None else None}
        if self.seen:
            data["seen"] = self.seen
        return data


@dataclass(frozen=True)
class Baseline:
    target: str
    known: Mapping[str, tuple[Outcome, ...]]
    made_from: tuple[str, ...] = ()
    harness_version: str = "unknown"
    path: Path | None = None  # where it was read from (None: made in memory)

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else "(in memory)"

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "target": self.target, "made_from": list(self.made_from),
                "harness_version": self.harness_version,
                "known_failures": {gate: [o.to_json() for o in outcomes]
                                   for gate, outcomes in sorted(self.known.items())}}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n"  # UTF-8: reasons stay readable


# -- reading ----------------------------------------------------------------------------

def load(path: Path) -> Baseline:
    """A baseline file, or one ConfigError naming the fix."""
    if not path.is_file():
        raise ConfigError(f"baseline {path} does not exist: {MAKE_ONE.format(path=path)}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"baseline {path} does not parse ({exc}): {MAKE_ONE.format(path=path)}") from None
    return parse(data, path)


def parse(data: Any, path: Path | None = None) -> Baseline:
    where = f"baseline {path or '(given)'}"
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        found = data.get("schema_version") if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"{where} is not a schema_version {SCHEMA_VERSION} baseline (found {found!r}): "
                          + MAKE_ONE.format(path=path or "FILE"))
    known = data.get("known_failures")
    if not isinstance(known, dict):
        raise ConfigError(f"{where} has no known_failures object: " + MAKE_ONE.format(path=path or "FILE"))
    try:
        outcomes = {str(gate): tuple(_outcome(o) for o in listed) for gate, listed in known.items()}
    except (TypeError, KeyError, AttributeError) as exc:
        raise ConfigError(f"{where}: a known failure is malformed ({type(exc).__name__}: {exc}); each is "
                          '{"category": ..., "problems": [...] or null}: ' + MAKE_ONE.format(path=path or "FILE")
                          ) from None
    return Baseline(target=str(data.get("target", "unknown")), known=outcomes,
                    made_from=tuple(data.get("made_from") or ()),
                    harness_version=str(data.get("harness_version", "unknown")), path=path)


def _outcome(data: Mapping[str, Any]) -> Outcome:
    problems = data.get("problems")
    if not isinstance(data["category"], str) or not (problems is None or isinstance(problems, list)):
        raise TypeError(f"category must be a string and problems a list or null: {data!r}")
    return Outcome(data["category"], None if problems is None else tuple(sorted(set(map(str, problems)))),
                   str(data.get("seen", "")))


def shipped_name(target: Target) -> str | None:
    """The shipped baseline's name for a release (opal-server-0.9.9); None for a tree or image."""
    if target.source is not None or target.image is not None:
        return None
    return f"{SERVERS[target.server].package}-{target.version}"


def shipped(name: str) -> Path | None:
    path = SHIPPED_DIR / f"{name}.json"
    return path if path.is_file() else None


@dataclass(frozen=True)
class Choice:
    """What HARNESS_BASELINE / --baseline chose: a baseline (or none) and the sentence that
    says so at the start of a run."""

    baseline: Baseline | None
    said: str


def resolve(choice: str | None, target: Target) -> Choice:
    """`none`/unset: no baseline; `auto`: the shipped baseline of the target release when one
    exists; the name of a shipped baseline (opal-server-0.9.9); else a file path."""
    if choice is None or choice.strip().lower() in ("", BASELINE_OFF):
        return Choice(None, "no baseline: every failure fails the run")
    choice = choice.strip()
    if choice.lower() == BASELINE_AUTO:
        name = shipped_name(target)
        path = shipped(name) if name else None
        if path is None:
            return Choice(None, f"no shipped baseline for {target.label}: every failure fails the run")
        baseline = load(path)
        return Choice(baseline, f"the shipped baseline of {target.label} ({path}; HARNESS_BASELINE=none turns it "
                                f"off): {known_summary(baseline)}")
    path = shipped(choice) or Path(choice).expanduser()
    baseline = load(path)
    return Choice(baseline, f"{path} (made on {baseline.target}): {known_summary(baseline)}")


def known_summary(baseline: Baseline) -> str:
    if not baseline.known:
        return "no known failures"
    return "known failures " + "; ".join(f"{gate} ({' or '.join(o.describe() for o in outcomes)})"
                                         for gate, outcomes in sorted(baseline.known.items()))


# -- judging ----------------------------------------------------------------------------

@dataclass(frozen=True)
class GateStatus:
    gate: str
    status: str  # known | new | changed | fixed | pass | error
    text: str  # the sentence a person reads (JUnit message, summary line)

    def to_json(self) -> dict[str, str]:
        return {"status": self.status, "text": self.text}


@dataclass(frozen=True)
class Judgement:
    baseline: Baseline
    gates: tuple[GateStatus, ...]
    strict: bool = False

    def of(self, *statuses: str) -> list[GateStatus]:
        return [g for g in self.gates if g.status in statuses]

    def exit_status(self) -> int:
        """1 on a new or changed failure (and a fixed one when strict); else 2 on an ERROR or
        when nothing ran; else 0."""
        if self.of(NEW, CHANGED) or (self.strict and self.of(FIXED)):
            return EXIT_FAIL
        if self.of(ERRORED) or not self.gates:
            return EXIT_ERROR
        return EXIT_PASS

    def lines(self) -> list[str]:
        """For the console and the summaries: known, new, changed and fixed, a line each."""
        titles = ((NEW, "new failures"), (CHANGED, "known failures that changed"),
                  (FIXED, "fixed: remove from the baseline" + (" (--strict: fails the run)" if self.strict else "")),
                  (KNOWN, "known failures (not failing the run)"))
        out = [f"baseline {self.baseline.name} (made on {self.baseline.target})"]
        for status, title in titles:
            if found := self.of(status):
                out.append(f"{title}: {len(found)}")
                out += [f"  - {g.gate}: {g.text}" for g in found]
        return out


def judge_gate(gate: Mapping[str, Any], baseline: Baseline) -> GateStatus:
    gate_id, verdict, category = gate["id"], gate["verdict"], gate.get("category") or ""
    problems = [p["category"] for p in gate.get("problems") or []] or ([category] if category else [])
    outcomes = baseline.known.get(gate_id, ())
    expected = " or ".join(o.describe() for o in outcomes)
    if verdict == "error":
        return GateStatus(gate_id, ERRORED, f"ERROR, the harness could not judge: {gate['reason']}")
    if verdict == "pass":
        if outcomes:
            return GateStatus(gate_id, FIXED, f"passes now; the baseline expects {expected}: remove it from "
                                              f"the baseline ({baseline.name})")
        return GateStatus(gate_id, PASSED, "pass")
    found = Outcome(category, tuple(sorted(set(problems)))).describe()
    if not outcomes:
        return GateStatus(gate_id, NEW, f"new failure {found}: {gate['reason']}")
    if any(o.matches(category, problems) for o in outcomes):
        return GateStatus(gate_id, KNOWN, f"known failure: {found} ({baseline.name}): {gate['reason']}")
    return GateStatus(gate_id, CHANGED, f"known failure changed: the baseline expects {expected}, "
                                        f"this run failed {found}: {gate['reason']}")


def judge(gates: Iterable[Mapping[str, Any]], baseline: Baseline, strict: bool = False) -> Judgement:
    return Judgement(baseline, tuple(judge_gate(g, baseline) for g in gates), strict)


def annotate(report: Mapping[str, Any], baseline: Baseline, strict: bool = False) -> dict[str, Any]:
    """report.json with the baseline's path and each gate's baseline status and sentence."""
    judgement = judge(report["gates"], baseline, strict)
    statuses = {g.gate: g for g in judgement.gates}
    counts = {s: len(judgement.of(s)) for s in (KNOWN, NEW, CHANGED, FIXED, ERRORED)}
    return {**report, "baseline": {"path": baseline.name, "target": baseline.target, "strict": strict,
                                   "counts": counts, "exit_status": judgement.exit_status()},
            "gates": [{**g, "baseline": statuses[g["id"]].to_json()} for g in report["gates"]]}


# -- writing ----------------------------------------------------------------------------

@dataclass
class Made:
    baseline: Baseline
    skipped: list[str] = field(default_factory=list)  # what was not recorded, and why


def from_reports(reports: Sequence[tuple[str, Mapping[str, Any]]], harness_version: str) -> Made:
    """A baseline of the reports' failures (run id, report.json): every FAIL's category and
    problem set, the outcomes of several runs of the same target side by side. An ERROR is
    never a known failure: it is left out and said."""
    targets = sorted({report["target"] for _, report in reports})
    if len(targets) != 1:
        raise ConfigError(f"a baseline is of one target; these reports are of {', '.join(targets) or 'none'}: "
                          "give runs of one target")
    known: dict[str, list[Outcome]] = {}
    skipped = []
    for run_id, report in reports:
        for gate in report["gates"]:
            if gate["verdict"] == "error":
                skipped.append(f"{gate['id']} in {run_id}: ERROR ({gate['category']}), not a known failure")
                continue
            if gate["verdict"] != "fail":
                continue
            problems = [p["category"] for p in gate.get("problems") or []] or [gate["category"]]
            outcome = Outcome(gate["category"], tuple(sorted(set(problems))), gate["reason"])
            listed = known.setdefault(gate["id"], [])
            if not any(o.matches(outcome.category, outcome.problems or ()) for o in listed):
                listed.append(outcome)
    baseline = Baseline(targets[0], {g: tuple(o) for g, o in known.items()},
                        tuple(run_id for run_id, _ in reports), harness_version)
    return Made(baseline, skipped)


def read_report(run_dir: Path) -> tuple[str, dict[str, Any]]:
    path = run_dir / "report.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} holds no report.json: give a run directory under reports/ (reports/latest)")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} does not parse ({exc}): give the directory of a finished run") from None
    return str(report.get("run_id") or run_dir.name), report
