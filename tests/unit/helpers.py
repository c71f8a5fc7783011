"""Builders shared by unit tests."""

from __future__ import annotations

from typing import Any

from controller.core.model import Workspace


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
