"""The proof that a paused Postgres is paused: it accepts TCP (its kernel does) but does not
answer the protocol's SSLRequest."""

import socket
import threading

from harness.services.postgres import SSL_REQUEST, answers


def _listener(reply: bytes | None) -> tuple[socket.socket, threading.Event]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    done = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            request = conn.recv(8)
            if reply is not None and request == SSL_REQUEST:
                conn.sendall(reply)
            done.wait(5)
    threading.Thread(target=serve, daemon=True).start()
    return server, done


def test_a_running_postgres_answers_the_ssl_request():
    server, done = _listener(b"N")
    try:
        assert answers(server.getsockname()[1], timeout=2)
    finally:
        done.set()
        server.close()


def test_a_server_that_accepts_but_never_answers_counts_as_paused():
    server, done = _listener(None)
    try:
        assert not answers(server.getsockname()[1], timeout=0.5)
    finally:
        done.set()
        server.close()


def test_a_closed_port_does_not_answer():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert not answers(port, timeout=0.5)
