"""`wsctl doctor` and `wsctl run`'s start-up checks, as a user runs them: the real
CLI process against the real engine, real ports, a real container connecting
back, real PostgreSQL. Each failing check is made to fail for real (a taken
port, a group-readable key file, a firewall rule, a database that does not
answer) and must be one line naming the problem and the fix, exit 1, no
traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from controller.adapters.docker_engine import ensure_network
from controller.adapters.images import LOCAL_BASE, base_availability
from controller.app.doctor import CheckResult, Doctor, DoctorOptions
from controller.chaos.process import free_port as free_port_on
from tests.integration.conftest import new_data_dir

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

REPO = Path(__file__).resolve().parents[2]
NETWORK = "wsctl-test-doctor"
CHECKS = 13


def free_port(host: str = "127.0.0.1") -> int:
    return free_port_on(host)


@pytest.fixture(scope="module")
def gateway(docker_client: docker.DockerClient) -> Iterator[str]:
    yield ensure_network(docker_client.api, NETWORK)
    try:
        docker_client.api.remove_network(NETWORK)
    except docker.errors.DockerException as exc:
        print(f"could not remove {NETWORK}: {exc}")


@pytest.fixture
def where(gateway: str) -> Iterator[dict[str, object]]:
    """A fresh data dir and free ports: nothing here is a user's controller's."""
    data_dir = new_data_dir()
    yield {"data_dir": data_dir, "api": free_port(), "registry": free_port(gateway),
           "egress": free_port(gateway), "gateway": gateway}
    subprocess.run(["rm", "-rf", str(data_dir)], check=False)


def wsctl(command: str, where: dict[str, object], *extra: str,
          env: dict[str, str] | None = None, timeout: float = 180) -> tuple[int, str, str]:
    args = [sys.executable, "-m", "controller", command, "--data-dir", str(where["data_dir"]),
            "--listen", f"127.0.0.1:{where['api']}",
            "--registry-listen", f"{where['gateway']}:{where['registry']}",
            "--egress-port", str(where["egress"]), "--network", NETWORK, *extra]
    base = {k: v for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "WSCTL_SECRET_KEY", "WSCTL_DEBUG")}
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                            env={**base, **(env or {})})
    return result.returncode, result.stdout, result.stderr


def failed_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("FAIL ")]


def assert_one_failure(code: int, out: str, err: str, check: str) -> str:
    """Exactly `check` failed: exit 1, one FAIL line with a fix, no traceback."""
    assert code == 1, out + err
    assert "Traceback" not in out + err
    (line,) = failed_lines(out)
    assert line.startswith(f"FAIL {check}: ")
    assert out.splitlines()[-1] == f"1 of {CHECKS} checks failed: {check}"
    return line


def test_a_healthy_machine_passes_every_check(where: dict[str, object], agent_image: str,
                                              claude_code_image: str) -> None:
    code, out, err = wsctl("doctor", where)
    assert code == 0, out + err
    lines = out.splitlines()
    assert len(lines) == CHECKS + 1 and lines[-1] == f"all {CHECKS} checks ok"
    assert all(line.startswith("ok   ") for line in lines[:-1]), out
    assert (f"ok   registry from a container: a container on network {NETWORK} reached "
            f"host.docker.internal:{where['registry']} ({where['gateway']}, this doctor's "
            "listener)") in lines
    assert any(line.startswith("ok   postgresql: embedded PostgreSQL ") for line in lines)


def test_no_engine(where: dict[str, object], tmp_path: Path) -> None:
    sock = tmp_path / "nothing.sock"
    code, out, err = wsctl("doctor", where, env={"DOCKER_HOST": f"unix://{sock}"})
    assert code == 1 and "Traceback" not in out + err
    assert failed_lines(out) == [
        f"FAIL docker engine: no Docker engine answers at unix://{sock} (no socket there); "
        "fix: scripts/bootstrap docker (make docker), or point DOCKER_HOST at an engine that "
        "runs"]
    assert "skip registry from a container: needs the docker engine" in out


def test_api_port_taken(where: dict[str, object]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", int(str(where["api"]))))
        holder.listen(1)
        line = assert_one_failure(*wsctl("doctor", where), "api port")
    assert line.startswith(f"FAIL api port: 127.0.0.1:{where['api']} is in use by pid "
                           f"{os.getpid()} (")
    assert line.endswith("; fix: stop that process, or pass --listen HOST:PORT")


def test_registry_port_taken(where: dict[str, object]) -> None:
    with socket.socket() as holder:
        holder.bind((str(where["gateway"]), int(str(where["registry"]))))
        holder.listen(1)
        code, out, err = wsctl("doctor", where)
    assert code == 1 and "Traceback" not in out + err
    assert failed_lines(out) == [
        f"FAIL registry port: {where['gateway']}:{where['registry']} is in use by pid "
        f"{os.getpid()} ({Path('/proc/self/comm').read_text().strip()}); fix: stop that process, "
        "or pass --registry-listen HOST:PORT"]


def test_egress_port_taken(where: dict[str, object]) -> None:
    with socket.socket() as holder:
        holder.bind((str(where["gateway"]), int(str(where["egress"]))))
        holder.listen(1)
        line = assert_one_failure(*wsctl("doctor", where), "egress port")
    assert line.endswith("; fix: stop that process, or pass --egress-port PORT")
    assert f"{where['gateway']}:{where['egress']} is in use" in line


def test_group_readable_secret_key(where: dict[str, object]) -> None:
    key = Path(str(where["data_dir"])) / "secret.key"
    key.write_text("A" * 43 + "=\n")
    key.chmod(0o640)
    line = assert_one_failure(*wsctl("doctor", where), "secret key")
    assert f"key file {key} has mode 0640: it must not be accessible by group or others" in line
    assert f"chmod 600 {key}" in line


def test_malformed_secret_key_in_the_environment(where: dict[str, object]) -> None:
    line = assert_one_failure(*wsctl("doctor", where, env={"WSCTL_SECRET_KEY": "not-a-key"}),
                              "secret key")
    assert "WSCTL_SECRET_KEY is malformed" in line and "openssl rand -base64 32" in line


def test_group_readable_admin_token(where: dict[str, object]) -> None:
    token = Path(str(where["data_dir"])) / "admin.token"
    token.write_text("t0ken\n")
    token.chmod(0o644)
    line = assert_one_failure(*wsctl("doctor", where), "admin token")
    assert f"admin token file {token} has mode 0644" in line and f"chmod 600 {token}" in line
    assert "t0ken" not in line


def test_data_dir_under_a_file(where: dict[str, object]) -> None:
    blocker = Path(str(where["data_dir"])) / "file"
    blocker.write_text("")
    moved = {**where, "data_dir": blocker / "wsctl"}
    code, out, err = wsctl("doctor", moved)
    assert code == 1 and "Traceback" not in out + err
    assert (f"FAIL data dir: {blocker} is not a folder; fix: pass --data-dir (or set "
            "WSCTL_DATA_DIR) to a folder this user can write") in failed_lines(out)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a read-only folder needs root")
def test_data_dir_read_only(where: dict[str, object]) -> None:
    mount = Path(str(where["data_dir"])) / "ro"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(mount)], check=True)
    try:
        code, out, err = wsctl("doctor", {**where, "data_dir": mount})
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    assert code == 1 and "Traceback" not in out + err
    assert f"FAIL data dir: cannot write in {mount}: Read-only file system" in out


def test_database_url_that_does_not_answer(where: dict[str, object]) -> None:
    port = free_port()
    url = f"postgresql://wsctl:hunter2-secret@127.0.0.1:{port}/wsctl"
    line = assert_one_failure(*wsctl("doctor", where, env={"DATABASE_URL": url}), "postgresql")
    assert line.startswith(f"FAIL postgresql: cannot connect to the database at "
                           f"postgresql://wsctl@127.0.0.1:{port}/wsctl: ")
    assert "make DATABASE_URL point at a PostgreSQL that answers" in line
    assert "hunter2" not in line


@pytest.mark.skipif(os.geteuid() != 0, reason="a firewall rule needs root")
def test_registry_unreachable_from_a_container(where: dict[str, object], agent_image: str,
                                               docker_client: docker.DockerClient) -> None:
    """A host firewall that drops the workspace bridge's traffic to the registry port
    is the classic 'agents never register' machine; the doctor finds it."""
    bridge = "br-" + docker_client.api.inspect_network(NETWORK)["Id"][:12]
    rule = ["INPUT", "-i", bridge, "-p", "tcp", "--dport", str(where["registry"]), "-j", "DROP"]
    subprocess.run(["iptables", "-I", *rule], check=True)
    try:
        code, out, err = wsctl("doctor", where)
    finally:
        subprocess.run(["iptables", "-D", *rule], check=True)
    line = assert_one_failure(code, out, err, "registry from a container")
    assert (f"cannot reach host.docker.internal:{where['registry']} ({where['gateway']}): "
            "timed out") in line
    assert f"let the host accept TCP {where['registry']} from the {NETWORK} network" in line


# ------------------------------------------------------- checks run in-process


def image_line(where: dict[str, object], check: str, **options: Any) -> str:
    """The line of one image check of a doctor with these options."""
    doctor = Doctor(DoctorOptions(data_dir=Path(str(where["data_dir"])), **options))
    assert doctor.engine().ok
    result: CheckResult = getattr(doctor, check)()
    return result.line()


def stale_image_line(docker_client: docker.DockerClient, where: dict[str, object],
                     check: str, option: str) -> tuple[str, str]:
    """(tag, line): the check run on an image without wsctl's source label."""
    stale = f"wsctl-test/stale-{check}:1"
    docker_client.images.get(LOCAL_BASE).tag(stale)
    try:
        return stale, image_line(where, check, **{option: stale})
    finally:
        docker_client.images.remove(stale)


def test_agent_image_missing_or_stale(docker_client: docker.DockerClient, agent_image: str,
                                      where: dict[str, object]) -> None:
    assert image_line(where, "agent_image", image=agent_image).startswith(
        f"ok   agent image: {agent_image} is current")
    assert image_line(where, "agent_image", image="wsctl-test/absent:1") == (
        "FAIL agent image: wsctl-test/absent:1 is not built yet; fix: wsctl images build "
        "(make images); `wsctl run` builds a missing one")
    stale, line = stale_image_line(docker_client, where, "agent_image", "image")
    assert line.startswith(f"FAIL agent image: {stale} (")
    assert "was built from other agent sources than these; fix: wsctl images build" in line


def test_claude_code_image_absent_is_skipped_and_stale_fails(
        docker_client: docker.DockerClient, where: dict[str, object]) -> None:
    """Optional: no image is a skip; one from older sources is a failure (nothing else
    rebuilds it). The current one is `ok` in the healthy-machine test."""
    assert image_line(where, "claude_code_image", claude_code_image="wsctl-test/absent:1") == (
        "skip claude-code image: wsctl-test/absent:1 is not built yet (only workspaces on "
        "it need it: wsctl images build --agent claude-code)")
    stale, line = stale_image_line(docker_client, where, "claude_code_image",
                                   "claude_code_image")
    assert line.startswith(f"FAIL claude-code image: {stale} (")
    assert line.endswith("was built from other agent sources than these; "
                         "fix: wsctl images build --agent claude-code")


def test_no_base_image_and_no_debootstrap(docker_client: docker.DockerClient) -> None:
    available, detail = base_availability(
        docker_client, public="wsctl-test/no-such-base:1", local="wsctl-test/no-local-base:1",
        debootstrap=lambda: None)
    assert not available
    assert detail.startswith("no base image, no registry gives wsctl-test/no-such-base:1 (")
    assert detail.endswith("and debootstrap is not installed")
    available, detail = base_availability(
        docker_client, public="wsctl-test/no-such-base:1", local="wsctl-test/no-local-base:1",
        debootstrap=lambda: "/usr/sbin/debootstrap")
    assert available == (os.geteuid() == 0)


# ------------------------------------------------------------ wsctl run, refusing


def test_run_with_the_api_port_taken_is_one_line(where: dict[str, object]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", int(str(where["api"]))))
        holder.listen(1)
        code, _out, err = wsctl("run", where, "--no-build", timeout=60)
    assert code == 1
    assert err == (f"error: api port: 127.0.0.1:{where['api']} is in use by pid {os.getpid()} "
                   f"({Path('/proc/self/comm').read_text().strip()}); fix: stop that process, or "
                   "pass --listen HOST:PORT\n")
    assert not (Path(str(where["data_dir"])) / "postgres").exists()  # nothing was started


def test_run_with_no_engine_is_one_line(where: dict[str, object], tmp_path: Path) -> None:
    sock = tmp_path / "stopped.sock"
    code, _out, err = wsctl("run", where, "--no-build", env={"DOCKER_HOST": f"unix://{sock}"},
                           timeout=60)
    assert code == 1
    assert err == (f"error: docker engine: no Docker engine answers at unix://{sock} (no socket "
                   "there); fix: scripts/bootstrap docker (make docker), or point DOCKER_HOST at "
                   "an engine that runs\n")


def test_run_with_a_group_readable_admin_token_is_one_line(where: dict[str, object]) -> None:
    token = Path(str(where["data_dir"])) / "admin.token"
    token.write_text("t0ken\n")
    token.chmod(0o640)
    code, _out, err = wsctl("run", where, "--no-build", timeout=60)
    assert code == 1 and "Traceback" not in err and "t0ken" not in err
    assert err.startswith(f"error: admin token: admin token file {token} has mode 0640")


# ------------------------------------------- other commands' expected failures


def test_image_build_failure_is_one_line(where: dict[str, object], tmp_path: Path,
                                         agent_image: str) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo 'broken step' && exit 3\n")
    result = subprocess.run(
        [sys.executable, "-m", "controller", "images", "build", "--tag",
         "wsctl-test/broken-build:1", "--cache-dir", str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=300, cwd=REPO,
        env={**os.environ, "WSCTL_AGENT_DOCKERFILE": str(dockerfile)})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("error: docker build failed: ") and "returned a non-zero code: 3" in last


def test_database_unreachable_is_one_line_and_debug_shows_why(where: dict[str, object]) -> None:
    port = free_port()
    env = {"DATABASE_URL": f"postgresql://wsctl:hunter2-secret@127.0.0.1:{port}/wsctl"}
    args = [sys.executable, "-m", "controller", "secret", "list", "--data-dir",
            str(where["data_dir"])]
    plain = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=REPO,
                           env={**os.environ, **env})
    assert plain.returncode == 1
    assert plain.stderr.startswith(
        f"error: cannot connect to the database at postgresql://wsctl@127.0.0.1:{port}/wsctl: ")
    assert plain.stderr.rstrip().endswith(
        "check DATABASE_URL, or unset it to use the embedded PostgreSQL")
    assert plain.stderr.count("\n") == 1 and "hunter2" not in plain.stderr
    debug = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=REPO,
                           env={**os.environ, **env, "WSCTL_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.splitlines()[-1] == plain.stderr.rstrip()
