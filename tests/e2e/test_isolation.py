"""Workspaces cannot reach each other or the world unless allowed (issue 16): a real
`wsctl run`, real agent containers, all traffic on this machine.

An "outside" server on a Docker network of its own (ordinary, not internal) stands
in for the internet, a TCP service on every host address for the host's other
services. From a default workspace (egress none) every lateral path fails and the
registry, the LLM gateway and A2A through the controller work; an allowlist
workspace reaches the outside server through the egress proxy by its listed name
and nothing else, and a spec change holds for its next connection (refused and
recorded); an open workspace reaches what an ordinary Docker network reaches.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.errors import DockerException, NotFound

from controller.testing.harness import ControllerProcess, FakeLLMThread, new_dir, wait_for
from tests.e2e.conftest import INSTANCE, NETWORK, PLANTED_KEY
from tests.e2e.test_exec_cp import wsctl
from tests.e2e.test_lifecycle import online, workspace
from tests.exposition import parse

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.e2e]

OUTSIDE_NETWORK = f"{NETWORK}-outside"
OUTSIDE_NAME = "outside.test"
ISO_INSTANCE = f"{INSTANCE}-iso"

PROBE = r"""
import os, socket, sys, urllib.error, urllib.request
mode, *args = sys.argv[1:]
def tcp(host, port):
    try:
        with socket.create_connection((host, int(port)), timeout=3) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            data = s.recv(200)
    except OSError:
        return "unreachable"
    return "reached " + data.decode(errors="replace").split("\r\n")[0].strip()
if mode == "tcp":
    print(tcp(*args))
elif mode == "dns":
    try:
        socket.getaddrinfo(args[0], 443)
        print("resolved")
    except OSError:
        print("unresolved")
elif mode == "get":  # through HTTP_PROXY when the environment has one
    try:
        with urllib.request.urlopen(args[0], timeout=5) as r:
            print(r.status, r.read().decode().strip())
    except urllib.error.HTTPError as e:
        print(e.code, e.read().decode().strip())
    except OSError as e:
        print("unreachable", e)
elif mode == "connect":  # an HTTPS client's CONNECT tunnel, then bytes through it
    host, port = os.environ["HTTPS_PROXY"].split("//")[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(f"CONNECT {args[0]} HTTP/1.1\r\nHost: {args[0]}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:  # the proxy's answer may come in pieces
            piece = s.recv(4096)
            if not piece:
                break
            head += piece
        status = head.decode().split(" ")[1]
        if status != "200":
            print(status)
            sys.exit()
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        reply = b""
        while piece := s.recv(4096):  # HTTP/1.0: the server closes when done
            reply += piece
        print(status, reply.decode().split("\r\n\r\n", 1)[-1].strip())
"""

SERVER = r"""
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"outside-ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"""


class HostService:
    """A TCP service on all of the host's addresses, answering one line."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", 0))  # noqa: S104 (the point: every host address)
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"HTTP/1.0 200 host-service\r\n\r\n")

    def close(self) -> None:
        self.sock.close()


def gateway_of(client: docker.DockerClient, network: str) -> str:
    config = client.api.inspect_network(network)["IPAM"]["Config"][0]
    if config.get("Gateway"):
        return str(config["Gateway"])
    # The default bridge of an engine started with its defaults may list only the
    # subnet; Docker gives the bridge the subnet's first address then.
    return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))


@pytest.fixture(scope="module")
def outside(docker_client: docker.DockerClient, agent_image: str) -> Iterator[str]:
    """The outside server's address, on a network of its own."""
    network = docker_client.networks.create(OUTSIDE_NETWORK, driver="bridge",
                                            labels={"wsctl.dev/managed-by": "wsctl-e2e"})
    container = docker_client.containers.run(
        agent_image, entrypoint=["python3", "-c", SERVER], detach=True,
        name=f"{OUTSIDE_NETWORK}-server", network=OUTSIDE_NETWORK,
        labels={"wsctl.dev/managed-by": "wsctl-e2e"})
    container.reload()
    address = container.attrs["NetworkSettings"]["Networks"][OUTSIDE_NETWORK]["IPAddress"]
    yield str(address)
    container.remove(force=True)
    with contextlib.suppress(NotFound, DockerException):
        network.remove()


@pytest.fixture(scope="module")
def iso(gateway: str, fake_llm: FakeLLMThread, outside: str, log_files: list[Path],
        docker_client: docker.DockerClient) -> Iterator[ControllerProcess]:
    proc = ControllerProcess(
        data_dir=new_dir("wsctl-e2e-iso-"), network=NETWORK, instance=ISO_INSTANCE,
        gateway=gateway, env={"WSCTL_SECRET_E2E_LLM_API_KEY": PLANTED_KEY,
                              "WSCTL_EGRESS_HOSTS": f"{OUTSIDE_NAME}={outside}"})
    proc.start()
    yield proc
    log_files.extend(proc.log_files)
    proc.stop()
    for leftover in docker_client.containers.list(
            all=True, filters={"label": f"wsctl.dev/instance={ISO_INSTANCE}"}):
        leftover.remove(force=True)


def probe(controller: ControllerProcess, name: str, *args: str) -> str:
    done = wsctl(controller, "exec", name, "--", "python3", "-c", PROBE, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode().strip()


def egress(name: str, llm_port: int, mode: str, allow: list[str] | None = None
           ) -> dict[str, Any]:
    obj = workspace(name, llm_port)
    obj["spec"]["egress"] = {"mode": mode, **({"allow": allow} if allow is not None else {})}
    return obj


def egress_total(controller: ControllerProcess, workspace_id: str, decision: str) -> float:
    text = controller.client().request("GET", "/metrics", raw=True)
    return parse(text).get("wsctl_egress_connections_total", 0.0,
                             workspace=workspace_id, decision=decision)


def address_of(client: docker.DockerClient, obj: dict[str, Any], network: str) -> str:
    info = client.api.inspect_container(obj["status"]["containerID"])
    return str(info["NetworkSettings"]["Networks"][network]["IPAddress"])


def test_default_workspace_has_no_lateral_path(
        iso: ControllerProcess, fake_llm: FakeLLMThread, outside: str, gateway: str,
        docker_client: docker.DockerClient) -> None:
    host = HostService()
    try:
        iso.apply(workspace("iso-a", fake_llm.port), workspace("iso-b", fake_llm.port))
        a = online(iso, "iso-a")
        b = online(iso, "iso-b")
        a_info = docker_client.api.inspect_container(a["status"]["containerID"])
        assert list(a_info["NetworkSettings"]["Networks"]) == [NETWORK]  # and no port
        assert not a_info["HostConfig"]["PortBindings"]
        # an external name fails in a second, not after glibc's 2 x 5 s
        assert a_info["HostConfig"]["DnsOptions"] == ["timeout:1", "attempts:1"]
        b_info = docker_client.api.inspect_container(b["status"]["containerID"])
        b_name = b_info["Name"].lstrip("/")
        b_address = b_info["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
        docker0 = gateway_of(docker_client, "bridge")
        outside_gateway = gateway_of(docker_client, OUTSIDE_NETWORK)
        # the host's service answers the host itself (the control)
        with socket.create_connection((docker0, host.port), timeout=3) as s:
            assert s.recv(100).startswith(b"HTTP/1.0 200 host-service")

        lateral = {
            "B by name": (b_name, "8000"),
            "B by address": (b_address, "8000"),
            "host service on the gateway address": ("host.docker.internal", str(host.port)),
            "host service on docker0": (docker0, str(host.port)),
            "host service on the outside network's gateway": (outside_gateway, str(host.port)),
            "the outside server": (outside, "8080"),
            "the controller's admin API": ("host.docker.internal", str(iso.listen_port)),
        }
        for what, (target, port) in lateral.items():
            assert probe(iso, "iso-a", "tcp", target, port) == "unreachable", what
        assert probe(iso, "iso-a", "dns", "pypi.org") == "unresolved"  # no DNS side channel
        assert probe(iso, "iso-a", "dns", OUTSIDE_NAME) == "unresolved"
        # the egress proxy refuses a none workspace (its port is the other one open)
        assert probe(iso, "iso-a", "tcp", "host.docker.internal",
                     str(iso.egress_port)).startswith("reached HTTP/1.1 400")

        # what is allowed: the registry, the LLM gateway and A2A, through the controller
        assert probe(iso, "iso-a", "tcp", "host.docker.internal",
                     str(iso.registry_port)).startswith("reached HTTP/1.")
        code, out, err = iso.cli("send", "iso-b", "through the front door")
        assert code == 0 and "fake-llm heard: through the front door" in out, err
    finally:
        host.close()
        for name in ("iso-a", "iso-b"):
            iso.cli("delete", name)


def test_allowlist_reaches_the_listed_host_through_the_proxy_and_nothing_else(
        iso: ControllerProcess, fake_llm: FakeLLMThread, outside: str,
        docker_client: docker.DockerClient) -> None:
    ws_id = "default.iso-d"
    listed = [f"{OUTSIDE_NAME}:8080", f"{outside}:8080"]
    try:
        iso.apply(egress("iso-d", fake_llm.port, "allowlist", listed))
        d = online(iso, "iso-d")
        container = d["status"]["containerID"]
        allowed_before = egress_total(iso, ws_id, "allowed")
        refused_before = egress_total(iso, ws_id, "refused")

        url = f"http://{OUTSIDE_NAME}:8080/"
        assert probe(iso, "iso-d", "get", url) == "200 outside-ok"
        assert probe(iso, "iso-d", "connect", f"{OUTSIDE_NAME}:8080") == "200 outside-ok"
        assert probe(iso, "iso-d", "get", "http://elsewhere.test:8080/").startswith(
            "403 egress refused: elsewhere.test is not on the allow list")
        assert probe(iso, "iso-d", "connect", f"{OUTSIDE_NAME}:22") == "403"
        assert probe(iso, "iso-d", "tcp", outside, "8080") == "unreachable"  # no route
        assert probe(iso, "iso-d", "dns", OUTSIDE_NAME) == "unresolved"
        assert probe(iso, "iso-d", "dns", "pypi.org") == "unresolved"  # no DNS side channel
        # the gateway and the registry stay direct (NO_PROXY)
        code, out, err = iso.cli("send", "iso-d", "still talking")
        assert code == 0 and "fake-llm heard: still talking" in out, err
        assert egress_total(iso, ws_id, "allowed") - allowed_before == 2
        assert egress_total(iso, ws_id, "refused") - refused_before == 2

        # the address entry removed: the name resolves to a private address no entry
        # names, refused at the next connection, same container
        iso.apply(egress("iso-d", fake_llm.port, "allowlist", [f"{OUTSIDE_NAME}:8080"]))
        wait_for(lambda: iso.get("iso-d")["spec"]["egress"]["allow"] == [
            f"{OUTSIDE_NAME}:8080"], 10, "spec applied")
        assert probe(iso, "iso-d", "get", url).startswith(
            f"403 egress refused: {OUTSIDE_NAME} resolves to non-public {outside}")
        # and the name removed too
        iso.apply(egress("iso-d", fake_llm.port, "allowlist", []))
        assert probe(iso, "iso-d", "get", url).startswith(
            f"403 egress refused: {OUTSIDE_NAME} is not on the allow list")
        assert iso.get("iso-d")["status"]["containerID"] == container

        def recorded() -> list[str] | None:
            events = iso.describe("iso-d").get("events") or []
            found = [e["message"] for e in events if e["reason"] == "EgressRefused"]
            return found if len(found) >= 4 else None
        messages = wait_for(recorded, 10, "refusals recorded as events")
        assert any(f"{OUTSIDE_NAME}:8080 refused" in m and "non-public" in m for m in messages)
        assert any("not on the allow list" in m and OUTSIDE_NAME in m for m in messages)
        code, out, _ = iso.cli("activity", "iso-d")
        assert code == 0 and "egress/connect" in out, out
    finally:
        iso.cli("delete", "iso-d")


def test_open_reaches_what_an_ordinary_network_reaches(
        iso: ControllerProcess, fake_llm: FakeLLMThread, outside: str,
        docker_client: docker.DockerClient) -> None:
    host = HostService()
    try:
        iso.apply(egress("iso-c", fake_llm.port, "open"))
        c = online(iso, "iso-c")
        docker0 = gateway_of(docker_client, "bridge")
        assert probe(iso, "iso-c", "tcp", docker0, str(host.port)) == \
            "reached HTTP/1.0 200 host-service"
        # Docker's isolation between bridge networks still holds
        assert probe(iso, "iso-c", "tcp", outside, "8080") == "unreachable"
        assert address_of(docker_client, c, f"{NETWORK}-open")
        code, out, _ = iso.cli("get", "iso-c")
        assert code == 0 and re.search(r"^iso-c\s+Online\s+True\s+-\s+0\s+OPEN\s", out, re.M), out
        code, out, _ = iso.cli("describe", "iso-c")
        assert code == 0 and "Egress:        OPEN  (a route off this host" in out, out
        code, out, err = iso.cli("send", "iso-c", "open and heard")
        assert code == 0 and "fake-llm heard: open and heard" in out, err
    finally:
        host.close()
        iso.cli("delete", "iso-c")
