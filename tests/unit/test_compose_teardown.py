"""Removing a run's network when the engine still reports an endpoint of a removed container."""

from __future__ import annotations

import pytest
from docker.errors import APIError

from harness.errors import HarnessError
from harness.stack.compose import remove_network


class _Network:
    """A network the engine refuses to remove `refusals` times ("has active endpoints")."""

    name = "ph1_default"

    def __init__(self, refusals: int, endpoints: dict[str, dict] | None = None):
        self.refusals = refusals
        self.attrs = {"Containers": endpoints or {}}
        self.disconnected: list[str] = []
        self.removed = False

    def remove(self) -> None:
        if self.refusals:
            self.refusals -= 1
            raise APIError("403 Client Error", explanation=f"error while removing network: network {self.name} "
                                                            "id 5c33 has active endpoints")
        self.removed = True

    def reload(self) -> None:
        pass

    def disconnect(self, container_id: str, force: bool = False) -> None:
        assert force
        self.disconnected.append(container_id)


def test_a_network_with_a_lagging_endpoint_is_removed_once_the_endpoint_is_freed():
    network = _Network(refusals=2, endpoints={"abc123": {}})
    remove_network(network, budget_s=5)
    assert network.removed and network.disconnected == ["abc123", "abc123"]


def test_a_network_that_keeps_its_endpoints_is_named_when_the_budget_is_spent():
    network = _Network(refusals=1000)
    with pytest.raises(HarnessError, match="removing network ph1_default .*not within 1 s"):
        remove_network(network, budget_s=1)


def test_any_other_refusal_is_raised_at_once():
    class Refusing(_Network):
        def remove(self) -> None:
            raise APIError("500 Server Error", explanation="something else")
    with pytest.raises(APIError, match="something else"):
        remove_network(Refusing(refusals=0), budget_s=5)
