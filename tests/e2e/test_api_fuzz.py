"""schemathesis against a real `wsctl run` process: its real composition root, real
Docker, real PostgreSQL and a running workspace (so the A2A, logs and restart
routes reach a real agent and container), over every route of its own
/openapi.json, with and without the admin token: no 5xx, no schema violation,
and without the token every protected route answers 401.

The controller is one of its own (data dir, network, instance label): what the
fuzzer applies and deletes never touches the other e2e tests' workspaces.
Bounded: a fixed seed, a few examples per operation, a time budget.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker.errors import DockerException

from controller.adapters.docker_engine import EngineError, ensure_network, remove_networks
from controller.testing.harness import ControllerProcess, FakeLLMThread, new_dir, remove_dir
from tests.e2e.conftest import PLANTED_KEY
from tests.e2e.test_lifecycle import online, workspace

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.e2e]

NETWORK = f"wsctl-fuzz-{os.getpid()}"
INSTANCE = f"fuzz{os.getpid()}"
REPO = Path(__file__).resolve().parents[2]
# not_a_controller_error (schemathesis_hooks.py) in place of not_a_server_error: the
# same rule as the chaos run's `answers` (a 502 that blames the agent, e.g. one the
# fuzzer just applied and that is still starting, is not the controller failing).
CHECKS = ("not_a_controller_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance")


@pytest.fixture(scope="module")
def fuzzed(agent_image: str, docker_client: docker.DockerClient,
           fake_llm: FakeLLMThread) -> Iterator[ControllerProcess]:
    gateway = ensure_network(docker_client.api, NETWORK, {"wsctl.dev/managed-by": "wsctl-e2e"})
    data_dir = new_dir("wsctl-fuzz-")
    proc = ControllerProcess(data_dir=data_dir, network=NETWORK, instance=INSTANCE,
                             gateway=gateway,
                             env={"WSCTL_SECRET_E2E_LLM_API_KEY": PLANTED_KEY})
    try:
        proc.start()
        # The fake LLM listens on the e2e network's gateway; this network's agents
        # cannot reach it, so the running workspace answers A2A with an LLM error:
        # still a real agent, a real container and a real round trip.
        proc.apply(workspace("fuzz", fake_llm.port))
        online(proc, "fuzz", timeout=90)
        yield proc
    finally:
        proc.stop()
        for container in docker_client.containers.list(
                all=True, filters={"label": f"wsctl.dev/instance={INSTANCE}"}):
            with contextlib.suppress(DockerException):
                container.remove(force=True)
        with contextlib.suppress(EngineError):
            remove_networks(docker_client.api, NETWORK)
        remove_dir(data_dir)


def token_of(proc: ControllerProcess) -> str:
    return (proc.data_dir / "admin.token").read_text().strip()


def schema(proc: ControllerProcess, tmp_path: Path) -> Path:
    request = urllib.request.Request(f"http://{proc.server}/openapi.json",
                                     headers={"Authorization": f"Bearer {token_of(proc)}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        document = json.loads(response.read())
    assert document["openapi"].startswith("3.1")
    assert "/api/v1/workspaces/{name}/a2a" in document["paths"]
    assert "startupTimeoutSeconds" in document["components"]["schemas"]["WorkspaceSpec"][
        "properties"]
    # `logs?follow=true` answers as long as the container runs: a request timeout, not
    # a finding (tests/e2e/test_exec_cp.py drives it).
    logs = document["paths"]["/api/v1/workspaces/{name}/logs"]["get"]
    logs["parameters"] = [p for p in logs["parameters"] if p["name"] != "follow"]
    path = tmp_path / "openapi.json"
    path.write_text(json.dumps(document))
    return path


def schemathesis(spec: Path, proc: ControllerProcess, tmp_path: Path, *extra: str
                 ) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert binary, "schemathesis is a dev dependency: pip install -e '.[dev]'"
    result = subprocess.run(
        [binary, "run", str(spec), "--url", f"http://{proc.server}", "--seed", "1",
         "--workers", "1", "--request-timeout", "20", "--generation-database", "none",
         "--no-color", *extra],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks",
             "PYTHONPATH": str(REPO)})
    (tmp_path / "schemathesis.txt").write_text(result.stdout + result.stderr)
    return result


def report(result: subprocess.CompletedProcess[str]) -> str:
    failures = result.stdout.find("FAILURES")
    return (result.stdout[failures:failures + 8000] if failures >= 0
            else result.stdout[-4000:]) + result.stderr[-2000:]


def test_the_schema_is_served_behind_the_token(fuzzed: ControllerProcess) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://{fuzzed.server}/openapi.json", timeout=10)
    assert info.value.code == 401


def test_with_the_token_no_server_error_and_no_schema_violation(
        fuzzed: ControllerProcess, tmp_path: Path) -> None:
    spec = schema(fuzzed, tmp_path)
    result = schemathesis(spec, fuzzed, tmp_path, "-H", f"Authorization: Bearer "
                          f"{token_of(fuzzed)}", "--checks", CHECKS, "--max-examples", "8",
                          "--max-time", "60")
    assert result.returncode == 0, report(result)
    assert "passed" in result.stdout.lower(), report(result)
    assert fuzzed.proc is not None and fuzzed.proc.poll() is None  # it is still serving
    # Nothing logged as an error (aiohttp logs a malformed request's parse error with
    # its traceback at DEBUG, and this controller runs --verbose: that is a 400, fine).
    log = fuzzed.log()
    errors = [m.start() for m in re.finditer(r"^\S+ \S+ (?:ERROR|CRITICAL) ", log, re.M)]
    assert errors == [], log[errors[0]:errors[0] + 4000] if errors else ""


def test_without_the_token_every_protected_route_is_401(
        fuzzed: ControllerProcess, tmp_path: Path) -> None:
    """Every generated request to a protected route, valid or not, gets 401 (the
    check fails on any other status there), and nothing is a server error."""
    spec = schema(fuzzed, tmp_path)
    document = json.loads(spec.read_text())
    for item in document["paths"].values():  # as a client without the token sees them
        for operation in item.values():
            if operation.get("security") != []:
                operation["responses"] = {"401": operation["responses"]["401"]}
    spec.write_text(json.dumps(document))
    result = schemathesis(spec, fuzzed, tmp_path, "--checks",
                          "not_a_controller_error,status_code_conformance", "--max-examples", "4",
                          "--max-time", "30")
    assert result.returncode == 0, report(result)
    assert "passed" in result.stdout.lower(), report(result)
