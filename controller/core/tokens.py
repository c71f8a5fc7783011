"""Workspace auth tokens: 256-bit random values; only their SHA-256 is ever stored."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

TOKEN_BYTES = 32


def mint() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def fingerprint(token_hash: str) -> str:
    """A short prefix of the hash: safe to log, enough to tell tokens apart."""
    return token_hash[:8]


A2A_KEY_BYTES = 32


def a2a_credential(key: bytes, workspace_id: str, generation: int, container_id: str) -> str:
    """What the controller presents to one container's agent on its A2A port (and the
    executor writes into that container before it starts): an HMAC of the container
    under the controller's A2A key, so it is never stored, differs for every container
    (a recreate rotates it) and only a holder of the key can make it."""
    message = f"wsctl-a2a\0{workspace_id}\0{generation}\0{container_id}".encode()
    mac = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
