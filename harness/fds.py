"""What a process's file descriptors are: counted by kind, with examples, and its TCP
sockets by peer — so a gate can say *which* fds a server kept, not just how many.

Read from /proc/<pid>/fd and /proc/<pid>/net/tcp{,6}: the latter is the process's own
network namespace, so a container's worker (a host PID on the compose backend) reads the
same way as a local one.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

EXAMPLES_PER_KIND = 3
# /proc/net/tcp state codes (include/net/tcp_states.h)
TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
              "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN",
              "0B": "CLOSING"}


def fd_kind(target: str) -> str:
    """file | socket | pipe | anon_inode:<what> | dev | other, from a readlink target."""
    if target.startswith("socket:"):
        return "socket"
    if target.startswith("pipe:"):
        return "pipe"
    if target.startswith("anon_inode:"):
        return "anon_inode:" + target.removeprefix("anon_inode:").strip("[]")
    if target.startswith("/dev/"):
        return "dev"
    if target.startswith("/"):
        return "file"
    return "other"


@dataclass(frozen=True)
class FdCensus:
    by_kind: dict[str, int]
    examples: dict[str, list[str]] = field(default_factory=dict)
    sockets_by_peer: dict[str, int] = field(default_factory=dict)  # "127.0.0.1:6379 ESTABLISHED" -> n
    pipes_by_peer: dict[str, int] = field(default_factory=dict)  # "git fetch (pid 123)" / "none (own pipe)" -> n

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())


def fd_targets(pid: int) -> list[str]:
    """readlink of every fd of the process (fds closed meanwhile are skipped)."""
    fd_dir = f"/proc/{pid}/fd"
    targets = []
    for fd in os.listdir(fd_dir):
        try:
            targets.append(os.readlink(f"{fd_dir}/{fd}"))
        except OSError:
            continue  # closed meanwhile
    return targets


def _hex_address(text: str) -> str:
    """'0100007F:18EB' -> '127.0.0.1:6379' (IPv4) or '[v6]:port'."""
    host, port = text.split(":")
    if len(host) == 8:
        octets = [str(int(host[i:i + 2], 16)) for i in range(0, 8, 2)][::-1]
        return f"{'.'.join(octets)}:{int(port, 16)}"
    return f"[{host}]:{int(port, 16)}"


def tcp_sockets(pid: int) -> dict[str, str]:
    """inode -> "peer STATE" for the TCP sockets in the process's network namespace."""
    sockets: dict[str, str] = {}
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}", encoding="ascii") as lines:
                next(lines, None)  # header
                for line in lines:
                    fields = line.split()
                    if len(fields) < 10:
                        continue
                    state = TCP_STATES.get(fields[3], fields[3])
                    peer = "listening" if state == "LISTEN" else _hex_address(fields[2])
                    sockets[fields[9]] = f"{peer} {state}"
        except OSError:
            continue
    return sockets


def _process_name(pid: int) -> str:
    """The program's name, and a git child's subcommand ("git cat-file"): a fetch that is
    still running and a batch process a repository object keeps until it is collected are
    different findings."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            argv = [arg.decode(errors="replace") for arg in cmdline.read().split(b"\0")]
    except OSError:
        return "?"
    name = os.path.basename(argv[0]) or "?"
    subcommand = _git_subcommand(argv[1:]) if name == "git" else None
    return f"{name} {subcommand}" if subcommand else name


def _git_subcommand(args: list[str]) -> str | None:
    """The first argument that is neither an option nor the value of `-c`/`-C`."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("-c", "-C"):
            skip = True
        elif arg and not arg.startswith("-"):
            return arg
    return None


def pipe_peers(pid: int, inodes: list[str]) -> dict[str, int]:
    """For each of the process's pipes, which other process holds its other end (e.g. a
    git child still running), or "none (own pipe)" — scans /proc/*/fd once."""
    wanted = set(inodes)
    holders: dict[str, set[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == pid:
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{entry}/fd/{fd}")
            except OSError:
                continue
            inode = target.removeprefix("pipe:[").rstrip("]")
            if target.startswith("pipe:") and inode in wanted:
                holders.setdefault(inode, set()).add(int(entry))
    peers: Counter[str] = Counter()
    for inode in inodes:
        others = sorted(holders.get(inode, ()))
        peers[", ".join(f"{_process_name(p)} (pid {p})" for p in others[:2]) or "none (own pipe)"] += 1
    return dict(peers)


def fd_census(pid: int) -> FdCensus | None:
    """The process's fds by kind with a few example targets each, and its TCP sockets by
    peer and state; None when the process is gone or unreadable."""
    try:
        targets = fd_targets(pid)
    except OSError:
        return None
    kinds: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    socket_inodes, pipe_inodes = [], []
    for target in targets:
        kind = fd_kind(target)
        kinds[kind] += 1
        if len(examples.setdefault(kind, [])) < EXAMPLES_PER_KIND:
            examples[kind].append(target)
        if kind == "socket":
            socket_inodes.append(target.removeprefix("socket:[").rstrip("]"))
        elif kind == "pipe":
            pipe_inodes.append(target.removeprefix("pipe:[").rstrip("]"))
    tcp = tcp_sockets(pid)
    peers = Counter(tcp.get(inode, "not tcp (unix or udp)") for inode in socket_inodes)
    return FdCensus(dict(kinds), examples, dict(peers), pipe_peers(pid, pipe_inodes))
