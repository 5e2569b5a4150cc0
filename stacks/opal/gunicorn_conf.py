"""Gunicorn config for the OPAL server, as production images run it.

Shared by both backends (local processes and the compose server image). The one thing
that matters: `when_ready` runs the scope preload in the gunicorn master before any
worker forks, as OPAL's production images do. Neither `opal-server run` nor the wheel
does this, and the boot incidents (serial preload, a dead remote blocking boot) only
show with it.

Settings come from the environment so one file serves every instance:
  HARNESS_BIND              host:port to listen on (default 127.0.0.1:7002)
  HARNESS_WORKERS           number of uvicorn workers (default 1)
  HARNESS_GRACEFUL_TIMEOUT  seconds gunicorn waits for workers on stop (default 5)
"""

import logging
import os
import time

bind = os.environ.get("HARNESS_BIND", "127.0.0.1:7002")
workers = int(os.environ.get("HARNESS_WORKERS", "1"))
worker_class = "uvicorn.workers.UvicornWorker"
graceful_timeout = int(os.environ.get("HARNESS_GRACEFUL_TIMEOUT", "5"))
# OPAL's images default to 30 s as well; a jammed *executor* does not stop the
# worker's heartbeat, so this does not mask the offline-repo stall.
timeout = 30
keepalive = 5

log = logging.getLogger("gunicorn.error")


def when_ready(server):
    # No ImportError guard on purpose: a hook that swallows it would silently skip the
    # preload (e.g. when aiofiles is missing) and the boot gates would measure nothing.
    import opal_server.scopes.task

    started = time.monotonic()
    log.info("harness: scope preload starting")
    opal_server.scopes.task.ScopesPolicyWatcherTask.preload_scopes()
    log.info("harness: scope preload finished in %.2f s", time.monotonic() - started)
