"""The Cerbos HTTP API as the harness reads it: health, one decision (its nonce), metrics."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import requests

from harness.servers.base import Served
from harness.servers.cerbos.policies import ACTION, check_request

HEALTH_PATH = "/_cerbos/health"
CHECK_PATH = "/api/check/resources"
METRICS_PATH = "/_cerbos/metrics"
ALLOW = "EFFECT_ALLOW"


@dataclass
class Decision:
    """One check of the harness's request. `nonce` is the output of the rule that decided
    (which content is served); None when no rule output came back or there was no answer."""

    status: int | None  # None: no answer within the timeout
    nonce: str | None
    allowed: bool
    seconds: float
    error: str = ""


class CerbosClient:
    """Health, decisions and metrics of one running server. Every call has a timeout."""

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        # One connection per request: a poll or a restart must never find a stale keep-alive
        # connection and turn into a spurious reset.
        self.session.headers["Connection"] = "close"

    def healthy(self, timeout: float = 2.0) -> bool:
        """`GET /_cerbos/health` answers {"status": "SERVING"} (Cerbos listens only once its
        store is loaded: healthy means serving policies)."""
        try:
            response = self.session.get(self.base_url + HEALTH_PATH, timeout=timeout)
            return response.status_code == 200 and response.json().get("status") == "SERVING"
        except (requests.RequestException, ValueError):
            return False

    def decide(self, timeout: float = 5.0) -> Decision:
        started = time.monotonic()
        try:
            response = self.session.post(self.base_url + CHECK_PATH, json=check_request(), timeout=timeout)
        except requests.RequestException as exc:
            return Decision(status=None, nonce=None, allowed=False, seconds=time.monotonic() - started,
                            error=type(exc).__name__)
        seconds = time.monotonic() - started
        if response.status_code != 200:
            return Decision(status=response.status_code, nonce=None, allowed=False, seconds=seconds,
                            error=response.text[:200])
        return parse_decision(response.json(), response.status_code, seconds)

    def served(self, timeout: float = 5.0) -> Served:
        """One decision and the health check, as the seam reads them (the decision's nonce)."""
        decision = self.decide(timeout=timeout)
        return Served(nonce=decision.nonce, status=decision.status, healthy=self.healthy(timeout=2.0),
                      seconds=decision.seconds, error=decision.error)

    def metrics(self, timeout: float = 5.0) -> dict[str, float]:
        response = self.session.get(self.base_url + METRICS_PATH, timeout=timeout)
        response.raise_for_status()
        return parse_metrics(response.text)


def parse_decision(body: dict, status: int, seconds: float) -> Decision:
    """From `{"results": [{"actions": {"read": "EFFECT_ALLOW"}, "outputs": [{"val": ...}]}]}`."""
    results = body.get("results") or [{}]
    first = results[0]
    allowed = (first.get("actions") or {}).get(ACTION) == ALLOW
    values = [o.get("val") for o in first.get("outputs") or [] if o.get("action", ACTION) == ACTION]
    nonce = next((v for v in values if isinstance(v, str)), None)
    return Decision(status=status, nonce=nonce, allowed=allowed, seconds=seconds)


# name{labels} value [timestamp]; labels kept verbatim in the key, e.g. 'x_total{kind="add"}'.
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{.*\})?)\s+(\S+)(?:\s+\S+)?$")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format: every sample as {name{labels}: value}; comments skipped."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        try:
            samples[match.group(1)] = float(match.group(2))  # float() reads NaN, +Inf, -Inf too
        except ValueError:
            continue
    return samples
