"""`wsctl wait` and `wsctl get -w` against a real `wsctl run` (issue 17): both read
the controller's watch stream, so `wait` returns when the condition is written, not
at the next poll; a timeout and a missing workspace are one line and exit 1."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from controller.testing.harness import ControllerProcess, FakeLLMThread, condition, wait_for
from tests.e2e.test_exec_cp import REPO, wsctl
from tests.e2e.test_lifecycle import online, workspace

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.e2e]


def spawn(controller: ControllerProcess, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "controller", *args, "--server", controller.server,
         "--data-dir", str(controller.data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def test_wait_returns_when_ready_is_written(controller: ControllerProcess,
                                            fake_llm: FakeLLMThread,
                                            cleanup: list[str]) -> None:
    cleanup.append("wt-a")
    controller.apply(workspace("wt-a", fake_llm.port))
    waiting = spawn(controller, "wait", "wt-a", "--for=condition=Ready", "--timeout", "90s")
    out, err = waiting.communicate(timeout=120)
    returned = time.time()
    assert waiting.returncode == 0, err
    assert out == "workspace/wt-a condition met\n"
    ready = condition(controller.get("wt-a"), "Ready")
    assert ready["status"] == "True"
    written = datetime.fromisoformat(ready["lastTransitionTime"]).timestamp()
    # event-driven: back within a moment of the status write (a poll would not be)
    assert returned - written < 2.0, (returned - written)

    # already met: at once
    done = wsctl(controller, "wait", "wt-a", "--for=phase=Online", "--timeout", "10s")
    assert done.returncode == 0 and done.stdout == b"workspace/wt-a condition met\n"


def test_wait_for_delete_and_the_failures(controller: ControllerProcess,
                                          fake_llm: FakeLLMThread,
                                          cleanup: list[str]) -> None:
    cleanup.append("wt-b")
    controller.apply(workspace("wt-b", fake_llm.port))
    online(controller, "wt-b")
    started = time.monotonic()
    done = wsctl(controller, "wait", "wt-b", "--for=phase=Suspended", "--timeout", "2s")
    assert done.returncode == 1 and time.monotonic() - started < 10
    assert done.stderr.decode().startswith(
        "error: timed out after 2s waiting for --for=phase=Suspended; last: wt-b: phase "
        "Online, Ready=True"), done.stderr
    done = wsctl(controller, "wait", "no-such", "--for=condition=Ready", "--timeout", "5s")
    assert done.returncode == 1
    assert done.stderr.decode().strip() == \
        "error: workspace(s) no-such not found in namespace default"
    done = wsctl(controller, "wait", "wt-b", "--for=ready", "--timeout", "5s")
    assert done.returncode == 2 and b"--for=ready: expected condition=NAME" in done.stderr

    waiting = spawn(controller, "wait", "wt-b", "--for=delete", "--timeout", "60s")
    code, _, err = controller.cli("delete", "wt-b")
    assert code == 0, err
    out, err = waiting.communicate(timeout=90)
    assert waiting.returncode == 0, err
    assert out == "workspace/wt-b deleted\n"


def test_get_watch_prints_a_row_per_change(controller: ControllerProcess,
                                          fake_llm: FakeLLMThread,
                                          cleanup: list[str]) -> None:
    cleanup.append("wt-c")
    watching = spawn(controller, "get", "wt-c", "-w")
    try:
        assert watching.stdout is not None
        controller.apply(workspace("wt-c", fake_llm.port))
        lines: list[str] = []

        def online_row() -> bool:
            line = watching.stdout.readline() if watching.stdout else ""
            lines.append(line)
            return line.split()[:2] == ["wt-c", "Online"]
        wait_for(online_row, 90, "a row showing wt-c Online")
        assert lines[0].split()[:3] == ["NAME", "PHASE", "READY"]
        assert len(lines) >= 3  # the header, a first row, the change to Online
    finally:
        watching.terminate()
        watching.wait(10)


def test_selectors_names_sorting_namespaces_and_delete_from_a_file(
        controller: ControllerProcess, fake_llm: FakeLLMThread, cleanup: list[str],
        tmp_path: Path) -> None:
    cleanup.extend(["wt-x", "wt-y"])
    objects = [workspace("wt-y", fake_llm.port), workspace("wt-x", fake_llm.port)]
    objects[0]["metadata"]["labels"] = {"team": "a"}
    objects[1]["metadata"]["labels"] = {"team": "b", "gpu": "yes"}
    manifest = tmp_path / "two.yaml"
    manifest.write_text(yaml.safe_dump_all(objects))
    done = wsctl(controller, "apply", "-f", str(manifest))
    assert done.returncode == 0, done.stderr

    def names(*args: str) -> list[str]:
        out = wsctl(controller, "get", *args)
        assert out.returncode == 0, out.stderr
        return out.stdout.decode().split()

    assert names("-l", "team=a", "-o", "name") == ["workspace/wt-y"]
    assert names("-l", "gpu,team!=a", "-o", "name") == ["workspace/wt-x"]
    assert names("-l", "team=zzz", "-o", "name") == []
    sorted_names = [n for n in names("--sort-by", ".metadata.name", "-o", "name")
                    if n.startswith("workspace/wt-")]
    assert sorted_names == sorted(sorted_names)
    table = wsctl(controller, "get", "-A", "-l", "team").stdout.decode().splitlines()
    assert table[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert sorted(line.split()[:2][1] for line in table[1:]) == ["wt-x", "wt-y"]
    assert all(line.split()[0] == "default" for line in table[1:])

    done = wsctl(controller, "delete", "-f", str(manifest))
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == ["workspace/wt-y deleting",
                                                 "workspace/wt-x deleting"]
    done = wsctl(controller, "wait", "wt-x", "wt-y", "--for=delete", "--timeout", "60s")
    assert done.returncode == 0, done.stderr


def test_diff_says_what_an_apply_would_do_and_dry_run_changes_nothing(
        controller: ControllerProcess, fake_llm: FakeLLMThread, cleanup: list[str],
        tmp_path: Path) -> None:
    cleanup.append("wt-d")
    obj = workspace("wt-d", fake_llm.port, env={"LOG_LEVEL": "info"})
    obj["metadata"]["labels"] = {"team": "a"}
    manifest = tmp_path / "d.yaml"

    def write(o: dict[str, object]) -> None:
        manifest.write_text(yaml.safe_dump(o))

    write(obj)
    done = wsctl(controller, "diff", "-f", str(manifest))
    assert done.returncode == 1
    assert done.stdout.decode() == "workspace/wt-d created: a container is created\n"
    assert wsctl(controller, "apply", "-f", str(manifest)).returncode == 0
    before = online(controller, "wt-d")
    done = wsctl(controller, "diff", "-f", str(manifest))
    assert (done.returncode, done.stdout.decode()) == (
        0, "workspace/wt-d unchanged: the container stays\n")

    obj["metadata"]["labels"] = {"team": "b"}  # a label: no new container
    write(obj)
    done = wsctl(controller, "diff", "-f", str(manifest))
    assert done.returncode == 1
    assert done.stdout.decode().splitlines() == [
        "workspace/wt-d configured: the container stays",
        "  metadata.labels.team: 'a' -> 'b'"]

    obj["spec"]["env"] = [{"name": "LOG_LEVEL", "value": "debug"}]  # env: a new one
    write(obj)
    done = wsctl(controller, "diff", "-f", str(manifest))
    assert done.returncode == 1
    assert done.stdout.decode().splitlines()[0] == (
        "workspace/wt-d configured: the container is recreated (env LOG_LEVEL changed)")
    done = wsctl(controller, "apply", "-f", str(manifest), "--dry-run=server")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == "workspace/wt-d configured (server dry run)\n"
    after = controller.get("wt-d")  # nothing changed
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["status"]["containerID"] == before["status"]["containerID"]
    assert after["metadata"].get("labels") == {"team": "a"}
