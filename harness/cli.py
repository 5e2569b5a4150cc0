"""The `harness` command: bring a stack up, run gates on it, compare two targets, rerun a
recorded run, look at stacks, tear them down, clean up, re-judge reports.

Exit status: 0 success (every gate passed, or with --baseline every failure a known one); 1 a
gate failed (with --baseline: a new or changed failure; `compare`: B fails a gate A passes);
2 an error or bad input (one line naming the fix); 130 interrupted."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from harness import config, console, harness_version, runs
from harness.baseline import resolve
from harness.errors import HarnessError
from harness.stack import make_stack
from harness.stack.base import SERVICES
from harness.waiting import wait_for

# A first run builds the server's virtualenv (or image) before the stack is up.
DETACH_TIMEOUT_S = 1800


def _settings(args: argparse.Namespace) -> config.Settings:
    overrides = {}
    for name in ("version", "source", "image", "workers", "backend", "reports_dir", "scale", "baseline"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "repos", None) is not None:
        overrides["seed_repos"] = args.repos
    return config.from_env(**overrides)


def _target_given(args: argparse.Namespace) -> bool:
    return any(getattr(args, name, None) for name in ("version", "source", "image"))


def _add_target_flags(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--opal-version", dest="version", help="a PyPI release (default: OPAL_VERSION or 0.9.9)")
    target.add_argument("--opal-source", "--source", dest="source", help="an OPAL source tree (default: OPAL_SOURCE)")
    target.add_argument("--opal-image", dest="image", help="a prebuilt server image, compose only (OPAL_IMAGE)")
    parser.add_argument("--backend", help="auto (default: BACKEND or auto) | local | compose")
    parser.add_argument("--reports-dir", dest="reports_dir", help="where reports go (default: HARNESS_REPORTS_DIR "
                                                                  "or ./reports)")


def cmd_gates(args: argparse.Namespace) -> int:
    from harness.gates.batch import Batch, run_batch
    from harness.gates.registry import GATES
    settings = _settings(args)
    batch = Batch(gates=args.gate or list(GATES), keep=args.keep_stack,
                  junit=Path(args.junitxml) if args.junitxml else None,
                  baseline=resolve(settings.baseline, settings.target), strict_baseline=args.strict)
    _apply_shard(args, batch)
    jobs = _jobs(args.jobs, batch.gates)
    if jobs > 1:
        if args.against:
            raise HarnessError("--against drives one running stack: it cannot go with --jobs")
        from harness.gates.parallel import run_parallel
        return run_parallel(settings, batch, jobs, args.backend)[0]
    stack = None
    if args.against:
        from harness.stack.attach import attach
        stack = attach(settings, args.against)
        settings = stack.settings
    status, _ = run_batch(settings, batch, stack=stack)
    return status


def _apply_shard(args: argparse.Namespace, batch) -> None:
    """`--shard I/N`: this machine runs its share of the selected gates (harness/gates/shards.py)."""
    if args.shard is None:
        return
    from harness.gates.shards import Shard, record
    shard = Shard.parse(args.shard)
    batch.shard = record(batch.gates, shard)
    batch.gates = batch.shard["gates"]
    print(f"[harness] shard {shard}: {', '.join(batch.gates)} (of {', '.join(batch.shard['selected'])})")


def cmd_merge(args: argparse.Namespace) -> int:
    from harness.gates.shards import merge_command
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
    from harness.gates.parallel import default_jobs
    if value == "auto":
        return default_jobs(gates)
    if not value.isdigit() or int(value) < 1:
        raise HarnessError(f"--jobs {value}: give a number of stacks ≥ 1, or auto (one per core and 2 GB)")
    return int(value)


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.compare import compare_command
    from harness.gates.registry import GATES
    settings = config.from_env(**({"reports_dir": args.reports_dir} if args.reports_dir else {}))
    extra = ["--backend", args.backend] if args.backend else []
    return compare_command(args.a, args.b, args.gate or list(GATES), settings.reports_dir, extra)


def cmd_rerun(args: argparse.Namespace) -> int:
    from harness.gates.batch import run_batch
    from harness.gates.rerun import compare_with_recorded, load_report, rerun_plan
    run_dir = Path(args.run_dir)
    report = load_report(run_dir)
    settings, batch = rerun_plan(report, _settings(args), _target_given(args))
    batch.keep, batch.junit = args.keep_stack, Path(args.junitxml) if args.junitxml else None
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
                                                         for name in SERVICES},
            "repo_url": stack.repo_url("policy-0000"), "dead_url": stack.dead_url(0),
            "stop": f"harness down {stack.run_id}"}


def _up_flags(args: argparse.Namespace) -> list[str]:
    """The flags of this `harness up` again, for the detached child."""
    flags = []
    for name, flag in (("version", "--opal-version"), ("source", "--opal-source"), ("image", "--opal-image"),
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
        state = "live" if run.owner_alive else "STALE (owner gone; `harness clean` removes it)"
        print(f"{run.run_id}  {run.state.get('target', '?')}  {state}")
        for name, url in run.state.get("endpoints", {}).items():
            print(f"    {name:<10} {url}")
        print(f"    processes: {', '.join(run.live_processes) or 'none running'}")
    return 0


def _remove(selected: list[runs.RunInfo]) -> int:
    for run in selected:
        stopped = runs.remove_run(run)
        detail = f"; stopped {', '.join(stopped)}" if stopped else ""
        print(f"removed run {run.run_id}{detail}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    settings = config.from_env()
    found = runs.list_runs(settings.run_root)
    if args.run_id:
        found = [r for r in found if r.run_id == args.run_id]
        if not found:
            raise HarnessError(f"no run {args.run_id} under {settings.run_root}; see `harness status`")
    if not found:
        print("nothing to stop")
    return _remove(found)


def cmd_clean(args: argparse.Namespace) -> int:
    settings = config.from_env()
    found = [r for r in runs.list_runs(settings.run_root) if args.all or r.stale]
    _remove(found)
    # Compose resources whose owner process is gone are found by their labels alone,
    # also when their run dir is gone or lives under another run root.
    try:
        orphans = runs.remove_compose_resources(everything=args.all)
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
    from harness.gates.rejudge import rejudge_command
    return rejudge_command(args.run_dir, args.threshold)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__)
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
    gates.add_argument("--keep-stack", choices=("never", "on-failure", "always"), default="never",
                       help="leave the stack up after the run (default never)")
    gates.add_argument("--against", metavar="RUN_ID", help="run on the stack `harness up --detach` left running")
    gates.add_argument("--junitxml", metavar="PATH", help="also write JUnit XML (a testcase per gate, with "
                                                          "verdict, category and figures as properties)")
    gates.add_argument("--scale", type=int, metavar="N",
                       help="the scale profile: leak, repeat-sync and boot-timing at N live scopes, their seeding, "
                            "budgets, time limits and the machine's limits moving with N (or HARNESS_SCALE)")
    gates.add_argument("--jobs", default="1", metavar="N|auto",
                       help="run the gates in N groups side by side, each on its own stack, one merged report "
                            "(auto: one per core and 2 GB; boot-timing runs alone after them; default 1)")
    gates.add_argument("--shard", metavar="I/N",
                       help="run shard I of N of the selected gates (a CI matrix; split by measured durations, "
                            "boot-timing alone), a complete report each; `harness merge` joins them")
    _add_baseline_flags(gates)
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
    compare.add_argument("--reports-dir", dest="reports_dir", help="where compare-<time>/ goes (default ./reports)")
    compare.set_defaults(func=cmd_compare)

    rerun = sub.add_parser("rerun", help="run a recorded run's gates again with its parameters, thresholds and "
                                         "server settings, on its target or another")
    rerun.add_argument("run_dir", help="a run directory under reports/")
    _add_target_flags(rerun)
    rerun.add_argument("--keep-stack", choices=("never", "on-failure", "always"), default="never")
    rerun.add_argument("--junitxml", metavar="PATH")
    _add_baseline_flags(rerun)
    rerun.set_defaults(func=cmd_rerun)

    sub.add_parser("status", help="list runs, their endpoints and processes").set_defaults(func=cmd_status)

    down = sub.add_parser("down", help="stop a run (or all runs) and remove its run dir")
    down.add_argument("run_id", nargs="?")
    down.set_defaults(func=cmd_down)

    clean = sub.add_parser("clean", help="remove what crashed runs left: processes, run dirs")
    clean.add_argument("--all", action="store_true",
                       help="also stop runs (and compose stacks) whose owner is alive")
    clean.set_defaults(func=cmd_clean)

    rep = sub.add_parser("report", help="re-judge a recorded run without running the stack")
    rep.add_argument("run_dir")
    rep.add_argument("--threshold", action="append", default=[], metavar="GATE.NAME=VALUE",
                     help="override a threshold, e.g. leak.cache_tolerance=2 (repeatable)")
    rep.set_defaults(func=cmd_report)

    from harness.scale import add_parser as add_scale_parser
    add_scale_parser(sub)
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


if __name__ == "__main__":
    sys.exit(main())
