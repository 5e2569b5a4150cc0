"""The moment Postgres is back for broker-bounce: it accepts a session (its first reply to a
startup message is an authentication request), not merely TCP or the SSLRequest."""

import socket
import threading

from harness.services.postgres import accepts_sessions


def _server(reply: bytes) -> tuple[socket.socket, list[bytes]]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            seen.append(conn.recv(1024))
            conn.sendall(reply)
    threading.Thread(target=serve, daemon=True).start()
    return server, seen


def test_an_authentication_request_means_sessions_are_accepted():
    server, seen = _server(b"R\0\0\0\x08\0\0\0\0")  # AuthenticationOk
    with server:
        assert accepts_sessions(server.getsockname()[1], user="opal", database="postgres")
    assert seen[0][4:8] == (196608).to_bytes(4, "big") and b"user\0opal\0database\0postgres\0\0" in seen[0]


def test_a_starting_up_postgres_is_not_back_yet():
    server, _ = _server(b"E\0\0\0\x40SFATAL\0C57P03\0Mthe database system is starting up\0\0")
    with server:
        assert not accepts_sessions(server.getsockname()[1])


def test_nothing_listening_is_not_back():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    assert not accepts_sessions(port, timeout=0.5)
