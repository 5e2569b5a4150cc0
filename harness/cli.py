"""The `harness` command: bring a stack up, run gates on it, compare two targets, rerun a
recorded run, look at stacks, tear them down, clean up, re-judge reports.

Exit status, the same for `gates`, `compare`, `rerun`, `report` and `scale`: 0 every judged
gate passed (with --baseline: every failure a known one); 1 a gate failed (with --baseline: a
new or changed failure; `compare`: B regressed); 2 the harness could not judge — usage, bad
input, a stack that did not come up, an ERROR verdict, a crash of the harness itself (one
line naming the fix); 130 interrupted. Each of those commands' --help says it for itself."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from harness import config, console, harness_version, runs
from harness.baseline import resolve
from harness.errors import HarnessError
from harness.servers.registry import SERVERS
from harness.stack import make_stack
from harness.waiting import wait_for

# A first run builds the server's virtualenv (or image) before the stack is up.
DETACH_TIMEOUT_S = 1800


def _settings(args: argparse.Namespace) -> config.Settings:
    overrides = {}
    for name in ("version", "source", "image", "workers", "backend", "reports_dir", "scale", "baseline", "server",
                 "cerbos_version"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "repos", None) is not None:
        overrides["seed_repos"] = args.repos
    return config.from_env(**overrides)


def _target_given(args: argparse.Namespace) -> bool:
    return any(getattr(args, name, None) for name in ("version", "source", "image", "server", "cerbos_version"))


def _add_target_flags(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--opal-version", dest="version", help="a PyPI release (default: OPAL_VERSION or 0.9.9)")
    target.add_argument("--opal-source", "--source", dest="source", help="an OPAL source tree (default: OPAL_SOURCE)")
    target.add_argument("--opal-image", dest="image", help="a prebuilt server image, compose only (OPAL_IMAGE)")
    _add_server_flag(parser)
    parser.add_argument("--cerbos-version", dest="cerbos_version",
                        help="with --server cerbos: an npm release of @cerbos/cerbos-linux-x64 "
                             "(default: CERBOS_VERSION or 0.55.0)")
    parser.add_argument("--backend", help="auto (default: BACKEND or auto) | local | compose")
    parser.add_argument("--reports-dir", dest="reports_dir", help="where reports go (default: HARNESS_REPORTS_DIR "
                                                                  "or ./reports)")


def _add_server_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", choices=list(SERVERS),
                        help="the policy server under test (default: SERVER or opal)")


def cmd_gates(args: argparse.Namespace) -> int:
    from harness.gates.registry import GATES
    from harness.runner.batch import Batch, keep_policy, run_batch
    if args.list:
        return list_gates(args.json)
    if args.json:
        raise HarnessError("--json goes with --list: `harness gates --list --json`")
    settings = _settings(args)
    batch = Batch(gates=args.gate or list(GATES), keep=keep_policy(args.keep_stack, settings),
                  junit=Path(args.junitxml) if args.junitxml else None,
                  baseline=resolve(settings.baseline, settings.target), strict_baseline=args.strict)
    batch.sort_out(settings)  # a shard splits what this server can take, not what it skips
    _apply_shard(args, batch)
    jobs = _jobs(args.jobs, batch.gates)
    if jobs > 1:
        if args.against:
            raise HarnessError("--against drives one running stack: it cannot go with --jobs")
        if settings.keep_stack:  # each group's `harness gates` would read it and keep its stack
            raise HarnessError("HARNESS_KEEP_STACK=1 keeps the one stack of a run: it cannot go with --jobs; "
                               "unset it, or run with --jobs 1")
        from harness.runner.parallel import run_parallel
        return run_parallel(settings, batch, jobs, args.backend)[0]
    stack = None
    if args.against:
        from harness.stack.attach import attach
        stack = attach(settings, args.against)
        settings = stack.settings
    status, _ = run_batch(settings, batch, stack=stack)
    return status


def list_gates(as_json: bool) -> int:
    """`harness gates --list`: every gate, what it needs, its settings, defaults and variables."""
    from harness.runner.run import catalogue
    gates = catalogue()
    if as_json:
        print(json.dumps(gates, indent=2))
        return 0
    for g in gates:
        print(f"{g['id']}: {g['title']}")
        print(f"  needs: {_needs_text(g)}")
        print(f"  server: {', '.join(g['requires'])} (taken by {', '.join(g['servers']) or 'no server yet'})")
        for entry in g["settings"]:
            print(f"  {entry['name']:<28} {entry['kind']:<9} {entry['type']:<5} default {entry['default']!r:<10} "
                  f"{entry['variable']}")
    print("\nSet a setting with its variable (e.g. HARNESS_GATE_LEAK_CYCLES=5); an unknown one is an error.")
    return 0


def _needs_text(gate: dict) -> str:
    workers = f"{gate['workers']} gunicorn workers" if gate["workers"] else "HARNESS_WORKERS workers (default 1)"
    load = gate["load"]
    if load is None:
        return f"{workers}; a small fixed load"
    return f"{workers}; {load['scopes']} scopes over {load['repos']} seeded repos, each fetched {load['fetches']}×"


def _apply_shard(args: argparse.Namespace, batch) -> None:
    """`--shard I/N`: this machine runs its share of the selected gates (harness/runner/shards.py)."""
    if args.shard is None:
        return
    from harness.runner.shards import Shard, record
    shard = Shard.parse(args.shard)
    batch.shard = record(batch.gates, shard)
    batch.gates = batch.shard["gates"]
    print(f"[harness] shard {shard}: {', '.join(batch.gates)} (of {', '.join(batch.shard['selected'])})")


def cmd_merge(args: argparse.Namespace) -> int:
    from harness.runner.shards import merge_command
    settings = config.from_env(**({"reports_dir": args.reports_dir} if args.reports_dir else {}))
    return merge_command([Path(d) for d in args.dirs], settings, Path(args.junitxml) if args.junitxml else None,
                         args.baseline, args.strict)


def _add_merge_parser(sub) -> None:
    merge = sub.add_parser("merge", help="merge shard reports (`harness gates --shard I/N` on several machines) "
                                         "into one run; exit 0 all pass, 1 a gate failed, 2 error")
    merge.add_argument("dirs", nargs="+", metavar="DIR",
                       help="a shard's run dir, a reports dir (its latest), or a downloaded artifact holding run dirs")
    merge.add_argument("--reports-dir", dest="reports_dir", help="where the merged run goes (default ./reports)")
    merge.add_argument("--junitxml", metavar="PATH", help="also write JUnit XML of the merged run")
    _add_baseline_flags(merge)
    merge.set_defaults(func=cmd_merge)


def _jobs(value: str, gates: Sequence[str]) -> int:
    from harness.runner.parallel import default_jobs
    if value == "auto":
        return default_jobs(gates)
    if not value.isdigit() or int(value) < 1:
        raise HarnessError(f"--jobs {value}: give a number of stacks ≥ 1, or auto (as many as bring the run "
                           "down to its longest gate, within what the gates' measured CPU and memory fit)")
    return int(value)


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.compare import compare_command
    from harness.gates.registry import GATES
    settings = config.from_env(**({"reports_dir": args.reports_dir} if args.reports_dir else {}))
    gates = args.gate or list(GATES)
    _validate_compare(args, gates)
    extra = ["--backend", args.backend] if args.backend else []
    return compare_command(args.a, args.b, gates, settings.reports_dir, extra, args.server or settings.server)


def _validate_compare(args: argparse.Namespace, gates: Sequence[str]) -> None:
    """What each side's `harness gates` would refuse, refused here first: no compare
    folder is made for a comparison that cannot start."""
    from harness.compare import spec_target
    from harness.runner.batch import Batch
    server = args.server or config.from_env().server
    for spec in (args.a, args.b):
        target = spec_target(spec, server)
        chosen = ({"source": str(target.source)} if target.source else {"image": target.image} if target.image
                  else {"server": server, f"{server}_version": target.version})
        side = config.from_env(None, **chosen, **({"backend": args.backend} if args.backend else {}))
        Batch(gates=gates).validate(side)


def cmd_rerun(args: argparse.Namespace) -> int:
    from harness.runner.batch import keep_policy, run_batch
    from harness.runner.rerun import compare_with_recorded, load_report, rerun_plan
    run_dir = Path(args.run_dir)
    report = load_report(run_dir)
    settings, batch = rerun_plan(report, _settings(args), _target_given(args))
    batch.keep, batch.junit = keep_policy(args.keep_stack, settings), Path(args.junitxml) if args.junitxml else None
    batch.baseline, batch.strict_baseline = resolve(settings.baseline, settings.target), args.strict
    print(f"[harness] rerunning {', '.join(batch.gates)} of {run_dir} on {settings.target.label}")
    status, new_dir = run_batch(settings, batch)
    for line in compare_with_recorded(report, new_dir):
        print(line)
    return status


def cmd_baseline(args: argparse.Namespace) -> int:
    """Write a baseline of the runs' failures (several runs of one target: every outcome seen)."""
    from harness.baseline import from_reports, known_summary, read_report
    made = from_reports([read_report(Path(d)) for d in args.run_dirs], harness_version())
    for line in made.skipped:
        print(f"not recorded: {line}", file=sys.stderr)
    if args.output == "-":
        sys.stdout.write(made.baseline.dumps())
        return 0
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(made.baseline.dumps(), encoding="utf-8")
    print(f"baseline of {made.baseline.target} written to {out}: {known_summary(made.baseline)}")
    print(f"use it: harness gates --baseline {out}   (or HARNESS_BASELINE={out})")
    return 0


def _add_baseline_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--baseline", metavar="FILE|NAME|auto|none",
                        help="known failures that do not fail the run: a file `harness baseline` wrote, a shipped "
                             "one's name (opal-server-0.9.9), auto (the target release's shipped one) or none "
                             "(default: HARNESS_BASELINE, else none)")
    parser.add_argument("--strict", "--strict-baseline", dest="strict", action="store_true",
                        help="with --baseline: a known failure that now passes fails the run (exit 1)")


def describe(stack) -> dict:
    """`harness up --json`: the run and how to reach each service (None: only inside the
    stack's network), as `harness gates --against` and scripts read it."""
    return {"run_id": stack.run_id, "backend": stack.backend, "target": stack.settings.target.label,
            "run_dir": str(stack.run_dir), "endpoints": {name: (a.url if (a := stack.address(name)) else None)
                                                         for name in stack.service_names()},
            "repo_url": stack.repo_url("policy-0000"), "dead_url": stack.dead_url(0),
            "stop": f"harness down {stack.run_id}"}


def _up_flags(args: argparse.Namespace) -> list[str]:
    """The flags of this `harness up` again, for the detached child."""
    flags = []
    for name, flag in (("version", "--opal-version"), ("source", "--opal-source"), ("image", "--opal-image"),
                       ("server", "--server"), ("cerbos_version", "--cerbos-version"),
                       ("backend", "--backend"), ("reports_dir", "--reports-dir"), ("workers", "--workers"),
                       ("repos", "--repos")):
        if getattr(args, name, None) is not None:
            flags += [flag, str(getattr(args, name))]
    return flags


def cmd_up_detached(args: argparse.Namespace) -> int:
    """Start `harness up --json` in its own session with its output in a log file, wait
    until it says the stack is up, print that and return; the child keeps the stack up until
    `harness down RUN_ID` (SIGTERM) tears it down."""
    settings = _settings(args)
    settings.run_root.mkdir(parents=True, exist_ok=True)
    log_path = settings.run_root / f"up-{os.getpid()}-{int(time.time())}.log"
    with open(log_path, "wb") as out:
        child = subprocess.Popen([sys.executable, "-m", "harness", "up", "--json", *_up_flags(args)],
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)

    def up_line() -> dict | None:
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith('{"run_id"'):
                return json.loads(line)
        if child.poll() is not None:
            raise HarnessError(f"`harness up` exited {child.returncode} before the stack was up:\n"
                               + "\n".join(log_path.read_text(errors="replace").splitlines()[-15:]))
        return None
    try:
        described = wait_for(up_line, DETACH_TIMEOUT_S, "the detached stack coming up", interval=0.5) or {}
    except BaseException:
        child.terminate()  # it tears down what it started
        child.wait(timeout=120)
        raise
    os.replace(log_path, Path(described["run_dir"]) / "up.log")
    if args.json:
        print(json.dumps(described))
    else:
        _print_endpoints(described)
        print(f"\nstack {described['run_id']} is up (detached); stop it with: {described['stop']}")
    return 0


def _print_endpoints(described: dict) -> None:
    print("\nendpoints:")
    for name, url in described["endpoints"].items():
        print(f"  {name:<10} {url or 'inside the stack network only'}")
    print(f"  {'repo url':<10} {described['repo_url']}")
    print(f"  {'dead url':<10} {described['dead_url']}")


def cmd_up(args: argparse.Namespace) -> int:
    if args.detach:
        return cmd_up_detached(args)
    settings = _settings(args)
    with make_stack(settings) as stack:
        described = describe(stack)
        if args.json:  # one line: what a detached parent (or a script) waits for
            print(json.dumps(described), flush=True)
        _print_endpoints(described)
        print(f"  (repos policy-0000 .. policy-{settings.seed_repos - 1:04d}, probe-0 .. probe-3)")
        try:
            # Inside the try: a Ctrl-C right after the line is read still stops cleanly.
            print(f"\nrun dir {stack.run_dir}\nstack {stack.run_id} is up; Ctrl-C (or `harness down`) stops it",
                  flush=True)
            threading.Event().wait()
        except KeyboardInterrupt:
            print("\n[harness] stopping ...", flush=True)
    print("[harness] stack stopped, run dir removed")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    settings = config.from_env()
    found = runs.list_runs(settings.run_root)
    if not found:
        print(f"no runs under {settings.run_root}")
        return 0
    for run in found:
        state = ("live" if run.owner_alive else f"kept (`harness down {run.run_id}` stops it)" if run.kept
                 else "STALE (owner gone; `harness clean` removes it)")
        print(f"{run.run_id}  {run.state.get('target', '?')}  {state}")
        for name, url in run.state.get("endpoints", {}).items():
            print(f"    {name:<10} {url}")
        print(f"    processes: {', '.join(run.live_processes) or 'none running'}")
        print(f"    started from: {runs.owner_cwd(run) or 'unknown'}")
    return 0


def _remove(selected: list[runs.RunInfo]) -> int:
    for run in selected:
        stopped = runs.remove_run(run)
        detail = f"; stopped {', '.join(stopped)}" if stopped else ""
        print(f"removed run {run.run_id}{detail}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """A run id: that run. None: the runs started from this checkout (the git checkout
    around the current directory, else the directory) — another checkout's, or another
    user's on a shared machine, are not this command's to stop; --all stops every run."""
    settings = config.from_env()
    found = runs.list_runs(settings.run_root)
    if args.run_id:
        found = [r for r in found if r.run_id == args.run_id]
        if not found:
            raise HarnessError(f"no run {args.run_id} under {settings.run_root}; see `harness status`")
        return _remove(found)
    if args.all:
        if not found:
            print("nothing to stop")
        return _remove(found)
    here = Path.cwd()
    mine = [r for r in found if runs.started_here(r, here)]
    others = [r for r in found if r not in mine]
    if not mine:
        print(f"nothing started from {runs.checkout_of(here)} to stop")
    _remove(mine)
    if others:
        print(f"left {len(others)} run(s) started elsewhere ({', '.join(r.run_id for r in others)}): "
              "`harness down RUN_ID` stops one, `harness down --all` every run")
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    settings = config.from_env()
    listed = runs.list_runs(settings.run_root)
    found = [r for r in listed if args.all or r.stale]
    _remove(found)
    # Compose resources whose owner process is gone are found by their labels alone,
    # also when their run dir is gone or lives under another run root.
    try:
        orphans = runs.remove_compose_resources(everything=args.all,
                                                spare=frozenset(r.run_id for r in listed if r.kept))
    except Exception as exc:  # the engine answered ping but not the listing (busy, vfs)
        print(f"warning: could not sweep compose resources ({type(exc).__name__}: {exc}); "
              "run `harness clean` again when the Docker engine answers")
        orphans = []
    if orphans:
        print(f"removed stale compose resources: {', '.join(orphans)}")
    if not found and not orphans:
        print(f"nothing to clean under {settings.run_root}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from harness.runner.rejudge import rejudge_command
    baseline = args.baseline if args.baseline is not None else config.from_env().baseline
    return rejudge_command(args.run_dir, args.threshold, baseline, args.strict, args.bounds)


EXIT_CODES = """exit status:
  0  every judged gate passed (with --baseline: every failure a known one)
  1  a gate failed (with --baseline: a new or changed failure; --strict: or a fixed one)
  2  the harness could not judge: usage, bad input, a stack that did not come up, an ERROR verdict
  130 interrupted"""

COMPARE_EXIT_CODES = """exit status:
  0  B regressed on no gate, and every gate was judged on both sides
  1  B regressed: it fails a gate A passes (whatever else happened)
  2  the harness could not judge: usage, bad input, a side whose stack did not come up or that wrote
     no report, an ERROR (or a gate not run) on B, an ERROR on A where B did not pass
  130 interrupted"""

REPORT_EXIT_CODES = """exit status (the same as `harness gates` for the re-judged verdicts):
  0  every re-judged gate passed (with --baseline: every failure a known one)
  1  a gate failed under these thresholds (with --baseline: a new or changed failure)
  2  the harness could not judge: usage, bad input (no or a damaged report, an unknown gate or
     threshold), a recorded stack that did not come up, an ERROR verdict"""

SCALE_EXIT_CODES = """exit status:
  0  every release was measured at every N (a curve judges nothing: nothing here fails)
  1  not used
  2  the harness could not measure: usage, bad input, a release whose stack did not come up or ran
     no N; what was measured is still written
  130 interrupted

HARNESS_KEEP_STACK=1 leaves each release's stack up after its curve (`harness down RUN_ID`)."""

KEEP_HELP = ("leave the stack up after the run (default: HARNESS_KEEP_STACK=1 means always, else never); "
             "stop it with `harness down RUN_ID`")


def _contract(parser: argparse.ArgumentParser, epilog: str) -> argparse.ArgumentParser:
    parser.epilog = epilog
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__)
    parser.add_argument("--version", action="version", version=f"harness {harness_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="bring a stack up and keep it up until Ctrl-C (or --detach)")
    _add_target_flags(up)
    up.add_argument("--workers", type=int, help="gunicorn workers (default 1)")
    up.add_argument("--repos", type=int, help="policy repos to seed (default 60)")
    up.add_argument("--detach", action="store_true",
                    help="return once the stack is up; it runs until `harness down RUN_ID`")
    up.add_argument("--json", action="store_true", help="print the run id and endpoints as JSON")
    up.set_defaults(func=cmd_up)

    gates = sub.add_parser("gates", help="run gates on a new stack (or --against a running one); exit 0 all "
                                         "pass, 1 a gate failed, 2 error")
    _add_target_flags(gates)
    gates.add_argument("--gate", action="append", metavar="ID", help="a gate id (repeatable; default: every gate)")
    gates.add_argument("--keep-stack", choices=("never", "on-failure", "always"), help=KEEP_HELP)
    gates.add_argument("--list", action="store_true",
                       help="list every gate, what it needs, and its settings with defaults and variables")
    gates.add_argument("--json", action="store_true", help="with --list: as JSON")
    gates.add_argument("--against", metavar="RUN_ID", help="run on the stack `harness up --detach` left running")
    gates.add_argument("--junitxml", metavar="PATH", help="also write JUnit XML (a testcase per gate, with "
                                                          "verdict, category and figures as properties)")
    gates.add_argument("--scale", type=int, metavar="N",
                       help="the scale profile: leak, repeat-sync and boot-timing at N live scopes, their seeding, "
                            "budgets, time limits and the machine's limits moving with N (or HARNESS_SCALE)")
    gates.add_argument("--jobs", default="1", metavar="N|auto",
                       help="run the gates in N groups side by side, each on its own stack, one merged report "
                            "(auto: as many as bring the run down to its longest gate, within what the gates' "
                            "measured CPU and memory fit the machine; boot-timing runs alone after them; default 1)")
    gates.add_argument("--shard", metavar="I/N",
                       help="run shard I of N of the selected gates (a CI matrix; split by measured durations, "
                            "boot-timing alone), a complete report each; `harness merge` joins them")
    _add_baseline_flags(gates)
    _contract(gates, EXIT_CODES)
    gates.set_defaults(func=cmd_gates)
    _add_merge_parser(sub)

    base = sub.add_parser("baseline", help="write a baseline (known failures) from the failures of one or more "
                                           "runs of one target")
    base.add_argument("run_dirs", nargs="+", metavar="REPORT_DIR", help="a run directory (reports/latest); give "
                                                                        "several to keep every outcome they saw")
    base.add_argument("-o", "--output", default="-", metavar="FILE", help="where to write it (default: stdout)")
    base.set_defaults(func=cmd_baseline)

    compare = sub.add_parser("compare", help="run gates on two targets side by side; exit 1 when B fails a "
                                             "gate A passes")
    compare.add_argument("a", help="A: a release (0.9.6), a source tree path or an image (repo:tag)")
    compare.add_argument("b", help="B: the same kinds as A")
    compare.add_argument("--gate", action="append", metavar="ID", help="a gate id (repeatable; default: every gate)")
    compare.add_argument("--backend", help="auto | local | compose (both sides)")
    _add_server_flag(compare)
    compare.add_argument("--reports-dir", dest="reports_dir", help="where compare-<time>-<id>/ goes (default "
                                                                   "./reports)")
    _contract(compare, COMPARE_EXIT_CODES + "\n\nHARNESS_KEEP_STACK=1 leaves both sides' stacks up.")
    compare.set_defaults(func=cmd_compare)

    rerun = sub.add_parser("rerun", help="run a recorded run's gates again with its parameters, thresholds and "
                                         "server settings, on its target or another")
    rerun.add_argument("run_dir", help="a run directory under reports/")
    _add_target_flags(rerun)
    rerun.add_argument("--keep-stack", choices=("never", "on-failure", "always"), help=KEEP_HELP)
    rerun.add_argument("--junitxml", metavar="PATH")
    _add_baseline_flags(rerun)
    _contract(rerun, EXIT_CODES)
    rerun.set_defaults(func=cmd_rerun)

    sub.add_parser("status", help="list runs, their endpoints and processes").set_defaults(func=cmd_status)

    down = sub.add_parser("down", help="stop a run, or the runs started from this checkout, and remove their run "
                                       "dirs")
    down.add_argument("run_id", nargs="?", help="the run to stop (default: every run started from this checkout)")
    down.add_argument("--all", action="store_true", help="stop every run under the run root, whoever started it")
    down.set_defaults(func=cmd_down)

    clean = sub.add_parser("clean", help="remove what crashed runs left: processes, run dirs (not a stack kept on "
                                         "purpose)")
    clean.add_argument("--all", action="store_true",
                       help="also stop kept runs and runs (and compose stacks) whose owner is alive")
    clean.set_defaults(func=cmd_clean)

    rep = sub.add_parser("report", help="re-judge a recorded run without running the stack")
    rep.add_argument("run_dir")
    rep.add_argument("--threshold", action="append", default=[], metavar="GATE.NAME=VALUE",
                     help="override a threshold, e.g. leak.cache_tolerance=2 (repeatable)")
    rep.add_argument("--bounds", metavar="SCENARIO", help="a replay: judge it under the [[watch]] bounds of this "
                                                          "scenario file instead of the recorded ones")
    _add_baseline_flags(rep)
    _contract(rep, REPORT_EXIT_CODES)
    rep.set_defaults(func=cmd_report)

    from harness.replay.command import add_parser as add_replay_parser
    add_replay_parser(sub)
    _contract(sub.choices["replay"], EXIT_CODES)
    from harness.scale import add_parser as add_scale_parser
    add_scale_parser(sub)
    _contract(sub.choices["scale"], SCALE_EXIT_CODES)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console.to_stream()
    try:
        return args.func(args)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `harness gates --list | head`: the reader had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except Exception:  # a bug in the harness judged nothing: 2, never 1 ("a gate failed")
        traceback.print_exc()
        print("error: the harness crashed (the traceback above); nothing was judged", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
