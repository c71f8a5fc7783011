"""The secrets table: values sealed with the store's key, never stored in plaintext."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg
from pydantic import ValidationError

from controller.adapters.postgres.base import _translated, log
from controller.adapters.secretbox import (
    KeySource,
    SecretBox,
    SecretDecryptError,
    SecretKeyError,
    missing_key_error,
)
from controller.core.model import SecretKeyRef

if TYPE_CHECKING:
    from controller.adapters.postgres.base import _Pool


def _check_secret_ref(name: str, key: str) -> None:
    try:
        SecretKeyRef(name=name, key=key)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"invalid secret {name!r}/{key!r}: {problems}") from None


class SecretsMixin:
    """`Store` methods over the secrets table."""

    _pool: _Pool
    _secret_key: KeySource | None

    def _secret_box(self) -> SecretBox:
        """The box of this store's key, creating the key file if there is none yet."""
        if self._secret_key is None:
            raise SecretKeyError("this store was opened without a secret key source; "
                                 "secrets cannot be encrypted or decrypted")
        return self._secret_key.require()

    def _open_secret(self, row: asyncpg.Record) -> str:
        name, key = row["name"], row["key"]
        if row["value_enc"] is None:  # written before 0003 and not yet encrypted
            return str(row["value"])
        box = None if self._secret_key is None else self._secret_key.load(create=False)
        if box is None:
            if self._secret_key is None:
                raise SecretDecryptError(
                    f"secret {name}/{key} cannot be decrypted: this store was opened "
                    "without a secret key source")
            raise SecretDecryptError(
                missing_key_error(name, key, row["key_id"], self._secret_key))
        return box.open(name, key, bytes(row["value_enc"]), row["key_id"])

    @_translated
    async def set_secret(self, name: str, key: str, value: str) -> None:
        """Store `value` encrypted; the plaintext never reaches the database."""
        _check_secret_ref(name, key)
        if "\x00" in value:
            raise ValueError(f"secret {name}/{key}: a value cannot contain NUL characters")
        box = self._secret_box()
        await self._pool.execute(
            """
            INSERT INTO secrets (name, key, value, value_enc, key_id) VALUES ($1, $2, NULL, $3, $4)
            ON CONFLICT (name, key) DO UPDATE
                SET value = NULL, value_enc = EXCLUDED.value_enc, key_id = EXCLUDED.key_id,
                    updated_at = now()
            """,
            name, key, box.seal(name, key, value), box.key_id,
        )

    @_translated
    async def get_secrets(self, refs: Collection[tuple[str, str]] | None = None
                          ) -> dict[tuple[str, str], str]:
        """The secrets named by `refs` (every secret if None), decrypted; absent ones
        are left out. `SecretDecryptError` (naming each secret that cannot be
        decrypted, the key ids and where the current key comes from) if one of
        them cannot be: a row that does not decrypt fails only its readers."""
        if refs is None:
            rows = await self._pool.fetch(
                "SELECT name, key, value, value_enc, key_id FROM secrets")
        else:
            rows = await self._pool.fetch(
                "SELECT name, key, value, value_enc, key_id FROM secrets WHERE (name, key) IN "
                "(SELECT * FROM unnest($1::text[], $2::text[]))",
                [r[0] for r in refs], [r[1] for r in refs])
        found: dict[tuple[str, str], str] = {}
        problems: list[str] = []
        for r in rows:
            try:
                found[(r["name"], r["key"])] = self._open_secret(r)
            except SecretDecryptError as exc:
                problems.append(str(exc))
        if problems:
            raise SecretDecryptError("; ".join(problems))
        return found

    @_translated
    async def encrypt_plaintext_secrets(self) -> int:
        """Encrypt rows stored in plaintext before migration 0003; return how many.

        One transaction; rows are locked, so concurrent starters encrypt each row
        once. Needs the key only when such rows exist (the key file is created
        then). Without a key source the rows are left as they are.
        """
        if await self._pool.fetchval(
                "SELECT NOT EXISTS (SELECT 1 FROM secrets WHERE value IS NOT NULL)"):
            return 0
        if self._secret_key is None:
            log.warning("secrets stored in plaintext are left so: no secret key source")
            return 0
        box = self._secret_box()
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT name, key, value FROM secrets WHERE value IS NOT NULL FOR UPDATE")
            await conn.executemany(
                "UPDATE secrets SET value = NULL, value_enc = $3, key_id = $4 "
                "WHERE name = $1 AND key = $2",
                [(r["name"], r["key"], box.seal(r["name"], r["key"], r["value"]), box.key_id)
                 for r in rows],
            )
        if rows:
            log.info("encrypted %d secret(s) stored in plaintext (key %s, %s)",
                     len(rows), box.key_id, box.source)
        return len(rows)

    @_translated
    async def list_secret_keys(self) -> list[tuple[str, str, datetime]]:
        """(name, key, updated_at) of every secret, sorted; never the values."""
        rows = await self._pool.fetch(
            "SELECT name, key, updated_at FROM secrets ORDER BY name, key"
        )
        return [(r["name"], r["key"], r["updated_at"]) for r in rows]

    @_translated
    async def delete_secret(self, name: str, key: str) -> bool:
        row = await self._pool.fetchrow(
            "DELETE FROM secrets WHERE name = $1 AND key = $2 RETURNING 1", name, key
        )
        return row is not None
