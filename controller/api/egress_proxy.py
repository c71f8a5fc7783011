"""The egress proxy: how an `allowlist` workspace reaches the hosts on its list.

A plain HTTP/1.1 forward proxy on the workspace network's gateway (beside the
registry port, the only other port the host fence opens). `CONNECT host:port` for
TLS (the name is checked, nothing is decrypted) and absolute-form requests
(`GET http://host/path`) for plain HTTP. The caller is the container at the source
address: workspace containers have no CAP_NET_RAW, so they cannot forge one. Its
workspace's current spec decides, per connection (a spec change holds for the
next one): `controller.core.egress` says allowed or refused and which address to
dial. A refusal is a 403 with the reason; the caller cannot tell the proxy to dial
anything the rule did not check.

Every decision goes to `observe` (counted per workspace, refusals recorded by the
composition root). Connections are bounded (`max_connections`; more get 503),
requests heads are at most 16 KiB and must arrive within 10 s, and a connection
idle both ways for `idle_timeout` is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Counter

from controller.api.metrics import WithoutCreated, forget_workspaces
from controller.core.egress import Verdict, check_addresses, check_target
from controller.core.model import EgressSpec

log = logging.getLogger(__name__)

HEAD_LIMIT = 16 * 1024
HEAD_TIMEOUT = 10.0
CHUNK = 64 * 1024
HOP_BY_HOP = frozenset({"proxy-authorization", "proxy-connection", "connection", "keep-alive",
                        "te", "trailer", "upgrade", "proxy-authenticate"})

Lookup = Callable[[str], Awaitable["tuple[str, EgressSpec] | None"]]
"""Source address -> (workspace id, its egress spec), or None: no workspace there."""
Resolver = Callable[[str], Awaitable[list[str]]]


@dataclass(frozen=True)
class Decision:
    workspace: str
    host: str
    port: int
    verdict: Verdict


Observer = Callable[[Decision], None]


class EgressMetrics:
    """`wsctl_egress_connections_total{workspace, decision}` (allowed | refused)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.connections = Counter("wsctl_egress_connections",
                                   "Connections through the egress proxy, by decision.",
                                   ["workspace", "decision"], registry=None)
        registry.register(WithoutCreated(self.connections))

    def observe(self, decision: Decision) -> None:
        self.connections.labels(decision.workspace,
                                "allowed" if decision.verdict.allowed else "refused").inc()

    def forget_unknown(self, exists: Callable[[str], bool]) -> int:
        return forget_workspaces(self.connections, ("workspace", "decision"), exists)


async def system_resolver(host: str) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _BadRequest(Exception):
    pass


def _split_target(method: str, target: str) -> tuple[str, int, str | None]:
    """(host, port, origin-form path or None for CONNECT)."""
    if method == "CONNECT":
        host, sep, port = target.rpartition(":")
        if not sep or not port.isdigit():
            raise _BadRequest("CONNECT needs host:port")
        return host.strip("[]"), int(port), None
    try:
        parts = urlsplit(target)
        plain_port = parts.port or 80
    except ValueError:
        raise _BadRequest("the request target does not parse") from None
    if parts.scheme != "http" or not parts.hostname:
        raise _BadRequest("a proxy request needs an absolute http:// URL (CONNECT for https)")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, plain_port, path


class EgressProxy:
    def __init__(self, lookup: Lookup, observe: Observer, *,
                 resolve: Resolver = system_resolver, max_connections: int = 1024,
                 connect_timeout: float = 10.0, idle_timeout: float = 600.0) -> None:
        self._lookup = lookup
        self._observe = observe
        self._resolve = resolve
        self._max = max_connections
        self._connect_timeout = connect_timeout
        self._idle = idle_timeout
        self._open: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def connections(self) -> int:
        return len(self._open)

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        """Listen; `reuse_port`: a standby replica on the same node binds it too (HA),
        as the registry does in Kubernetes mode."""
        self._server = await asyncio.start_server(self._accept, host, port, limit=HEAD_LIMIT,
                                                  reuse_port=reuse_port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._open):
            task.cancel()
        await asyncio.gather(*self._open, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            if len(self._open) >= self._max:
                await _answer(writer, 503, "the egress proxy is at its connection limit")
                return
            self._open.add(task)
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:  # closing: the connection ends here, quietly
            pass
        finally:
            self._open.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            request_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
            method, target, version = request_line.split(" ")
            host, port, path = _split_target(method.upper(), target)
        except (asyncio.LimitOverrunError, ValueError):
            await _answer(writer, 400, "not an HTTP proxy request (or its head is over 16 KiB)")
            return
        except _BadRequest as exc:
            await _answer(writer, 400, str(exc))
            return
        source = str((writer.get_extra_info("peername") or ("?",))[0])
        found = await self._lookup(source)
        if found is None:
            await _answer(writer, 403, f"{source} is no workspace of this controller")
            return
        workspace, egress = found
        verdict = await self._decide(egress, host, port)
        self._observe(Decision(workspace, host.lower(), port, verdict))
        if not verdict.allowed or verdict.address is None:
            await _answer(writer, 403, f"egress refused: {verdict.reason}")
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(verdict.address, port, limit=CHUNK),
                self._connect_timeout)
        except (OSError, TimeoutError) as exc:
            await _answer(writer, 502, f"{host}:{port} unreachable "
                                       f"({getattr(exc, 'strerror', None) or type(exc).__name__})")
            return
        try:
            if path is None:
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
            else:
                kept = [line for line in header_lines
                        if line.partition(":")[0].strip().lower() not in HOP_BY_HOP]
                up_writer.write("\r\n".join([f"{method} {path} {version}", *kept,
                                             "Connection: close", "", ""]).encode("latin-1"))
            await self._splice(reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()

    async def _decide(self, egress: EgressSpec, host: str, port: int) -> Verdict:
        if egress.mode == "none":
            return Verdict(False, "egress mode is none")
        if egress.mode == "open":  # it has a route of its own; the proxy adds nothing
            return Verdict(False, "egress mode is open: connect directly")
        early = check_target(host, port, egress.allow)
        if early is not None:
            return early
        try:
            addresses = await asyncio.wait_for(self._resolve(host), self._connect_timeout)
        except (OSError, UnicodeError, TimeoutError):
            addresses = []
        return check_addresses(host, addresses, egress.allow)

    async def _splice(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
        last = [time.monotonic()]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while True:
                try:
                    async with asyncio.timeout(self._idle):  # no task per read
                        data = await src.read(CHUNK)
                except TimeoutError:
                    if time.monotonic() - last[0] < self._idle:
                        continue  # the other way is busy: a long download, say
                    raise
                if not data:
                    if dst.can_write_eof():
                        with contextlib.suppress(OSError):
                            dst.write_eof()
                    return
                last[0] = time.monotonic()
                dst.write(data)
                await dst.drain()

        pumps = [asyncio.create_task(pump(reader, up_writer)),
                 asyncio.create_task(pump(up_reader, writer))]
        try:
            await asyncio.gather(*pumps)
        finally:
            for task in pumps:
                task.cancel()


async def _answer(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway",
              503: "Service Unavailable"}[status]
    body = (message + "\n").encode()
    writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n"
                 f"X-Wsctl-Egress: refused\r\n\r\n".encode() + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()
