"""OPAL's SourceControl on the local stack, against the real releases: a source attached as
one scope is served by its commit; a push is followed through the refresh call; a commit
with an unparsable rego file is served as it is, the file in the bundle (what the bad-policy
gate's `commit` reading of a nonce rests on)."""

from __future__ import annotations

import pytest
import requests

from harness.errors import ConfigError
from harness.waiting import poll_until

pytestmark = pytest.mark.integration


def _served(probe, nonce: str, budget: float = 20.0) -> bool:
    return poll_until(lambda: probe.served(timeout=5.0).nonce == nonce, budget, interval=0.2) is not None


def _bundle_files(stack) -> list[str]:
    response = requests.get(f"{stack.client.base_url}/scopes/source/policy", timeout=10,
                            headers={"Connection": "close"})
    response.raise_for_status()
    bundle = response.json()
    return sorted(m["path"] for m in bundle.get("policy_modules") or [])


@pytest.mark.parametrize("version", ["0.9.6", "0.9.9"])
def test_a_source_is_served_by_commit_and_a_bad_file_is_served_as_it_is(stack_factory, version):
    stack = stack_factory(version=version, seed_repos=1)
    probe = stack.server
    source = probe.new_source("src-check")
    assert source.nonce == source.head()
    probe.attach(source)
    assert _served(probe, source.nonce), f"the attached source was not served: {probe.served()}"

    bad, content = source.bad_file("aaa")
    sha = source.commit_files({bad: content}, "harness: bad file")
    assert sha == source.head() == source.nonce
    assert _served(probe, sha), f"the pushed commit was not served after the refresh: {probe.served()}"
    assert "aaa.rego" in _bundle_files(stack)
    assert all(r["status"] == 200 for r in probe.source_state.refreshes)

    fixed = source.commit_files({bad: None}, "harness: bad file removed", new_nonce=False)
    assert fixed != sha
    assert _served(probe, fixed)
    assert "aaa.rego" not in _bundle_files(stack)

    assert probe.checkout() == {}
    with pytest.raises(ConfigError, match="no single checkout"):
        probe.tamper("mode")
