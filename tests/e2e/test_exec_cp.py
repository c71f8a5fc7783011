"""Issue 14 item 2: `wsctl exec`, `wsctl cp` and `wsctl logs -f` through a real
`wsctl run` into a real workspace container.

The CLI runs as its own process (`python -m controller`), as a user runs it: its
exit code, its stdout and stderr apart, a pty for `exec -it`. A copy of a folder
with a 50 MiB random file goes both ways byte for byte, while the controller's
peak RSS is watched: it must not grow by the file's size (streamed, not held).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from controller.adapters.database import open_store
from controller.testing.harness import ControllerProcess, FakeLLMThread
from tests.e2e.conftest import PLANTED_KEY
from tests.e2e.test_lifecycle import online, workspace

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.e2e]

NAME = "xc"
BIG = 50 * 2**20
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ws(controller: ControllerProcess, fake_llm: FakeLLMThread) -> Iterator[str]:
    controller.apply(workspace(NAME, fake_llm.port))
    online(controller, NAME, timeout=90)
    yield NAME
    controller.cli("delete", NAME, "--purge")


def wsctl(controller: ControllerProcess, command: str, *args: str, stdin: bytes | None = None,
          timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """`wsctl COMMAND --server ... --data-dir ... ARGS` as a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "controller", command, "--server", controller.server,
         "--data-dir", str(controller.data_dir), *args],
        input=stdin if stdin is not None else b"", capture_output=True, timeout=timeout,
        cwd=REPO)


def sh(controller: ControllerProcess, script: str) -> str:
    done = wsctl(controller, "exec", NAME, "--", "sh", "-c", script)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()


def token(controller: ControllerProcess) -> str:
    return (controller.data_dir / "admin.token").read_text().strip()


def activity(controller: ControllerProcess, method: str) -> list[dict[str, Any]]:
    rows = controller.client().request("GET", f"/api/v1/workspaces/{NAME}/activity",
                                       query={"limit": "200"})["items"]
    return [r for r in rows if r.get("method") == method]


def stored_activity(controller: ControllerProcess, method: str) -> list[dict[str, Any]]:
    """The rows as stored, read from the controller's database: the API redacts
    again on the way out, which would hide a row stored unredacted."""
    async def rows() -> list[dict[str, Any]]:
        async with open_store(controller.data_dir, os.environ.get("DATABASE_URL"),
                              keep_running=True) as store:
            return [dataclasses.asdict(r) for r in await store.list_activity(f"default.{NAME}",
                                                                             200)]
    return [r for r in asyncio.run(rows()) if r["method"] == method]


# ------------------------------------------------------------------ exec


def test_exec_exit_code_passes_through_with_stdout_and_stderr_apart(
        controller: ControllerProcess, ws: str) -> None:
    done = wsctl(controller, "exec", ws, "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert done.returncode == 7, done.stderr
    assert done.stdout == b"out\n"
    assert done.stderr == b"err\n"
    assert wsctl(controller, "exec", ws, "--", "true").returncode == 0


def test_exec_runs_as_the_agent_uid_never_root(controller: ControllerProcess, ws: str) -> None:
    assert sh(controller, "id -u; id -g") == "10001\n10001\n"


def test_exec_streams_stdin(controller: ControllerProcess, ws: str) -> None:
    data = os.urandom(3 * 2**20 + 17)
    done = wsctl(controller, "exec", "-i", ws, "--", "sha256sum", stdin=data)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
    # Without -i the command's stdin is closed at once: cat ends, with nothing.
    done = wsctl(controller, "exec", ws, "--", "cat", stdin=b"not passed on")
    assert (done.returncode, done.stdout) == (0, b"")


def test_exec_into_a_closed_pipe_ends_quietly(controller: ControllerProcess, ws: str) -> None:
    """`wsctl exec ... | head`: wsctl ends as a shell's writer does (141), no traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller", "exec", "--server", controller.server,
         "--data-dir", str(controller.data_dir), ws, "--", "sh", "-c",
         "yes | head -c 50000000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(10) == b"y\n" * 5
    proc.stdout.close()
    assert proc.wait(timeout=60) == 141
    assert proc.stderr.read() == b""


def test_exec_of_a_missing_program_fails_with_docker_s_exit_code(
        controller: ControllerProcess, ws: str) -> None:
    done = wsctl(controller, "exec", ws, "--", "no-such-program")
    assert done.returncode in (126, 127)
    assert b"no-such-program" in done.stdout + done.stderr


def _winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _read_until(fd: int, marker: bytes, seen: bytearray, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while marker not in seen:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {marker!r} within {timeout}s; output: {bytes(seen)!r}")
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the other side closed
                raise AssertionError(f"pty closed before {marker!r}: {bytes(seen)!r}") from None
            seen += chunk


def test_exec_it_runs_an_interactive_shell_under_a_pty(
        controller: ControllerProcess, ws: str) -> None:
    """A real `wsctl exec -it NAME -- sh` on a pty that is its controlling terminal, as
    in a terminal window: typed lines run (echoed once, by the remote terminal: ours
    is raw), the window's size and its change reach the container, Ctrl-C goes to
    the remote command (not to wsctl), and `exit 3` is wsctl's exit code."""
    argv = [sys.executable, "-m", "controller", "exec", "--server", controller.server,
            "--data-dir", str(controller.data_dir), "-it", ws, "--", "sh"]
    pid, leader = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal
        try:
            os.chdir(REPO)
            os.execv(sys.executable, argv)  # noqa: S606 (our own interpreter)
        finally:
            os._exit(127)
    _winsize(leader, 40, 100)
    seen = bytearray()
    try:
        _read_until(leader, b"$ ", seen)
        os.write(leader, b"stty size; echo typed-$((6*7))\r")
        _read_until(leader, b"typed-42", seen)
        assert b"40 100" in seen, bytes(seen)
        assert seen.count(b"echo typed-") == 1, bytes(seen)  # no local echo: raw mode
        _winsize(leader, 50, 132)  # the kernel sends wsctl SIGWINCH
        time.sleep(0.5)
        os.write(leader, b"stty size; echo done-$((1+1))\r")
        _read_until(leader, b"done-2", seen)
        assert b"50 132" in seen, bytes(seen)
        os.write(leader, b"sleep 60\r")
        time.sleep(1.0)
        os.write(leader, b"\x03")  # Ctrl-C: interrupts the remote sleep, not wsctl
        os.write(leader, b"echo after-$((2+2))\r")
        _read_until(leader, b"after-4", seen, timeout=15)
        os.write(leader, b"echo hi; exit 3\r")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 3, bytes(seen)
        with contextlib.suppress(OSError):
            while chunk := os.read(leader, 4096):
                seen += chunk
        assert b"hi" in seen
    finally:
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            if os.waitpid(pid, os.WNOHANG) == (0, 0):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        os.close(leader)


def _interactive_shells(controller: ControllerProcess) -> int:
    """Processes in the container whose command line is just `sh`."""
    said = sh(controller, 'for p in /proc/[0-9]*; do tr "\\0" " " < $p/cmdline 2>/dev/null; '
                          'echo; done')
    return sum(1 for line in said.splitlines() if line.strip() == "sh")


def test_an_exec_it_whose_client_dies_does_not_leave_its_shell(
        controller: ControllerProcess, ws: str) -> None:
    """Docker keeps an exec's terminal open after its client left: the controller
    hangs up (^C, then ^D), so the shell of a killed `wsctl exec -it` ends."""
    assert _interactive_shells(controller) == 0
    pid, leader = pty.fork()
    if pid == 0:
        try:
            os.chdir(REPO)
            os.execv(sys.executable, [  # noqa: S606 (our own interpreter)
                sys.executable, "-m", "controller", "exec", "--server", controller.server,
                "--data-dir", str(controller.data_dir), "-it", ws, "--", "sh"])
        finally:
            os._exit(127)
    try:
        seen = bytearray()
        _read_until(leader, b"$ ", seen)
        assert _interactive_shells(controller) == 1
        os.write(leader, b"sleep 300\r")
        time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    finally:
        os.close(leader)
    deadline = time.monotonic() + 10
    while _interactive_shells(controller) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _interactive_shells(controller) == 0


def test_exec_t_without_a_terminal_is_an_error(controller: ControllerProcess, ws: str) -> None:
    done = wsctl(controller, "exec", "-t", ws, "--", "true")
    assert done.returncode == 1
    assert b"-t needs a terminal" in done.stderr


def test_exec_is_recorded_in_the_activity_redacted(controller: ControllerProcess,
                                                   ws: str) -> None:
    done = wsctl(controller, "exec", "-i", ws, "--", "sh", "-c",
                 f"cat >/dev/null; echo {PLANTED_KEY} >/dev/null; exit 4", stdin=b"12345")
    assert done.returncode == 4
    rows = stored_activity(controller, "exec")
    row = next(r for r in rows if "exit 4" in str(r["request"]["command"]))
    assert PLANTED_KEY not in json.dumps(row, default=str)
    assert "<redacted:" in row["request"]["command"][2]
    assert row["source"] == "user" and row["status"] == "error"
    assert row["error"] == "exit code 4"
    assert row["response"]["exitCode"] == 4
    assert row["response"]["bytes"] == {"stdin": 5, "stdout": 0, "stderr": 0}
    assert row["request"]["stdin"] is True and row["request"]["tty"] is False


def test_exec_without_a_running_container_is_a_clear_error(
        controller: ControllerProcess, fake_llm: FakeLLMThread) -> None:
    spec = workspace("xc-paused", fake_llm.port)
    spec["spec"]["paused"] = True
    controller.apply(spec)
    try:
        done = wsctl(controller, "exec", "xc-paused", "--", "true")
        assert done.returncode == 1
        assert b"has no running container" in done.stderr, done.stderr
        done = wsctl(controller, "exec", "nobody-here", "--", "true")
        assert done.returncode == 1 and b"not found" in done.stderr
    finally:
        controller.cli("delete", "xc-paused", "--purge")


# ------------------------------------------------------------------ cp


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


class PeakRss:
    """The controller's peak RSS over a block: VmHWM, reset before it (clear_refs 5)
    when the kernel lets us, and sampled every 20 ms in case it does not."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = 0
        self.peak = 0

    def _status(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {field} for {self.pid}")

    @contextlib.contextmanager
    def watch(self) -> Iterator[None]:
        import threading

        with contextlib.suppress(OSError):
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self.before = self._status("VmRSS")
        self.peak = self.before
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.02):
                self.peak = max(self.peak, self._status("VmRSS"))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            yield
        finally:
            stop.set()
            sampler.join()
            self.peak = max(self.peak, self._status("VmHWM"))

    @property
    def growth(self) -> int:
        return self.peak - self.before


def test_cp_round_trips_a_folder_with_a_50_mib_file_streaming(
        controller: ControllerProcess, ws: str, tmp_path: Path) -> None:
    source = tmp_path / "data"
    (source / "sub").mkdir(parents=True)
    (source / "big.bin").write_bytes(os.urandom(BIG))
    (source / "sub" / "note.txt").write_text("a small file\n")
    (source / "empty").write_bytes(b"")
    expected = _tree_hashes(source)
    assert controller.proc is not None
    rss = PeakRss(controller.proc.pid)

    started = time.monotonic()
    with rss.watch():
        up = wsctl(controller, "cp", str(source), f"{ws}:/workspace/")
    upload_seconds = time.monotonic() - started
    assert up.returncode == 0, up.stderr
    assert b"copied" in up.stderr
    upload_growth = rss.growth
    # In the workspace: the same bytes, as the agent's files.
    said = sh(controller, "cd /workspace/data && sha256sum big.bin sub/note.txt empty && "
                          "stat -c '%u:%g' big.bin sub")
    hashes = {name: digest for digest, name in (line.split() for line in said.splitlines()[:3])}
    assert hashes == expected
    assert said.splitlines()[3:] == ["10001:10001", "10001:10001"]

    back = tmp_path / "back"
    started = time.monotonic()
    with rss.watch():
        down = wsctl(controller, "cp", f"{ws}:/workspace/data", str(back))
    download_seconds = time.monotonic() - started
    assert down.returncode == 0, down.stderr
    assert _tree_hashes(back) == expected
    print(f"\ncp 50 MiB: upload {upload_seconds:.2f}s (controller peak RSS +"
          f"{upload_growth / 2**20:.1f} MiB), download {download_seconds:.2f}s (+"
          f"{rss.growth / 2**20:.1f} MiB)")
    for growth in (upload_growth, rss.growth):
        assert growth < 20 * 2**20, f"the controller grew {growth / 2**20:.1f} MiB: buffered?"

    rows = activity(controller, "cp")
    upload = next(r for r in rows if r["request"] == {"direction": "upload",
                                                      "path": "/workspace"})
    download = next(r for r in rows if r["request"] == {"direction": "download",
                                                        "path": "/workspace/data"})
    for row in (upload, download):
        assert row["status"] == "ok" and row["response"]["exitCode"] == 0, json.dumps(row)
        assert row["response"]["bytes"]["tar"] > BIG


def test_cp_files_follow_docker_cp(controller: ControllerProcess, ws: str,
                                   tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("hello\n")
    # Onto a new name, then into an existing folder, then into the tmpfs /tmp.
    assert wsctl(controller, "cp", str(note), f"{ws}:/workspace/renamed.txt").returncode == 0
    sh(controller, "mkdir -p /workspace/folder")
    assert wsctl(controller, "cp", "-q", str(note), f"{ws}:/workspace/folder").returncode == 0
    assert wsctl(controller, "cp", str(note), f"{ws}:/tmp/").returncode == 0
    assert sh(controller, "cat /workspace/renamed.txt /workspace/folder/note.txt "
                          "/tmp/note.txt") == "hello\n" * 3
    # Out: onto a new local name, into a local folder, and as a tar on stdout.
    assert wsctl(controller, "cp", f"{ws}:/tmp/note.txt", str(tmp_path / "out.txt")
                 ).returncode == 0
    assert (tmp_path / "out.txt").read_text() == "hello\n"
    (tmp_path / "into").mkdir()
    assert wsctl(controller, "cp", f"{ws}:/workspace/renamed.txt", str(tmp_path / "into")
                 ).returncode == 0
    assert (tmp_path / "into" / "renamed.txt").read_text() == "hello\n"
    # A folder named with a trailing slash is that folder, under its own name.
    assert wsctl(controller, "cp", f"{ws}:/workspace/folder/", str(tmp_path / "into")
                 ).returncode == 0
    assert (tmp_path / "into" / "folder" / "note.txt").read_text() == "hello\n"
    done = wsctl(controller, "cp", f"{ws}:/workspace/renamed.txt", "-")
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        member = tar.extractfile("./renamed.txt")
        assert member is not None and member.read() == b"hello\n"


def test_cp_refusals_are_one_line(controller: ControllerProcess, ws: str,
                                  tmp_path: Path) -> None:
    note = tmp_path / "x"
    note.write_text("x")
    cases = [
        (("cp", str(note), f"{ws}:/configs/"), b"token volume"),
        (("cp", str(note), f"{ws}:/configs/.auth_token"), b"token volume"),
        (("cp", f"{ws}:/workspace/no-such-file", str(tmp_path / "y")), b"No such file"),
        (("cp", str(note), f"{ws}:/no/such/folder/x"), b"is not a folder"),
        (("cp", str(note), f"{ws}:workspace"), b"is absolute"),
        (("cp", f"{ws}:/", str(tmp_path / "root")), b"whole root"),
        (("cp", str(note), str(tmp_path / "z")), b"one side"),
        (("cp", str(note), f"{ws}:/etc/"), b"exited"),  # read-only root: tar says so
    ]
    for args, said in cases:
        done = wsctl(controller, *args)
        assert done.returncode == 1, (args, done)
        assert said in done.stderr, (args, done.stderr)
        assert done.stderr.count(b"\n") == 1, done.stderr


# ------------------------------------------------------------------ logs -f


def test_logs_follow_streams_redacted_until_the_container_stops(
        controller: ControllerProcess, ws: str, docker_client: docker.DockerClient) -> None:
    follow = subprocess.Popen(
        [sys.executable, "-m", "controller", "logs", "--server", controller.server,
         "--data-dir", str(controller.data_dir), "-f", "--tail", "1", ws],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        time.sleep(1.0)
        # The agent's PID 1 writes its logs to its stdout; so can the agent's uid.
        sh(controller, f"echo follow-marker {PLANTED_KEY} > /proc/1/fd/1")
        assert follow.stdout is not None
        seen = b""
        deadline = time.monotonic() + 30
        while b"follow-marker" not in seen and time.monotonic() < deadline:
            seen += os.read(follow.stdout.fileno(), 65536)
        line = next(x for x in seen.splitlines() if b"follow-marker" in x)
        assert PLANTED_KEY.encode() not in line and b"<redacted:" in line
        # The container stops (the controller will replace it): the follow ends, 0.
        container = controller.get(ws)["status"]["containerID"]
        docker_client.api.stop(container, timeout=1)
        assert follow.wait(timeout=30) == 0
    finally:
        if follow.poll() is None:
            follow.kill()
        online(controller, ws, timeout=90)


def _ctrl_c_reaches_it() -> None:
    # As from a terminal: a test run started in the background (`make test &`)
    # ignores SIGINT, and Python keeps an inherited ignore, so Ctrl-C would never
    # arrive (seen: this test hung when CI was started that way).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_logs_follow_ends_on_ctrl_c_with_0(controller: ControllerProcess, ws: str) -> None:
    follow = subprocess.Popen(
        [sys.executable, "-m", "controller", "logs", "--server", controller.server,
         "--data-dir", str(controller.data_dir), "-f", ws],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
        preexec_fn=_ctrl_c_reaches_it)  # no threads start before the exec
    try:
        time.sleep(2.0)
        follow.send_signal(signal.SIGINT)
        assert follow.wait(timeout=10) == 0
        assert follow.stderr is not None and follow.stderr.read() == b""
    finally:
        if follow.poll() is None:
            follow.kill()


# ------------------------------------------------------------------ the API


def _status(controller: ControllerProcess, method: str, path: str,
            with_token: bool = True, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://{controller.server}{path}", method=method,
                                     data=b"" if method == "PUT" else None,
                                     headers=headers or {})
    if with_token:
        request.add_header("Authorization", f"Bearer {token(controller)}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_every_new_route_needs_the_admin_token(controller: ControllerProcess, ws: str) -> None:
    base = f"/api/v1/workspaces/{ws}"
    routes = [("GET", f"{base}/exec?command=id"), ("GET", f"{base}/files?path=/workspace"),
              ("PUT", f"{base}/files?path=/workspace"), ("GET", f"{base}/files/stat?path=/"),
              ("GET", f"{base}/logs?follow=true")]
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    for method, path in routes:
        assert _status(controller, method, path, with_token=False)[0] == 401, path
        assert _status(controller, method, path, with_token=False, headers=upgrade)[0] == 401
    # With the token, what is not an exec is a clean 4xx, never a 5xx.
    status, body = _status(controller, "GET", f"{base}/exec?command=id")
    assert status == 400 and body["class"] == "websocket_required"
    assert _status(controller, "GET", f"{base}/exec")[0] == 400  # no command
    assert _status(controller, "GET", "/api/v1/workspaces/nobody/exec?command=id")[0] == 404
    status, body = _status(controller, "GET", f"{base}/files/stat?path=/workspace")
    assert status == 200 and json.loads(body) == {"path": "/workspace", "type": "directory"}


def test_the_schema_documents_the_new_routes(controller: ControllerProcess) -> None:
    document = controller.client().request("GET", "/openapi.json")
    paths = document["paths"]
    assert set(paths["/api/v1/workspaces/{name}/exec"]["get"]["responses"]) >= {
        "101", "400", "401", "404", "409"}
    assert {"get", "put"} <= set(paths["/api/v1/workspaces/{name}/files"])
    assert "/api/v1/workspaces/{name}/files/stat" in paths
    follow = [p["name"] for p in paths["/api/v1/workspaces/{name}/logs"]["get"]["parameters"]]
    assert "follow" in follow


def test_nothing_was_logged_as_an_error(controller: ControllerProcess) -> None:
    """Streams that end, break or are refused are answers, not controller errors (the
    session's controller is shared: only what names these routes or modules counts)."""
    mine = ("/exec", "/files", "follow", "api/exec.py", "api/files.py", "api/streams.py",
            "docker_streams.py", "Error handling request")
    lines = controller.log().splitlines()
    bad = [i for i, line in enumerate(lines)
           if any(m in line for m in mine) and (" ERROR " in line or "File \"" in line
                                                or "Error handling request" in line)]
    assert bad == [], "\n".join(lines[max(bad[0] - 20, 0):bad[0] + 5]) if bad else ""
