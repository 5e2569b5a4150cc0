"""A smart-HTTP git front over the git host's bare repos whose failure mode the harness
switches while a gate runs: `python -m harness.gitfront --repos DIR --port-file F`.

Every git request runs the real `git http-backend` (CGI) over DIR; what reaches the
client depends on the mode in effect when the request arrives:

  ok            the backend's answer as it is
  auth          401 with a Basic challenge: credentials are suddenly required (nothing
                the server sends is accepted)
  error         HTTP 500 from the git endpoint
  throttle:N    the backend's answer at N bytes per second (a slow link)
  reset         a pack's headers and half its body, then a TCP reset (mid-pack; the ref
                advertisement before it is answered as it is)
  hang          the request is accepted and never answered, and stays held after the mode
                changes back: a partition that heals does not rescue a connection already
                stuck in it. A held request is released (closed without a byte) only when
                the client closes its side — its own operation timeout, or it was killed —
                or after HANG_MAX_S; each release is logged with its reason

The harness sets the mode with `POST /_harness/mode` (body: the mode) on the same port, so
one mechanism works for a local process and a container's published port. Every git
request is logged as "accepted N at=<unix time>" and "repo N /<repo>.git" on stdout, the
listeners' format (harness.tcplisteners.parse_connections): how the harness proves a fault
took effect, and on which scopes' repos. A held (hung) request also logs "closed N at=<unix
time>" when it is released, so the harness can tell how long each was held.
Standard library only: the tools image runs it. Binds 127.0.0.1 unless --bind.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from harness.tcplisteners import ACCEPTED_LINE, CLOSED_LINE, REPO_LINE

MODE_PATH = "/_harness/mode"
MODES = ("ok", "auth", "error", "throttle", "reset", "hang")
HANG_MAX_S = 600.0  # a hung request is released after this even if its client never gives up (bounded)
BACKEND_TIMEOUT_S = 60  # a git http-backend that runs longer is killed; the request gets a 500
CHUNK_S = 0.1  # a throttled answer is written in slices of rate × CHUNK_S bytes; a held request is checked as often


_SAY = threading.Lock()


def say(line: str) -> None:
    """One log line, written whole: handler threads log at the same moments (a request
    accepted as another is released), and print() writes the text and its newline apart, so
    two lines could share one and the harness's parser would miss a request."""
    with _SAY:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def parse_mode(text: str) -> tuple[str, int]:
    """(mode, bytes per second for throttle); ValueError naming the forms otherwise."""
    name, _, rate = text.strip().partition(":")
    if name not in MODES or (name == "throttle") != bool(rate):
        raise ValueError(f"mode {text!r}: one of ok, auth, error, throttle:<bytes per second>, reset, hang")
    if name == "throttle" and (not rate.isdigit() or int(rate) < 1):
        raise ValueError(f"mode {text!r}: the throttle rate is a whole number of bytes per second ≥ 1")
    return name, int(rate or 0)


def set_mode(base_url: str, mode: str, timeout: float = 5.0) -> None:
    """Switch a running front's mode (from the harness; raises on a refused mode)."""
    parse_mode(mode)
    request = urllib.request.Request(base_url.rstrip("/") + MODE_PATH, data=mode.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


class Front:
    """The mode and the request count, shared by the handler threads."""

    def __init__(self, repos: Path):
        self.repos = repos
        self.mode: tuple[str, int] = ("ok", 0)
        self.requests = 0
        self.lock = threading.Lock()

    def count(self) -> int:
        with self.lock:
            self.requests += 1
            say(f"{ACCEPTED_LINE}{self.requests} at={time.time():.3f}")
            return self.requests


def handler_for(front: Front) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
            say(f"{self.address_string()} {format % args} mode={front.mode[0]}")

        def do_GET(self) -> None:
            self._git()

        def do_POST(self) -> None:
            if self.path == MODE_PATH:
                self._set_mode()
            else:
                self._git()

        def _set_mode(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode(errors="replace")
            try:
                front.mode = parse_mode(body)
            except ValueError as exc:
                self._plain(400, str(exc))
                return
            self._plain(200, f"mode {body.strip()}\n")

        def _plain(self, status: int, text: str, extra: dict[str, str] | None = None) -> None:
            data = text.encode()
            self.send_response(status)
            for key, value in {"Content-Type": "text/plain", **(extra or {})}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _git(self) -> None:
            number = front.count()
            repo = self.path.partition("?")[0].partition(".git")[0]
            say(f"{REPO_LINE}{number} {repo}.git")  # which scope's repo the request was for
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            mode, rate = front.mode
            if mode == "hang":
                self._hang(number)
                return
            if mode == "auth":
                self._plain(401, "authentication required\n", {"WWW-Authenticate": 'Basic realm="harness"'})
                return
            if mode == "error":
                self._plain(500, "internal server error (harness gitfront)\n")
                return
            status, headers, payload = self._backend(body)
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            if mode == "reset" and self.path.partition("?")[0].endswith("/git-upload-pack"):
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                # SO_LINGER 0: close sends RST, not FIN — the client sees a reset mid-pack
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                return
            if mode == "throttle":
                self._trickle(payload, rate)
            else:
                self.wfile.write(payload)

        def _hang(self, number: int) -> None:
            """Hold the request unanswered until the client closes its side or HANG_MAX_S
            passes — whatever the mode does meanwhile (a heal does not rescue a request already
            stuck), then close it without a byte and log when and why."""
            started = time.monotonic()
            healed_at: float | None = None
            reason = f"held {HANG_MAX_S:g} s (HANG_MAX_S)"
            while time.monotonic() - started < HANG_MAX_S:
                if healed_at is None and front.mode[0] != "hang":
                    healed_at = time.monotonic() - started
                    say(f"hang {number} still held after the front left hang mode")
                if self._client_closed():
                    reason = "the client closed its side"
                    break
            held = time.monotonic() - started
            after_heal = "" if healed_at is None else f", {held - healed_at:.1f} s after the heal"
            say(f"hang {number} released after {held:.1f} s{after_heal}: {reason}")
            say(f"{CLOSED_LINE}{number} at={time.time():.3f}")
            self.close_connection = True

        def _client_closed(self) -> bool:
            """Wait up to CHUNK_S for the client's side: True once it closed (EOF or reset).
            Bytes it sends meanwhile are read and dropped (nothing is ever answered)."""
            try:
                readable, _, _ = select.select([self.connection], [], [], CHUNK_S)
                if not readable:
                    return False
                return self.connection.recv(4096) == b""
            except (ConnectionError, OSError):
                return True

        def _trickle(self, payload: bytes, rate: int) -> None:
            """Slice by slice while the link is throttled; once healed, the rest at once
            (a link that recovers speeds up the transfers on it too)."""
            step = max(1, int(rate * CHUNK_S))
            sent = 0
            while sent < len(payload) and front.mode[0] == "throttle":
                self.wfile.write(payload[sent:sent + step])
                self.wfile.flush()
                sent += step
                time.sleep(CHUNK_S)
            self.wfile.write(payload[sent:])

        def _backend(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
            path, _, query = self.path.partition("?")
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_PROJECT_ROOT": str(front.repos),
                   "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path, "QUERY_STRING": query,
                   "REQUEST_METHOD": self.command, "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                   "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": self.client_address[0],
                   "GIT_PROTOCOL": self.headers.get("Git-Protocol", "")}
            if self.headers.get("Content-Encoding"):
                env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
            try:
                done = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True,
                                      timeout=BACKEND_TIMEOUT_S, check=False)
            except subprocess.TimeoutExpired:
                return 500, [("Content-Type", "text/plain")], b"git http-backend timed out\n"
            return parse_cgi(done.stdout)

    return Handler


def parse_cgi(output: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) of a CGI answer: header lines, a blank line, the body."""
    head, sep, body = output.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = output.partition(b"\n\n")
    if not sep:
        return 500, [("Content-Type", "text/plain")], b"git http-backend gave no CGI answer\n"
    status, headers = 200, []
    for line in head.decode(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.lower() == "status":
            status = int(value.split()[0])
        elif key.lower() not in ("content-length", "connection"):
            headers.append((key.strip(), value.strip()))
    return status, headers, body


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.gitfront")
    parser.add_argument("--repos", required=True, help="the bare repos' directory (the git host's)")
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    args = parser.parse_args(argv)
    front = Front(Path(args.repos))
    server = ThreadingHTTPServer((args.bind, args.port), handler_for(front))
    server.daemon_threads = True
    port = server.server_address[1]
    tmp = Path(f"{args.port_file}.tmp")
    tmp.write_text(str(port))
    os.replace(tmp, args.port_file)
    say(f"gitfront listening on {args.bind}:{port} over {args.repos}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
