"""The `harness` command: bring a stack up, look at it, tear it down, clean up, re-judge reports."""

from __future__ import annotations

import argparse
import sys
import threading

from harness import config, console, runs
from harness.errors import HarnessError
from harness.stack import make_stack


def _settings(args: argparse.Namespace) -> config.Settings:
    overrides = {}
    for name in ("version", "source", "workers", "backend"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "repos", None) is not None:
        overrides["seed_repos"] = args.repos
    return config.from_env(**overrides)


def cmd_up(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with make_stack(settings) as stack:
        print("\nendpoints:")
        for service, where in stack.endpoints().items():
            print(f"  {service:<10} {where}")
        print(f"  {'repo url':<10} {stack.repo_url('policy-0000')}  (policy-0000 .. "
              f"policy-{settings.seed_repos - 1:04d}, probe-0 .. probe-3)")
        print(f"  {'dead url':<10} {stack.dead_url(0)}")
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

    up = sub.add_parser("up", help="bring a stack up and keep it up until Ctrl-C")
    up.add_argument("--opal-version", dest="version", help="PyPI release (default: OPAL_VERSION or 0.9.9)")
    up.add_argument("--source", help="OPAL source tree (default: OPAL_SOURCE)")
    up.add_argument("--workers", type=int, help="gunicorn workers (default 1)")
    up.add_argument("--repos", type=int, help="policy repos to seed (default 60)")
    up.add_argument("--backend", help="auto (default: BACKEND or auto) | local | compose")
    up.set_defaults(func=cmd_up)

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
