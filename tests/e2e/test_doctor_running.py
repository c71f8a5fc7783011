"""`wsctl doctor` and `wsctl run` beside a real running controller: the doctor counts
the controller's own ports as healthy and reaches its real registry from a
container; a second `wsctl run` on the same data dir refuses in one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from controller.testing.harness import ControllerProcess
from tests.e2e.conftest import NETWORK

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.e2e]


def wsctl(controller: ControllerProcess, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller", command, "--data-dir", str(controller.data_dir),
         "--listen", controller.server,
         "--registry-listen", f"{controller.gateway}:{controller.registry_port}",
         "--egress-port", str(controller.egress_port), "--network", NETWORK],
        capture_output=True, text=True, timeout=120, cwd=controller.repo,
        env={**os.environ, **controller.env})


def test_doctor_counts_the_running_controller_as_healthy(controller: ControllerProcess) -> None:
    assert controller.proc is not None
    pid = controller.proc.pid
    result = wsctl(controller, "doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert (f"ok   api port: {controller.server} is served by the running wsctl controller of "
            f"{controller.data_dir} (pid {pid})") in lines
    assert (f"ok   registry port: {controller.gateway}:{controller.registry_port} is served by "
            f"the running wsctl controller of {controller.data_dir} (pid {pid})") in lines
    assert (f"ok   egress port: {controller.gateway}:{controller.egress_port} is served by "
            f"the running wsctl controller of {controller.data_dir} (pid {pid})") in lines
    assert (f"ok   registry from a container: a container on network {NETWORK} reached "
            f"host.docker.internal:{controller.registry_port} ({controller.gateway}, the running "
            "controller)") in lines
    assert f"ok   admin token: {controller.data_dir}/admin.token is private" in lines


def test_a_second_run_on_the_same_data_dir_refuses_in_one_line(
        controller: ControllerProcess) -> None:
    assert controller.proc is not None
    result = wsctl(controller, "run")
    assert result.returncode == 1
    assert result.stderr == (
        f"error: api port: {controller.server} is in use by the wsctl controller already "
        f"running on {controller.data_dir} (pid {controller.proc.pid}); fix: use that one, stop "
        "it, or pass --listen HOST:PORT and another --data-dir\n")
    assert controller.proc.poll() is None and controller._ready()  # the running one is untouched
