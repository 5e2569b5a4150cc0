"""`harness replay FILE|NAME`: a scenario run on a new stack of the server it names, judged and
plotted in a report like any gate's (reports/<run-id>/, the gate `replay`). Exit status as
`harness gates`: 0 every bound held, 1 a bound broken, 2 could not judge (bad input, the
stack did not come up, a fault that did not take, interrupted)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from harness import config
from harness.baseline import Choice
from harness.replay import faults
from harness.replay.scenario import Scenario, load, parse_duration, shipped_names
from harness.runner.run import REPLAY

log = logging.getLogger(__name__)

EXIT_INTERRUPTED = 130


def add_parser(sub: Any) -> None:
    replay = sub.add_parser("replay", help="reproduce an incident from a scenario file (or a shipped incident by "
                                           "name): load, commits and faults on a schedule, watched figures judged "
                                           "against their bounds, plotted")
    replay.add_argument("scenario", help=f"a scenario file (TOML), or a shipped incident: {', '.join(shipped_names())}")
    replay.add_argument("--duration", help="run the schedule this long (production time, e.g. 8h): a soak; "
                                           "default the file's")
    replay.add_argument("--version", dest="release", help="the server release (default: the file's, else the "
                                                          "server's default)")
    replay.add_argument("--backend", choices=("local", "compose"), help="default: the file's, else BACKEND or auto")
    replay.add_argument("--reports-dir", dest="reports_dir", help="where the report goes (default ./reports)")
    replay.add_argument("--keep-stack", choices=("never", "on-failure", "always"), help="leave the stack up after")
    replay.add_argument("--check", action="store_true", help="validate the file and print its plan; run nothing")
    replay.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    from harness.runner.batch import Batch, keep_policy, run_batch
    scenario = load(args.scenario)
    faults.check_faults(scenario)
    if args.duration:
        parse_duration(args.duration)  # refused now, not after the stack is up
    if args.check:
        print(describe(scenario))
        return 0
    settings = settings_for(scenario, args)
    refuse_missing(scenario, settings.backend)
    batch = Batch(gates=[REPLAY], overrides={REPLAY: {"scenario": str(scenario.path), "duration": args.duration or ""}},
                  run_env=scenario.settings, keep=keep_policy(args.keep_stack, settings),
                  baseline=Choice(None, ""))
    log.info(f"[replay] {scenario.name}: {scenario.title}")
    status, report_dir = run_batch(settings, batch)
    if report_dir is not None and _interrupted(report_dir):
        return EXIT_INTERRUPTED  # judged and written, but the user stopped it: as any command's Ctrl-C
    return status


def _interrupted(report_dir: Path) -> bool:
    try:
        facts = json.loads((report_dir / "timelines" / f"{REPLAY}.json").read_text()).get("facts", {})
    except (OSError, ValueError):
        return False
    return facts.get("interrupted_at_t") is not None


def refuse_missing(scenario: Scenario, backend: str) -> None:
    """Before any stack: a server that lacks what the scenario's sources need on this backend
    (BACKEND=auto is judged as the local backend; the engine checks again once it is decided)."""
    from harness.replay.sources import needs
    from harness.servers.registry import SERVERS
    wanted = needs(scenario.sources, scenario.repoints)
    missing = SERVERS[scenario.server].lacks(wanted, None if backend == "auto" else backend)
    if missing:
        from harness.replay.engine import raise_missing
        raise_missing(scenario, missing, backend)


def settings_for(scenario: Scenario, args: argparse.Namespace) -> config.Settings:
    """The stack's settings: the scenario's server, release, backend and workers; the flags win."""
    flags: dict[str, Any] = {"server": scenario.server, "workers": scenario.workers}
    release = args.release or scenario.version
    if release:
        flags[f"{scenario.server}_version"] = release  # each server's release flag (harness.config)
    if backend := args.backend or scenario.backend:
        flags["backend"] = backend
    if args.reports_dir:
        flags["reports_dir"] = args.reports_dir
    return config.from_env(**flags)


def describe(scenario: Scenario) -> str:
    """What `--check` prints: the scenario as the engine will run it."""
    lines = [f"{scenario.name}: {scenario.title}",
             f"server {scenario.server} {scenario.version or '(default release)'}, {scenario.workers} worker(s); "
             f"{scenario.sources} source(s); groups: "
             + ", ".join(f"{g.name} {g.first}-{g.last}" for g in scenario.groups.values()),
             f"{scenario.duration_s / 60:g} production minutes at speed {scenario.speed:g} = "
             f"{scenario.harness_s(scenario.duration_s):.0f} harness seconds, then up to {scenario.settle_s:g} s to "
             "catch up"]
    for event in scenario.schedule:
        when = (f"every {event.every_s:g} s" if event.every_s else f"at {event.at_s:g} s") + (
            f" for {event.for_s:g} s" if event.fault else "")
        lines.append(f"  schedule: {event.label()} {when} (production time)")
    for watch in scenario.watches:
        bounds = ", ".join(f"{k} {v:g}" for k, v in watch.bounds.items()) or "recorded, not judged"
        lines.append(f"  watch: {watch.figure}: {bounds}")
    return "\n".join(lines)
