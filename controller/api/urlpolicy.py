"""The registry's claimed-URL rule (docs/design.md section 6). Pure apart from the resolver given.

A claimed URL must name the workspace's own container (its name, hostname or
its address on the workspace network) or a public host. Any other loopback,
link-local, private, unique-local or unspecified address is
`blocked_private_url`; so is a DNS name that resolves to one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from urllib.parse import urlsplit

Resolver = Callable[[str], Awaitable[list[str]]]


@dataclass(frozen=True)
class UrlVerdict:
    ok: bool
    cls: str = ""
    message: str = ""


def _blocked(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _blocked(address.ipv4_mapped)
    return (address.is_loopback or address.is_link_local or address.is_private
            or address.is_unspecified or address.is_multicast or address.is_reserved)


async def check_claimed_url(url: object, own_names: Collection[str],
                            own_addresses: Collection[str], resolve: Resolver) -> UrlVerdict:
    if url is None or url == "":
        return UrlVerdict(False, "missing_url", "register body has no url")
    if not isinstance(url, str) or len(url) > 2048:
        return UrlVerdict(False, "invalid_url", "url must be a string of at most 2048 characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return UrlVerdict(False, "invalid_url", f"url does not parse: {exc}")
    host = (parts.hostname or "").lower().rstrip(".")
    if parts.scheme not in ("http", "https") or not host:
        return UrlVerdict(False, "invalid_url", "url must be http(s)://host[:port][/path]")
    if parts.username or parts.password:
        return UrlVerdict(False, "invalid_url", "url must not carry credentials")
    if port == 0:
        return UrlVerdict(False, "invalid_url", "url port must not be 0")
    if host in {n.lower() for n in own_names} or host in set(own_addresses):
        return UrlVerdict(True)
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        if _blocked(literal):
            return UrlVerdict(False, "blocked_private_url",
                              f"{host} is a non-public address that is not this "
                              "workspace's container")
        return UrlVerdict(True)
    if host == "localhost" or host.endswith(".localhost"):
        return UrlVerdict(False, "blocked_private_url", f"{host} is loopback")
    try:
        addresses = await resolve(host)
    except (OSError, UnicodeError) as exc:  # UnicodeError: an IDNA-invalid name
        reason = getattr(exc, "strerror", None) or exc
        return UrlVerdict(False, "invalid_url", f"{host} does not resolve ({reason})")
    if not addresses:
        return UrlVerdict(False, "invalid_url", f"{host} does not resolve")
    for address in addresses:
        if address in own_addresses:
            continue
        if _blocked(ipaddress.ip_address(address.split("%", 1)[0])):
            return UrlVerdict(False, "blocked_private_url",
                              f"{host} resolves to non-public {address}")
    return UrlVerdict(True)


def check_agent_card(card: object) -> UrlVerdict:
    if not isinstance(card, dict):
        return UrlVerdict(False, "invalid_agent_card", "agent_card must be a JSON object")
    name = card.get("name")
    if not isinstance(name, str) or not name.strip():
        return UrlVerdict(False, "invalid_agent_card", "agent_card.name must be a non-empty string")
    skills = card.get("skills", [])
    if not isinstance(skills, list):
        return UrlVerdict(False, "invalid_agent_card", "agent_card.skills must be a list")
    return UrlVerdict(True)
