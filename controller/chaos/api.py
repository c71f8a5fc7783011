"""The harness's view of the controller: its admin API and agent registry, over HTTP.

The server URL and admin token are found like the CLI finds them
(`controller.app.client.Client.from_environment`); calls are async (aiohttp) so
the workload, the probes and the faults run side by side. Only loopback and
the workspace network's gateway are ever dialled.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from controller.app.client import Client
from controller.core import a2a
from controller.core.errors import WsctlError

Answer = tuple[int, Any]
"""(HTTP status, decoded JSON body or None); status 0 when nothing answered."""
RATE_LIMITED_ATTEMPTS = 120
RATE_LIMITED_WAIT_CAP = 5.0


class ApiError(WsctlError):
    """A control call (apply, list, describe) failed; the message says which and why."""


class AdminClient:
    def __init__(self, server: str, admin_token: str, namespace: str) -> None:
        self.server = server.rstrip("/")
        self.namespace = namespace
        self._headers = {"Authorization": f"Bearer {admin_token}"}
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_client(cls, client: Client, namespace: str) -> AdminClient:
        return cls(client.server, client.token, namespace)

    @property
    def admin_token(self) -> str:
        return self._headers["Authorization"].split(" ", 1)[1]

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers, connector=aiohttp.TCPConnector(limit=64))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(self, method: str, path: str, body: Any = None, *,
                   query: dict[str, str] | None = None, seconds: float = 30.0) -> Answer:
        status, decoded, _ = await self._request(method, path, body, query, seconds)
        return status, decoded

    async def _request(self, method: str, path: str, body: Any,
                       query: dict[str, str] | None, seconds: float
                       ) -> tuple[int, Any, str | None]:
        """(status, decoded body, Retry-After header); status 0 when nothing answered."""
        try:
            async with self._http().request(
                    method, self.server + path, json=body, params=query,
                    timeout=aiohttp.ClientTimeout(total=seconds)) as resp:
                text = await resp.text()
                try:
                    decoded = await resp.json(content_type=None) if text else None
                except ValueError:
                    decoded = text
                return resp.status, decoded, resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError, OSError):
            return 0, None, None

    async def _ok(self, what: str, method: str, path: str, body: Any = None,
                  query: dict[str, str] | None = None) -> Any:
        status, answer = await self.call(method, path, body, query=query)
        if status != 200:
            raise ApiError(f"{what}: HTTP {status or 'no answer'} {answer!r}"[:500])
        return answer

    # ------------------------------------------------------------ control

    async def ready(self) -> bool:
        status, _ = await self.call("GET", "/readyz", seconds=3)
        return status == 200

    async def apply(self, objects: list[dict[str, Any]]) -> Any:
        return await self._ok("apply", "POST", "/api/v1/workspaces", {"items": objects})

    async def delete(self, name: str) -> int:
        """Request the deletion; the HTTP status (202: deleting, 404: no such workspace)."""
        status, _ = await self.call("DELETE", f"/api/v1/workspaces/{name}",
                                    query={"namespace": self.namespace})
        return status

    async def exists(self, name: str) -> bool | None:
        """Whether the workspace exists (a deleting one does); None if no clear answer."""
        status, _ = await self.call("GET", f"/api/v1/workspaces/{name}",
                                    query={"namespace": self.namespace})
        return True if status == 200 else False if status == 404 else None

    async def suspend(self, name: str) -> str:
        """Suspend through the admin API: "suspending" or "already suspended"."""
        answer = await self._ok(f"suspend {name}", "POST", f"/api/v1/workspaces/{name}/suspend",
                                query={"namespace": self.namespace})
        return str(answer.get("result")) if isinstance(answer, dict) else str(answer)

    async def workspaces(self, all_namespaces: bool = False) -> list[dict[str, Any]]:
        query = None if all_namespaces else {"namespace": self.namespace}
        answer = await self._ok("list workspaces", "GET", "/api/v1/workspaces", query=query)
        items: list[dict[str, Any]] = answer["items"]
        return items

    async def describe(self, name: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self._ok(
            f"describe {name}", "GET", f"/api/v1/workspaces/{name}/describe",
            query={"namespace": self.namespace})
        return answer

    async def activity(self, name: str, limit: int = 1000) -> list[dict[str, Any]]:
        answer = await self._ok(f"activity {name}", "GET", f"/api/v1/workspaces/{name}/activity",
                                query={"namespace": self.namespace, "limit": str(limit)})
        items: list[dict[str, Any]] = answer["items"]
        return items

    # ------------------------------------------------------------ traffic

    async def message_send(self, name: str, request_id: str, text: str,
                           seconds: float) -> Answer:
        status, answer, _ = await self.message_send_outcome(name, request_id, text, seconds)
        return status, answer

    async def message_send_outcome(self, name: str, request_id: str, text: str,
                                   seconds: float) -> tuple[int, Any, str | None]:
        """`message_send` with the Retry-After header of the answer."""
        return await self._request("POST", f"/api/v1/workspaces/{name}/a2a",
                                   a2a.message_send(text, message_id=request_id),
                                   {"namespace": self.namespace}, seconds)

    async def heartbeat(self, registry: str, workspace_id: str, token: str) -> Answer:
        """A healthy heartbeat presented with `token`, as the agent would send it.

        The token probe presents every replaced token from one address: the
        registry rate-limits failed authentications per source, so a 429 is
        waited out (its Retry-After) and the same token presented again.
        """
        body = {"workspace_id": workspace_id, "status": "healthy", "active_tasks": 0}
        for _ in range(RATE_LIMITED_ATTEMPTS):
            try:
                async with self._http().post(
                        registry.rstrip("/") + "/registry/heartbeat", json=body,
                        headers={"Authorization": f"Bearer {token}"},
                        timeout=aiohttp.ClientTimeout(total=10)) as resp:
                    answer = resp.status, await resp.json(content_type=None)
                    retry_after = resp.headers.get("Retry-After", "")
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
                return 0, None
            if answer[0] != 429:
                return answer
            await asyncio.sleep(min(float(retry_after) if retry_after.isdigit() else 1.0,
                                    RATE_LIMITED_WAIT_CAP))
        return answer
