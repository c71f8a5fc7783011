"""The egress proxy over real sockets on 127.0.0.1, with aiohttp's client as the
workspace's HTTP client (it speaks CONNECT for https:// through a proxy, as curl,
requests and the SDKs do): HTTPS through a tunnel (TLS end to end, the proxy sees
only the name), plain HTTP rewritten to origin form, refusals with their reason,
the decision per connection from the workspace's current spec, and the bounds."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from controller.api.egress_proxy import Decision, EgressProxy
from controller.chaos.process import free_port
from controller.core.model import EgressSpec

NAME = "upstream.test"


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class World:
    proxy_url: str
    http_port: int
    https_port: int
    client_tls: ssl.SSLContext
    spec: dict[str, EgressSpec]
    proxy: EgressProxy
    decisions: list[Decision] = field(default_factory=list)
    seen: list[dict[str, str]] = field(default_factory=list)

    def allow(self, *entries: str) -> None:
        self.spec["ws"] = EgressSpec(mode="allowlist", allow=list(entries))


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    seen: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append({"path": request.path_qs, **{k.lower(): v for k, v in request.headers.items()}})
        return web.Response(text=f"upstream-ok {request.scheme}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    cert, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    plain = TestServer(app, host="127.0.0.1")
    secure = TestServer(app, host="127.0.0.1")
    await plain.start_server()
    await secure.start_server(ssl=server_tls)
    client_tls = ssl.create_default_context(cafile=str(cert))

    spec: dict[str, EgressSpec] = {"ws": EgressSpec(mode="none")}
    decisions: list[Decision] = []

    async def lookup(source: str) -> tuple[str, EgressSpec] | None:
        return ("ws", spec["ws"]) if source == "127.0.0.1" else None

    async def resolve(host: str) -> list[str]:
        if host == NAME:
            return ["127.0.0.1"]
        raise OSError("no such name")

    proxy = EgressProxy(lookup, decisions.append, resolve=resolve, max_connections=4)
    port = free_port("127.0.0.1")
    await proxy.start("127.0.0.1", port)
    assert plain.port is not None and secure.port is not None
    yield World(f"http://127.0.0.1:{port}", plain.port, secure.port, client_tls, spec, proxy,
                decisions, seen)
    await proxy.close()
    await plain.close()
    await secure.close()


async def fetch(world: World, url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(
            url, proxy=world.proxy_url, ssl=world.client_tls) as response:
        return response.status, await response.text()


async def test_https_through_a_tunnel_to_a_listed_name(world: World) -> None:
    world.allow(f"{NAME}:{world.https_port}", "127.0.0.1")
    status, body = await fetch(world, f"https://{NAME}:{world.https_port}/secret?q=1")
    assert (status, body) == (200, "upstream-ok https")  # TLS end to end, cert checked
    assert world.seen[-1]["path"] == "/secret?q=1"
    assert [(d.workspace, d.host, d.port, d.verdict.allowed) for d in world.decisions] == [
        ("ws", NAME, world.https_port, True)]


async def test_plain_http_is_rewritten_to_origin_form_without_proxy_headers(
        world: World) -> None:
    world.allow(f"{NAME}:{world.http_port}", "127.0.0.1")
    async with aiohttp.ClientSession() as session, session.get(
            f"http://{NAME}:{world.http_port}/a/b?c=d", proxy=world.proxy_url,
            proxy_headers={"Proxy-Authorization": "Basic dTpw"}) as response:
        assert response.status == 200
    assert world.seen[-1]["path"] == "/a/b?c=d"
    assert "proxy-authorization" not in world.seen[-1]
    assert world.seen[-1]["connection"] == "close"


@pytest.mark.parametrize(("allow", "reason"), [
    ([], f"{NAME} is not on the allow list"),
    ([NAME], f"{NAME} is on the allow list, port {{port}} is not"),
    ([f"{NAME}:{{port}}"], f"{NAME} resolves to non-public 127.0.0.1, which no entry names"),
])
async def test_refusals_say_why_and_are_never_dialled(world: World, allow: list[str],
                                                      reason: str) -> None:
    world.allow(*[entry.format(port=world.https_port) for entry in allow])
    with pytest.raises(aiohttp.ClientHttpProxyError) as refused:
        await fetch(world, f"https://{NAME}:{world.https_port}/")
    assert refused.value.status == 403
    assert world.seen == []
    assert world.decisions[-1].verdict.reason == reason.format(port=world.https_port)
    status, body = await fetch(world, f"http://{NAME}:{world.http_port}/")
    assert status == 403 and body.startswith("egress refused: ")


async def test_the_spec_is_read_per_connection(world: World) -> None:
    world.allow(f"{NAME}:{world.http_port}", "127.0.0.1")
    assert (await fetch(world, f"http://{NAME}:{world.http_port}/"))[0] == 200
    world.allow("127.0.0.1")
    assert (await fetch(world, f"http://{NAME}:{world.http_port}/"))[0] == 403
    world.spec["ws"] = EgressSpec(mode="none")
    status, body = await fetch(world, f"http://127.0.0.1:{world.http_port}/")
    assert status == 403 and "egress mode is none" in body
    assert [d.verdict.allowed for d in world.decisions] == [True, False, False]


async def until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not check():  # noqa: ASYNC110 (a plain counter, no event to wait on)
            await asyncio.sleep(0.01)


async def test_unknown_names_and_bad_requests(world: World) -> None:
    world.allow("*.test:" + str(world.http_port))
    status, body = await fetch(world, f"http://nowhere.test:{world.http_port}/")
    assert status == 403 and "nowhere.test does not resolve" in body
    port = int(world.proxy_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /not-absolute HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.1 400 ")
    writer.close()


async def test_connections_are_bounded(world: World) -> None:
    world.allow(f"{NAME}:{world.http_port}", "127.0.0.1")
    port = int(world.proxy_url.rsplit(":", 1)[1])
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
    await until(lambda: world.proxy.connections == 4)  # each waits for its request head
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 503 ")
    writer.close()
    for _, held_writer in held:
        held_writer.close()
    await until(lambda: world.proxy.connections == 0)
    assert (await fetch(world, f"http://{NAME}:{world.http_port}/"))[0] == 200
