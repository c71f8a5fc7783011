"""Workspace auth tokens: 256-bit random values; only their SHA-256 is ever stored."""

from __future__ import annotations

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
