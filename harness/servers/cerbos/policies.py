"""The policy repo layout Cerbos reads, with a nonce in the served decision.

The main resource policy (`policies/harness_doc.yaml`) allows role `user` to `read` a
`harness_doc`, and its one rule outputs a string nonce (`output.when.ruleActivated`): a
decision names the content the server serves, where nothing else in Cerbos reliably says
which commit is loaded. Filler policies (distinct resource kinds) give a repo its size.
Standard library only: the tools image may write trees too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

SUB_DIR = "policies"
RESOURCE = "harness_doc"
ACTION = "read"
ROLE = "user"
MAIN_FILE = f"{RESOURCE}.yaml"
RULE_NAME = "harness-nonce"
_NONCE = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")


def nonce_policy(nonce: str) -> str:
    """The main policy; its rule's output is the nonce (a CEL string literal)."""
    _check_nonce(nonce)
    return _resource_policy(RESOURCE, output=json.dumps(nonce))


def filler_policy(index: int) -> str:
    return _resource_policy(filler_kind(index), output=None)


def filler_kind(index: int) -> str:
    return f"harness_filler_{index:05d}"


def bad_policy(name: str = "aaa.yaml") -> str:
    """A file Cerbos fails to parse: which file name it sorts under (`aaa.yaml` before the
    main policy, `zzz.yaml` after) decides whether a valid change beside it is applied."""
    return f"# {name}: deliberately broken by the harness\napiVersion: api.cerbos.dev/v1\nresourcePolicy: [unclosed\n"


def write_tree(directory: Path, nonce: str, extra_policies: int = 0) -> Path:
    """Write `<directory>/policies/` with the main policy and `extra_policies` fillers; returns
    the policies dir. The main policy is rewritten; fillers are left as they are."""
    policies = directory / SUB_DIR
    policies.mkdir(parents=True, exist_ok=True)
    (policies / MAIN_FILE).write_text(nonce_policy(nonce))
    for index in range(extra_policies):
        (policies / f"{filler_kind(index)}.yaml").write_text(filler_policy(index))
    return policies


def check_request(request_id: str = "harness") -> dict:
    """The body of `POST /api/check/resources` asking whether a `user` may `read` a harness_doc."""
    return {"requestId": request_id,
            "principal": {"id": "harness-user", "roles": [ROLE]},
            "resources": [{"resource": {"kind": RESOURCE, "id": "doc-1"}, "actions": [ACTION]}]}


def _resource_policy(kind: str, output: str | None) -> str:
    # YAML written by hand (no YAML library): the output expression is a JSON string literal,
    # which is also a valid CEL string and a valid YAML flow scalar once single-quoted.
    lines = ["apiVersion: api.cerbos.dev/v1",
             "resourcePolicy:",
             '  version: "default"',
             f"  resource: {kind}",
             "  rules:",
             f"    - name: {RULE_NAME}",
             f"      actions: [{ACTION}]",
             "      effect: EFFECT_ALLOW",
             f"      roles: [{ROLE}]"]
    if output is not None:
        lines += ["      output:", "        when:", f"          ruleActivated: '{output}'"]
    return "\n".join(lines) + "\n"


def _check_nonce(nonce: str) -> None:
    # Kept to characters that need no escaping in JSON, CEL or single-quoted YAML.
    if not _NONCE.match(nonce):
        raise ValueError(f"nonce {nonce!r}: letters, digits and . _ : - only (up to 200)")
