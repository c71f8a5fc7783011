"""Secrets are encrypted at rest (issue 7): real PostgreSQL, raw rows inspected."""

from __future__ import annotations

import asyncio
import base64
import io
import stat
from pathlib import Path

import asyncpg
import pytest

from controller.adapters.postgres import Store, apply_migrations, load_migrations
from controller.adapters.secretbox import (
    KEY_ENV,
    KeySource,
    SecretDecryptError,
    SecretKeyError,
    key_id,
)
from controller.app.cli import main
from controller.core.errors import SecretUnreadableError

pytestmark = pytest.mark.postgres

PLANTED = "sk-at-rest-PLANTED-5e2f9c"
ENV_KEY = bytes(range(32))


def env_key(raw: bytes = ENV_KEY) -> dict[str, str]:
    return {KEY_ENV: base64.b64encode(raw).decode()}


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def raw_rows(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(
            "SELECT name, key, value, value_enc, key_id FROM secrets ORDER BY name, key"))
    finally:
        await conn.close()


async def execute(dsn: str, sql: str, *args: object) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def test_round_trip_and_the_row_holds_no_plaintext(
        store: Store, fresh_dsn: str, secret_key_file: Path) -> None:
    await store.set_secret("minimax", "api-key", PLANTED)
    await store.set_secret("minimax", "api-key", PLANTED + "-2")  # an update re-encrypts
    await store.set_secret("other", "k", PLANTED)
    assert await store.get_secrets() == {("minimax", "api-key"): PLANTED + "-2",
                                         ("other", "k"): PLANTED}

    file_key_id = KeySource(secret_key_file, {}).require().key_id
    rows = await raw_rows(fresh_dsn)
    assert [(r["name"], r["key"]) for r in rows] == [("minimax", "api-key"), ("other", "k")]
    for row in rows:
        assert row["value"] is None
        assert row["key_id"] == file_key_id
        assert PLANTED.encode() not in bytes(row["value_enc"])
    assert rows[0]["value_enc"] != rows[1]["value_enc"]

    conn = await asyncpg.connect(fresh_dsn)
    try:  # nowhere in the table, in any column, as text
        dump = await conn.fetchval("SELECT string_agg(s::text, '|') FROM secrets s")
        assert PLANTED not in dump
        assert file_mode(secret_key_file) == 0o600
        assert base64.b64encode(KeySource(secret_key_file, {}).require().key).decode() not in dump
    finally:
        await conn.close()


async def test_a_ciphertext_moved_to_another_row_does_not_decrypt(
        store: Store, fresh_dsn: str) -> None:
    await store.set_secret("alpha", "api-key", "sk-alpha-value")
    await store.set_secret("beta", "api-key", "sk-beta-value")
    await execute(fresh_dsn, """
        UPDATE secrets SET value_enc = CASE name
            WHEN 'alpha' THEN (SELECT value_enc FROM secrets WHERE name = 'beta')
            ELSE (SELECT value_enc FROM secrets WHERE name = 'alpha') END
    """)
    with pytest.raises(SecretDecryptError) as caught:
        await store.get_secrets()
    message = str(caught.value)
    assert "cannot be decrypted with key" in message
    assert "the stored value was altered or belongs to another secret" in message
    assert "sk-alpha-value" not in message and "sk-beta-value" not in message


async def test_a_wrong_key_names_the_secret_both_key_ids_and_the_source(
        store: Store, fresh_dsn: str, secret_key_file: Path) -> None:
    await store.set_secret("minimax", "api-key", PLANTED)
    file_id = KeySource(secret_key_file, {}).require().key_id

    other = await Store.connect(fresh_dsn, secret_key=KeySource(secret_key_file, env_key()))
    try:
        with pytest.raises(SecretDecryptError) as caught:
            await other.get_secrets()
        assert str(caught.value).startswith(
            f"secret minimax/api-key cannot be decrypted: it was encrypted with key {file_id}, "
            f"the current key is {key_id(ENV_KEY)} ({KEY_ENV})")
        assert await other.list_secret_keys()  # names are still listed
        await other.set_secret("minimax", "api-key", "sk-new")  # setting it again recovers
        assert await other.get_secrets() == {("minimax", "api-key"): "sk-new"}
    finally:
        await other.close()

    with pytest.raises(SecretDecryptError) as caught:
        await store.get_secrets()  # now the key file is the wrong one
    assert f"the current key is {file_id} (key file {secret_key_file})" in str(caught.value)


async def test_a_row_that_does_not_decrypt_fails_only_its_readers(
        store: Store, fresh_dsn: str, secret_key_file: Path) -> None:
    """One secret set with another key must not stop workspaces using other secrets."""
    await store.set_secret("good", "k", "sk-good")
    other = await Store.connect(fresh_dsn, secret_key=KeySource(secret_key_file, env_key()))
    try:
        await other.set_secret("bad", "k", "sk-bad")  # under WSCTL_SECRET_KEY, not the file
    finally:
        await other.close()
    assert await store.get_secrets([("good", "k"), ("absent", "k")]) == {("good", "k"): "sk-good"}
    with pytest.raises(SecretUnreadableError, match=r"^secret bad/k cannot be decrypted"):
        await store.get_secrets([("good", "k"), ("bad", "k")])
    with pytest.raises(SecretDecryptError):
        await store.get_secrets()  # all of them: the bad one is among them


async def test_a_lost_key_file_is_reported_and_not_replaced_by_reading(
        store: Store, fresh_dsn: str, tmp_path: Path) -> None:
    await store.set_secret("minimax", "api-key", PLANTED)
    lost = tmp_path / "elsewhere" / "secret.key"
    other = await Store.connect(fresh_dsn, secret_key=KeySource(lost, {}))
    try:
        with pytest.raises(SecretDecryptError) as caught:
            await other.get_secrets()
        message = str(caught.value)
        assert message.startswith("secret minimax/api-key cannot be decrypted")
        assert f"key file {lost} does not exist and {KEY_ENV} is not set" in message
        assert not lost.exists()  # reading did not invent a key
    finally:
        await other.close()


async def test_a_store_without_secrets_never_needs_a_key(fresh_dsn: str,
                                                         tmp_path: Path) -> None:
    """Kubernetes mode reads Secrets from the cluster: no key file appears."""
    path = tmp_path / "secret.key"
    store = await Store.connect(fresh_dsn, secret_key=KeySource(path, {}))
    try:
        assert await store.get_secrets() == {}
        assert await store.list_secret_keys() == []
    finally:
        await store.close()
    assert not path.exists()


async def test_an_unsafe_key_file_or_malformed_variable_fails_the_open(
        fresh_dsn: str, tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    KeySource(path, {}).require()
    path.chmod(0o640)
    with pytest.raises(SecretKeyError, match=f"key file {path} has mode 0640"):
        await Store.connect(fresh_dsn, secret_key=KeySource(path, {}))
    path.chmod(0o600)
    with pytest.raises(SecretKeyError, match=f"^{KEY_ENV} is malformed"):
        await Store.connect(fresh_dsn, secret_key=KeySource(path, {KEY_ENV: "bm9wZQ=="}))


async def plaintext_database(dsn: str, rows: list[tuple[str, str, str]]) -> None:
    """A database as wsctl left it before migration 0003: plaintext values."""
    conn = await asyncpg.connect(dsn)
    try:
        await apply_migrations(conn, [m for m in load_migrations() if m.version <= 2])
        await conn.executemany("INSERT INTO secrets (name, key, value) VALUES ($1, $2, $3)",
                               rows)
    finally:
        await conn.close()


async def test_plaintext_rows_are_encrypted_by_the_upgrade(fresh_dsn: str,
                                                           tmp_path: Path) -> None:
    legacy = [("minimax", "api-key", PLANTED), ("other", "k", PLANTED + "-other")]
    await plaintext_database(fresh_dsn, legacy)
    path = tmp_path / "secret.key"

    # Concurrent starters: each row is encrypted exactly once, with the one key.
    stores = await asyncio.gather(*(Store.connect(fresh_dsn, secret_key=KeySource(path, {}))
                                    for _ in range(3)))
    try:
        rows = await raw_rows(fresh_dsn)
        kid = KeySource(path, {}).require().key_id
        assert [(r["value"], r["key_id"]) for r in rows] == [(None, kid)] * 2
        assert all(PLANTED.encode() not in bytes(r["value_enc"]) for r in rows)
        for store in stores:
            assert await store.get_secrets() == {(n, k): v for n, k, v in legacy}
            assert await store.encrypt_plaintext_secrets() == 0
    finally:
        for store in stores:
            await store.close()
    assert file_mode(path) == 0o600


async def test_plaintext_rows_stay_readable_without_a_key_source(fresh_dsn: str) -> None:
    await plaintext_database(fresh_dsn, [("minimax", "api-key", PLANTED)])
    store = await Store.connect(fresh_dsn)
    try:
        assert await store.get_secrets() == {("minimax", "api-key"): PLANTED}
        with pytest.raises(SecretKeyError, match="without a secret key source"):
            await store.set_secret("minimax", "api-key", "sk-new")
    finally:
        await store.close()


async def test_a_row_cannot_hold_both_or_neither_value(store: Store, fresh_dsn: str) -> None:
    await store.set_secret("minimax", "api-key", PLANTED)
    with pytest.raises(asyncpg.CheckViolationError, match="secrets_one_value"):
        await execute(fresh_dsn, "UPDATE secrets SET value = 'x'")
    with pytest.raises(asyncpg.CheckViolationError, match="secrets_one_value"):
        await execute(fresh_dsn, "UPDATE secrets SET value_enc = NULL, key_id = NULL")
    with pytest.raises(asyncpg.CheckViolationError, match="secrets_key_id_with_ciphertext"):
        await execute(fresh_dsn, "UPDATE secrets SET key_id = NULL")


# ------------------------------------------------------------------ CLI


def test_cli_secret_set_creates_the_key_file_and_reports_key_problems(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv("WSCTL_SECRET_MINIMAX_API_KEY", raising=False)
    where = ["--data-dir", str(data_dir)]

    monkeypatch.setattr("sys.stdin", io.StringIO(PLANTED + "\n"))
    assert main(["secret", "set", "minimax", "api-key", *where]) == 0
    key_file = data_dir / "secret.key"
    assert file_mode(key_file) == 0o600
    capsys.readouterr()

    monkeypatch.setenv(KEY_ENV, "not-a-key")
    monkeypatch.setattr("sys.stdin", io.StringIO(PLANTED + "\n"))
    assert main(["secret", "set", "minimax", "api-key", *where]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {KEY_ENV} is malformed") and "not-a-key" not in err

    monkeypatch.setenv(KEY_ENV, base64.b64encode(ENV_KEY).decode())  # a different key
    code = main(["render", "-f", str(Path(__file__).parents[2] / "examples" / "workspace.yaml"),
                 *where])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: secret minimax/api-key cannot be decrypted: it was "
                          f"encrypted with key {KeySource(key_file, {}).require().key_id}")
    assert f"({KEY_ENV})" in err and PLANTED not in err

    monkeypatch.delenv(KEY_ENV)
    key_file.chmod(0o644)
    assert main(["secret", "list", *where]) == 1
    err = capsys.readouterr().err
    assert f"key file {key_file} has mode 0644" in err
