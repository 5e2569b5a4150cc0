"""The fault listeners, run as the real processes the stacks use."""

import socket
import time

import pytest

from harness.services.listeners import ListenerService


@pytest.fixture
def listener(tmp_path):
    started = []

    def make(mode, *extra):
        svc = ListenerService(mode, tmp_path, 0, mode=mode, extra_args=tuple(extra))
        svc.start()
        started.append(svc)
        return svc
    yield make
    for svc in started:
        svc.stop()


def test_blackhole_accepts_and_never_answers(listener):
    hole = listener("blackhole")
    with socket.create_connection(("127.0.0.1", hole.port), timeout=5) as sock:
        sock.sendall(b"0032git-upload-pack /dead.git\0host=127.0.0.1\0")
        sock.settimeout(1.5)
        with pytest.raises(socket.timeout):
            sock.recv(1)  # neither data nor EOF: the connection just hangs
    assert hole.accepted_connections() == 1


def test_slowfail_closes_after_its_delay_without_answering(listener):
    slow = listener("slowfail", "--close-after", "0.5")
    with socket.create_connection(("127.0.0.1", slow.port), timeout=5) as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""  # EOF, no data
        assert time.monotonic() - started >= 0.4


def test_latency_proxy_forwards_bytes_and_delays_each_chunk(listener, tmp_path):
    echo = socket.socket()
    echo.bind(("127.0.0.1", 0))
    echo.listen()
    proxy = listener("latency", "--upstream", str(echo.getsockname()[1]), "--delay-ms", "200")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client:
        upstream, _ = echo.accept()
        started = time.monotonic()
        client.sendall(b"ping")
        assert upstream.recv(4) == b"ping"
        upstream.sendall(b"pong")
        assert client.recv(4) == b"pong"
        # Two hops through the proxy, each held at least the configured delay.
        assert time.monotonic() - started >= 0.4
        upstream.close()
    echo.close()


def test_a_restarted_listener_keeps_its_port(listener):
    hole = listener("blackhole")
    port = hole.port
    hole.stop()
    hole.start()
    assert hole.port == port


def test_blackhole_logs_each_connections_repo_and_its_close(listener):
    from harness.gates.proof import listener_connections
    from harness.waiting import wait_for
    hole = listener("blackhole")
    with socket.create_connection(("127.0.0.1", hole.port), timeout=5) as sock:
        sock.sendall(b"0032git-upload-pack /dead-0007.git\0host=127.0.0.1\0")
        first = wait_for(lambda: [c for c in listener_connections(hole) if c.repo], 5, "repo logged")[0]
        assert first.repo == "/dead-0007.git" and first.closed_at is None and first.accepted_at
    closed = wait_for(lambda: [c for c in listener_connections(hole) if c.closed_at], 5, "close logged")[0]
    assert closed.closed_at >= closed.accepted_at
