"""schemathesis against the admin API's /openapi.json: no 5xx, no schema violation.

The admin API runs on 127.0.0.1 over a real PostgreSQL store (no driver, so an
applied workspace only becomes a row: no containers are made). Bounded: a fixed
number of cases per operation, a fixed seed, a time budget.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from controller.adapters.postgres import Store
from controller.api.a2a import A2AProxy
from controller.api.admin import MAX_BODY, AdminApi, admin_auth, json_errors
from controller.testing.harness import free_port, wait_for

pytestmark = pytest.mark.postgres

TOKEN = "fuzz-admin-token-7d1e0c"
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance")


class AdminServer:
    """The admin app in a thread with its own event loop (the store's pool lives there)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.port = free_port("127.0.0.1")
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported by the fixture
            self.error = exc
            self.ready.set()

    async def _serve(self) -> None:
        store = await Store.connect(self.dsn)

        async def no_agent(workspace_id: str) -> tuple[str, int] | None:
            return None

        async def no_logs(workspace_id: str, tail: int) -> str | None:
            return None

        async def metrics() -> str:
            return "# HELP wsctl_workspaces Declared workspaces.\n"

        proxy = A2AProxy(store, no_agent, timeout_seconds=5)
        api = AdminApi(store, proxy, no_logs, lambda: True, metrics)
        app = web.Application(middlewares=[json_errors, admin_auth(TOKEN)],
                              client_max_size=MAX_BODY)
        app.add_routes(api.routes())
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self.stop = asyncio.Event()
        self.ready.set()
        await self.stop.wait()
        await runner.cleanup()
        await proxy.close()
        await store.close()

    def start(self) -> AdminServer:
        self.thread.start()
        self.ready.wait(30)
        if self.error is not None:
            raise self.error
        return self

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)


@pytest.fixture
def admin_server(fresh_dsn: str) -> Iterator[AdminServer]:
    server = AdminServer(fresh_dsn).start()
    yield server
    server.close()


def test_openapi_document_is_served_behind_the_token(admin_server: AdminServer) -> None:
    url = f"http://127.0.0.1:{admin_server.port}/openapi.json"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        document = json.loads(response.read())
    assert document["openapi"].startswith("3.1")
    assert "/api/v1/workspaces/{name}/a2a" in document["paths"]
    spec = document["components"]["schemas"]["WorkspaceSpec"]
    assert "startupTimeoutSeconds" in spec["properties"]
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url, timeout=10)
    assert info.value.code == 401


def test_schemathesis_finds_no_server_error_or_schema_violation(
        admin_server: AdminServer, tmp_path: Path) -> None:
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert binary, "schemathesis is a dev dependency: pip install -e '.[dev]'"
    url = f"http://127.0.0.1:{admin_server.port}/openapi.json"
    wait_for(lambda: urllib.request.urlopen(
        urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"}),
        timeout=2).status == 200, 10, "admin API up")
    result = subprocess.run(
        [binary, "run", url, "-H", f"Authorization: Bearer {TOKEN}", "--checks", CHECKS,
         "--max-examples", "10", "--seed", "1", "--workers", "1", "--request-timeout", "10",
         "--max-time", "60", "--generation-database", "none", "--no-color"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    (tmp_path / "schemathesis.txt").write_text(result.stdout + result.stderr)
    failures = result.stdout.find("FAILURES")
    report = (result.stdout[failures:failures + 8000] if failures >= 0
              else result.stdout[-4000:]) + result.stderr[-2000:]
    assert result.returncode == 0, report
    assert "passed" in result.stdout.lower(), report
