"""The second half of the workspace boundary: the host's own INPUT chain.

An `internal` Docker network with inter-container traffic off has no route off the
host and no path between containers, but a container still reaches every service
of the host itself through its bridge: the gateway address and the host's other
addresses (docker0, the LAN address) go to INPUT, not FORWARD, which Docker's own
rules leave alone. Measured on Docker 20.10: a server on the host's 0.0.0.0
answered a container on an internal network through both.

So the controller keeps one chain per workspace bridge, jumped to from INPUT for
traffic coming in on that bridge:

    -A INPUT -i <bridge> -j WSCTL-<bridge>
    -A WSCTL-<bridge> -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    -A WSCTL-<bridge> -p tcp --dport <registry port> -j ACCEPT    (one per controller)
    -A WSCTL-<bridge> -p tcp --dport <egress proxy port> -j ACCEPT
    -A WSCTL-<bridge> -p tcp -j REJECT --reject-with tcp-reset
    -A WSCTL-<bridge> -j REJECT --reject-with icmp-port-unreachable

Answers to connections the host opened (the A2A proxy dialling an agent, docker
exec is not IP) pass as ESTABLISHED; a container may open a connection to the
registry/LLM-gateway port and nothing else. The rules stay when the controller
stops (the containers keep running and must stay fenced); `disallow` removes one
controller's ports. A chain whose bridge is gone (its network removed) is removed
at the next start (`prune`). `iptables` (Debian's, the one Docker uses) and root
are needed; without them `FirewallError` says so.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from controller.core.errors import WsctlError

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


class FirewallError(WsctlError):
    """The host's INPUT rules could not be set."""


def _run(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30,
                          check=False)


def _interface_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


class HostFirewall:
    def __init__(self, bridge: str, run: Runner = _run) -> None:
        self.bridge = bridge
        self.chain = f"WSCTL-{bridge}"[:28]
        self._run = run

    def _ipt(self, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            return self._run(["iptables", "-w", *args])
        except FileNotFoundError:
            raise FirewallError("iptables is not installed: workspaces could reach every "
                                "service of this host (apt-get install iptables)") from None

    def _ensure(self, check: Sequence[str], add: Sequence[str]) -> None:
        if self._ipt("-C", *check).returncode == 0:
            return
        done = self._ipt(*add)
        if done.returncode != 0:
            raise FirewallError(
                f"iptables {' '.join(add)} failed ({done.stderr.strip() or done.returncode}): "
                "workspaces could reach every service of this host; run wsctl as root")

    def allow(self, *ports: int) -> None:
        """Fence the bridge (idempotent), opening `ports` (tcp) to its containers."""
        created = self._ipt("-N", self.chain)
        if created.returncode != 0 and "exists" not in created.stderr.lower():
            raise FirewallError(
                f"iptables -N {self.chain} failed ({created.stderr.strip()}): workspaces "
                "could reach every service of this host; run wsctl as root")
        established = ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"]
        self._ensure([self.chain, *established], ["-I", self.chain, "1", *established])
        # Refused at once (a reset, an ICMP error), not dropped: a client in a workspace
        # fails now instead of after its connect timeout. The DROP of older versions goes.
        self._ipt("-D", self.chain, "-j", "DROP")
        for last in (["-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"],
                     ["-j", "REJECT", "--reject-with", "icmp-port-unreachable"]):
            self._ensure([self.chain, *last], ["-A", self.chain, *last])
        for port in ports:
            opened = ["-p", "tcp", "--dport", str(port), "-j", "ACCEPT"]
            self._ensure([self.chain, *opened], ["-I", self.chain, "2", *opened])
        jump = ["-i", self.bridge, "-j", self.chain]
        self._ensure(["INPUT", *jump], ["-I", "INPUT", "1", *jump])

    def disallow(self, *ports: int) -> None:
        """Close `ports` again (this controller stops); the fence itself stays."""
        for port in ports:
            self._ipt("-D", self.chain, "-p", "tcp", "--dport", str(port), "-j", "ACCEPT")

    def prune(self, exists: Callable[[str], bool] | None = None) -> list[str]:
        """Remove the fence of every bridge that no longer exists (its network was
        removed); the chains removed."""
        exists = exists or _interface_exists
        listed = self._ipt("-S", "INPUT")
        removed = []
        for line in listed.stdout.splitlines():
            words = line.split()
            if words[:2] != ["-A", "INPUT"] or "-j" not in words or "-i" not in words:
                continue
            chain, bridge = words[words.index("-j") + 1], words[words.index("-i") + 1]
            if not chain.startswith("WSCTL-") or exists(bridge):
                continue
            self._ipt("-D", "INPUT", "-i", bridge, "-j", chain)
            self._ipt("-F", chain)
            self._ipt("-X", chain)
            removed.append(chain)
        return removed
