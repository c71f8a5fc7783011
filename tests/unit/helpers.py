"""Builders shared by unit tests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from controller.core.model import Workspace

A2A_CREDENTIAL = "a2a-" + "c" * 40
"""What a test writes as the controller's A2A credential file."""


def workspace(name: str = "alice", **spec: Any) -> Workspace:
    return Workspace.model_validate(
        {"apiVersion": "wsctl.dev/v1alpha1", "kind": "Workspace",
         "metadata": {"name": name}, "spec": spec}
    )


def minimax(name: str = "alice", base_url: str | None = None, access: str | None = None,
            **spec: Any) -> Workspace:
    llm: dict[str, Any] = {"provider": "minimax",
                           "apiKey": {"secretRef": {"name": "minimax", "key": "api-key"}}}
    if access is not None:
        llm["access"] = access
    if base_url is not None:
        llm["baseURL"] = base_url
    return workspace(name, model="MiniMax-M3", llm=llm, **spec)


def a2a(port: int, body: object = None, *, path: str = "/",
        credential: str | None = A2A_CREDENTIAL, raw: bytes | None = None,
        timeout: float = 10.0) -> tuple[int, Any]:
    """One request to an agent's A2A port on 127.0.0.1, as the controller's proxy makes
    it: (status, the JSON answer). A POST when there is a body, else a GET."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    if credential is not None:
        request.add_header("Authorization", f"Bearer {credential}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def message_send(text: str, **message: Any) -> dict[str, Any]:
    """A JSON-RPC `message/send` of one text part (`message` adds fields, e.g. contextId)."""
    return {"jsonrpc": "2.0", "id": 7, "method": "message/send",
            "params": {"message": {"role": "user", "parts": [{"kind": "text", "text": text}],
                                   **message}}}
