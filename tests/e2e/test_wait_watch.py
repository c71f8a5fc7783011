"""`wsctl wait` and `wsctl get -w` against a real `wsctl run` (issue 17): both read
the controller's watch stream, so `wait` returns when the condition is written, not
at the next poll; a timeout and a missing workspace are one line and exit 1."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from controller.testing.harness import ControllerProcess, FakeLLMThread, condition
from tests.e2e.test_exec_cp import REPO, wsctl
from tests.e2e.test_lifecycle import online, workspace

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.e2e]


def spawn(controller: ControllerProcess, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "controller", *args, "--server", controller.server,
         "--data-dir", str(controller.data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def stream(controller: ControllerProcess, *args: str) -> subprocess.Popen[bytes]:
    """A watching command whose output is read a line at a time (unbuffered: select()
    on its pipe says when a line is there)."""
    return subprocess.Popen(
        [sys.executable, "-m", "controller", *args, "--server", controller.server,
         "--data-dir", str(controller.data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0, cwd=REPO)


def read_until(proc: subprocess.Popen[bytes], wanted: Callable[[str], bool],
               timeout: float, what: str) -> list[str]:
    """The lines `proc` prints up to the first `wanted` one; a failure (not a hang)
    when none comes within `timeout` or the output ends."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            pytest.fail(f"no {what} within {timeout:g}s; printed: {lines}")
        line = proc.stdout.readline().decode()
        if not line:
            pytest.fail(f"the output ended before {what}; printed: {lines}; "
                        f"stderr: {proc.stderr.read().decode() if proc.stderr else ''}")
        lines.append(line)
        if wanted(line):
            return lines


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
    watching = stream(controller, "get", "wt-c", "-w")
    try:
        controller.apply(workspace("wt-c", fake_llm.port))
        lines = read_until(watching, lambda line: line.split()[:2] == ["wt-c", "Online"], 90,
                           "row showing wt-c Online")
        assert lines[0].split()[:3] == ["NAME", "PHASE", "READY"]
        assert len(lines) >= 3  # the header, a first row, the change to Online
    finally:
        watching.terminate()
        watching.wait(10)


def test_events_list_and_watch(controller: ControllerProcess, fake_llm: FakeLLMThread,
                               cleanup: list[str]) -> None:
    """`wsctl events -w` prints the events as the controller records them (a restart's
    Recreating arrives on the open stream); `wsctl events NAME` lists them newest last."""
    cleanup.append("wt-e")
    controller.apply(workspace("wt-e", fake_llm.port))
    online(controller, "wt-e")
    watching = stream(controller, "events", "-w")
    try:
        (header,) = read_until(watching, lambda line: True, 30, "header")
        assert header.split()[:4] == ["LAST", "SEEN", "TYPE", "REASON"], header
        done = wsctl(controller, "restart", "wt-e")
        assert done.returncode == 0, done.stderr
        # on the open stream within a moment: the watch is woken by the store's write
        # (its quiet-time BOOKMARK every 15 s does not look again)
        read_until(watching, lambda line: "workspace/wt-e" in line and "Recreating" in line,
                   10, "Recreating event of the restart")
    finally:
        watching.terminate()
        watching.wait(10)
    listed = wsctl(controller, "events", "wt-e")
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.decode().splitlines()
    reasons = [line.split()[2] for line in rows[1:]]
    assert reasons[0] == "Created" and "Recreating" in reasons, rows  # oldest first
    assert reasons.index("Recreating") > reasons.index("Online")
    assert all("workspace/wt-e" in line for line in rows[1:])
    warnings = wsctl(controller, "events", "wt-e", "--types", "Warning", "-o", "json")
    assert warnings.returncode == 0, warnings.stderr
    assert all(e["type"] == "Warning" for e in json.loads(warnings.stdout)["items"])


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
    # kubectl's -o jsonpath: a list, a range with literals, a filter, one object
    jsonpath = "jsonpath={.items[*].metadata.name}"
    assert names("-l", "team", "--sort-by", ".metadata.name", "-o", jsonpath) == [
        "wt-x", "wt-y"]
    out = wsctl(controller, "get", "-l", "team", "--sort-by", ".metadata.labels.team", "-o",
                'jsonpath={range .items[*]}{.metadata.name}{"\\t"}'
                '{.metadata.labels.team}{"\\n"}{end}')
    assert out.stdout.decode() == "wt-y\ta\nwt-x\tb\n", out.stderr
    out = wsctl(controller, "get", "-o",
                'jsonpath={.items[?(@.metadata.labels.gpu=="yes")].metadata.name}')
    assert out.stdout.decode() == "wt-x", out.stderr
    out = wsctl(controller, "get", "wt-y", "-o", "jsonpath={.metadata.labels}")
    assert out.stdout.decode() == '{"team":"a"}', out.stderr
    out = wsctl(controller, "get", "-o", "jsonpath={.items[")
    assert out.returncode == 2 and b"jsonpath: unclosed" in out.stderr

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
