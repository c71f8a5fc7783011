"""The egress allow-list rule (spec.egress, mode allowlist). Pure: no I/O.

An entry is a host name (`api.example.com`), a wildcard (`*.example.com`: any name
under example.com, not example.com itself), an address literal (`10.0.0.5`), each
optionally with `:port`. Without a port an entry allows 80 and 443 only (HTTP and
HTTPS); with one, that port only.

A name is allowed when an entry matches it; then every address it resolves to must
be public, or named literally by an entry (a name that resolves to a loopback,
link-local or private address reaches that address only if the list says so).
The proxy dials the address checked here, never the name again (no rebinding
between the check and the connection).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_PORTS = (80, 443)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def non_public(address: Address) -> bool:
    """Loopback, link-local, private, unique-local, unspecified, multicast or reserved."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return non_public(address.ipv4_mapped)
    return (address.is_loopback or address.is_link_local or address.is_private
            or address.is_unspecified or address.is_multicast or address.is_reserved)


def literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True)
class Entry:
    host: str
    """Lower-case name, `*.domain`, or an address literal."""
    port: int | None

    @classmethod
    def parse(cls, text: str) -> Entry:
        host, sep, port = text.lower().rpartition(":")
        if sep and port.isdigit() and literal(text) is None:
            return cls(host.strip("[]"), int(port))
        return cls(text.lower().strip("[]"), None)

    def allows_port(self, port: int) -> bool:
        return port in DEFAULT_PORTS if self.port is None else port == self.port

    def matches(self, host: str) -> bool:
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        if literal(self.host) is not None and literal(host) is not None:
            return literal(self.host) == literal(host)
        return host == self.host


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str
    """Why, in words a log line or an event can carry (no secrets: names only)."""
    address: str | None = None
    """Allowed: the address to dial (one the rule checked)."""


def _normal(host: str) -> str:
    return host.lower().rstrip(".").strip("[]")


def check_target(host: str, port: int, allow: Sequence[str]) -> Verdict | None:
    """The verdict that needs no resolving: a refusal, an allowed address literal,
    or None (the name is on the list: resolve it and call `check_addresses`)."""
    host = _normal(host)
    if not host or not 0 < port < 65536:
        return Verdict(False, "not a host and port")
    entries = [Entry.parse(text) for text in allow]
    if not any(e.matches(host) and e.allows_port(port) for e in entries):
        if any(e.matches(host) for e in entries):
            return Verdict(False, f"{host} is on the allow list, port {port} is not")
        return Verdict(False, f"{host} is not on the allow list")
    address = literal(host)
    if address is not None:  # named literally by an entry: allowed whatever it is
        return Verdict(True, "allowed", str(address))
    return None


def check_addresses(host: str, addresses: Sequence[str], allow: Sequence[str]) -> Verdict:
    """A listed name resolved to `addresses`: allowed if every one is public or
    named literally by an entry."""
    host = _normal(host)
    if not addresses:
        return Verdict(False, f"{host} does not resolve")
    named = {literal(e.host) for e in map(Entry.parse, allow)} - {None}
    for text in addresses:
        address = literal(text.split("%", 1)[0])
        if address is None or (non_public(address) and address not in named):
            return Verdict(False, f"{host} resolves to non-public {text}, which no entry "
                                  "names")
    return Verdict(True, "allowed", addresses[0])
