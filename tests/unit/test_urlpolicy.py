"""The claimed-URL rule and the agent-card check (docs/design.md section 6), fake resolver."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from controller.api.urlpolicy import UrlVerdict, check_agent_card, check_claimed_url

OWN_NAME = "wsctl-default.alice-g3"
OWN_ADDRESS = "172.18.0.7"


class FakeResolver:
    """Answers from a table; records what was asked; unknown names raise like getaddrinfo."""

    def __init__(self, table: Mapping[str, list[str]] | None = None,
                 error: BaseException | None = None) -> None:
        self.table = dict(table or {})
        self.error = error
        self.asked: list[str] = []

    async def __call__(self, host: str) -> list[str]:
        self.asked.append(host)
        if self.error is not None:
            raise self.error
        if host not in self.table:
            raise OSError(-2, "Name or service not known")
        return self.table[host]


async def check(url: object, resolver: FakeResolver | None = None) -> UrlVerdict:
    return await check_claimed_url(url, {OWN_NAME}, {OWN_ADDRESS}, resolver or FakeResolver())


@pytest.mark.parametrize("url", [None, ""])
async def test_missing_url(url: object) -> None:
    verdict = await check(url)
    assert (verdict.ok, verdict.cls) == (False, "missing_url")


@pytest.mark.parametrize("url", [
    "ftp://93.184.216.34/",             # not http(s)
    "file:///etc/passwd",
    "javascript:alert(1)",
    "93.184.216.34:8000",               # no scheme
    "http://",                          # no host
    "http:///path",
    "http://:8000/",
    "http://user:pw@93.184.216.34/",    # credentials
    "http://user@93.184.216.34/",
    "http://93.184.216.34:0/",          # port 0
    "http://93.184.216.34:65536/",      # port out of range
    "http://93.184.216.34:abc/",
    "http://[::1/",                     # unbalanced bracket
    "not a url at all",
    "http://" + "a" * 2048 + ".example/",  # over 2048 characters
    42,
    ["http://93.184.216.34/"],
])
async def test_invalid_url(url: object) -> None:
    resolver = FakeResolver()
    verdict = await check(url, resolver)
    assert (verdict.ok, verdict.cls) == (False, "invalid_url"), verdict
    assert verdict.message
    assert resolver.asked == []  # rejected on its shape, never looked up


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000/",
    "http://127.9.9.9/",
    "http://[::1]:8000/",
    "http://localhost:8000/",
    "http://LOCALHOST./",
    "http://foo.localhost/",
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://[fe80::1]/",
    "http://10.0.0.5:8000/",
    "http://172.16.0.1/",
    "http://172.31.255.254/",
    "http://192.168.1.10/",
    "http://[fd00::1]/",
    "http://[fc00::1]/",
    "http://0.0.0.0:8000/",
    "http://[::]/",
    "http://[::ffff:10.0.0.1]/",                 # IPv4-mapped private
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://224.0.0.1/",                         # multicast
])
async def test_non_public_addresses_are_blocked(url: str) -> None:
    resolver = FakeResolver()
    verdict = await check(url, resolver)
    assert (verdict.ok, verdict.cls) == (False, "blocked_private_url"), verdict
    assert resolver.asked == []  # literals and *.localhost never reach DNS


@pytest.mark.parametrize("url", [
    f"http://{OWN_NAME}:8000/",
    f"http://{OWN_NAME.upper()}:8000/",
    f"https://{OWN_ADDRESS}:8000/a2a",
])
async def test_own_container_is_allowed_although_private(url: str) -> None:
    assert await check(url) == UrlVerdict(True)


async def test_own_address_is_the_only_private_address_allowed() -> None:
    assert (await check("http://172.18.0.8:8000/")).cls == "blocked_private_url"
    assert (await check(f"http://{OWN_NAME}x:8000/")).cls == "invalid_url"  # not known to DNS


@pytest.mark.parametrize("url", [
    "http://93.184.216.34/",
    "https://93.184.216.34:8443/a2a",
    "http://[2606:2800:220:1:248:1893:25c8:1946]:8000/",
    "http://[::ffff:93.184.216.34]/",
    "http://172.32.0.1/",  # just outside 172.16/12
])
async def test_public_literals_are_allowed(url: str) -> None:
    resolver = FakeResolver()
    assert await check(url, resolver) == UrlVerdict(True)
    assert resolver.asked == []


@pytest.mark.parametrize("addresses", [
    ["10.1.2.3"],
    ["93.184.216.34", "192.168.0.2"],  # one private answer is enough
    ["127.0.0.1"],
    ["fe80::1%eth0"],
    ["::ffff:10.0.0.1"],
])
async def test_name_resolving_to_a_private_address_is_blocked(addresses: list[str]) -> None:
    resolver = FakeResolver({"agent.example": addresses})
    verdict = await check("http://agent.example:8000/", resolver)
    assert (verdict.ok, verdict.cls) == (False, "blocked_private_url")
    assert resolver.asked == ["agent.example"]


async def test_name_resolving_to_public_or_own_address_is_allowed() -> None:
    resolver = FakeResolver({"agent.example": ["93.184.216.34", "2606:2800:220:1::1"],
                             "me.example": [OWN_ADDRESS]})
    assert await check("http://agent.example./", resolver) == UrlVerdict(True)
    assert await check("http://me.example/", resolver) == UrlVerdict(True)
    assert resolver.asked == ["agent.example", "me.example"]


@pytest.mark.parametrize("error", [
    OSError(-2, "Name or service not known"),
    TimeoutError(),
    # getaddrinfo encodes non-ASCII names with IDNA before any lookup; a bad label
    # raises UnicodeError, which must not escape as a server error.
    UnicodeError("encoding with 'idna' codec failed (UnicodeError: label empty or too long)"),
])
async def test_unresolvable_name_is_invalid(error: BaseException) -> None:
    verdict = await check("http://agent.example/", FakeResolver(error=error))
    assert (verdict.ok, verdict.cls) == (False, "invalid_url")
    assert "agent.example" in verdict.message


async def test_name_resolving_to_nothing_is_invalid() -> None:
    verdict = await check("http://agent.example/", FakeResolver({"agent.example": []}))
    assert (verdict.ok, verdict.cls) == (False, "invalid_url")


# ------------------------------------------------------------------ agent card


@pytest.mark.parametrize("card", [
    None, "agent", [], 3,
    {}, {"name": ""}, {"name": "   "}, {"name": 7},
    {"name": "alice", "skills": "chat"}, {"name": "alice", "skills": {"chat": 1}},
])
def test_bad_agent_card(card: object) -> None:
    verdict = check_agent_card(card)
    assert (verdict.ok, verdict.cls) == (False, "invalid_agent_card")
    assert verdict.message.startswith("agent_card")


@pytest.mark.parametrize("card", [
    {"name": "alice"},
    {"name": "alice", "skills": []},
    {"name": "alice", "skills": [{"id": "chat"}], "version": "1"},
])
def test_good_agent_card(card: object) -> None:
    assert check_agent_card(card) == UrlVerdict(True)
