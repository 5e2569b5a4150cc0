"""Gate `boot-timing`: N scopes stored, server restarted cold, git host behind the
latency proxy.

Passes when boot time / (N × one clone's time through the same proxy, measured in the
same run with the server's own git library) is under a ratio. A serial preload scores ≈ 1;
a preload that clones C at a time scores ≈ 1/C plus the fixed start-up cost.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from harness.gates.base import ERROR, FAIL, PASS, Gate, GateContext, Verdict
from harness.seed import policy_repo_name, probe_repo_name
from harness.timeline import Timeline
from harness.waiting import poll_until


@dataclass
class Params:
    scopes: int = 20
    clone_samples: int = 3
    boot_budget_factor: float = 2.0  # give up at factor × the serial estimate + 30 s


@dataclass
class Thresholds:
    max_ratio: float = 0.5


class BootTimingGate(Gate):
    id = "boot-timing"
    marker = "boot_timing"
    title = "boot with N stored scopes is not serial"
    Params = Params
    Thresholds = Thresholds

    def scenario(self, ctx: GateContext) -> None:
        p: Params = ctx.params
        tl, stack = ctx.timeline, ctx.stack
        samples = [stack.clone_seconds(stack.repo_url(probe_repo_name(1 + i % 3), via_latency=True))
                   for i in range(p.clone_samples)]
        one_clone = statistics.median(samples)
        serial_estimate = p.scopes * one_clone
        budget = p.boot_budget_factor * serial_estimate + 30.0
        tl.fact("derived", {"clone_samples_s": [round(s, 3) for s in samples], "one_clone_s": round(one_clone, 3),
                            "scopes": p.scopes, "serial_estimate_s": round(serial_estimate, 2),
                            "boot_budget_s": round(budget, 1)})
        stack.stop("server")
        stack.stage_scopes({f"boot-{i}": stack.repo_url(policy_repo_name(i), via_latency=True)
                            for i in range(p.scopes)})
        tl.mark("server_launch")
        started = time.monotonic()
        stack.restart_server(fresh_state=False, wait_healthy=False)
        boot_s = poll_until(lambda: ctx.client.healthy(timeout=2), budget, interval=0.2)
        tl.mark("server_healthy" if boot_s is not None else "server_not_healthy",
                seconds=round(time.monotonic() - started, 2))
        tl.fact("boot_s", boot_s)
        ctx.observe("booted")

    def check(self, timeline: Timeline, thresholds: Thresholds) -> Verdict:
        derived = timeline.facts["derived"]
        boot_s = timeline.facts.get("boot_s")
        metrics = {**derived, "boot_s": boot_s}
        if derived["one_clone_s"] <= 0:
            return Verdict(ERROR, "one clone through the latency proxy took no time: proxy not in the path",
                           "error.fault")
        if boot_s is None:
            return Verdict(FAIL, f"server not healthy {derived['boot_budget_s']:g} s after a cold restart with "
                                 f"{derived['scopes']} stored scopes", "boot.never_healthy", metrics)
        ratio = boot_s / derived["serial_estimate_s"]
        metrics["ratio"] = round(ratio, 3)
        summary = (f"boot took {boot_s:.1f} s for {derived['scopes']} scopes = {ratio:.2f} × "
                   f"({derived['scopes']} × {derived['one_clone_s']:.2f} s for one clone)")
        if ratio >= thresholds.max_ratio:
            return Verdict(FAIL, f"{summary}, at or over the {thresholds.max_ratio:g} bound: "
                                 "the preload clones serially", "boot.serial", metrics)
        return Verdict(PASS, f"{summary}, under {thresholds.max_ratio:g}", "", metrics)
