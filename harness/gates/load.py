"""The load a gate puts on the server, and what follows from it: its serve budgets, the
longest it may run, and what the machine must hold for it (see harness/limits.py).

One home for every number that must move with the number of scopes, so that a gate run at
10 scopes and one at 10,000 (the scale profile, HARNESS_SCALE=N) are the same gate with
budgets that fit. The per-scope figures are measured here (2 cores, local backend, tiny
policy repos); each says where it comes from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from harness.gates.base import GateContext, batches, pre_fix_executor_size

# Serving one scope costs the harness a PUT and a GET or two on top of the server's clone:
# 17 ms per PUT and 26 ms per scope end to end (1,000 scopes on 0.9.9, PUTs one by one).
HARNESS_S_PER_SCOPE = 0.05
# A budget is this many times the clones' expected time: a budget is a bound, not a target.
BUDGET_MARGIN = 2.0
# The longest one scope's serve may take on the slowest release measured here, for the time
# limit of a whole gate (0.9.6 serves 1,000 fresh scopes in ~40 s and boots them serially).
CEILING_S_PER_SERVE = 0.25
# What every gate run spends besides serving: a fresh server, snapshots, settle waits.
FIXED_S = 300.0


@dataclass(frozen=True)
class Load:
    """What a gate run asks of the server: `scopes` live at once, `repos` seeded policy
    repos read, each scope fetched `fetches` times, and the whole set served `rounds` times
    (a cycle, a boot)."""

    scopes: int
    repos: int
    fetches: int = 1
    rounds: int = 1
    ceiling_s_per_serve: float = CEILING_S_PER_SERVE

    @property
    def serves(self) -> int:
        return self.scopes * self.rounds

    def time_limit_s(self) -> float:
        """The longest a gate with this load may run before something is wrong with the
        run itself: the per-test timeout of the gate suite, never shorter than this."""
        return FIXED_S + self.serves * self.ceiling_s_per_serve * BUDGET_MARGIN


def git_concurrency(ctx: GateContext) -> int:
    """Git operations the server runs at once: its git worker pool, or (a pre-fix release
    without one) Python's default executor, which its git operations run on."""
    return ctx.knobs.git_workers or pre_fix_executor_size(ctx.stack.server.cpu_count())


def serve_budget(ctx: GateContext, scopes: int, floor_s: float, one_clone_s: float) -> float:
    """Seconds to allow `scopes` scopes to be served (or re-fetched): `floor_s` (the gate's
    own budget, which holds at a small load), or, when more, the harness's requests plus the
    clones in batches of the server's git concurrency, with a margin."""
    derived = scopes * HARNESS_S_PER_SCOPE + batches(scopes, git_concurrency(ctx)) * one_clone_s
    return max(floor_s, round(BUDGET_MARGIN * derived, 1))


def scaled_budgets(ctx: GateContext, scopes: int, budgets: dict[str, float], probe_url: str) -> dict[str, float]:
    """The gate's budgets for `scopes` scopes, recorded as the fact `budgets`: each as given
    while the floor covers the load; above SMALL_LOAD scopes one clone through the server's
    own git library is timed (once) and every budget is derived from it."""
    if scopes <= SMALL_LOAD:
        ctx.timeline.fact("budgets", {"scopes": scopes, **budgets})
        return budgets
    one_clone_s = ctx.stack.server.clone_seconds(probe_url)
    scaled = {name: serve_budget(ctx, scopes, floor, one_clone_s) for name, floor in budgets.items()}
    ctx.timeline.fact("budgets", {"scopes": scopes, "one_clone_s": round(one_clone_s, 3),
                                  "git_concurrency": git_concurrency(ctx), **scaled})
    return scaled


T = TypeVar("T")
# Requests the harness has in flight at once above SMALL_LOAD scopes: 10,000 PUTs one by one
# would spend 3 minutes of the gate on the harness's side alone.
REQUESTS_AT_ONCE = 4


def for_each_scope(request: Callable[[str], T], scopes: Iterable[str]) -> list[T]:
    """`request(scope)` for every scope, results in the scopes' order. A small load goes
    one by one, as the gates were proven with; a large one REQUESTS_AT_ONCE at a time."""
    scopes = list(scopes)
    if len(scopes) <= SMALL_LOAD:
        return [request(scope) for scope in scopes]
    with ThreadPoolExecutor(max_workers=REQUESTS_AT_ONCE, thread_name_prefix="scope-requests") as pool:
        return list(pool.map(request, scopes))


# Up to this many scopes the gates' own budgets hold with room to spare (a 60 s serve budget
# covers 10 scopes that take under 2 s here); above it they are derived from the load.
SMALL_LOAD = 50
