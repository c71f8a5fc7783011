"""Can this host listen on an address, and if not, who holds it?

`wsctl doctor` and `wsctl run`'s start-up checks ask this before binding, so a
taken port is one line naming the process that holds it, not a bind traceback
half-way through start-up. The holder is found the way `ss -ltnp` finds it:
the listening socket's inode in /proc/net/tcp{,6}, then the process with that
socket open (visible for every process when we are root, else our own).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from dataclasses import dataclass
from pathlib import Path

_LISTEN = "0A"
_PROC = Path("/proc")


@dataclass(frozen=True)
class PortBusy:
    """Why `host:port` cannot be bound; `pid`/`command` name the holder when known."""

    reason: str
    pid: int | None = None
    command: str | None = None

    def holder(self) -> str:
        if self.pid is None:
            return "another process"
        return f"pid {self.pid} ({self.command or '?'})"


def check_bindable(host: str, port: int) -> PortBusy | None:
    """None when a listener could bind `host:port` now (as aiohttp would: with
    SO_REUSEADDR); else why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return PortBusy(f"{host} does not resolve ({exc.strerror})")
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                pid, command = listener_of(port)
                return PortBusy("in use", pid, command)
            if exc.errno == errno.EADDRNOTAVAIL:
                return PortBusy(f"{host} is not an address of this host")
            if exc.errno == errno.EACCES:
                return PortBusy(f"binding port {port} needs privileges")
            return PortBusy(exc.strerror or str(exc))
    return None


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in (_PROC / "net" / table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == _LISTEN \
                        and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


def listener_of(port: int) -> tuple[int | None, str | None]:
    """(pid, command) of a process listening on TCP `port`, or (None, None)."""
    targets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not targets:
        return None, None
    for proc in _PROC.iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in targets:
                    command = (proc / "comm").read_text().strip()
                    return int(proc.name), command
        except OSError:  # gone, or not ours to look at
            continue
    return None, None
