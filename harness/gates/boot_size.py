"""Gate `boot-size`: a server booted cold on one repo of 2,000 policies (and the nonce's),
timed beside what reading that tree costs, measured in the same run on the same machine:
a `git clone` of the repo through the git front, and the server's own offline compile of
the tree (`cerbos compile`).

Passes when the first decision with the repo's own content comes within
clone + max_ratio × compile + slack of the launch: a boot costs about what fetching and
loading its tree costs. Ratios in one run, not seconds: a loaded machine slows all three.

A PASS claims the whole tree was loaded: the server's checkout must be at the repo's head
(every file of the commit on disk), else ERROR `error.not_exercised`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass

from harness.errors import HarnessError
from harness.gates.base import Gate, GateContext
from harness.gates.proof import not_exercised
from harness.gates.sources import BudgetThresholds, SlackParams, control, served_within
from harness.servers.base import Capability
from harness.timeline import Timeline
from harness.verdict import Problems, Verdict, load_failure
from harness.waiting import poll_until

SOURCE = "boot-size"
CLONE_TIMEOUT_S = 300.0


@dataclass
class Params(SlackParams):
    positive = ("policies", "boot_budget_s")
    policies: int = 2000  # filler policies beside the nonce's
    slack_s: float = 1.0
    boot_budget_s: float = 120.0  # the longest the harness waits for the boot: its own limit


@dataclass
class Thresholds(BudgetThresholds):
    # first decision ≤ clone + max_ratio × compile + slack: the boot may load its tree half
    # again as slowly as the server's own compile does (measured in one run each: 0.55.0's
    # first decision at 1.2 × its compile, the disk-sync control's at 1.2 ×, 0.51.0's at 6.3 ×)
    max_ratio: float = 1.5


def time_clone(url: str, dest: str) -> float:
    """Seconds a `git clone` of `url` takes (the harness's own, as a client would)."""
    started = time.monotonic()
    try:
        done = subprocess.run(["git", "clone", "-q", url, dest], capture_output=True, text=True, check=False,
                              timeout=CLONE_TIMEOUT_S, env={"GIT_TERMINAL_PROMPT": "0", "PATH": "/usr/bin:/bin"})
    except subprocess.TimeoutExpired:
        raise HarnessError(f"git clone of {url} took over {CLONE_TIMEOUT_S:g} s") from None
    if done.returncode != 0:
        raise HarnessError(f"git clone of {url} failed: {done.stderr.strip()[-300:]}")
    return time.monotonic() - started


class BootSizeGate(Gate, id="boot-size", params=Params, thresholds=Thresholds,
                   title="a boot on 2,000 policies costs about what cloning and compiling them costs",
                   requires=(Capability.SOURCE_CONTROL, Capability.COMPILE_CHECK)):

    def scenario(self, ctx: GateContext) -> None:
        p: Params = ctx.params
        tl = ctx.timeline
        server = control(ctx)
        source = server.new_source(SOURCE, p.policies)
        tl.fact("policies", p.policies + 1)
        scratch = ctx.stack.run_dir / "boot-size-clone"
        try:
            tl.fact("clone_s", round(time_clone(source.url("front"), str(scratch)), 3))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        tl.fact("compile_s", round(server.compile_seconds(source), 3))
        tl.mark("server_launch")
        launched = time.monotonic()
        server.attach(source, fresh=True, wait_healthy=False)
        healthy_s = poll_until(lambda: server.served(timeout=2.0).healthy, p.boot_budget_s, interval=0.1)
        tl.fact("healthy_s", None if healthy_s is None else round(healthy_s, 3))
        left = max(1.0, p.boot_budget_s - (time.monotonic() - launched))
        served = served_within(ctx, source.nonce, left, "boot") is not None
        tl.fact("first_decision_s", round(time.monotonic() - launched, 3) if served else None)
        tl.fact("checkout", dict(server.checkout()))
        tl.fact("head", source.head())

    def check(self, timeline: Timeline, params: Params, thresholds: Thresholds) -> Verdict:
        if (failed := load_failure(timeline)) is not None:
            return failed
        f = timeline.facts
        first = f.get("first_decision_s")
        metrics = {"policies": f["policies"], "clone_s": f["clone_s"], "compile_s": f["compile_s"],
                   "healthy_s": f.get("healthy_s"), "first_decision_s": first}
        problems = Problems()
        if first is None:
            problems.add("boot_size.not_served", f"no decision with the repo's own content within "
                                                 f"{params.boot_budget_s:g} s of the launch "
                                                 f"(healthy: {f.get('healthy_s')})", **metrics)
            return problems.verdict("", metrics)
        if (f.get("checkout") or {}).get("head") != f["head"]:
            return not_exercised(f"the server's checkout is at {(f.get('checkout') or {}).get('head')}, not the "
                                 f"repo's head {f['head']}: the boot did not load the whole tree")
        bound = f["clone_s"] + thresholds.max_ratio * f["compile_s"] + params.slack_s
        metrics.update(bound_s=round(bound, 2), boot_over_compile=round(first / f["compile_s"], 2))
        said = (f"the first decision {first:.2f} s after the launch on {f['policies']:,} policies (healthy at "
                f"{f.get('healthy_s')} s); git clone {f['clone_s']:.2f} s and cerbos compile {f['compile_s']:.2f} s of "
                f"the same tree in this run: bound {bound:.2f} s = clone + {thresholds.max_ratio:g} × compile + "
                f"{params.slack_s:g} s")
        if first > bound:
            problems.add("boot_size.slow", f"{said}: {first / f['compile_s']:.1f} × the compile", **metrics)
        return problems.verdict(said, metrics)
