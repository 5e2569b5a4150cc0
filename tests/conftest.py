"""Collection order for `make test`: the costliest scopes first.

`make test` runs with pytest-xdist's `--dist loadscope --no-loadscope-reorder`: a module (or a
self-test class, one stack) goes to one worker, in collection order. Starting the longest
scopes first keeps the slowest stack from starting last and setting the wall time alone
(longest-processing-time-first). The costs are estimates, not assertions: each self-test cell
counts its gate's measured seconds (harness.runner.parallel.EXPECTED_S), every other
integration test its module's EXPECTED_COST_S or a flat INTEGRATION_S, a unit test nothing.
"""

from __future__ import annotations

import pytest

from harness.runner.parallel import EXPECTED_S

INTEGRATION_S = 15.0
# Compose cells run slower than local ones (container starts, exec round trips): measured
# 346 s vs 310 s for 0.9.6's suite in one CI run; the engine's up/down also wait in line.
COMPOSE_FACTOR = 1.3


def _scope(item: pytest.Item) -> str:
    """The unit --dist loadscope keeps together: the class if there is one, else the module."""
    return item.nodeid.rsplit("::", 1)[0] if item.cls is not None else item.nodeid.split("::", 1)[0]


def _cost(item: pytest.Item) -> float:
    if item.get_closest_marker("integration") is None:
        return 0.0
    callspec = getattr(item, "callspec", None)
    gate = callspec.params.get("gate_id") if callspec is not None else None
    # A module may state its tests' measured cost (EXPECTED_COST_S), e.g. a gate run at scale.
    flat = float(getattr(item.module, "EXPECTED_COST_S", INTEGRATION_S))
    seconds = float(EXPECTED_S.get(gate, flat)) if gate else flat
    return seconds * (COMPOSE_FACTOR if item.get_closest_marker("compose") else 1.0)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    cost: dict[str, float] = {}
    for item in items:
        cost[_scope(item)] = cost.get(_scope(item), 0.0) + _cost(item)
    first_seen = {scope: index for index, scope in enumerate(dict.fromkeys(_scope(item) for item in items))}
    # Stable within a scope; scopes by cost, ties in collection order. Every worker collects
    # the same items and sorts them the same way, as xdist requires.
    items.sort(key=lambda item: (-cost[_scope(item)], first_seen[_scope(item)]))
