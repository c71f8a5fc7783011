"""Secrets from the controller's environment: WSCTL_SECRET_<NAME>_<KEY>.

NAME and KEY are upper-cased and every character other than a letter or digit
becomes '_' (secret `minimax`, key `api-key` -> WSCTL_SECRET_MINIMAX_API_KEY).
Pure: takes the environment as a mapping, and the store as a reader function.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping

from controller.core.model import SecretKeyRef, Workspace

ENV_PREFIX = "WSCTL_SECRET_"


def env_name(name: str, key: str) -> str:
    return ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", f"{name}_{key}").upper()


def secret_refs(workspaces: Iterable[Workspace]) -> set[tuple[str, str]]:
    refs: set[SecretKeyRef] = set()
    for ws in workspaces:
        if ws.spec.llm and ws.spec.llm.api_key:
            refs.add(ws.spec.llm.api_key.secret_ref)
        refs.update(v.value_from.secret_ref for v in ws.spec.env if v.value_from)
    return {(r.name, r.key) for r in refs}


def from_environment(refs: Iterable[tuple[str, str]],
                     environ: Mapping[str, str]) -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    for name, key in refs:
        value = environ.get(env_name(name, key))
        if value is not None:
            found[(name, key)] = value
    return found


StoredSecrets = Callable[[set[tuple[str, str]]], Awaitable[Mapping[tuple[str, str], str]]]


async def resolve(refs: Iterable[tuple[str, str]], environ: Mapping[str, str],
                  stored: StoredSecrets) -> dict[tuple[str, str], str]:
    """The values of `refs`: the environment's first (it overrides the store), then
    the store's for what the environment lacks; the store is not read when the
    environment has them all. Absent ones are left out."""
    found = from_environment(refs, environ)
    if missing := set(refs) - found.keys():
        found = {**await stored(missing), **found}
    return found
