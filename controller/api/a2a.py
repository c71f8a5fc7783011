"""A2A proxy: POST /api/v1/workspaces/{name}/a2a and restart-context delivery.

The proxy dials only the address Docker published for the workspace's current
container (127.0.0.1:<port>), never a URL an agent claimed, and presents that
container's A2A credential (`Authorization: Bearer`): the agent answers nobody else. Every forwarded
call is appended to the activity log before it is acknowledged; callers that
are not workspaces (`user`, `system:*`, `webhook:*`) are stored with a NULL
source_id and a source_kind.

The agent is untrusted: its answer is read to at most MAX_ANSWER bytes (over it
is 502 `answer_too_large`, recorded), and the request, the answer and any error
are redacted (every secret value the controller knows, agent tokens included)
before they are stored or returned.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, Protocol

import aiohttp

from controller.api._http import BodyError, HttpError, read_capped
from controller.core import redact
from controller.core.a2a import message_send

log = logging.getLogger("wsctl.a2a")

class AgentTarget(NamedTuple):
    host: str
    port: int
    credential: str
    """What the agent of this container checks in `Authorization: Bearer`."""


AgentAddress = Callable[[str], Awaitable[AgentTarget | None]]
"""workspace id -> its running container's published A2A port and credential."""

RESTART_CONTEXT_SOURCE = "system:restart-context"
MAX_ANSWER = 1024 * 1024
"""The most of an agent's answer the proxy reads (1 MiB)."""


class ActivityStore(Protocol):
    def append_activity(self, workspace_id: str, source: str, *,
                              method: str | None = None, request: Any = None,
                              response: Any = None, status: str | None = None,
                              error: str | None = None) -> Awaitable[int]: ...


class ProxyError(HttpError):
    """The A2A round trip failed; the admin API answers it as is."""


class A2AProxy:
    def __init__(self, store: ActivityStore, address: AgentAddress,
                 timeout_seconds: float = 120.0) -> None:
        self.store = store
        self.address = address
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds, connect=5)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def send(self, workspace_id: str, caller: str, payload: dict[str, Any], *,
                   port: int | None = None) -> dict[str, Any]:
        """Forward one JSON-RPC call and log it; the activity row exists before we return.
        `port`: the agent's A2A port when it is not the wsctl agent's (spec.agent.a2aPort)."""
        if payload.get("jsonrpc") != "2.0" or payload.get("method") != "message/send":
            raise ProxyError(400, "invalid_request", "only JSON-RPC 2.0 message/send is proxied")
        target = await self.address(workspace_id)
        if target is None:
            # 409, not 503: the API is fine, the workspace is not in a state to answer.
            raise ProxyError(409, "agent_unavailable", f"{workspace_id} has no running container")
        host, agent_port, credential = target
        port = port or agent_port
        method = str(payload.get("method"))
        request = redact.redact_json(payload)
        try:
            # Never follow a redirect: an agent must not steer the proxy elsewhere (SSRF).
            async with self._client().post(
                    f"http://{host}:{port}/", json=payload, allow_redirects=False,
                    headers={"Authorization": f"Bearer {credential}"}) as resp:
                raw = await read_capped(resp.content, MAX_ANSWER, resp.content_length)
                status = resp.status
            answer = redact.redact_json(json.loads(raw))
        except BodyError:
            await self.store.append_activity(
                workspace_id, caller, method=method, request=request, status="error",
                error=f"answer_too_large: the agent answered over {MAX_ANSWER} bytes")
            raise ProxyError(502, "answer_too_large",
                             f"{workspace_id}: agent answered over {MAX_ANSWER} bytes") from None
        except (TimeoutError, aiohttp.ClientError, ValueError, RecursionError) as exc:
            await self.store.append_activity(workspace_id, caller, method=method,
                                             request=request, status="error",
                                             error=f"agent unreachable: {type(exc).__name__}")
            raise ProxyError(502, "agent_unreachable",
                             f"{workspace_id}: agent did not answer ({type(exc).__name__})"
                             ) from None
        ok = status == 200 and isinstance(answer, dict) and "error" not in answer
        error = None
        if not ok:
            error = str(answer.get("error")) if isinstance(answer, dict) else f"HTTP {status}"
        await self.store.append_activity(workspace_id, caller, method=method, request=request,
                                         response=answer, status="ok" if ok else "error",
                                         error=error)
        if not isinstance(answer, dict):
            raise ProxyError(502, "bad_agent_response", "agent answered a non-object")
        return answer

    async def deliver_restart_context(self, workspace_id: str, generation: int,
                                      message: str, attempts: int = 4) -> None:
        """Tell a recreated agent what happened, as `system:restart-context`, with retries."""
        payload = message_send(message, message_id=f"restart-context-{workspace_id}-{generation}")
        delay = 0.5
        for attempt in range(1, attempts + 1):
            try:
                await self.send(workspace_id, RESTART_CONTEXT_SOURCE, payload)
                log.info("%s: restart context delivered (generation %d)", workspace_id,
                         generation)
                return
            except ProxyError as exc:
                if exc.cls == "agent_unavailable":
                    # The container died since it registered: nobody to tell, and its
                    # death is reconciled on its own (not a failed recreate).
                    log.info("%s: restart context for generation %d dropped: %s",
                             workspace_id, generation, exc)
                    return
                log.warning("%s: restart context attempt %d/%d failed: %s", workspace_id,
                            attempt, attempts, exc)
                if attempt == attempts:
                    raise
                await asyncio.sleep(delay)
                delay *= 2
