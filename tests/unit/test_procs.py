import sys
import time

import psutil

from harness import procs

# A parent that ignores SIGTERM and has a child that ignores it too: what a jammed
# 0.9.6 worker looks like to the harness.
STUBBORN = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen([sys.executable, "-c",
    "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
print("ready", flush=True)
time.sleep(600)
"""


def _start(tmp_path, code, name="stubborn"):
    return procs.start(name, [sys.executable, "-c", code], tmp_path, tmp_path / f"{name}.log")


def _wait_children(proc, count):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if len(psutil.Process(proc.pid).children()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError("child did not start")


def test_stop_kills_a_tree_that_ignores_sigterm_after_the_grace(tmp_path):
    proc = _start(tmp_path, STUBBORN)
    _wait_children(proc, 1)
    tree = procs.descendants_of(proc.pid)
    assert len(tree) == 2

    proc.stop(grace=0.5)

    assert not proc.alive()
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in tree)


def test_registry_records_pid_and_creation_time(tmp_path):
    proc = _start(tmp_path, "import time; time.sleep(600)", name="sleeper")
    [entry] = procs.registered(tmp_path)
    assert entry["name"] == "sleeper" and entry["pid"] == proc.pid
    assert procs.still_running(entry) is not None
    proc.stop(grace=2)
    assert procs.still_running(entry) is None


def test_a_recycled_pid_is_not_mistaken_for_ours(tmp_path):
    proc = _start(tmp_path, "import time; time.sleep(600)")
    entry = dict(procs.registered(tmp_path)[0], create_time=1.0)
    assert procs.still_running(entry) is None
    procs.stop_tree(proc.pid, grace=2)


def test_stop_registered_stops_what_a_crashed_run_left(tmp_path):
    proc = _start(tmp_path, STUBBORN)
    _wait_children(proc, 1)
    stopped = procs.stop_registered(tmp_path, grace=0.5)
    assert stopped == [f"stubborn (pid {proc.pid})"]
    proc.popen.wait(timeout=5)
    assert procs.descendants_of(proc.pid) == []
