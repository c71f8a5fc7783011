"""The allow-list rule (controller.core.egress): names, wildcards, ports, literals,
and the non-public rule for what a listed name resolves to."""

from __future__ import annotations

import pytest

from controller.core.egress import Entry, check_addresses, check_target


@pytest.mark.parametrize(("host", "port", "allow", "refusal"), [
    ("api.example.com", 443, ["api.example.com"], None),
    ("API.Example.com.", 80, ["api.example.com"], None),
    ("api.example.com", 8443, ["api.example.com"], "api.example.com is on the allow list, "
                                                    "port 8443 is not"),
    ("api.example.com", 8443, ["api.example.com:8443"], None),
    ("api.example.com", 443, ["api.example.com:8443"], "api.example.com is on the allow "
                                                        "list, port 443 is not"),
    ("a.b.example.com", 443, ["*.example.com"], None),
    ("example.com", 443, ["*.example.com"], "example.com is not on the allow list"),
    ("badexample.com", 443, ["*.example.com"], "badexample.com is not on the allow list"),
    ("evil.com", 443, [], "evil.com is not on the allow list"),
    ("api.example.com.evil.com", 443, ["api.example.com"],
     "api.example.com.evil.com is not on the allow list"),
    ("", 443, ["api.example.com"], "not a host and port"),
    ("api.example.com", 0, ["api.example.com"], "not a host and port"),
])
def test_names_wildcards_and_ports(host: str, port: int, allow: list[str],
                                   refusal: str | None) -> None:
    verdict = check_target(host, port, allow)
    if refusal is None:
        assert verdict is None  # listed: resolve it and check the addresses
    else:
        assert verdict is not None and not verdict.allowed and verdict.reason == refusal


def test_an_address_literal_is_allowed_only_when_listed_and_dialled_as_is() -> None:
    allowed = check_target("10.0.0.5", 443, ["10.0.0.5"])
    assert allowed is not None and allowed.allowed and allowed.address == "10.0.0.5"
    refused = check_target("10.0.0.6", 443, ["10.0.0.5"])
    assert refused is not None and not refused.allowed
    v6 = check_target("[2001:db8::1]", 8080, ["[2001:db8::1]:8080"])
    assert v6 is not None and v6.allowed and v6.address == "2001:db8::1"


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.18.0.2", "192.168.1.1",
                                     "169.254.169.254", "::1", "fd00::1",
                                     "0.0.0.0",  # noqa: S104 (an address to refuse)
                                     "::ffff:10.0.0.1"])
def test_a_listed_name_resolving_to_a_non_public_address_is_refused(address: str) -> None:
    verdict = check_addresses("api.example.com", [address], ["api.example.com"])
    assert not verdict.allowed
    assert verdict.reason == (f"api.example.com resolves to non-public {address}, which no "
                              "entry names")


def test_unless_an_entry_names_that_address() -> None:
    allow = ["api.example.com", "10.1.2.3:8080"]
    verdict = check_addresses("api.example.com", ["10.1.2.3"], allow)
    assert verdict.allowed and verdict.address == "10.1.2.3"


def test_every_address_must_pass_and_the_first_is_dialled() -> None:
    allow = ["api.example.com"]
    assert check_addresses("api.example.com", ["93.184.216.34", "8.8.8.8"], allow).address \
        == "93.184.216.34"
    mixed = check_addresses("api.example.com", ["93.184.216.34", "10.0.0.1"], allow)
    assert not mixed.allowed and "10.0.0.1" in mixed.reason
    assert check_addresses("api.example.com", [], allow).reason == \
        "api.example.com does not resolve"


def test_entry_parse() -> None:
    assert Entry.parse("API.example.com:8443") == Entry("api.example.com", 8443)
    assert Entry.parse("*.example.com") == Entry("*.example.com", None)
    assert Entry.parse("10.0.0.5") == Entry("10.0.0.5", None)
    assert Entry.parse("[::1]:80") == Entry("::1", 80)
    assert Entry.parse("::1") == Entry("::1", None)
