"""Secrets at rest: key parsing, the key file, AES-GCM sealing (controller.adapters.secretbox)."""

from __future__ import annotations

import base64
import os
import stat
import threading
from pathlib import Path

import pytest

from controller.adapters import secretbox
from controller.adapters.secretbox import (
    KEY_ENV,
    KeySource,
    SecretBox,
    SecretDecryptError,
    SecretKeyError,
    key_id,
    parse_key,
)

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))


def box(key: bytes = KEY, source: str = "key file /d/secret.key") -> SecretBox:
    return SecretBox(key, source)


# ------------------------------------------------------------------ parse_key


@pytest.mark.parametrize("text", [
    base64.b64encode(KEY).decode(),
    base64.urlsafe_b64encode(KEY).decode(),
    base64.urlsafe_b64encode(KEY).decode().rstrip("="),
    "  " + base64.b64encode(KEY).decode() + "\n",
])
def test_parse_key_accepts_base64_and_urlsafe_with_or_without_padding(text: str) -> None:
    assert parse_key(text, KEY_ENV) == KEY


def test_parse_key_accepts_urlsafe_characters() -> None:
    key = b"\xfb\xff" * 16  # encodes to '+' and '/' (standard) or '-' and '_' (URL-safe)
    assert "-" in base64.urlsafe_b64encode(key).decode()
    assert parse_key(base64.urlsafe_b64encode(key).decode(), KEY_ENV) == key
    assert parse_key(base64.b64encode(key).decode(), KEY_ENV) == key


@pytest.mark.parametrize(("text", "reason"), [
    ("", "is empty"),
    ("   \n", "is empty"),
    ("not base64 at all!", "is not base64"),
    (base64.b64encode(b"k" * 16).decode(), "decodes to 16 bytes"),
    (base64.b64encode(b"k" * 33).decode(), "decodes to 33 bytes"),
    ("sk-live-0123456789abcdef0123456789abcdef", "decodes to 30 bytes"),
    ("sk-live+0123456789abcdef_0123456789abcdef", "is not base64"),
])
def test_malformed_key_names_the_source_and_reason_never_the_value(text: str,
                                                                  reason: str) -> None:
    with pytest.raises(SecretKeyError) as caught:
        parse_key(text, KEY_ENV)
    message = str(caught.value)
    assert message.startswith(f"{KEY_ENV} ") and reason in message
    assert f"{secretbox.KEY_BYTES}" in message
    if text.strip():
        assert text.strip() not in message


# ------------------------------------------------------------------ SecretBox


def test_seal_and_open_round_trip_with_a_fresh_nonce_each_time() -> None:
    b = box()
    first = b.seal("minimax", "api-key", "sk-value-é")
    second = b.seal("minimax", "api-key", "sk-value-é")
    assert first != second  # random nonce per write
    assert first[:1] == secretbox.FORMAT_V1
    assert len(first) == 1 + 12 + len("sk-value-é".encode()) + 16
    assert b"sk-value" not in first
    assert b.open("minimax", "api-key", first, b.key_id) == "sk-value-é"
    assert b.open("minimax", "api-key", second, b.key_id) == "sk-value-é"


@pytest.mark.parametrize(("name", "key"), [("other", "api-key"), ("minimax", "other-key"),
                                           ("minimax-api", "key")])
def test_a_ciphertext_is_bound_to_its_name_and_key(name: str, key: str) -> None:
    b = box()
    sealed = b.seal("minimax", "api-key", "sk-value")
    with pytest.raises(SecretDecryptError, match=(
            f"secret {name}/{key} cannot be decrypted with key {b.key_id} "
            r"\(key file /d/secret.key\): the stored value was altered or belongs to "
            "another secret")):
        b.open(name, key, sealed, b.key_id)


def test_an_altered_ciphertext_fails() -> None:
    b = box()
    sealed = bytearray(b.seal("n", "k", "sk-value"))
    sealed[-1] ^= 1
    with pytest.raises(SecretDecryptError, match="altered"):
        b.open("n", "k", bytes(sealed), b.key_id)
    with pytest.raises(SecretDecryptError, match="not in a format"):
        b.open("n", "k", b"\x02" + bytes(sealed[1:]), b.key_id)
    with pytest.raises(SecretDecryptError, match="not in a format"):
        b.open("n", "k", b"\x01short", b.key_id)


def test_a_wrong_key_is_named_with_both_key_ids_and_the_source() -> None:
    sealed = box(OTHER).seal("minimax", "api-key", "sk-value")
    current = box(KEY, KEY_ENV)
    with pytest.raises(SecretDecryptError) as caught:
        current.open("minimax", "api-key", sealed, key_id(OTHER))
    assert str(caught.value).startswith(
        f"secret minimax/api-key cannot be decrypted: it was encrypted with key "
        f"{key_id(OTHER)}, the current key is {key_id(KEY)} ({KEY_ENV})")
    assert "sk-value" not in str(caught.value)


def test_key_id_is_short_and_reveals_nothing_of_the_key() -> None:
    kid = key_id(KEY)
    assert len(kid) == 12 and int(kid, 16) >= 0
    assert kid != key_id(OTHER)
    assert kid not in KEY.hex() and kid not in base64.b64encode(KEY).decode()
    assert box().key_id == kid


def test_the_key_is_not_in_the_repr() -> None:
    b = box()
    assert KEY.hex() not in repr(b) and str(KEY) not in repr(b)
    with pytest.raises(SecretKeyError):
        SecretBox(b"short", KEY_ENV)


# ------------------------------------------------------------------ KeySource


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_file_is_created_on_first_use_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "data" / "secret.key"
    source = KeySource(path, {})
    assert source.load(create=False) is None
    assert not path.exists()  # reading never invents a key
    made = source.require()
    assert mode(path) == 0o600
    assert parse_key(path.read_text(), "file") == made.key
    assert made.source == f"key file {path}"
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # no temp file left
    again = KeySource(path, {}).require()
    assert again.key == made.key  # the next process reads the same key


def test_the_key_file_is_created_under_a_restrictive_umask_regardless(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        KeySource(tmp_path / "secret.key", {}).require()
    finally:
        os.umask(old)
    assert mode(tmp_path / "secret.key") == 0o600


def test_racing_creators_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    keys: list[bytes] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        keys.append(KeySource(path, {}).require().key)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and len(set(keys)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]


@pytest.mark.parametrize("bad_mode", [0o640, 0o604, 0o644, 0o660, 0o610])
def test_a_key_file_open_to_group_or_others_is_refused(tmp_path: Path, bad_mode: int) -> None:
    path = tmp_path / "secret.key"
    KeySource(path, {}).require()
    path.chmod(bad_mode)
    with pytest.raises(SecretKeyError) as caught:
        KeySource(path, {}).check()
    message = str(caught.value)
    assert str(path) in message and f"mode {bad_mode:04o}" in message
    assert "chmod 600" in message


def test_a_symlinked_or_non_regular_key_file_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.key"
    KeySource(real, {}).require()
    link = tmp_path / "secret.key"
    link.symlink_to(real)
    with pytest.raises(SecretKeyError, match=f"cannot read key file {link}"):
        KeySource(link, {}).check()
    folder = tmp_path / "folder.key"
    folder.mkdir(mode=0o700)
    with pytest.raises(SecretKeyError, match="not a regular file"):
        KeySource(folder, {}).check()


def test_a_malformed_key_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_text("garbage\n")
    path.chmod(0o600)
    with pytest.raises(SecretKeyError, match=f"key file {path} is malformed"):
        KeySource(path, {}).check()


def test_the_environment_key_wins_over_the_key_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    from_file = KeySource(path, {}).require()
    source = KeySource(path, {KEY_ENV: base64.b64encode(KEY).decode()})
    assert source.describe() == KEY_ENV
    used = source.require()
    assert used.key == KEY != from_file.key
    assert used.source == KEY_ENV


def test_a_malformed_environment_key_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    KeySource(path, {}).require()  # a usable key file exists
    with pytest.raises(SecretKeyError, match=f"^{KEY_ENV} is malformed"):
        KeySource(path, {KEY_ENV: "c2hvcnQ="}).check()
    with pytest.raises(SecretKeyError, match=f"^{KEY_ENV} is empty"):
        KeySource(path, {KEY_ENV: ""}).check()


def test_an_environment_key_never_creates_a_key_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    KeySource(path, {KEY_ENV: base64.b64encode(KEY).decode()}).require()
    assert not path.exists()


def test_an_unusable_key_file_path_is_a_key_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SecretKeyError, match=f"key file {blocker}/secret.key: Not a directory"):
        KeySource(blocker / "secret.key", {}).require()


def test_a_failed_key_file_creation_is_a_key_error(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("controller.adapters.secretbox.os.link", refuse)
    path = tmp_path / "secret.key"
    with pytest.raises(SecretKeyError, match=f"cannot create key file {path}: Permission denied"):
        KeySource(path, {}).require()
    assert list(tmp_path.iterdir()) == []  # the temporary file is removed too
