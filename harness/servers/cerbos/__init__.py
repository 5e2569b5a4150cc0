"""The Cerbos server adapter's low-level parts: everything the harness knows of Cerbos.

  install    the static binary from npm (@cerbos/cerbos-linux-x64), sha512-checked, cached per version
  config     the config file (loopback HTTP, unix-socket gRPC, telemetry off), --set overrides, knobs
  policies   the policy repo layout, with a nonce in the decision (which content is served)
  client     health, one decision, metrics over HTTP
  process    `cerbos server` as a local process (the local backend's service)
  stats      checkout, process and store figures read from outside
  disk_sync  the PASS control: the disk driver over a clone kept in step by a fetch/reset loop
"""

from harness.servers.cerbos.client import CerbosClient, Decision, parse_metrics
from harness.servers.cerbos.config import CerbosConfig, knobs, set_args
from harness.servers.cerbos.disk_sync import DiskSync, SyncState
from harness.servers.cerbos.install import DEFAULT_VERSION, PACKAGE, CerbosBinary, ensure_cerbos, npm_versions
from harness.servers.cerbos.policies import bad_policy, nonce_policy, write_tree
from harness.servers.cerbos.process import CerbosServerProcess
from harness.servers.cerbos.stats import checkout_stats, process_stats

__all__ = ["DEFAULT_VERSION", "PACKAGE", "CerbosBinary", "CerbosClient", "CerbosConfig", "CerbosServerProcess",
           "Decision", "DiskSync", "SyncState", "bad_policy", "checkout_stats", "ensure_cerbos", "knobs",
           "nonce_policy", "npm_versions", "parse_metrics", "process_stats", "set_args", "write_tree"]
