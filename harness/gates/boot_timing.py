"""Gate `boot-timing`: N scopes stored, server restarted cold, git host behind the
latency proxy.

Boot ends when every stored scope is **served** (GET policy 200), not when /healthcheck
answers. The fixed start-up cost is a zero-scope boot measured in the same run and
subtracted; what is left is divided by N × one clone's time through the same proxy (the
server's own git library, same run). A serial preload scores ≈ 1; one that clones C at a
time ≈ 1/C. Then a never-cloned scope PUT after boot must be served: a worker that boots
"healthy" but no longer runs git operations fails here, not later in production.

The ratio rests on the server's own clones having gone through the latency proxy: the proxy
must have taken a connection for every stored scope's repo during the boot, else the gate is
ERROR `error.not_exercised` (a server that reached its repos another way would look parallel).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

from harness.gates.base import Gate, GateContext, cold_boot
from harness.gates.load import Load
from harness.gates.proof import OLD_LISTENER, not_exercised, record_connections, repos_of, without_detail
from harness.gates.settings import GateSettings
from harness.seed import policy_repo_name, probe_repo_name
from harness.servers.base import Capability
from harness.timeline import Timeline
from harness.verdict import ERROR, FAIL, PASS, Verdict


@dataclass
class Params(GateSettings):
    positive = ("scopes", "clone_samples", "boot_budget_factor", "empty_boot_budget_s")
    scopes: int = 20
    clone_samples: int = 3
    boot_budget_factor: float = 2.0  # give up at factor × the serial estimate + 30 s
    empty_boot_budget_s: float = 60.0
    new_scope_slack_s: float = 20.0  # a new scope after boot: git timeout (if any) + this


# One clone through the latency proxy at its default 150 ms took 0.78 s here: a serial boot
# of N scopes takes N of them (N = 1,000: 13 minutes on 0.9.6).
CLONE_THROUGH_PROXY_CEILING_S = 1.0


@dataclass
class Thresholds(GateSettings):
    positive = ("max_ratio",)
    max_ratio: float = 0.5


class BootTimingGate(Gate, id="boot-timing", params=Params, thresholds=Thresholds,
                     title="boot with N stored scopes is not serial",
                     requires=(Capability.MANY_SOURCES, Capability.RUNTIME_SOURCES, Capability.SCOPE_STORE,
                               Capability.SERVER_PYTHON)):

    def scaled(self, scopes: int) -> dict[str, str]:
        return {"scopes": str(scopes)}

    def load(self, params: Params) -> Load:
        return Load(scopes=params.scopes, repos=params.scopes + 1,
                    ceiling_s_per_serve=CLONE_THROUGH_PROXY_CEILING_S * params.boot_budget_factor)

    def scenario(self, ctx: GateContext) -> None:
        p: Params = ctx.params
        tl, stack = ctx.timeline, ctx.stack
        stack.ensure_repos(p.scopes + 1)  # the stored scopes' repos and the one after boot
        samples = [stack.server.clone_seconds(stack.repo_url(probe_repo_name(1 + i % 3), via_latency=True))
                   for i in range(p.clone_samples)]
        one_clone = statistics.median(samples)
        serial_estimate = p.scopes * one_clone
        budget = p.boot_budget_factor * serial_estimate + 30.0
        new_scope_budget = (ctx.knobs.git_timeout_s or 0.0) + p.new_scope_slack_s
        tl.fact("derived", {"clone_samples_s": [round(s, 3) for s in samples], "one_clone_s": round(one_clone, 3),
                            "scopes": p.scopes, "serial_estimate_s": round(serial_estimate, 2),
                            "boot_budget_s": round(budget, 1), "new_scope_budget_s": new_scope_budget,
                            "git_timeout_s": ctx.knobs.git_timeout_s})
        # Zero-scope boot first (Redis was emptied when the gate started): the fixed cost.
        tl.fact("empty_boot", asdict(cold_boot(ctx, [], p.empty_boot_budget_s, "zero-scope boot")))
        scopes = {f"boot-{i}": stack.repo_url(policy_repo_name(i), via_latency=True) for i in range(p.scopes)}
        stack.server.stage_scopes(scopes)
        proxy = stack.service("latency")
        proxy_before = proxy.accepted_connections()
        boot = cold_boot(ctx, list(scopes), budget, f"boot with {p.scopes} stored scopes")
        tl.fact("boot", asdict(boot))
        tl.fact("proxy_connections_at_boot", proxy.accepted_connections() - proxy_before)
        record_connections(tl, proxy, proxy_before, "proxy_connection_times")
        if boot.served_s is not None:
            ctx.client.put_scope("after-boot", stack.repo_url(policy_repo_name(p.scopes)))
            tl.fact("new_scope_served_s", ctx.served_within("after-boot", new_scope_budget, "new scope after boot"))
        ctx.observe("booted")

    def check(self, timeline: Timeline, params: Params, thresholds: Thresholds) -> Verdict:
        derived, facts = timeline.facts["derived"], timeline.facts
        empty, boot = facts.get("empty_boot") or {}, facts.get("boot") or {}
        metrics = {**derived, "empty_boot_s": empty.get("healthy_s"), "healthy_s": boot.get("healthy_s"),
                   "proxy_connections_at_boot": facts.get("proxy_connections_at_boot"),
                   "served_s": boot.get("served_s"), "new_scope_served_s": facts.get("new_scope_served_s")}
        if derived["one_clone_s"] <= 0:
            return Verdict(ERROR, "one clone through the latency proxy took no time: proxy not in the path",
                           "error.fault")
        if empty.get("healthy_s") is None:
            return Verdict(ERROR, "the server did not become healthy with no scopes stored: nothing to "
                                  "subtract, no boot to time", "error.no_baseline")
        scopes = derived["scopes"]
        if boot.get("served_s") is None:
            healthy = ("never became healthy" if boot.get("healthy_s") is None
                       else f"was healthy after {boot['healthy_s']:.1f} s but {boot.get('not_served')} of {scopes} "
                            "stored scopes were still not served")
            return Verdict(FAIL, f"after a cold restart with {scopes} stored scopes the server {healthy} within "
                                 f"{derived['boot_budget_s']:g} s", "boot.not_served", metrics)
        if (bypassed := bypassed_proxy(timeline)) is not None:
            return bypassed
        boot_s = boot["served_s"] - empty["healthy_s"]
        ratio = boot_s / derived["serial_estimate_s"]
        metrics.update(boot_s=round(boot_s, 3), ratio=round(ratio, 3))
        summary = (f"serving all {scopes} stored scopes took {boot['served_s']:.1f} s − {empty['healthy_s']:.1f} s "
                   f"zero-scope boot = {boot_s:.1f} s = {ratio:.2f} × ({scopes} × {derived['one_clone_s']:.2f} s "
                   f"for one clone), every stored scope's repo fetched through the latency proxy "
                   f"({facts.get('proxy_connections_at_boot')} connections)")
        if ratio >= thresholds.max_ratio:
            return Verdict(FAIL, f"{summary}, at or over the {thresholds.max_ratio:g} bound: the boot clones "
                                 "serially", "boot.serial", metrics)
        if facts.get("new_scope_served_s") is None:
            return Verdict(FAIL, f"{summary}; but a new scope PUT after boot was not served within "
                                 f"{derived['new_scope_budget_s']:g} s: the booted worker does not run git "
                                 "operations", "boot.new_scope_not_served", metrics)
        return Verdict(PASS, f"{summary}, under {thresholds.max_ratio:g}; a new scope after boot served in "
                             f"{facts['new_scope_served_s']:.1f} s", "", metrics)


def bypassed_proxy(timeline: Timeline) -> Verdict | None:
    """ERROR when the boot's clones did not all go through the latency proxy: the ratio to
    one clone through it would then measure something else."""
    scopes, records = timeline.facts["derived"]["scopes"], timeline.facts.get("proxy_connection_times")
    if records is None:
        return not_exercised("no record of the latency proxy's connections during the boot: whether the "
                             "server's clones went through it is unproven")
    if without_detail(records):
        return not_exercised(f"which repos the boot fetched through the latency proxy is unknown: {OLD_LISTENER}")
    wanted = {policy_repo_name(i) for i in range(scopes)}
    through = len(wanted & repos_of(records))
    if through < scopes:
        return not_exercised(f"only {through} of {scopes} stored scopes' repos were fetched through the latency "
                             f"proxy during the boot ({len(records)} proxy connections): the boot was not slowed "
                             "as the ratio assumes")
    return None
