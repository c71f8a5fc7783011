"""HostFirewall against a fake iptables that keeps its rules: the fence's order
(established, the ports, then REJECT), idempotence, disallow, and pruning the chains
of bridges that are gone."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import pytest

from controller.adapters.host_firewall import FirewallError, HostFirewall


class FakeIptables:
    def __init__(self) -> None:
        self.chains: dict[str, list[list[str]]] = {"INPUT": []}

    def __call__(self, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        assert list(args[:2]) == ["iptables", "-w"]
        op, chain, *rest = args[2:]
        rc, out, err = 0, "", ""
        rules = self.chains.get(chain)
        if op == "-N":
            if rules is not None:
                rc, err = 1, "iptables: Chain already exists."
            else:
                self.chains[chain] = []
        elif rules is None:
            rc, err = 1, "No chain/target/match by that name."
        elif op == "-C":
            rc = 0 if rest in rules else 1
        elif op == "-A":
            rules.append(rest)
        elif op == "-I":
            rules.insert(int(rest[0]) - 1, rest[1:])
        elif op == "-D":
            if rest in rules:
                rules.remove(rest)
            else:
                rc = 1
        elif op == "-F":
            rules.clear()
        elif op == "-X":
            del self.chains[chain]
        elif op == "-S":
            out = "\n".join(["-P INPUT ACCEPT",
                             *(" ".join(["-A", chain, *r]) for r in rules)]) + "\n"
        return subprocess.CompletedProcess(list(args), rc, out, err)


def test_the_fence_opens_the_ports_then_refuses_the_rest() -> None:
    ipt = FakeIptables()
    fw = HostFirewall("br-abc", run=ipt)
    fw.allow(8081, 8082)
    fw.allow(8081, 8082)  # idempotent
    assert ipt.chains["INPUT"] == [["-i", "br-abc", "-j", "WSCTL-br-abc"]]
    assert ipt.chains["WSCTL-br-abc"] == [
        ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
        ["-p", "tcp", "--dport", "8082", "-j", "ACCEPT"],
        ["-p", "tcp", "--dport", "8081", "-j", "ACCEPT"],
        ["-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"],
        ["-j", "REJECT", "--reject-with", "icmp-port-unreachable"]]
    fw.disallow(8082)
    assert ["-p", "tcp", "--dport", "8082", "-j", "ACCEPT"] not in ipt.chains["WSCTL-br-abc"]
    assert ["-p", "tcp", "--dport", "8081", "-j", "ACCEPT"] in ipt.chains["WSCTL-br-abc"]


def test_an_older_drop_is_replaced() -> None:
    ipt = FakeIptables()
    ipt.chains["WSCTL-br-abc"] = [["-j", "DROP"]]
    HostFirewall("br-abc", run=ipt).allow(8081)
    assert ["-j", "DROP"] not in ipt.chains["WSCTL-br-abc"]
    assert ipt.chains["WSCTL-br-abc"][-1][0:2] == ["-j", "REJECT"]


def test_prune_removes_only_the_fences_of_gone_bridges() -> None:
    ipt = FakeIptables()
    for bridge in ("br-alive", "br-gone"):
        HostFirewall(bridge, run=ipt).allow(8081)
    ipt.chains["INPUT"].append(["-i", "eth0", "-j", "ACCEPT"])  # not ours
    removed = HostFirewall("br-alive", run=ipt).prune(exists=lambda b: b == "br-alive")
    assert removed == ["WSCTL-br-gone"]
    assert "WSCTL-br-gone" not in ipt.chains and "WSCTL-br-alive" in ipt.chains
    assert ipt.chains["INPUT"] == [["-i", "br-alive", "-j", "WSCTL-br-alive"],
                                   ["-i", "eth0", "-j", "ACCEPT"]]


def test_no_iptables_says_so() -> None:
    def missing(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError("iptables")
    with pytest.raises(FirewallError, match="iptables is not installed"):
        HostFirewall("br-x", run=missing).allow(8081)


def test_a_refused_rule_names_root() -> None:
    def refused(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(list(args), 4, "", "Permission denied (you must "
                                                               "be root)")
    with pytest.raises(FirewallError, match="run wsctl as root"):
        HostFirewall("br-x", run=refused).allow(8081)
