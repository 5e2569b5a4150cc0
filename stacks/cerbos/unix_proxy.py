"""The Cerbos server's HTTP socket as a TCP port: the only way in from this machine.

Runs in the tools image (standard library only) beside the server container, on the stack's
ordinary network, its port published on 127.0.0.1; the server's container is on an
internal-only network and listens on unix sockets only (a shared volume holds them). A
connection made while the server is down (no socket, or nobody on it) is closed at once:
the harness sees no answer, as it would from a stopped local process.

  python3 -u unix_proxy.py --port 3592 --socket /run/cerbos/http.sock
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import threading


def pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def serve(client: socket.socket, path: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    upstream.settimeout(5)
    try:
        upstream.connect(path)
    except OSError:
        upstream.close()
        client.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    back.start()
    pump(client, upstream)
    back.join()
    upstream.close()
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--socket", required=True)
    args = parser.parse_args()
    listener = socket.create_server(("0.0.0.0", args.port), backlog=128, reuse_port=False)
    print(f"proxying 0.0.0.0:{args.port} (published on 127.0.0.1 only) to unix:{args.socket}", flush=True)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=serve, args=(client, args.socket), daemon=True).start()


if __name__ == "__main__":
    main()
