"""A replay's policy sources, through the server seam only: one source a server attaches
(Capability.SOURCE_CONTROL, any server) or many scopes, each on a repo of its own
(MANY_SOURCES + RUNTIME_SOURCES). Each source is a PolicySource the harness commits to; what
a source serves is judged by its nonce (the source's own content, never any 200)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import requests

from harness.errors import ConfigError, HarnessError
from harness.servers.base import Capability, PolicySource, SourceControl
from harness.waiting import poll_until

log = logging.getLogger(__name__)

SCOPE_PREFIX = "replay-"
READERS = 16  # answers read at once
ANSWER_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Answer:
    """What a source served at one read: its nonce (None: not a 200), whether it failed, how long it took."""

    nonce: str | None
    failed: bool
    seconds: float | None = None


def needs(count: int, repoints: bool = False) -> frozenset[Capability]:
    """What a server must have for `count` sources; `repoints`: a schedule that deletes, puts
    or black-holes sources, which only a server with runtime sources can take."""
    wanted = {Capability.SOURCE_CONTROL}
    if count > 1:
        wanted |= {Capability.MANY_SOURCES, Capability.RUNTIME_SOURCES}
    if repoints:
        wanted.add(Capability.RUNTIME_SOURCES)
    return frozenset(wanted)


class ReplaySources:
    """The sources of one replay: made, attached, changed and read the same way on every
    server; subclasses differ in how the server is told of them."""

    def __init__(self, control: SourceControl, count: int, policies: int):
        self.control = control
        self.sources: list[PolicySource] = [control.new_source(f"{SCOPE_PREFIX}{i:03d}", policies)
                                            for i in range(count)]
        self.pushed: list[str] = [s.nonce for s in self.sources]  # the nonce each source's remote has
        self.detached: set[int] = set()  # deleted scopes: nothing they serve is judged
        self.tell_after_push = False  # whether a push is followed by the server's refresh call

    def attach_all(self) -> None:
        raise NotImplementedError

    def served(self, index: int) -> Answer:
        """What source `index` serves now."""
        raise NotImplementedError

    def refresh(self, index: int) -> None:
        raise NotImplementedError

    def repoint(self, index: int, via: str) -> None:
        raise ConfigError(f"a blackholed remote (repointing a source) needs {Capability.RUNTIME_SOURCES.value}")

    def put(self, index: int) -> None:
        raise ConfigError(f"scope churn (put, delete) needs {Capability.RUNTIME_SOURCES.value}")

    def delete(self, index: int) -> None:
        self.put(index)

    def commit(self, indexes: list[int], force: bool = False) -> list[str]:
        """A commit (or a force-push) on each source, pushed; then, on a server told of pushes,
        the refresh calls side by side (a server that hangs them costs one timeout, not one
        per source). The new nonces."""
        for index in indexes:
            source = self.sources[index]
            self.pushed[index] = source.force_push() if force else source.commit()
        if self.tell_after_push:
            self.side_by_side(self.refresh, indexes)
        return [self.pushed[i] for i in indexes]

    def read_all(self) -> dict[int, Answer]:
        """What every attached source serves, read side by side (at most READERS at once):
        a server that hangs its answers costs one answer timeout a round, not one per source."""
        indexes = [i for i in range(len(self.sources)) if i not in self.detached]
        with ThreadPoolExecutor(max_workers=max(1, min(READERS, len(indexes)))) as pool:
            return dict(zip(indexes, pool.map(self._served_or_failed, indexes), strict=True))

    def _served_or_failed(self, index: int) -> Answer:
        try:
            return self.served(index)
        except requests.RequestException:
            return Answer(None, True)

    def side_by_side(self, call: Callable[[int], Any], indexes: list[int]) -> None:
        """`call` on every index at once (at most READERS): a server that holds its answers
        costs one timeout, not one per source."""
        with ThreadPoolExecutor(max_workers=max(1, min(READERS, len(indexes)))) as pool:
            list(pool.map(call, indexes))

    def late(self) -> list[int]:
        """The attached sources not serving their remote's nonce now."""
        return [i for i, answer in self.read_all().items() if answer.nonce != self.pushed[i]]

    def wait_served(self, budget_s: float) -> list[int]:
        """Every attached source serving its remote's nonce within the budget; the late ones."""
        poll_until(lambda: not self.late(), budget_s, interval=0.5)
        return self.late()


class AttachedSource(ReplaySources):
    """One source, attached the server's own way (SourceControl.attach: a server that only
    fetches when told is told of each push by the adapter, as its git host's webhook would)."""

    def attach_all(self) -> None:
        # fresh: a server that keeps its checkout across restarts ignores a new URL (Cerbos)
        self.control.attach(self.sources[0], fresh=True)

    def served(self, index: int) -> Answer:
        answer = self.control.served(timeout=ANSWER_TIMEOUT_S)
        return Answer(answer.nonce, answer.status != 200, answer.seconds)

    def refresh(self, index: int) -> None:
        self.control.nudge()


class Scopes(ReplaySources):
    """Many sources, each a scope on its own repo, through the server's scope API (a server
    that only fetches when told gets the refresh call after each push, as a webhook)."""

    def __init__(self, control: SourceControl, client: Any, count: int, policies: int,
                 capabilities: frozenset[Capability], slow_url: Callable[[str], str]):
        super().__init__(control, count, policies)
        self.client, self.slow_url = client, slow_url
        self.tell_after_push = Capability.REFRESH_CALL in capabilities and Capability.POLLING not in capabilities

    def scope(self, index: int) -> str:
        return self.sources[index].name

    def attach_all(self) -> None:
        for index in range(len(self.sources)):
            self.put(index)

    def served(self, index: int) -> Answer:
        result = self.client.get_policy(self.scope(index), timeout=ANSWER_TIMEOUT_S)
        return Answer(result.hash if result.status == 200 else None, result.status != 200, result.seconds)

    def refresh(self, index: int) -> None:
        try:
            self.client.refresh(self.scope(index))
        except requests.RequestException:
            pass  # the server's answer to a fault is what the replay watches, not this call

    def repoint(self, index: int, via: str) -> None:
        self._put(index, via)

    def put(self, index: int) -> None:
        """Attach the scope (again). A deleted scope comes back on a new commit: the server
        keeps a clone per repo URL, so the old content could be served without any sync."""
        if index in self.detached:
            self.pushed[index] = self.sources[index].commit()
            self.detached.discard(index)
        self._put(index, "front")

    def delete(self, index: int) -> None:
        self.detached.add(index)
        try:
            self.client.delete_scope(self.scope(index))
        except requests.RequestException as exc:
            log.warning(f"[replay] DELETE of scope {self.scope(index)} failed: {exc}")

    def _put(self, index: int, via: str) -> None:
        """`via`: front, dead (the blackhole) or slow (the latency proxy)."""
        source = self.sources[index]
        url = self.slow_url(source.name) if via == "slow" else source.url(via)
        try:
            status = self.client.put_scope(self.scope(index), url)
        except requests.RequestException as exc:
            log.warning(f"[replay] PUT of scope {self.scope(index)} ({url}) failed: {exc}")
            return
        if status not in (200, 201):
            log.warning(f"[replay] PUT of scope {self.scope(index)} ({url}) answered {status}")


def open_sources(stack: Any, count: int, policies: int, capabilities: frozenset[Capability],
                 budget_s: float) -> ReplaySources:
    """The replay's sources made, attached and served (HarnessError naming the late ones).
    One source on a server without runtime sources is attached its own way; otherwise each
    source is a scope."""
    control = cast(SourceControl, stack.server)
    sources: ReplaySources
    if count == 1 and Capability.RUNTIME_SOURCES not in capabilities:
        sources = AttachedSource(control, count, policies)
    else:
        sources = Scopes(control, stack.server.client.fresh(ANSWER_TIMEOUT_S), count, policies, capabilities,
                         slow_url=lambda name: stack.repo_url(name, via_latency=True))
    started = time.monotonic()
    sources.attach_all()
    late = sources.wait_served(budget_s)
    if late:
        raise HarnessError(f"{len(late)} of {count} sources were not served within {budget_s:g} s of being "
                           f"attached (first: source {late[0]}); the replay needs them served before it starts")
    log.info(f"[replay] {count} source(s) attached and served in {time.monotonic() - started:.1f} s")
    return sources
