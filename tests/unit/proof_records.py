"""Hand-made fault-listener records for checker tests: what `harness.gates.proof.record_connections`
saves on a timeline."""

from __future__ import annotations

from typing import Any


def conns(repos: list[str], accepted_t: float = 1.0, closed_t: float | None = None,
          first: int = 1) -> list[dict[str, Any]]:
    """One connection per repo, accepted at `accepted_t` and closed at `closed_t` (None: held)."""
    return [{"n": first + i, "accepted_t": accepted_t, "closed_t": closed_t, "repo": f"/{repo}.git"}
            for i, repo in enumerate(repos)]
