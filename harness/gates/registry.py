"""The gates by stable id, in the order a full run executes them."""

from __future__ import annotations

from harness.gates.bad_policy import BadPolicyGate
from harness.gates.base import Gate
from harness.gates.boot_dead_remote import BootDeadRemoteGate
from harness.gates.boot_dead_scope import BootDeadScopeGate
from harness.gates.boot_size import BootSizeGate
from harness.gates.boot_timing import BootTimingGate
from harness.gates.broker_bounce import BrokerBounceGate
from harness.gates.checkout_tampered import CheckoutTamperedGate
from harness.gates.leak import LeakGate
from harness.gates.offline_remote import OfflineRemoteGate
from harness.gates.offline_repo import OfflineRepoGate
from harness.gates.orphan_clones import OrphanClonesGate
from harness.gates.redis_outage import RedisOutageGate
from harness.gates.remote_failures import RemoteFailuresGate
from harness.gates.remote_transitions import RemoteTransitionsGate
from harness.gates.repeat_sync import RepeatSyncGate
from harness.gates.source_remote_failures import SourceRemoteFailuresGate
from harness.gates.source_repeat_sync import SourceRepeatSyncGate
from harness.gates.zombie_cap import ZombieCapGate

GATES: dict[str, Gate] = {gate.id: gate for gate in (
    LeakGate(), RepeatSyncGate(), OfflineRepoGate(), ZombieCapGate(),
    BootTimingGate(), BootDeadScopeGate(), BrokerBounceGate(), OrphanClonesGate(), RemoteTransitionsGate(),
    RemoteFailuresGate(), RedisOutageGate(),
    # source gates (Capability.SOURCE_CONTROL): any server whose adapter attaches one source
    BadPolicyGate(), CheckoutTamperedGate(), BootDeadRemoteGate(), OfflineRemoteGate(), BootSizeGate(),
    SourceRepeatSyncGate(), SourceRemoteFailuresGate(),
)}


def marker(gate_id: str) -> str:
    """The pytest marker of a gate, derived from its id: `repeat-sync` -> `repeat_sync`."""
    return gate_id.replace("-", "_")


def markers() -> dict[str, str]:
    """marker -> its description, for the plugin to register (so a downstream
    `--strict-markers` run accepts them without copying pytest.ini)."""
    return {marker(g.id): f"gate `{g.id}`: {g.title}" for g in GATES.values()}
