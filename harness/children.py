"""`harness gates` runs as child processes side by side (`harness compare`, `harness gates
--jobs`): each on its own stack, its lines prefixed with its label, Ctrl-C passed on so each
tears its own stack down."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence

from harness.config import Target

log = logging.getLogger(__name__)

STOP_GRACE_S = 120  # a child tearing its stack down after SIGTERM


def target_flags(target: Target) -> list[str]:
    """The `harness gates` flags that select `target`."""
    if target.source is not None:
        return ["--opal-source", str(target.source)]
    if target.image is not None:
        return ["--opal-image", target.image]
    # each server's release flag is --<server>-version (--opal-version, --cerbos-version)
    return ["--server", target.server, f"--{target.server}-version", target.version]


def _pump(label: str, stream) -> None:
    for line in stream:
        print(f"[{label}] {line}", end="", flush=True)


def run_children(argvs: Mapping[str, Sequence[str]], drop_env: Sequence[str] = ()) -> dict[str, int]:
    """Run `python -m harness <argv>` for every label at once, without the variables in
    `drop_env`; exit status by label."""
    env = {k: v for k, v in os.environ.items() if k not in drop_env}
    procs, pumps = {}, []
    for label, argv in argvs.items():
        log.info(f"[harness] {label}: harness {' '.join(argv)}")
        proc = subprocess.Popen([sys.executable, "-m", "harness", *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env)
        procs[label] = proc
        pump = threading.Thread(target=_pump, args=(label, proc.stdout), daemon=True)
        pump.start()
        pumps.append(pump)
    try:
        codes = {label: proc.wait() for label, proc in procs.items()}
    except KeyboardInterrupt:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(timeout=STOP_GRACE_S)
        raise
    for pump in pumps:
        pump.join(timeout=10)
    return codes
