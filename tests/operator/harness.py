"""The operator under test: `KubernetesController` (the `wsctl run --kubernetes`
composition root) in a thread with its own event loop, against the emulator.

A thread, not the test's loop: when kopf stops it cancels every task created in
its loop after it started, which must not include the test's own.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from controller.app.runtime_k8s import KubernetesController
from controller.app.wiring import RunOptions
from controller.drivers.operator import OperatorOptions
from controller.testing.harness import condition as condition
from controller.testing.harness import free_port as free_port
from controller.testing.harness import new_dir as new_dir
from controller.testing.harness import phase as phase
from controller.testing.harness import post_json as post_json
from controller.testing.harness import remove_dir as remove_dir
from controller.testing.harness import wait_for as wait_for
from tests.e2e.dockerutil import container_env as container_env

T = TypeVar("T")
log = logging.getLogger("tests.operator")
WORKSPACES = "wsctl.dev/v1alpha1"


class OperatorThread:
    """One operator process-equivalent; `start()` and `stop()` may be repeated."""

    def __init__(self, *, kube_url: str, data_dir: Path, cache_dir: Path, network: str,
                 instance: str, gateway: str, resync_seconds: float = 30.0,
                 peering: tuple[str, int] | None = None, database_url: str | None = None,
                 registry_port: int | None = None) -> None:
        """`peering`: (peering object name, priority); None runs standalone.
        `database_url`: the store's PostgreSQL (`DATABASE_URL`); None: the embedded
        one of `data_dir`. `registry_port`: None picks a free one; replicas on one
        node share theirs (SO_REUSEPORT), as docs/kubernetes.md says."""
        self.peering = peering
        self.database_url = database_url
        self.kube_url = kube_url
        self.data_dir = data_dir
        self.cache_dir = cache_dir
        self.network = network
        self.instance = instance
        self.gateway = gateway
        self.resync_seconds = resync_seconds
        self.registry_port = registry_port or free_port(gateway)
        self.listen_port = free_port("127.0.0.1")  # /metrics, /healthz, /readyz
        self.controller: KubernetesController | None = None
        self.error: BaseException | None = None
        self.starts = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()

    @property
    def registry(self) -> str:
        return f"http://{self.gateway}:{self.registry_port}"

    @property
    def http(self) -> str:
        """The operator's own listener (`wsctl run --kubernetes --listen`)."""
        return f"http://127.0.0.1:{self.listen_port}"

    def start(self, timeout: float = 60.0) -> OperatorThread:
        self._ready.clear()
        self.error = None
        self.starts += 1
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"operator-{self.starts}")
        self._thread.start()
        if not self._ready.wait(timeout) or self.error is not None:
            self.stop()
            raise AssertionError(f"operator did not become ready: {self.error!r}")
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            log.exception("operator thread failed")
            self.error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        ready = asyncio.Event()
        options = RunOptions(
            data_dir=self.data_dir, cache_dir=self.cache_dir, registry_host=self.gateway,
            registry_port=self.registry_port, database_url=self.database_url,
            network=self.network, instance=self.instance,
            listen_host="127.0.0.1", listen_port=self.listen_port,
            heartbeat_seconds=1, build_image=False, environ={})
        peering_name, priority = self.peering or ("", 0)
        operator = OperatorOptions(server=self.kube_url, standalone=self.peering is None,
                                   peering_name=peering_name, priority=priority,
                                   resync_seconds=self.resync_seconds,
                                   watch_server_timeout=60, watch_client_timeout=90,
                                   ultimate_exit_timeout=None)
        self.controller = KubernetesController(options, operator, log.info)
        serving = asyncio.create_task(self.controller.serve(self._stop, ready))
        readiness = asyncio.create_task(ready.wait())
        await asyncio.wait({serving, readiness}, return_when=asyncio.FIRST_COMPLETED)
        if readiness.done():
            self._ready.set()
        else:
            readiness.cancel()
        await serving

    def stop(self) -> None:
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None or not thread.is_alive():
            return
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        if thread.is_alive():
            raise AssertionError("operator did not stop within 60s")


def secret(name: str, values: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "type": "Opaque",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}}


def workspace(name: str, *, secret_name: str = "llm",  # noqa: S107 (a name)
              env: dict[str, str] | None = None,
              startup: int = 60, llm: dict[str, Any] | None = None,
              **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": WORKSPACES, "kind": "Workspace", "metadata": {"name": name},
        "spec": {"model": "MiniMax-M3",
                 "llm": {"provider": "minimax",
                         "apiKey": {"secretRef": {"name": secret_name, "key": "api-key"}},
                         **(llm or {})},
                 "startupTimeoutSeconds": startup,
                 "env": [{"name": k, "value": v} for k, v in (env or {}).items()], **spec},
    }


def call(proc: OperatorThread, awaitable: Awaitable[T], timeout: float = 10.0) -> T:
    """Await something on the operator's event loop (e.g. a store query); its result."""
    async def wrapped() -> T:
        return await awaitable

    assert proc._loop is not None
    return asyncio.run_coroutine_threadsafe(wrapped(), proc._loop).result(timeout)
