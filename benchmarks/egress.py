"""The egress proxy's added latency (issue 16's performance acceptance), same run.

One `wsctl run`, two workspaces, one HTTPS server on the host (its own process, a
self-signed ECDSA P-256 certificate for its IP address; TLS 1.3):

- proxied: an `allowlist` workspace whose `allow` names the server's address and
  port literally. Its client connects to the proxy its container was given
  (`HTTPS_PROXY`, host.docker.internal:<egress port>), asks `CONNECT address:port`,
  and does the TLS handshake and the request through the tunnel;
- direct: an `open` workspace (on `<network>-open` as well, with a route to the
  host) connects to the same address and port itself.

The server is bound to docker0's address (the default `bridge` network's gateway):
the open container reaches it through its ordinary bridge, the controller's proxy
dials it on the host. The client is a standard-library Python script run INSIDE
each container (`wsctl exec`): the proxy knows a workspace by the source address of
the connection, so a client on the host would be refused. Every request is a new
connection (TCP connect, CONNECT for the proxied one, TLS handshake with the
certificate verified against the benchmark's CA, `GET /`, the whole answer read),
timed in the container with `time.perf_counter`; what the proxy adds to an HTTPS
request is what it adds to a new connection. Both containers get the default
1 CPU (the fleet's 0.25 would throttle a TLS client in bursts).

The two sides alternate in rounds (one `wsctl exec` of `per_round` requests each,
which goes first alternating), after a warm-up exec each; each exec also makes a
few untimed requests first (its interpreter's first handshake). Besides the
latencies: every proxied request must succeed, and the controller's
`wsctl_egress_connections_total{workspace=<the allowlist one>, decision="allowed"}`
must rise by exactly the number of proxied requests made between two scrapes
(nothing refused, the direct side not counted at all).

    python -m benchmarks.bench --only egress --quick --out /tmp/egbench

The HTTPS server is this module run as a program (`--serve HOST PORT CERT KEY`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.fleet import Fleet
from benchmarks.gateway import _say, stats_ms, verdict
from controller.testing.harness import (
    REPO,
    ControllerProcess,
    free_port,
    phase,
    remove_dir,
    wait_for,
)

GOAL_MS = 5.0
"""Issue 16: the egress proxy adds under 5 ms at p99 to an HTTPS request."""
INSTANCE = "bench-eg"
PROXIED = "egp"
"""The allowlist workspace (through the proxy)."""
DIRECT = "egd"
"""The open workspace (direct)."""
BODY = b"egress-bench-ok"
METRIC = "wsctl_egress_connections_total"


@dataclass(frozen=True)
class Sizes:
    rounds: int
    """Timed rounds; each is one exec per side."""
    per_round: int
    """Timed requests per exec."""
    warmup: int = 50
    """Requests of the untimed warm-up exec, per side."""
    exec_warmup: int = 5
    """Untimed requests at the start of every exec (its interpreter's first ones)."""


FULL = Sizes(rounds=20, per_round=100)
QUICK = Sizes(rounds=2, per_round=100, warmup=20)


class Failed(Exception):
    pass


# ---------------------------------------------------------------- the HTTPS server


def self_signed(address: str, directory: Path) -> tuple[Path, Path, str]:
    """A self-signed ECDSA P-256 certificate for `address` (an IP SAN): its file, its
    key's file and its PEM (the client's only trusted CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wsctl egress bench")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(pem)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path, pem.decode()


def response() -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
            + str(len(BODY)).encode() + b"\r\nConnection: close\r\n\r\n" + BODY)


async def serve(host: str, port: int, cert: Path, key: Path) -> None:
    """One answer per connection: read the request's head, answer BODY, close."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    answer = response()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.write(answer)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, host, port, ssl=context, backlog=1024)
    async with server:
        await server.serve_forever()


class Server:
    """The HTTPS server in a process of its own (no GIL shared with anything)."""

    def __init__(self, host: str, directory: Path) -> None:
        self.host = host
        self.port = free_port(host)
        self.cert, self.key, self.ca_pem = self_signed(host, directory)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.egress", "--serve", self.host, str(self.port),
             str(self.cert), str(self.key)], cwd=REPO, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, 30, f"HTTPS server on {self.host}:{self.port}")
        return self

    def _answers(self) -> bool:
        """A real request from the host, the certificate verified as the clients do."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"the HTTPS server exited {self.proc.returncode}")
        context = ssl.create_default_context(cadata=self.ca_pem)
        with socket.create_connection((self.host, self.port), timeout=2) as raw, \
                context.wrap_socket(raw, server_hostname=self.host) as tls:
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(4096):
                data += chunk
        return data.startswith(b"HTTP/1.1 200") and data.endswith(BODY)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# ---------------------------------------------------------------- the client (in a container)

CLIENT = r"""
import json, os, socket, ssl, sys, time
from urllib.parse import urlsplit
mode, host, port, count, warmup, ca = sys.argv[1:7]
port, count, warmup = int(port), int(count), int(warmup)
context = ssl.create_default_context(cadata=ca)  # the benchmark's CA only; hostname checked
proxy = os.environ.get("HTTPS_PROXY")
if mode == "proxied":
    p = urlsplit(proxy)
    via = (p.hostname, p.port)
elif proxy:
    sys.exit("the direct side has HTTPS_PROXY set: " + proxy)
else:
    via = None
request = ("GET / HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: wsctl-egress-bench\r\n"
           "Connection: close\r\n\r\n" % (host, port)).encode()

def head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError("closed before the end of the head: %r" % data[:200])
        data += chunk
    return data

def one():
    # A new connection per request: TCP (+ CONNECT through the proxy), TLS, GET.
    t0 = time.perf_counter()
    sock = socket.create_connection(via or (host, port), timeout=10)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if via:
            sock.sendall(("CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n"
                          % (host, port, host, port)).encode())
            answer = head(sock)
            if not answer.startswith(b"HTTP/1.1 200"):
                raise OSError("CONNECT: " + answer.decode(errors="replace")[:200])
        t1 = time.perf_counter()
        tls = context.wrap_socket(sock, server_hostname=host)
        sock = tls
        out["tls"] = "%s %s" % (tls.version(), tls.cipher()[0])
        t2 = time.perf_counter()
        tls.sendall(request)
        data = head(tls)
        top, _, body = data.partition(b"\r\n\r\n")
        length = int(top.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(body) < length:
            chunk = tls.recv(4096)
            if not chunk:
                break
            body += chunk
        t3 = time.perf_counter()
    finally:
        sock.close()
    if not top.startswith(b"HTTP/1.1 200") or body != b"egress-bench-ok":
        raise OSError("answer: %r" % data[:200])
    return [t3 - t0, t1 - t0, t2 - t1, t3 - t2]

out = {"latencies": [], "failures": [], "made": 0, "proxy": proxy, "tls": None}
for i in range(warmup + count):
    out["made"] += 1
    try:
        timed = one()
    except Exception as exc:
        out["failures"].append("%s: %s" % (type(exc).__name__, exc))
        continue
    if i >= warmup:
        out["latencies"].append(timed)
print(json.dumps(out))
"""


@dataclass
class Side:
    name: str
    """proxied | direct"""
    workspace: str
    latencies: list[list[float]]
    failures: list[str]
    made: int = 0
    """Requests made (timed, untimed and failed) since the last reset."""
    tls: str | None = None
    """The TLS version and cipher the client's last exec negotiated."""


def exec_client(proc: ControllerProcess, side: Side, host: str, port: int, count: int,
                warmup: int, ca_pem: str) -> dict[str, Any]:
    """`wsctl exec WORKSPACE -- python3 -c CLIENT ...` as a user runs it; its JSON."""
    env = {k: v for k, v in os.environ.items() if k not in ("WSCTL_SERVER", "WSCTL_ADMIN_TOKEN")}
    done = subprocess.run(
        [sys.executable, "-m", "controller", "exec", "--server", proc.server, "--data-dir",
         str(proc.data_dir), side.workspace, "--", "python3", "-c", CLIENT, side.name, host,
         str(port), str(count), str(warmup), ca_pem],
        cwd=REPO, env=env, input=b"", capture_output=True, timeout=600)
    if done.returncode != 0:
        raise Failed(f"{side.name} client in {side.workspace} exited {done.returncode}: "
                     f"{done.stderr.decode(errors='replace')[-2000:]}")
    try:
        result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise Failed(f"{side.name} client said {done.stdout[-500:]!r} "
                     f"{done.stderr[-500:]!r}") from None
    return result


# ---------------------------------------------------------------- the benchmark


@dataclass(frozen=True)
class Scrape:
    """Counters of the controller's /metrics, read with prometheus_client's parser."""

    egress: dict[tuple[str, str], float]
    """`wsctl_egress_connections_total` by (workspace, decision)."""
    docker_calls: dict[str, float]
    """`wsctl_docker_api_calls_total` by call."""
    sql: dict[str, float]
    """`wsctl_db_queries_total` by origin."""


def scrape(proc: ControllerProcess) -> Scrape:
    text = proc.client().request("GET", "/metrics", raw=True)
    found = Scrape({}, {}, {})
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == METRIC:
                key = (sample.labels.get("workspace", "?"), sample.labels.get("decision", "?"))
                found.egress[key] = sample.value
            elif sample.name == "wsctl_docker_api_calls_total":
                found.docker_calls[sample.labels.get("call", "?")] = sample.value
            elif sample.name == "wsctl_db_queries_total":
                found.sql[sample.labels.get("origin", "?")] = sample.value
    return found


def rise(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in sorted(after.items())
            if v != before.get(k, 0.0)}


def workspace(fleet: Fleet, name: str, egress: dict[str, Any]) -> dict[str, Any]:
    obj = fleet.workspace(name)
    obj["spec"]["resources"] = {"memory": "256Mi", "cpus": "1"}
    obj["spec"]["egress"] = egress
    return obj


def online(proc: ControllerProcess, *names: str) -> bool:
    return all(phase(proc.get(name)) == "Online" for name in names)


def container_env(fleet: Fleet, proc: ControllerProcess, name: str) -> dict[str, str]:
    cid = proc.get(name)["status"]["containerID"]
    pairs = fleet.client.api.inspect_container(cid)["Config"]["Env"] or []
    return dict(str(p).split("=", 1) for p in pairs if "=" in str(p))


def bridge_gateway(fleet: Fleet) -> str:
    """docker0's address: the default `bridge` network's gateway."""
    config = fleet.client.api.inspect_network("bridge")["IPAM"]["Config"]
    for entry in config:
        gateway = entry.get("Gateway")
        if gateway and ipaddress.ip_address(gateway).version == 4:
            return str(gateway)
    for entry in config:  # an engine started with its defaults may list only the subnet:
        subnet = ipaddress.ip_network(entry.get("Subnet") or "::/128")  # Docker gives the
        if subnet.version == 4:  # bridge the subnet's first address then
            return str(next(subnet.hosts()))
    raise Failed("the default bridge network has no IPv4 gateway (docker0)")


def bench_egress(fleet: Fleet, quick: bool,
                 progress: Callable[[str], None] = _say) -> dict[str, Any]:
    """One `wsctl run`, an allowlist and an open workspace; HTTPS requests on new
    connections from inside each to one server on the host, through the egress proxy
    and direct, in alternating rounds."""
    sizes = QUICK if quick else FULL
    progress("egress: added latency of the egress proxy against direct HTTPS connections "
             "to the same server")
    host = bridge_gateway(fleet)
    folder = Path(tempfile.mkdtemp(prefix="wsctl-bench-egress-"))
    server: Server | None = None
    proxied = Side("proxied", PROXIED, [], [])
    direct = Side("direct", DIRECT, [], [])
    rounds: list[dict[str, Any]] = []
    try:
        server = Server(host, folder).start()
        target = f"{host}:{server.port}"
        with fleet.controller(INSTANCE) as proc:
            proc.apply(workspace(fleet, PROXIED, {"mode": "allowlist", "allow": [target]}),
                       workspace(fleet, DIRECT, {"mode": "open"}))
            wait_for(lambda: online(proc, PROXIED, DIRECT), 180,
                     f"{PROXIED} and {DIRECT} Online")
            proxy_url = container_env(fleet, proc, PROXIED).get("HTTPS_PROXY")
            expected_proxy = f"http://host.docker.internal:{proc.egress_port}"
            if proxy_url != expected_proxy:
                raise Failed(f"{PROXIED}: HTTPS_PROXY is {proxy_url!r}, not {expected_proxy}")
            if "HTTPS_PROXY" in container_env(fleet, proc, DIRECT):
                raise Failed(f"{DIRECT} (open) was given an HTTPS_PROXY")
            sides = (proxied, direct)
            server_port, ca_pem = server.port, server.ca_pem

            def run(side: Side, count: int, warmup: int) -> list[list[float]]:
                out = exec_client(proc, side, host, server_port, count, warmup, ca_pem)
                side.made += int(out["made"])
                side.failures += out["failures"]
                side.tls = out.get("tls") or side.tls
                return [list(map(float, t)) for t in out["latencies"]]

            progress(f"egress: warm-up, {sizes.warmup} requests per side")
            warm = {side.name: run(side, sizes.warmup, sizes.exec_warmup) for side in sides}
            if proxied.failures or direct.failures:
                raise Failed(f"warm-up failed: proxied {proxied.failures[:3]}, direct "
                             f"{direct.failures[:3]}")
            for side in sides:
                side.made = 0
            before = scrape(proc)
            started = time.monotonic()
            progress(f"egress: {sizes.rounds} rounds of {sizes.per_round} requests per side "
                     "(one exec each, alternating which goes first)")
            for r in range(sizes.rounds):
                record: dict[str, Any] = {}
                for side in (sides if r % 2 == 0 else sides[::-1]):
                    got = run(side, sizes.per_round, sizes.exec_warmup)
                    side.latencies += got
                    record[side.name] = stats_ms([t[0] for t in got])
                rounds.append(record)
                progress(f"  round {r + 1}/{sizes.rounds}: p50 direct "
                         f"{record['direct']['p50']:.2f} ms, proxied "
                         f"{record['proxied']['p50']:.2f} ms; p99 direct "
                         f"{record['direct']['p99']:.2f} ms, proxied "
                         f"{record['proxied']['p99']:.2f} ms")
            seconds = time.monotonic() - started
            after = scrape(proc)
    finally:
        if server is not None:
            server.stop()
        remove_dir(folder)

    def rose(workspace_name: str, decision: str) -> float:
        key = (f"default.{workspace_name}", decision)
        return after.egress.get(key, 0.0) - before.egress.get(key, 0.0)

    timed = {side.name: sizes.rounds * sizes.per_round for side in (proxied, direct)}
    d = stats_ms([t[0] for t in direct.latencies])
    p = stats_ms([t[0] for t in proxied.latencies])
    phases = {
        side.name: {phase_name: stats_ms([t[i] for t in side.latencies])
                    for i, phase_name in ((1, "connect"), (2, "tls_handshake"),
                                          (3, "request"))}
        for side in (proxied, direct)}
    counted = {"allowed": rose(PROXIED, "allowed"), "refused": rose(PROXIED, "refused"),
               "direct_side": rose(DIRECT, "allowed") + rose(DIRECT, "refused")}
    succeeded = {
        "proxied": {"made": proxied.made, "succeeded": proxied.made - len(proxied.failures),
                    "timed": len(proxied.latencies), "failures": proxied.failures[:10]},
        "direct": {"made": direct.made, "succeeded": direct.made - len(direct.failures),
                   "timed": len(direct.latencies), "failures": direct.failures[:10]}}
    result: dict[str, Any] = {
        "direct_ms": d, "proxied_ms": p,
        "added_p50_ms": p["p50"] - d["p50"], "added_p99_ms": p["p99"] - d["p99"],
        "phases_ms": phases, "rounds": rounds,
        "warmup_ms": {k: stats_ms([t[0] for t in v]) for k, v in warm.items()},
        "requests": succeeded, "egress_connections_counted": counted,
        # Everything the controller did in the window: the proxy's work and the execs'
        # (and heartbeats'); the scrapes' own statements left out.
        "docker_calls_in_window": rise(before.docker_calls, after.docker_calls),
        "sql_statements_in_window": {k: v for k, v in rise(before.sql, after.sql).items()
                                     if k != "metrics"},
        "sizes": sizes.__dict__, "seconds": seconds, "server": target,
        "proxy": proxy_url,
        "tls": f"{proxied.tls} (proxied), {direct.tls} (direct)",
        "goal": f"p99 added latency < {GOAL_MS:g} ms (proxied p99 - direct p99); every "
                "proxied request succeeds; wsctl_egress_connections_total{decision=allowed} "
                "rises by the number of proxied requests, nothing refused",
        "goal_ms": GOAL_MS,
    }
    result["latency_goal_met"] = result["added_p99_ms"] < GOAL_MS
    result["all_succeeded"] = (proxied.made > 0 and not proxied.failures
                               and len(proxied.latencies) == timed["proxied"]
                               and not direct.failures
                               and len(direct.latencies) == timed["direct"])
    result["counted_exactly"] = (counted["allowed"] == proxied.made
                                 and counted["refused"] == 0 and counted["direct_side"] == 0)
    result["goal_met"] = (result["latency_goal_met"] and result["all_succeeded"]
                          and result["counted_exactly"])
    progress(f"egress: added p50 {result['added_p50_ms']:.2f} ms, p99 "
             f"{result['added_p99_ms']:.2f} ms (direct p99 {d['p99']:.2f} ms, proxied p99 "
             f"{p['p99']:.2f} ms); proxied {succeeded['proxied']['succeeded']}/"
             f"{proxied.made} succeeded, counted allowed {counted['allowed']:.0f}")
    return result


# ---------------------------------------------------------------- report


def egress_rows(e: dict[str, Any]) -> list[str]:
    """Rows of a `| measure | direct | through the egress proxy | added | goal | |` table."""
    d, p = e["direct_ms"], e["proxied_ms"]
    what = "HTTPS request on a new connection, connect -> whole answer"
    rows = [
        f"| {what}, p50 of {d['n']} / {p['n']} | {d['p50']:.2f} ms | {p['p50']:.2f} ms | "
        f"{e['added_p50_ms']:+.2f} ms | | |",
        f"| {what}, p99 of {d['n']} / {p['n']} | {d['p99']:.2f} ms | {p['p99']:.2f} ms | "
        f"{e['added_p99_ms']:+.2f} ms | < {e['goal_ms']:g} ms | "
        f"{verdict(e['latency_goal_met'])} |",
    ]
    for key, phase_what in (("connect", "of which TCP connect (+ CONNECT -> 200 through the "
                                        "proxy)"),
                            ("tls_handshake", "of which TLS handshake"),
                            ("request", "of which GET -> whole answer")):
        dp, pp = e["phases_ms"]["direct"][key], e["phases_ms"]["proxied"][key]
        rows.append(f"| {phase_what}, p50 / p99 | {dp['p50']:.2f} / {dp['p99']:.2f} ms | "
                    f"{pp['p50']:.2f} / {pp['p99']:.2f} ms | "
                    f"{pp['p50'] - dp['p50']:+.2f} / {pp['p99'] - dp['p99']:+.2f} ms | | |")
    r, c = e["requests"], e["egress_connections_counted"]
    rows += [
        f"| requests that succeeded (timed and untimed, after the warm-up exec) | "
        f"{r['direct']['succeeded']}/{r['direct']['made']} | "
        f"{r['proxied']['succeeded']}/{r['proxied']['made']} | | all | "
        f"{verdict(e['all_succeeded'])} |",
        f"| `{METRIC}` of the allowlist workspace, rise: allowed / refused | | "
        f"{c['allowed']:.0f} / {c['refused']:.0f} | | = {r['proxied']['made']} proxied "
        f"requests / 0 | {verdict(e['counted_exactly'])} |",
    ]
    return rows


def egress_table(e: dict[str, Any]) -> str:
    sizes = e["sizes"]
    lines = [
        "## Egress proxy: added latency",
        "",
        "HTTPS requests from inside two workspace containers to one server on the host "
        f"({e['server']}, its own process; {e['tls']}; an ECDSA P-256 certificate, verified "
        "against the benchmark's own CA), each on a "
        "new connection: direct from an `open` workspace, and through the egress proxy "
        "(`CONNECT`, then TLS through the tunnel) from an `allowlist` workspace whose list "
        f"names the server. {sizes['rounds']} rounds of {sizes['per_round']} requests per "
        "side (one `wsctl exec` each, alternating which goes first), after a warm-up exec "
        f"of {sizes['warmup']}; each exec's first {sizes['exec_warmup']} requests untimed. "
        "Timed in the container. Added = proxied percentile - direct percentile.",
        "",
        "| measure | direct (open) | through the egress proxy (allowlist) | added | goal | |",
        "|---|---|---|---|---|---|",
        *egress_rows(e),
    ]
    c = e["egress_connections_counted"]
    calls = ", ".join(f"{k} {v:.0f}" for k, v in e["docker_calls_in_window"].items())
    sql = ", ".join(f"{k} {v:.0f}" for k, v in e["sql_statements_in_window"].items())
    lines += ["", f"The open workspace's connections counted by the proxy in the window: "
              f"{c['direct_side']:.0f} (it connects directly). In the window the controller "
              f"made these Docker calls: {calls or '-'}; and sent these SQL statements, by "
              f"origin: {sql or '-'} (the execs' and the heartbeats' work included, the "
              f"scrapes' left out; {e['requests']['proxied']['made']} proxied connections, "
              f"{e['sizes']['rounds'] * 2} execs). Egress goal overall: "
              f"{verdict(e['goal_met'])}."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the server's process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the egress benchmark's HTTPS server")
    parser.add_argument("--serve", nargs=4, metavar=("HOST", "PORT", "CERT", "KEY"),
                        required=True)
    args = parser.parse_args(argv)
    host, port, cert, key = args.serve
    asyncio.run(serve(host, int(port), Path(cert), Path(key)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
