"""`wsctl doctor`: is this machine ready to run wsctl? One line per check, with the fix.

Each check really does the thing it reports on: it pings the engine, binds the
ports, starts a throwaway container that connects back to the registry port,
starts (or joins) the embedded PostgreSQL. A check that needs a failed one
(most need the engine) is skipped, saying so.

`preflight()` is the cheap part (no container, no database), which `wsctl run`
makes before it starts, stopping at the first failure: a taken port or a
stopped engine is then one line with the fix, not a traceback half-way through
start-up.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from controller.adapters import hostnet
from controller.app.wiring import ADMIN_TOKEN_FILE, SERVER_FILE
from controller.core import settings as defaults
from controller.core.errors import WsctlError
from controller.core.model import DEFAULT_IMAGE
from controller.core.settings import CLAUDE_CODE_IMAGE

if TYPE_CHECKING:
    from controller.adapters.docker_engine import EngineFacts

Status = Literal["ok", "fail", "skip"]
_MARK: dict[Status, str] = {"ok": "ok  ", "fail": "FAIL", "skip": "skip"}


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "fail"

    def line(self) -> str:
        text = f"{_MARK[self.status]} {self.name}: {self.detail}"
        return text + (f"; fix: {self.fix}" if self.fix and self.status == "fail" else "")


def ok(name: str, detail: str) -> CheckResult:
    return CheckResult(name, "ok", detail)


def fail(name: str, detail: str, fix: str) -> CheckResult:
    return CheckResult(name, "fail", detail, fix)


def skip(name: str, why: str) -> CheckResult:
    return CheckResult(name, "skip", why)


@dataclass
class DoctorOptions:
    data_dir: Path
    listen_host: str = defaults.LISTEN_HOST
    listen_port: int = defaults.API_PORT
    registry_host: str | None = None  # default: the workspace network's gateway
    registry_port: int = defaults.REGISTRY_PORT
    egress_port: int | None = None  # default: the registry port + 1
    network: str = defaults.NETWORK
    image: str = DEFAULT_IMAGE
    claude_code_image: str = CLAUDE_CODE_IMAGE
    database_url: str | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


# ------------------------------------------------------------ pure evaluations


def evaluate_limits(memory: bool, cpu_quota: bool, pids: bool, cgroup: str) -> CheckResult:
    """Workspaces get a memory limit, a CPU quota and a pids limit; the engine
    must enforce all three or a workspace's resources are a fiction."""
    missing = [name for name, have in (("memory", memory), ("CPU quota", cpu_quota),
                                       ("pids", pids)) if not have]
    if missing:
        return fail("resource limits",
                    f"the engine cannot enforce {', '.join(missing)} limits (cgroup v{cgroup})",
                    "enable the missing cgroup controllers (on cgroup v1 boot with "
                    "cgroup_enable=memory swapaccount=1; cgroup v2 has them all) and restart "
                    "dockerd")
    return ok("resource limits", f"memory, CPU quota and pids limits enforced (cgroup v{cgroup})")


# ------------------------------------------------------------ the doctor


class Doctor:
    """The checks, in order; `engine` first because most of the others need it."""

    def __init__(self, options: DoctorOptions) -> None:
        self.options = options
        self.client: Any = None  # docker.DockerClient once the engine answered
        self.gateway: str | None = None
        self._facts: EngineFacts | None = None
        self._controller_pid = _running_controller_pid(options.data_dir)

    # -- engine

    def engine(self) -> CheckResult:
        from controller.adapters.docker_engine import EngineUnavailable, connect, engine_facts

        try:
            self.client = connect(timeout=15)
            facts = engine_facts(self.client)
        except EngineUnavailable as exc:
            return fail("docker engine", str(exc).split("; start")[0],
                        "scripts/bootstrap docker (make docker), or point DOCKER_HOST at an "
                        "engine that runs")
        except Exception as exc:  # the engine answered the ping, then failed
            self.client = None
            return fail("docker engine", f"the engine answered but `docker info` failed: {exc}",
                        "look at the dockerd log (/var/log/wsctl-dockerd.log)")
        self._facts = facts
        return ok("docker engine", f"Docker {facts.version} (API {facts.api_version}) answers at "
                  f"{_engine_address()}")

    def limits(self) -> CheckResult:
        f = self._facts
        if f is None:
            return skip("resource limits", "needs the docker engine")
        return evaluate_limits(f.memory_limit, f.cpu_quota, f.pids_limit, f.cgroup_version)

    # -- images

    def base(self) -> CheckResult:
        if self.client is None:
            return skip("image base", "needs the docker engine")
        from controller.adapters.images import base_availability

        available, detail = base_availability(self.client)
        if available:
            return ok("image base", detail)
        return fail("image base", detail, "scripts/bootstrap debootstrap (make images does), "
                    "or apt-get install debootstrap, or build with --base IMAGE")

    def agent_image(self) -> CheckResult:
        if self.client is None:
            return skip("agent image", "needs the docker engine")
        from controller.adapters.images import agent_image_state

        state, detail = agent_image_state(self.client, self.options.image)
        if state == "current":
            return ok("agent image", detail)
        return fail("agent image", detail,
                    "wsctl images build (make images); `wsctl run` builds a missing one")

    def claude_code_image(self) -> CheckResult:
        """Optional: only workspaces on it need it, and nothing builds it on its own, so
        an image left behind by an older wsctl is worth a failure; no image is not."""
        name = "claude-code image"
        if self.client is None:
            return skip(name, "needs the docker engine")
        from controller.adapters.images import agent_image_state

        state, detail = agent_image_state(self.client, self.options.claude_code_image,
                                          agent="claude-code")
        fix = "wsctl images build --agent claude-code"
        if state == "missing":
            return skip(name, f"{detail} (only workspaces on it need it: {fix})")
        if state == "stale":
            return fail(name, detail, fix)
        return ok(name, detail)

    # -- data dir and its private files

    def data_dir(self) -> CheckResult:
        """The data dir, or the nearest folder it would be made in, takes a new file."""
        path = self.options.data_dir
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        fix = "pass --data-dir (or set WSCTL_DATA_DIR) to a folder this user can write"
        if not existing.is_dir():
            return fail("data dir", f"{existing} is not a folder", fix)
        try:
            with tempfile.TemporaryFile(dir=existing, prefix=".wsctl-doctor-"):
                pass
        except OSError as exc:
            return fail("data dir", f"cannot write in {existing}: {exc.strerror or exc}", fix)
        if existing != path:
            return ok("data dir", f"{path} will be created (in writable {existing})")
        return ok("data dir", f"{path} is writable")

    def secret_key(self) -> CheckResult:
        """$WSCTL_SECRET_KEY well formed, or the key file private and well formed."""
        from controller.adapters.secretbox import KeySource

        source = KeySource.for_data_dir(self.options.data_dir, self.options.environ)
        try:
            box = source.load(create=False)
        except WsctlError as exc:  # the message says what to do (chmod, restore, generate)
            return fail("secret key", str(exc), "")
        if box is None:
            return ok("secret key", f"{source.key_file} does not exist yet (the first "
                      "`wsctl secret set` creates it, mode 0600)")
        return ok("secret key", f"{source.describe()} is private and well formed")

    def admin_token(self) -> CheckResult:
        from controller.adapters.secretbox import read_private_file

        path = self.options.data_dir / ADMIN_TOKEN_FILE
        try:
            text = read_private_file(path, "admin token file")
        except WsctlError as exc:  # the message says what to do
            return fail("admin token", str(exc), "")
        if text is None:
            return ok("admin token", f"{path} does not exist yet (`wsctl run` creates it, "
                      "mode 0600)")
        return ok("admin token", f"{path} is private")

    # -- ports

    def api_port(self, *, controller_may_hold: bool = True) -> CheckResult:
        o = self.options
        return self._port("api port", o.listen_host, o.listen_port, "--listen HOST:PORT",
                          controller_may_hold)

    def registry_port(self, *, controller_may_hold: bool = True) -> CheckResult:
        o = self.options
        host = o.registry_host or self._gateway()
        if host is None:
            return skip("registry port", "needs the docker engine (the registry listens on "
                        "the workspace network's gateway)")
        return self._port("registry port", host, o.registry_port, "--registry-listen HOST:PORT",
                          controller_may_hold)

    def egress_port(self, *, controller_may_hold: bool = True) -> CheckResult:
        o = self.options
        host = o.registry_host or self._gateway()
        port = defaults.egress_port_for(o.registry_port, o.egress_port)
        if host is None:
            return skip("egress port", "needs the docker engine (the egress proxy listens "
                        "on the workspace network's gateway)")
        return self._port("egress port", host, port, "--egress-port PORT",
                          controller_may_hold)

    def _port(self, name: str, host: str, port: int, flag: str,
              controller_may_hold: bool) -> CheckResult:
        busy = hostnet.check_bindable(host, port)
        where = f"{host}:{port}"
        if busy is None:
            return ok(name, f"{where} is free")
        if busy.reason != "in use":
            return fail(name, f"cannot listen on {where}: {busy.reason}", f"pass {flag}")
        if self._controller_pid is not None and busy.pid in (self._controller_pid, None):
            if controller_may_hold:
                return ok(name, f"{where} is served by the running wsctl controller of "
                          f"{self.options.data_dir} (pid {self._controller_pid})")
            return fail(name, f"{where} is in use by the wsctl controller already running on "
                        f"{self.options.data_dir} (pid {self._controller_pid})",
                        f"use that one, stop it, or pass {flag} and another --data-dir")
        return fail(name, f"{where} is in use by {busy.holder()}",
                    f"stop that process, or pass {flag}")

    def _gateway(self) -> str | None:
        if self.gateway is None and self.client is not None:
            from controller.adapters.docker_engine import ensure_network

            try:
                self.gateway = ensure_network(self.client.api, self.options.network)
            except Exception:  # reported by the check that needs it
                return None
        return self.gateway

    # -- the registry, from inside a container

    def registry_round_trip(self) -> CheckResult:
        name = "registry from a container"
        if self.client is None:
            return skip(name, "needs the docker engine")
        gateway = self._gateway()
        if gateway is None:
            return fail(name, f"network {self.options.network} has no usable gateway",
                        f"docker network rm {self.options.network} (wsctl makes it again)")
        image = self._probe_image()
        if image is None:
            return skip(name, "needs an image with python3 (build the agent image first)")
        port = self.options.registry_port
        host = self.options.registry_host or gateway
        busy = hostnet.check_bindable(host, port)
        if busy is not None and (busy.reason != "in use" or self._controller_pid is None):
            return skip(name, f"needs {host}:{port} free, or served by this data dir's controller")
        from controller.adapters.docker_engine import network_bridge, probe_connect_back
        from controller.adapters.host_firewall import FirewallError, HostFirewall

        firewall = HostFirewall(network_bridge(self.client.api, self.options.network))
        with contextlib.ExitStack() as stack:
            # Our own listener when the port is free; else the running controller's.
            accepted = stack.enter_context(_accepting(host, port)) if busy is None else None
            if busy is None:  # the port, as `wsctl run` opens it in the host's fence
                try:
                    firewall.allow(port)
                except FirewallError as exc:
                    return fail(name, str(exc), "run wsctl as root, with iptables installed")
                stack.callback(firewall.disallow, port)
            reached, detail = probe_connect_back(
                self.client, image=image, network=self.options.network, gateway=gateway,
                port=port)
        if reached and (accepted is None or accepted.wait(5)):
            whom = "this doctor's listener" if accepted is not None else "the running controller"
            return ok(name, f"a container on network {self.options.network} reached "
                      f"host.docker.internal:{port} ({gateway}, {whom})")
        return fail(name, f"a container on network {self.options.network} cannot reach "
                    f"host.docker.internal:{port} ({gateway}): {detail}",
                    f"let the host accept TCP {port} from the {self.options.network} network's "
                    "bridge (a firewall INPUT rule), or pass --registry-listen HOST:PORT")

    def _probe_image(self) -> str | None:
        from controller.adapters.images import LOCAL_BASE, PUBLIC_BASE

        for ref in (self.options.image, LOCAL_BASE, PUBLIC_BASE):
            with contextlib.suppress(Exception):
                self.client.images.get(ref)
                return ref
        return None

    # -- the database

    def database(self) -> CheckResult:
        import asyncio

        from controller.adapters.database import probe_database

        url = self.options.database_url
        try:
            detail = asyncio.run(probe_database(self.options.data_dir, url))
        except WsctlError as exc:
            fix = ("make DATABASE_URL point at a PostgreSQL that answers, or unset it to use the "
                   "embedded one") if url else ("look at the server log named above; remove "
                   f"{self.options.data_dir}/postgres only if its data may be lost")
            return fail("postgresql", str(exc), fix)
        return ok("postgresql", detail)

    # -- sets of checks

    def cheap(self, *, controller_may_hold: bool) -> Iterator[CheckResult]:
        """What `wsctl run` checks before it starts (no container, no database)."""
        yield self.engine()
        yield self.limits()
        yield self.data_dir()
        yield self.secret_key()
        yield self.admin_token()
        yield self.api_port(controller_may_hold=controller_may_hold)
        yield self.registry_port(controller_may_hold=controller_may_hold)
        yield self.egress_port(controller_may_hold=controller_may_hold)

    def all(self) -> Iterator[CheckResult]:
        yield from self.cheap(controller_may_hold=True)
        yield self.base()
        yield self.agent_image()
        yield self.claude_code_image()
        yield self.registry_round_trip()
        yield self.database()


def run_doctor(options: DoctorOptions, out: Callable[[str], None]) -> int:
    """Every check, one line each as it finishes; 0 when none failed, else 1."""
    results = []
    for result in Doctor(options).all():
        out(result.line())
        results.append(result)
    failed = [r for r in results if r.status == "fail"]
    if failed:
        out(f"{len(failed)} of {len(results)} checks failed: "
            f"{', '.join(r.name for r in failed)}")
        return 1
    skipped = sum(r.status == "skip" for r in results)
    out(f"all {len(results) - skipped} checks ok" + (f" ({skipped} skipped)" if skipped else ""))
    return 0


def preflight(options: DoctorOptions) -> CheckResult | None:
    """The first failing cheap check, or None: what `wsctl run` asks before starting
    (both modes: Kubernetes mode serves /metrics and the probes on --listen)."""
    doctor = Doctor(options)
    for result in doctor.cheap(controller_may_hold=False):
        if result.status == "fail":
            return result
    return None


# ------------------------------------------------------------ helpers


def _engine_address() -> str:
    from controller.adapters.docker_engine import engine_address

    return engine_address()


def _running_controller_pid(data_dir: Path) -> int | None:
    """The pid in <data-dir>/server.json if that process is alive."""
    try:
        pid = int(json.loads((data_dir / SERVER_FILE).read_text())["pid"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid


@contextlib.contextmanager
def _accepting(host: str, port: int) -> Iterator[threading.Event]:
    """Listen on host:port until the block ends; the event is set by the first accept."""
    accepted = threading.Event()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(8)
    sock.settimeout(0.2)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.close()
            accepted.set()

    stop = threading.Event()
    thread = threading.Thread(target=serve, name="doctor-listener", daemon=True)
    thread.start()
    try:
        yield accepted
    finally:
        stop.set()
        thread.join(2)
        sock.close()
