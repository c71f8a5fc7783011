"""The lateral fault's probe: from inside one workspace, try every path the network
boundary must close (docs/security.md "The network boundary"), under traffic.

The harness opens a bait: a TCP listener on all of the host's addresses, for the
fault's length. The target workspace's container then tries, as the agent's user,
in parallel, 2 s each:

- every other fleet workspace's container, by name and by each of its addresses,
  on the agent port;
- the bait at every host address it might route to: the gateway of each network
  it is on, `host.docker.internal`, and docker0's gateway;
- the bait through the controller's egress proxy (`CONNECT`): a host no fleet
  workspace's egress allows.

No agent port is published on the host any more, so "another workspace's published
port" has nothing to try; the host addresses cover what a published port would be
reached through. A success is a TCP connection made (or a CONNECT answered 200),
or any connection the bait accepted: the `isolation` invariant wants zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

AGENT_PORT = 8000
ATTEMPT_SECONDS = 2.0

SCRIPT = r"""
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
targets = json.loads(sys.argv[1])
def attempt(target):
    label, host, port, via = target
    try:
        if via is None:
            with socket.create_connection((host, port), timeout=float(sys.argv[2])):
                return "reached"
        proxy_host, proxy_port = via.rsplit(":", 1)
        with socket.create_connection((proxy_host, int(proxy_port)),
                                      timeout=float(sys.argv[2])) as s:
            s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n"
                      .encode())
            line = s.recv(200).split(b"\r\n")[0].decode(errors="replace")
        return "reached" if line.split(" ")[1:2] == ["200"] else "refused: " + line
    except OSError as exc:
        return "unreachable: " + type(exc).__name__
with ThreadPoolExecutor(16) as pool:
    print(json.dumps(list(pool.map(attempt, targets))))
"""


@dataclass(frozen=True)
class Target:
    label: str
    host: str
    port: int
    via: str | None = None
    """host:port of the egress proxy to CONNECT through (None: a direct connection)."""

    def as_json(self) -> list[object]:
        return [self.label, self.host, self.port, self.via]


def targets(neighbours: dict[str, tuple[str, list[str]]], host_addresses: list[str],
            bait_port: int, proxy: str | None, bait_host: str) -> list[Target]:
    """`neighbours`: workspace -> (container name, its addresses)."""
    made: list[Target] = []
    for workspace, (name, addresses) in sorted(neighbours.items()):
        made.append(Target(f"{workspace} by name", name, AGENT_PORT))
        made += [Target(f"{workspace} at {a}", a, AGENT_PORT) for a in addresses]
    made += [Target(f"the host at {a}", a, bait_port) for a in dict.fromkeys(host_addresses)]
    if proxy is not None:
        made.append(Target("the host through the egress proxy", bait_host, bait_port, proxy))
    return made


def breaches(tried: list[Target], outcomes: list[str]) -> list[str]:
    return [f"{t.label} ({t.host}:{t.port}{' via ' + t.via if t.via else ''}): reached"
            for t, outcome in zip(tried, outcomes, strict=False) if outcome == "reached"]


def parse(output: str, tried: list[Target]) -> list[str]:
    found = json.loads(output.strip().splitlines()[-1])
    if not isinstance(found, list) or len(found) != len(tried):
        raise ValueError(f"the probe answered {output[:200]!r}")
    return [str(o) for o in found]


class Bait:
    """A listener on every host address; counts what connects to it."""

    def __init__(self) -> None:
        self.accepted = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        writer.close()

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Bait]:
        self._server = await asyncio.start_server(self._accept, "0.0.0.0", 0)  # noqa: S104
        self.port = int(self._server.sockets[0].getsockname()[1])
        try:
            yield self
        finally:
            self._server.close()
            await self._server.wait_closed()
