"""The exploration the `redis-outage` gate (harness/gates/redis_outage.py) came from: what a
server does when its scope store (Redis) stops for a few seconds, then returns with its data
(`keep`: SAVE before the stop, reloaded at start) or empty (`empty`: as after a restart without persistence); `none`
runs the same steps without the outage (the control).

    .venv/bin/python examples/redis_outage_probe.py 0.9.9 keep

Seen here on 0.9.6 and 0.9.9 (local backend), both modes: during the outage every request
is answered at once (GET policy and PUT /scopes 500, /healthcheck 200); after it the stored
scopes are served again (`keep`), 0.9.9 answers 404 for scopes the empty store lost where
0.9.6 answers 500; and a scope PUT after Redis is back is accepted (201) but never cloned or
served within 90 s — its log says "Scope <id> is live but its clone is unavailable". The
control (`none`) serves the same PUT in 0.04 s (0.9.6) and 1.0 s (0.9.9). Why the PUT after is
lost, and the server that passes, are in the gate's docstring.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import redis

from harness import config
from harness.gates.base import GateContext
from harness.seed import policy_repo_name
from harness.stack import make_stack
from harness.timeline import Timeline


def timed(call):
    started = time.monotonic()
    try:
        result = call()
    except Exception as exc:  # the server may drop a request mid-outage: that is an answer too
        result = type(exc).__name__
    return result, round(time.monotonic() - started, 2)


def main(version: str, mode: str) -> None:
    settings = config.from_env(version=version, backend="local")
    with make_stack(settings) as stack:
        stack.server.restart(fresh_state=True)
        stack.ensure_repos(62)  # the probe reads policy-0050..0061
        ctx = GateContext(stack, Timeline("redis-outage-probe"), None)
        client = ctx.client
        for i in range(3):
            client.put_scope(f"s{i}", stack.repo_url(policy_repo_name(50 + i)))
        print("not served before the outage:", ctx.all_served_within(["s0", "s1", "s2"], 60, "load"))
        store = stack.published("redis").url
        if mode == "keep":
            redis.Redis.from_url(store).save()
        if mode != "none":  # none: the control, the same steps without the outage
            stack.service("redis").stop()
        for _ in range(3):
            print("during: GET s0", timed(lambda: client.get_policy("s0", timeout=8).status),
                  "healthy", timed(lambda: client.healthy(timeout=8)))
            time.sleep(1)
        print("during: PUT", timed(lambda: client.put_scope("during", stack.repo_url(policy_repo_name(60)))))
        time.sleep(5)
        if mode != "none":
            stack.service("redis").start()
        print("keys after the store returned:", redis.Redis.from_url(store).dbsize())
        print("after: GET s0", timed(lambda: client.get_policy("s0", timeout=8).status),
              "GET during", timed(lambda: client.get_policy("during", timeout=8).status))
        print("after: PUT", timed(lambda: client.put_scope("after", stack.repo_url(policy_repo_name(61)))))
        print("after: the new scope served in", ctx.served_within("after", 90, "after the outage"), "s")
        log = Path.cwd() / f"redis-outage-probe-{version}-{mode}.log"
        log.write_text(stack.server.log().read_text(errors="replace"))
        print("server log:", log)
        stack.server.stop()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "0.9.9", sys.argv[2] if len(sys.argv) > 2 else "keep")
