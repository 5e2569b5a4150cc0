"""Run one gate on a stack: fresh server, scenario, check, and the server stopped by PID."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
from typing import Any, get_type_hints

from harness import limits
from harness.config import Settings, check_gate_vars, gate_variable
from harness.errors import ConfigError, HarnessError
from harness.gates.base import Gate, GateContext, foreign_answers
from harness.gates.load import Load
from harness.gates.registry import GATES
from harness.servers.base import Capability
from harness.servers.registry import DEFAULT_SERVER, SERVERS
from harness.stack.base import Stack
from harness.timeline import Timeline
from harness.verdict import ERROR, PASS, GateResult, Verdict

log = logging.getLogger(__name__)

REPLAY = "replay"


def gate(gate_id: str) -> Gate:
    if gate_id == REPLAY:  # built from a scenario file (`harness replay`), never one of a full run's gates
        from harness.replay.engine import ReplayGate
        return ReplayGate()
    if gate_id not in GATES:
        raise ConfigError(f"unknown gate {gate_id!r}; gates: {', '.join(GATES)}")
    return GATES[gate_id]


def skip_reason(gate_id: str, settings: Settings) -> str | None:
    """Why the chosen server cannot take this gate (None: it can): a capability it lacks."""
    g = gate(gate_id)
    return SERVERS[settings.server].skip_reason(g.id, g.requires, settings.backend)


def configure(g: Gate, overrides: Mapping[str, str]) -> tuple[Any, Any]:
    """Params and thresholds of a gate from defaults plus overrides (names of either)."""
    params_names = {f.name for f in fields(g.params_type)}
    threshold_names = {f.name for f in fields(g.thresholds_type)}
    unknown = sorted(set(overrides) - params_names - threshold_names)
    if unknown:
        raise ConfigError(f"gate {g.id} has no setting {', '.join(unknown)}; settings: "
                          f"{', '.join(sorted(params_names | threshold_names))}")
    return (build_settings(g.params_type, {k: v for k, v in overrides.items() if k in params_names}, g.id),
            build_settings(g.thresholds_type, {k: v for k, v in overrides.items() if k in threshold_names}, g.id))


def requested_settings(g: Gate, settings: Settings) -> dict[str, str]:
    """A gate's settings as the run asks for them: the scale profile's for its N
    (HARNESS_SCALE, `--scale`), then HARNESS_GATE_<GATE>_<NAME> on top (explicit wins)."""
    scaled = g.scaled(settings.scale) if settings.scale else {}
    return {**scaled, **settings.gate_overrides(g.id)}


def needs_of(gate_id: str, load: Load | None) -> limits.Needs | None:
    """What a gate with this load needs of the machine (None: a small fixed load)."""
    if load is None:
        return None
    return limits.Needs.of(load.scopes, load.repos, load.fetches,
                           f"gate {gate_id} at {load.scopes:,} scopes × {load.fetches} fetches")


def preflight(settings: Settings, gate_ids: Sequence[str],
              overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Before any stack comes up: every HARNESS_GATE_* variable known and every gate's
    settings valid (one ConfigError naming the variable), and the machine holding the
    largest of their loads (limits.ensure raises the open-file limit or names the number
    the run needs)."""
    check_gate_variables(settings)
    needs = []
    for gate_id in gate_ids:
        g = gate(gate_id)
        given = overrides.get(gate_id) if overrides is not None else None
        params, _ = configure(g, requested_settings(g, settings) if given is None
                              else {k: str(v) for k, v in given.items()})
        load: Load | None = g.load(params)
        if load is not None and settings.githost == "gitea" and load.repos > settings.seed_repos:
            # Gitea is seeded once, when the stack comes up; the bare git host on demand.
            raise ConfigError(f"gate {g.id} reads {load.repos:,} repos, and the Gitea git host is seeded with "
                              f"{settings.seed_repos:,}: set HARNESS_SEED_REPOS={load.repos}")
        if (need := needs_of(g.id, load)) is not None:
            needs.append(need)
    if (run_needs := limits.largest(needs)) is not None:
        limits.ensure(run_needs, settings.run_root)


def build_settings(cls: type, values: Mapping[str, Any], gate_id: str) -> Any:
    defaults = cls()
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"gate {gate_id} has no setting {', '.join(unknown)}; "
                          f"settings: {', '.join(sorted(known)) or 'none'}")
    kinds = setting_kinds(cls)
    return cls(**{name: _convert(gate_id, name, raw, kinds[name], getattr(defaults, name))
                  for name, raw in values.items()})


def setting_kinds(cls: type) -> dict[str, type]:
    """Each setting's declared type (int, float, bool, str), else its default's type: a
    float setting with a whole default (`budget_s: float = 10`) still takes 2.5."""
    hints = get_type_hints(cls)
    defaults = cls()
    return {f.name: hints[f.name] if hints.get(f.name) in (int, float, bool, str) else type(getattr(defaults, f.name))
            for f in fields(cls)}


_KIND_WORDS = {int: "a whole number", float: "a number", bool: "a switch (1 or 0)"}


def _convert(gate_id: str, name: str, raw: Any, kind: type, default: Any) -> Any:
    """One value as its setting's type; a wrong one is a ConfigError naming the variable."""
    try:
        if kind is bool and not isinstance(raw, bool):
            return _switch(str(raw))
        return kind(raw)
    except (TypeError, ValueError):
        variable = gate_variable(gate_id, name)
        shown = int(default) if kind is bool else default
        raise ConfigError(f"{variable}={raw!r} is not {_KIND_WORDS.get(kind, kind.__name__)} (gate {gate_id}'s "
                          f"{name}, default {default!r}); set e.g. {variable}={shown}") from None


def _switch(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def setting_names(g: Gate) -> list[str]:
    return sorted({f.name for f in fields(g.params_type)} | {f.name for f in fields(g.thresholds_type)})


def check_gate_variables(settings: Settings) -> None:
    """Every HARNESS_GATE_* variable names a gate and one of its settings (one ConfigError)."""
    check_gate_vars(settings.gate_vars, {gate_id: setting_names(g) for gate_id, g in GATES.items()})


def catalogue() -> list[dict[str, Any]]:
    """Every gate, what it needs and its settings with their defaults and variables
    (`harness gates --list`)."""
    return [{"id": g.id, "title": g.title, "workers": g.workers, "load": _default_load(g),
             "requires": sorted(c.value for c in g.requires),
             "servers": [name for name, adapter in SERVERS.items() if not adapter.lacks(g.requires)],
             "settings": _settings_of(g)} for g in GATES.values()]


def _default_load(g: Gate) -> dict[str, int] | None:
    load = g.load(g.params_type())
    return None if load is None else {"scopes": load.scopes, "repos": load.repos, "fetches": load.fetches}


def _settings_of(g: Gate) -> list[dict[str, Any]]:
    entries = []
    for kind, cls in (("param", g.params_type), ("threshold", g.thresholds_type)):
        kinds = setting_kinds(cls)
        entries += [{"name": name, "kind": kind, "type": kinds[name].__name__, "default": default,
                     "variable": gate_variable(g.id, name)} for name, default in asdict(cls()).items()]
    return entries


def judge(g: Gate, timeline: Timeline, params: Any, thresholds: Any) -> Verdict:
    """The gate's checker, which never crashes the run or a re-judging: an exception in it
    (e.g. an old recording without a fact a newer checker reads) is an ERROR verdict."""
    try:
        verdict = g.check(timeline, params, thresholds)
    except Exception as exc:
        return Verdict(ERROR, f"the checker could not judge this recording: {type(exc).__name__}: {exc}",
                       "error.checker")
    if verdict.verdict != PASS and (foreign := foreign_answers(timeline)):
        # context for whichever problem it explains: a 200 that was another scope's bundle
        # (the `default` scope's, when one is stored) is why a scope counted as not served
        verdict.reason += "; answered 200 with another bundle, not their own: " + "; ".join(foreign[:3])
    return verdict


def profile_env(g: Gate, profile: str, server: str = DEFAULT_SERVER) -> dict[str, str]:
    profiles = SERVERS[server].profiles
    if profile not in profiles:
        raise ConfigError(f"HARNESS_SERVER_PROFILE={profile} is not known; use one of {', '.join(profiles)}")
    return {**profiles[profile], **g.server_profile(profile)}


def server_env_for(g: Gate, profile: str, user_env: Mapping[str, str],
                   run_env: Mapping[str, str] | None = None, server: str = DEFAULT_SERVER) -> dict[str, str]:
    """The one place that decides which OPAL_* settings a gate's server runs with, later
    winning: the profile, the gate's own additions to it, the user's OPAL_* variables, then
    settings given for this run alone (e.g. a self-test control such as
    OPAL_SCOPES_GIT_MAX_ZOMBIES=0)."""
    return {**profile_env(g, profile, server), **user_env, **(run_env or {})}


def run_gate(gate_id: str, stack: Stack, profile: str = "quick",
             overrides: Mapping[str, str] | None = None,
             server_env: Mapping[str, str] | None = None) -> GateResult:
    g = gate(gate_id)
    params, thresholds = configure(g, requested_settings(g, stack.settings) if overrides is None else overrides)
    needs = needs_of(g.id, g.load(params))
    timeline = Timeline(g.id)
    timeline.fact("params", asdict(params))
    timeline.fact("profile", profile)
    started = time.monotonic()
    log.info(f"[gate {g.id}] {g.title} ...")
    server_settings: dict[str, str] = {}
    timing: dict[str, float] = {}
    try:
        stack.server.restart(fresh_state=True, workers=g.workers or stack.settings.workers,
                             overrides=server_env_for(g, profile, stack.settings.server_env, server_env,
                                                      stack.settings.server))
        timing["fresh_server_s"] = time.monotonic() - started
        server_settings = stack.server.settings()
        timeline.fact("server_settings", server_settings)
        if needs is not None and (short := limits.server_shortfall(needs, _server_pids(stack))):
            raise HarnessError(short)
        ctx = GateContext(stack, timeline, params)
        if stack.settings.default_scope and Capability.RUNTIME_SOURCES in g.requires:
            ctx.store_default_scope()  # a scope gate's proof that it never passes on the fallback
        scenario_started = time.monotonic()
        try:
            g.scenario(ctx)
        finally:  # a scenario that fails halfway still says where its time went
            timing.update(scenario_s=time.monotonic() - scenario_started, sampling_s=ctx.sampling_s)
        verdict = judge(g, timeline, params, thresholds)
    except HarnessError as exc:
        verdict = Verdict(ERROR, f"the scenario could not run: {exc}", "error.scenario")
    except Exception as exc:  # a bug in a gate must still yield a verdict and a report
        verdict = Verdict(ERROR, f"the scenario crashed: {type(exc).__name__}: {exc}", "error.crash")
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        # The test run's own timeout (pytest-timeout raises its Failed, a BaseException, in
        # the gate's thread): the verdict and the timeline so far still reach the report.
        verdict = Verdict(ERROR, f"the gate ran past the test run's time limit: {exc}", "error.timeout")
    finally:
        # A jammed server ignores graceful stop: stop() SIGKILLs it by PID after a bounded
        # grace. A kept stack (--keep-stack) keeps its server as the gate left it, to inspect.
        if not stack.keep:
            stop_started = time.monotonic()
            stack.server.stop()
            timeline.mark("server_stopped", seconds=round(time.monotonic() - stop_started, 2))
            timing["teardown_s"] = time.monotonic() - stop_started
    duration = time.monotonic() - started
    log.info(f"[gate {g.id}] {verdict.verdict.upper()} in {duration:.0f} s: {verdict.reason}")
    return GateResult(id=g.id, verdict=verdict.verdict, reason=verdict.reason, category=verdict.category,
                      duration_s=round(duration, 1), metrics=verdict.metrics, thresholds=asdict(thresholds),
                      problems=[p.to_json() for p in verdict.problems],
                      params=asdict(params), server_settings=server_settings, timeline=timeline,
                      timing=time_split(timing, duration))


def _server_pids(stack: Stack) -> list[int]:
    master, workers = stack.server.pids()
    return ([master] if master else []) + workers


def time_split(timing: dict[str, float], duration: float) -> dict[str, float]:
    """Where a gate's time went. `server_s` is the scenario less the harness's snapshots:
    waiting for the server to serve, fetch, boot, time out or recover (budgets, outages).
    `harness_s` is the rest: a fresh server per gate (restart, Redis flush), the snapshots,
    stopping the server."""
    scenario, sampling = timing.get("scenario_s", 0.0), timing.get("sampling_s", 0.0)
    server = max(0.0, scenario - sampling)
    return {**{k: round(v, 2) for k, v in timing.items()}, "server_s": round(server, 2),
            "harness_s": round(max(0.0, duration - server), 2)}
