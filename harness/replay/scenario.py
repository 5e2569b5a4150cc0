"""A scenario file: an incident described as load, commits and faults on a schedule, what to
watch and the bounds it must keep (TOML; the README's "Reproducing an incident" has the
format). Validated before anything starts: bad input is one ScenarioError naming the field,
its line in the file and the values it takes.

Times in the schedule and the run (`at`, `every`, `for`, `duration`, `sample_every`) are
*production* time, compressed by `speed` (production seconds per harness second). What the
server times on its own clock is not compressed, so the freshness bound `within_s` is in
harness (wall-clock) seconds: a poll interval or an operation timeout runs at real speed.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.servers.registry import DEFAULT_SERVER

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the harness runs on 3.10 too
    import tomli as tomllib

INCIDENTS_DIR = Path(__file__).resolve().parent.parent / "incidents"

ACTIONS = ("commit", "force-push", "refresh", "put", "delete")
FAULTS = ("git-front", "blackhole", "latency", "service", "server")
FAULT_MODES = {"git-front": ("error", "auth", "reset", "hang"), "blackhole": ("dead",), "latency": ("slow",),
               "service": ("stop", "kill", "pause"), "server": ("restart", "kill")}
# what a watch reads: a figure of every snapshot, or an answer-side figure
SNAPSHOT_FIGURES = {"rss": "worker_rss_kb", "files": "worker_files", "fds": "worker_fds",
                    "threads": "worker_threads", "clone_dirs": "clone_dirs"}
# the worker's fds of one kind (harness.fds: anon counts every anon_inode kind)
FD_FIGURES = ("fds.file", "fds.socket", "fds.pipe", "fds.anon", "fds.dev", "fds.other")
ANSWER_FIGURES = ("freshness", "errors", "latency")
BOUNDS = ("slope_per_hour_at_most", "end_delta_at_most", "within_s", "at_most", "p95_at_most_s")
UNITS = {"rss": "MB", "files": "files", "fds": "fds", "threads": "threads", "clone_dirs": "dirs", "latency": "s",
         **dict.fromkeys(FD_FIGURES, "fds")}
# the bounds each answer figure takes (a snapshot figure: a slope or an end delta)
ANSWER_BOUNDS = {"freshness": ("within_s",), "errors": ("at_most",), "latency": ("p95_at_most_s",)}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+))?\s*$")


class ScenarioError(ConfigError):
    """A scenario file that cannot run: which field, where, and what it takes."""


@dataclass
class Group:
    name: str
    first: int
    last: int  # inclusive

    def indexes(self) -> range:
        return range(self.first, self.last + 1)


@dataclass
class Event:
    """One schedule entry: an action on a group (at `at`, or every `every` from `start` to
    `until`), or a fault from `at` for `for_s`. Times in production seconds."""

    line: int | None
    group: str = "all"
    action: str | None = None
    fault: str | None = None
    mode: str | None = None
    service: str | None = None
    at_s: float | None = None
    every_s: float | None = None
    start_s: float = 0.0
    until_s: float | None = None
    for_s: float = 0.0

    def label(self) -> str:
        if self.fault:
            what = f"{self.fault} {self.mode}" + (f" {self.service}" if self.service else "")
            return f"{what} on {self.group}" if self.fault in ("git-front", "blackhole", "latency") else what
        return f"{self.action} {self.group}"


@dataclass
class Watch:
    figure: str
    line: int | None
    bounds: dict[str, float] = field(default_factory=dict)


@dataclass
class Scenario:
    title: str
    path: Path
    story: str = ""
    server: str = DEFAULT_SERVER
    version: str | None = None
    backend: str | None = None
    workers: int = 1
    settings: dict[str, str] = field(default_factory=dict)
    sources: int = 1
    policies: int = 0
    groups: dict[str, Group] = field(default_factory=dict)
    duration_s: float = 600.0
    speed: float = 60.0
    sample_every_s: float = 60.0
    settle_s: float = 30.0  # harness seconds after the schedule for every source to catch up
    warmup_s: float | None = None  # production time whose snapshots slopes and deltas skip (None: 10 %)
    schedule: list[Event] = field(default_factory=list)
    watches: list[Watch] = field(default_factory=list)
    reported: dict[str, Any] = field(default_factory=dict)  # a production figure to compare with

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def repoints(self) -> bool:
        """Whether the schedule deletes, puts or black-holes sources (runtime sources only)."""
        return any(e.action in ("put", "delete") or e.fault in ("blackhole", "latency") for e in self.schedule)

    def harness_s(self, production_s: float) -> float:
        return production_s / self.speed

    @property
    def warmup(self) -> float:
        """Production seconds of warm-up: the server's pools and caches fill on the first
        changes, which is not growth (default a tenth of the run)."""
        return self.duration_s / 10 if self.warmup_s is None else self.warmup_s

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def find(name_or_path: str) -> Path:
    """A scenario file by path, or a shipped incident by name (harness/incidents/<name>.toml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = INCIDENTS_DIR / f"{name_or_path}.toml"
    if shipped.is_file():
        return shipped
    raise ScenarioError(f"no scenario file {name_or_path!r}, and no shipped incident of that name; "
                        f"shipped: {', '.join(shipped_names()) or 'none'}")


def shipped_names() -> list[str]:
    return sorted(p.stem for p in INCIDENTS_DIR.glob("*.toml"))


def load(name_or_path: str) -> Scenario:
    path = find(name_or_path)
    text = path.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    return _Reader(path, text).scenario(data)


class _Reader:
    """Reads the parsed document into a Scenario, each error with the field's line."""

    def __init__(self, path: Path, text: str):
        self.path, self.lines = path, text.splitlines()

    # -- where a field is ----------------------------------------------------------------
    def line_of(self, table: str | None, key: str | None = None, index: int | None = None) -> int | None:
        """1-based line of `key` in `[table]` (the `index`-th `[[table]]`; None: the top of
        the file), else of the table's header; None when neither is written (a default)."""
        header = None
        if table is not None:
            headers = [n for n, line in enumerate(self.lines) if line.strip() in (f"[{table}]", f"[[{table}]]")]
            if len(headers) <= (index or 0):
                return None
            header = headers[index or 0]
        start = 0 if header is None else header + 1
        end = next((n for n in range(start, len(self.lines)) if self.lines[n].lstrip().startswith("[")),
                   len(self.lines))
        if key is not None:
            for number in range(start, end):
                if re.match(rf"^\s*{re.escape(key)}\s*=", self.lines[number]):
                    return number + 1
        return None if header is None else header + 1

    @staticmethod
    def field(name: str, key: str, index: int | None) -> str:
        return f"{name}[{index}].{key}" if index is not None else f"{name}.{key}"

    def fail(self, where: str, message: str, table: str | None = None, key: str | None = None,
             index: int | None = None) -> ScenarioError:
        line = self.line_of(table, key, index)
        at = f"{self.path}:{line}" if line else str(self.path)
        return ScenarioError(f"{at}: {where}: {message}")

    # -- the document ----------------------------------------------------------------------
    def scenario(self, data: dict[str, Any]) -> Scenario:
        known = {"title", "story", "server", "sources", "run", "schedule", "watch", "reported"}
        self._known(data, known, None, "the file")
        if not isinstance(data.get("title"), str) or not data["title"].strip():
            raise self.fail("title", "required: one line saying what happened", None, "title")
        scenario = Scenario(title=data["title"].strip(), path=self.path, story=str(data.get("story", "")).strip())
        self._server(scenario, self._table(data, "server"))
        self._sources(scenario, self._table(data, "sources"))
        self._run(scenario, self._table(data, "run"))
        schedule = data.get("schedule", [])
        if not isinstance(schedule, list):
            raise self.fail("schedule", "a list of [[schedule]] entries", "schedule")
        scenario.schedule = [self._event(scenario, entry, i) for i, entry in enumerate(schedule)]
        watches = data.get("watch", [])
        if not isinstance(watches, list) or not watches:
            raise self.fail("watch", "at least one [[watch]]: what to watch and its bounds", None, "watch")
        scenario.watches = [self._watch(scenario, entry, i) for i, entry in enumerate(watches)]
        scenario.reported = self._reported(scenario, self._table(data, "reported"))
        return scenario

    def _reported(self, scenario: Scenario, table: dict[str, Any]) -> dict[str, Any]:
        """A production figure to set the projection beside: which figure, its rate per hour,
        at how many sources, and where it was reported."""
        if not table:
            return {}
        self._known(table, {"figure", "per_hour", "sources", "source"}, "reported", "[reported]")
        watched = tuple(w.figure for w in scenario.watches)
        self._choice(table, "figure", watched, "reported", "")
        self._number(table, "per_hour", "reported", 0.0, low=0.0, high=1e12)
        self._int(table, "sources", "reported", 1, low=1, high=10_000_000)
        return dict(table)

    def _table(self, data: dict[str, Any], name: str) -> dict[str, Any]:
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise self.fail(name, f"a table [{name}]", None, name)
        return value

    def _known(self, table: dict[str, Any], known: set[str], name: str | None, what: str,
               index: int | None = None) -> None:
        for key in table:
            if key not in known:
                where = self.field(name, key, index) if name else key
                raise self.fail(where, f"not a field of {what}; "
                                f"fields: {', '.join(sorted(known))}", name, key, index)

    def _server(self, scenario: Scenario, table: dict[str, Any]) -> None:
        from harness.servers.registry import SERVERS
        self._known(table, {"name", "version", "backend", "workers", "settings"}, "server", "[server]")
        scenario.server = self._choice(table, "name", tuple(SERVERS), "server", scenario.server)
        scenario.version = self._text(table, "version", "server")
        backend = table.get("backend")
        scenario.backend = None if backend is None else self._choice(table, "backend", ("local", "compose"),
                                                                     "server", "local")
        scenario.workers = self._int(table, "workers", "server", 1, low=1, high=8)
        settings = table.get("settings", {})
        if not isinstance(settings, dict):
            raise self.fail("server.settings", "a table of the server's settings (NAME = \"value\")",
                            "server", "settings")
        scenario.settings = {str(k): str(v) for k, v in settings.items()}

    def _sources(self, scenario: Scenario, table: dict[str, Any]) -> None:
        self._known(table, {"count", "policies", "groups"}, "sources", "[sources]")
        scenario.sources = self._int(table, "count", "sources", 1, low=1, high=2000)
        scenario.policies = self._int(table, "policies", "sources", 0, low=0, high=500)
        groups = table.get("groups", {})
        if not isinstance(groups, dict):
            raise self.fail("sources.groups", 'a table of named index ranges, e.g. changing = "0-3"',
                            "sources", "groups")
        scenario.groups = {"all": Group("all", 0, scenario.sources - 1)}
        for name, spec in groups.items():
            match = _RANGE.match(str(spec))
            if name == "all" or match is None:
                raise self.fail(f"sources.groups.{name}", f'{spec!r} is not an index range like "0-3" or "5" '
                                "('all' is every source)", "sources.groups", name)
            first, last = int(match[1]), int(match[2] or match[1])
            if not first <= last < scenario.sources:
                raise self.fail(f"sources.groups.{name}", f"{spec!r} is outside the {scenario.sources} sources "
                                f"(0-{scenario.sources - 1})", "sources.groups", name)
            scenario.groups[name] = Group(name, first, last)

    def _run(self, scenario: Scenario, table: dict[str, Any]) -> None:
        self._known(table, {"duration", "speed", "sample_every", "settle_s", "warmup"}, "run", "[run]")
        scenario.duration_s = self._duration(table, "duration", "run", scenario.duration_s)
        scenario.speed = self._number(table, "speed", "run", scenario.speed, low=1.0, high=10_000.0)
        scenario.sample_every_s = self._duration(table, "sample_every", "run", scenario.sample_every_s)
        scenario.settle_s = self._number(table, "settle_s", "run", scenario.settle_s, low=1.0, high=3600.0)
        if "warmup" in table:
            scenario.warmup_s = self._duration(table, "warmup", "run", 0.0)
            if scenario.warmup_s >= scenario.duration_s:
                raise self.fail("run.warmup", "as long as the run: nothing would be judged", "run", "warmup")
        if scenario.harness_s(scenario.duration_s) > 7 * 86400:
            raise self.fail("run.duration", "more than a week of harness time at this speed", "run", "duration")

    def _event(self, scenario: Scenario, entry: Any, index: int) -> Event:
        where = f"schedule[{index}]"
        if not isinstance(entry, dict):
            raise self.fail(where, "a [[schedule]] table", "schedule", None, index)
        known = {"action", "fault", "mode", "service", "group", "at", "every", "start", "until", "for"}
        self._known(entry, known, "schedule", f"[[schedule]] #{index + 1}", index)
        line = self.line_of("schedule", None, index)
        event = Event(line=line)
        if ("action" in entry) == ("fault" in entry):
            raise self.fail(where, "one of `action` (" + " | ".join(ACTIONS) + ") or `fault` ("
                            + " | ".join(FAULTS) + ")", "schedule", None, index)
        event.group = self._choice(entry, "group", tuple(scenario.groups), "schedule", "all", index)
        if "action" in entry:
            event.action = self._choice(entry, "action", ACTIONS, "schedule", "commit", index)
            self._timing(scenario, event, entry, index)
            return event
        event.fault = self._choice(entry, "fault", FAULTS, "schedule", "git-front", index)
        event.mode = self._choice(entry, "mode", FAULT_MODES[event.fault], "schedule", FAULT_MODES[event.fault][0],
                                  index)
        if event.fault == "service":
            event.service = self._text(entry, "service", "schedule", index)
            if not event.service:
                raise self.fail(f"{where}.service", "which service of the stack (e.g. postgres, redis)",
                                "schedule", None, index)
        if "at" not in entry:
            raise self.fail(f"{where}.at", "when the fault starts (production time, e.g. \"10m\")",
                            "schedule", None, index)
        event.at_s = self._duration(entry, "at", "schedule", 0.0, index)
        event.for_s = self._duration(entry, "for", "schedule", 0.0, index)
        if event.fault != "server" and event.for_s <= 0:
            raise self.fail(f"{where}.for", "how long the fault lasts (production time, e.g. \"10m\")",
                            "schedule", "for", index)
        if event.at_s + event.for_s > scenario.duration_s:
            raise self.fail(f"{where}.for", f"the fault ends after the run ({scenario.duration_s:g} s of "
                            "production time)", "schedule", "for", index)
        return event

    def _timing(self, scenario: Scenario, event: Event, entry: dict[str, Any], index: int) -> None:
        where = f"schedule[{index}]"
        if ("at" in entry) == ("every" in entry):
            raise self.fail(where, "one of `at` (once) or `every` (a rate), in production time",
                            "schedule", None, index)
        if "at" in entry:
            event.at_s = self._duration(entry, "at", "schedule", 0.0, index)
            if event.at_s > scenario.duration_s:
                raise self.fail(f"{where}.at", "after the end of the run", "schedule", "at", index)
            return
        event.every_s = self._duration(entry, "every", "schedule", 60.0, index)
        event.start_s = self._duration(entry, "start", "schedule", 0.0, index)
        event.until_s = self._duration(entry, "until", "schedule", scenario.duration_s, index)
        if scenario.harness_s(event.every_s) < 0.2:
            raise self.fail(f"{where}.every", f"{event.every_s:g} s of production time is "
                            f"{scenario.harness_s(event.every_s):.3f} s at speed {scenario.speed:g}: at most 5 "
                            "a second; lower the speed or the rate", "schedule", "every", index)

    def _watch(self, scenario: Scenario, entry: Any, index: int) -> Watch:
        from harness.servers.registry import SERVERS
        if not isinstance(entry, dict):
            raise self.fail(f"watch[{index}]", "a [[watch]] table", "watch", None, index)
        self._known(entry, {"figure", *BOUNDS}, "watch", f"[[watch]] #{index + 1}", index)
        caches = SERVERS[scenario.server].caches
        figures = (*SNAPSHOT_FIGURES, *FD_FIGURES, *caches, *ANSWER_FIGURES)
        figure = self._choice(entry, "figure", figures, "watch", "", index)
        allowed = ANSWER_BOUNDS.get(figure, ("slope_per_hour_at_most", "end_delta_at_most"))
        watch = Watch(figure, self.line_of("watch", None, index))
        for bound in BOUNDS:
            if bound in entry:
                if bound not in allowed:
                    raise self.fail(f"watch[{index}].{bound}", f"not a bound of {figure}; its bounds: "
                                    f"{', '.join(allowed)}", "watch", bound, index)
                watch.bounds[bound] = self._number(entry, bound, "watch", 0.0, low=0.0, high=1e12, index=index)
        return watch

    # -- typed fields ----------------------------------------------------------------------
    def _choice(self, table: dict[str, Any], key: str, allowed: tuple[str, ...], name: str, default: str,
                index: int | None = None) -> str:
        value = table.get(key, default)
        if value not in allowed:
            raise self.fail(self.field(name, key, index), f"{value!r} is not one of {' | '.join(allowed)}", name, key,
                            index)
        return str(value)

    def _text(self, table: dict[str, Any], key: str, name: str, index: int | None = None) -> str | None:
        value = table.get(key)
        if value is not None and not isinstance(value, str):
            raise self.fail(self.field(name, key, index), f"{value!r} is not text (write it in quotes)", name, key,
                            index)
        return value

    def _int(self, table: dict[str, Any], key: str, name: str, default: int, low: int, high: int) -> int:
        value = table.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise self.fail(f"{name}.{key}", f"{value!r} is not a whole number in {low}…{high}", name, key)
        return value

    def _number(self, table: dict[str, Any], key: str, name: str, default: float, low: float, high: float,
                index: int | None = None) -> float:
        value = table.get(key, default)
        if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
            raise self.fail(self.field(name, key, index), f"{value!r} is not a number in {low:g}…{high:g}", name,
                            key, index)
        return float(value)

    def _duration(self, table: dict[str, Any], key: str, name: str, default: float,
                  index: int | None = None) -> float:
        value = table.get(key)
        if value is None:
            return default
        match = _DURATION.match(str(value)) if isinstance(value, str) else None
        if match is None:
            raise self.fail(self.field(name, key, index), f"{value!r} is not a duration like \"90s\", \"10m\", "
                            "\"2h\" (units ms, s, m, h, d)", name, key, index)
        return float(match[1]) * _SECONDS[match[2]]


def parse_duration(text: str) -> float:
    """Seconds of a duration like "90s", "10m", "1h" (the CLI's --duration)."""
    match = _DURATION.match(text)
    if match is None:
        raise ConfigError(f"{text!r} is not a duration like \"90s\", \"10m\", \"2h\" (units ms, s, m, h, d)")
    return float(match[1]) * _SECONDS[match[2]]
