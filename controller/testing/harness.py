"""A harness for end-to-end tests and benchmarks: a real `wsctl run` process, real
Docker, embedded PostgreSQL, and the project's fake LLM, all on this machine.

The controller runs as a subprocess (so it can be SIGKILLed) with its own data
dir, its own controller instance label and its own Docker network, so it never
touches a user's workspaces. The fake LLM runs in a thread of the test process,
bound to that network's gateway so containers reach it as host.docker.internal.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from controller.app.cli import main as wsctl_main
from controller.app.client import Client
from controller.chaos.process import RunProcess
from controller.chaos.process import free_port as free_port
from controller.testing.fake_llm import FakeLLM

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
FAST_FLAGS = ("--heartbeat-seconds", "1", "--resync-seconds", "300")
"""Test defaults: 1 s heartbeats (TTL 3 s); resync far away so events must drive."""


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str,
             interval: float = 0.1) -> T:
    """Poll `predicate` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # a transient error is a "not yet", reported if final
            last = exc
        if last and not isinstance(last, Exception):
            found: T = last
            return found
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


class FakeLLMThread:
    """The fake Anthropic-compatible API, served from a background event loop."""

    def __init__(self, host: str, api_key: str, prefix: str = "") -> None:
        self.host = host
        self.port = free_port(host)
        self.llm = FakeLLM(api_key=api_key, prefix=prefix)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="fake-llm")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(self.llm.app(), access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, self.host, self.port).start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def start(self) -> FakeLLMThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake LLM did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@dataclass
class ControllerProcess(RunProcess):
    """One `wsctl run` subprocess; logs go to files the secret scan reads."""

    flags: tuple[str, ...] = FAST_FLAGS
    verbose: bool = True
    repo: Path = REPO
    """The checkout whose `controller` package runs (benchmarks compare two versions)."""

    @property
    def server(self) -> str:
        return self.listen

    def start(self, extra_env: dict[str, str] | None = None) -> ControllerProcess:
        log_file = self.spawn((*self.flags, *(["--verbose"] if self.verbose else [])),
                              {**os.environ, **self.env, **(extra_env or {})}, cwd=self.repo)
        wait_for(self._ready, 60, f"controller ready (log {log_file})", interval=0.2)
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"controller exited {self.proc.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(f"http://{self.server}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.signal_and_wait(sig)

    def log(self) -> str:
        return self.log_text()

    def client(self) -> Client:
        return Client.from_environment(self.server, self.data_dir)

    def cli(self, *args: str) -> tuple[int, str, str]:
        """Run `wsctl ARGS` in-process against this controller; (exit code, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = wsctl_main([*args, "--server", self.server, "--data-dir",
                                   str(self.data_dir)])
            except SystemExit as exc:
                code = int(exc.code or 0)
        return code, out.getvalue(), err.getvalue()

    def get(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.client().request("GET", f"/api/v1/workspaces/{name}")
        return result

    def describe(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.client().request("GET",
                                                       f"/api/v1/workspaces/{name}/describe")
        return result

    def apply(self, *objects: dict[str, Any]) -> None:
        self.client().request("POST", "/api/v1/workspaces", {"items": list(objects)})


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


def phase(obj: dict[str, Any]) -> str:
    return str((obj.get("status") or {}).get("phase", "Pending"))


def post_json(url: str, body: Any, token: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def new_dir(prefix: str) -> Path:
    # Outside pytest's basetemp: embedded postgres runs as another user when we are root.
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def kill(proc: ControllerProcess) -> None:
    proc.stop(signal.SIGKILL)
