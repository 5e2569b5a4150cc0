"""The git front (harness.gitfront) in front of real bare repos, driven by a real git client:
each failure mode as a client sees it, and its heal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from harness import seed
from harness.gitfront import parse_cgi, parse_mode, set_mode
from harness.waiting import wait_for

GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": "/nonexistent"}


@pytest.fixture
def front(tmp_path):
    repos = tmp_path / "repos"
    seed.seed(repos, 2, probes=0)
    port_file = tmp_path / "front.port"
    log = (tmp_path / "front.log").open("w")
    process = subprocess.Popen([sys.executable, "-u", "-m", "harness.gitfront", "--repos", str(repos),
                                "--port-file", str(port_file)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(port_file.exists, 10, "the git front's port file")
        yield f"http://127.0.0.1:{port_file.read_text()}", tmp_path / "front.log"
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def _clone(base, dest, timeout=30):
    return subprocess.run(["git", "clone", "-q", f"{base}/policy-0001.git", str(dest)], capture_output=True,
                          text=True, env=GIT_ENV, timeout=timeout, check=False)


def test_ok_serves_a_clone_and_counts_its_requests(front, tmp_path):
    base, log = front
    done = _clone(base, tmp_path / "c")
    assert done.returncode == 0, done.stderr
    assert "policy-0001" in (tmp_path / "c" / "policy.rego").read_text()
    assert log.read_text().count("accepted ") >= 2  # the ref advertisement and the pack


@pytest.mark.parametrize("mode,said", [("auth", "could not read Username"), ("error", "error: 500"),
                                       ("reset", "RPC failed")])
def test_each_fast_failure_fails_the_clone_and_ok_heals_it(front, tmp_path, mode, said):
    base, _ = front
    set_mode(base, mode)
    failed = _clone(base, tmp_path / "broken")
    assert failed.returncode != 0 and said in failed.stderr, failed.stderr
    set_mode(base, "ok")
    assert _clone(base, tmp_path / "healed").returncode == 0


def test_a_throttled_transfer_is_held_until_the_link_heals(front, tmp_path):
    base, _ = front
    set_mode(base, "throttle:1")  # one byte every 0.1 s: the pack would take minutes
    clone = subprocess.Popen(["git", "clone", "-q", f"{base}/policy-0001.git", str(tmp_path / "slow")],
                             env=GIT_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(2)
        assert clone.poll() is None  # still trickling
        set_mode(base, "ok")  # the rest of the answer goes at once
        assert clone.wait(30) == 0
    finally:
        if clone.poll() is None:
            clone.kill()


def test_a_hung_request_stays_held_after_the_heal_until_its_client_gives_up(front, tmp_path):
    base, log = front
    set_mode(base, "hang")
    # Its own process group: the request is made by git's git-remote-http child, which a kill
    # of `git clone` alone would leave holding the connection.
    clone = subprocess.Popen(["git", "clone", "-q", f"{base}/policy-0001.git", str(tmp_path / "hung")],
                             env=GIT_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        time.sleep(2)
        assert clone.poll() is None  # not an error: no answer at all
        set_mode(base, "ok")  # a healed partition does not rescue a request already stuck in it
        assert _clone(base, tmp_path / "healed").returncode == 0  # new requests are answered
        time.sleep(1)
        assert clone.poll() is None, "the held request was released at the heal"
        assert "still held after the front left hang mode" in log.read_text()
        assert "released after" not in log.read_text()
        os.killpg(clone.pid, signal.SIGKILL)  # the client gives up: its side closes, the front releases it
        clone.wait(10)
        wait_for(lambda: "the client closed its side" in log.read_text(), 10, "the front's release line")
        released = next(line for line in log.read_text().splitlines() if "released after" in line)
        assert "after the heal" in released, released
        assert "closed 1 at=" in log.read_text()  # the held request's close, in the listeners' format
    finally:
        if clone.poll() is None:
            os.killpg(clone.pid, signal.SIGKILL)
            clone.wait(10)


def test_modes_are_checked_with_a_message_naming_the_forms():
    assert parse_mode("throttle:2048") == ("throttle", 2048)
    assert parse_mode(" reset\n") == ("reset", 0)
    for bad in ("slow", "throttle", "throttle:0", "throttle:fast", "error:5"):
        with pytest.raises(ValueError, match="ok, auth, error, throttle"
                           if not bad.startswith("throttle:") else "bytes per second"):
            parse_mode(bad)


def test_a_refused_mode_is_refused_by_the_running_front_too(front):
    import urllib.error
    import urllib.request
    base, _ = front
    request = urllib.request.Request(f"{base}/_harness/mode", data=b"sideways", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 400


def test_cgi_answers_are_split_into_status_headers_and_body():
    status, headers, body = parse_cgi(b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope")
    assert (status, headers, body) == (404, [("Content-Type", "text/plain")], b"nope")
    assert parse_cgi(b"Content-Type: x\n\nbody")[0] == 200
    assert parse_cgi(b"no blank line")[0] == 500


# -- the disk-sync control's git commands against a hung front (CERBOS_STORE=disk-sync[-untimed])

def _held_requests(log):
    return log.read_text().count("accepted ")


def test_a_timed_sync_gives_up_on_a_hung_front_and_its_whole_command_lets_go(front, tmp_path):
    from harness.servers.cerbos.disk_sync import DiskSync
    base, log = front
    sync = DiskSync(f"{base}/policy-0001.git", tmp_path / "sync", branch="main", interval_s=0.2, git_timeout_s=1.0)
    try:
        sync.start()
        set_mode(base, "hang")
        wait_for(lambda: sync.state.errors >= 1, 10, "a sync that timed out")
        assert "no answer within 1 s" in sync.state.last_error
        # the process group was killed: git-remote-http too, so the held request is closed
        wait_for(lambda: "the client closed its side" in log.read_text(), 10, "the front's release line")
        set_mode(base, "ok")
        synced = sync.state.syncs
        wait_for(lambda: sync.state.syncs > synced, 10, "a sync after the heal")
    finally:
        set_mode(base, "ok")
        sync.stop()


def test_an_untimed_sync_stays_stuck_after_the_heal_until_stopped(front, tmp_path):
    from harness.servers.cerbos.disk_sync import DiskSync
    base, log = front
    sync = DiskSync(f"{base}/policy-0001.git", tmp_path / "sync", branch="main", interval_s=0.2, git_timeout_s=None)
    try:
        sync.start()
        before = _held_requests(log)
        set_mode(base, "hang")
        wait_for(lambda: _held_requests(log) > before, 10, "a fetch held by the hung front")
        set_mode(base, "ok")
        synced, errors = sync.state.syncs, sync.state.errors
        time.sleep(2)
        assert (sync.state.syncs, sync.state.errors) == (synced, errors)  # stuck: no sync, no error
        assert "released after" not in log.read_text()
        started = time.monotonic()
        sync.stop()  # kills the stuck command's process group
        assert time.monotonic() - started < 10
        wait_for(lambda: "the client closed its side" in log.read_text(), 10, "the front's release line")
    finally:
        set_mode(base, "ok")
        sync.stop()
