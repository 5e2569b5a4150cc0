"""What OPAL's probe does on either backend: its scope API, its Redis scope store, its
broadcaster, and the snippets run with its own Python (version, settings, clone timer).
The local and compose probes (harness.servers.opal.local, harness.servers.opal.compose)
add the backend's verbs: PIDs, settings, clone dirs, restart, its Python."""

from __future__ import annotations

import json
from collections.abc import Mapping

from harness import redisdb
from harness.errors import HarnessError
from harness.servers.base import ServerKnobs
from harness.servers.opal.client import OpalClient
from harness.servers.opal.recipe import (
    BROADCASTER_DISCONNECT,
    CLONE_TIMER,
    KNOB_NAMES,
    KNOB_READER,
    VERSION_READER,
    knobs_from_config,
    stored_scopes,
)
from harness.stack.base import ServerProbe


class OpalProbe(ServerProbe):
    """The backend-independent half of OPAL's probe."""

    @property
    def client(self) -> OpalClient:
        # every PUT made through it is recorded: what each scope must serve (harness.heads)
        return OpalClient(self.stack.published("server").url, on_put=self.stack.book.given)

    def stage_scopes(self, scopes: Mapping[str, str]) -> None:
        """Store scopes (id -> repo URL) directly in Redis, where OPAL keeps them."""
        for scope_id, url in scopes.items():
            self.stack.book.given(scope_id, url)
        redisdb.set_many(self.stack.published("redis").url, stored_scopes(scopes))

    def stored_scope_ids(self, scope_ids: list[str]) -> list[str] | None:
        keys = stored_scopes(dict.fromkeys(scope_ids, ""))
        present = redisdb.present(self.stack.published("redis").url, list(keys))
        if present is None:
            return None
        return [scope for scope, key in zip(scope_ids, keys, strict=True) if key in present]

    def flush_store(self) -> None:
        redisdb.flush_all(self.stack.published("redis").url)

    def clone_seconds(self, url: str) -> float:
        return float(self.python(CLONE_TIMER, [url]).strip())

    def disconnect_broadcaster(self) -> int:
        """Postgres terminates the server's connections to it (its LISTEN connections too);
        how many it terminated."""
        return int(self.python(BROADCASTER_DISCONNECT, [], timeout=60).strip())

    def installed_version(self) -> str:
        return self.python(VERSION_READER, [], timeout=120).strip()

    def knobs(self) -> ServerKnobs:
        """From OPAL's config object with the settings the server runs with."""
        try:
            return knobs_from_config(json.loads(self.python(KNOB_READER, list(KNOB_NAMES), timeout=120)))
        except (ValueError, HarnessError) as exc:
            raise HarnessError(f"could not read the server's settings from opal_server.config: {exc}") from None
