"""Secrets at rest: AES-256-GCM with a key from $WSCTL_SECRET_KEY or a key file.

The key is 32 random bytes, written as base64 (standard or URL-safe, padding
optional). It comes from, in this order:

1. `WSCTL_SECRET_KEY` in the environment (a malformed value is an error naming
   the variable, never a silent fallback to the key file);
2. the key file `<data dir>/secret.key`, created on first use (mode 0600, made
   complete before it appears under its name, so two processes starting at once
   agree on one key). An existing key file that group or others can access is
   refused, as ssh refuses a private key.

Every value is sealed with a fresh random 96-bit nonce and associated data
naming its (secret name, key): a ciphertext copied onto another row does not
decrypt. Each row also records the key id (a short hash of the key, never the
key), so a wrong key is reported as such instead of as corruption.

Neither the key nor a plaintext is ever logged or put in an error message.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from controller.core.errors import SecretUnreadableError, WsctlError

KEY_ENV = "WSCTL_SECRET_KEY"
KEY_FILE = "secret.key"
KEY_BYTES = 32
NONCE_BYTES = 12
FORMAT_V1 = b"\x01"  # first byte of every sealed value: version 1 = nonce | AES-GCM(ct | tag)
_AAD_PREFIX = b"wsctl secret v1\x00"
_KEY_ID_PREFIX = b"wsctl secret key id\x00"
_GENERATE = "generate one with `openssl rand -base64 32`"


class PrivateFileError(WsctlError):
    """A file only its owner may read (the key file, the admin token) is unsafe or
    unreadable."""


class SecretKeyError(PrivateFileError):
    """No usable key: malformed $WSCTL_SECRET_KEY, unsafe or unreadable key file."""


class SecretDecryptError(SecretUnreadableError):
    """A stored secret cannot be decrypted (wrong key, or altered/moved ciphertext)."""


def parse_key(text: str, source: str) -> bytes:
    """The 32 key bytes of base64 `text`; `source` names where it came from in errors.

    Error messages describe the value (empty, not base64, its decoded length),
    never repeat it.
    """
    value = "".join(text.split())
    if not value:
        raise SecretKeyError(f"{source} is empty: it must be the base64 of {KEY_BYTES} "
                             f"random bytes ({_GENERATE})")
    padded = value + "=" * (-len(value) % 4)
    for altchars in (None, b"-_"):
        try:
            raw = base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(raw) != KEY_BYTES:
            raise SecretKeyError(
                f"{source} is malformed: it decodes to {len(raw)} bytes, a key is "
                f"{KEY_BYTES} bytes of base64 ({_GENERATE})")
        return raw
    raise SecretKeyError(f"{source} is malformed: it is not base64 (a key is {KEY_BYTES} "
                         f"bytes of base64; {_GENERATE})")


def key_id(key: bytes) -> str:
    """A short, public name for a key: 12 hex digits of a hash, not the key."""
    return hashlib.sha256(_KEY_ID_PREFIX + key).hexdigest()[:12]


def _aad(name: str, key: str) -> bytes:
    # Names and keys are validated ([a-z0-9.-] / [-._a-zA-Z0-9]): never a NUL.
    return _AAD_PREFIX + name.encode() + b"\x00" + key.encode()


@dataclass(frozen=True)
class SecretBox:
    """Seals and opens secret values with one key."""

    key: bytes = field(repr=False)
    source: str
    """Where the key came from, for messages: 'key file /x/secret.key' or 'WSCTL_SECRET_KEY'."""

    def __post_init__(self) -> None:
        if len(self.key) != KEY_BYTES:
            raise SecretKeyError(f"{self.source}: a key is {KEY_BYTES} bytes")

    @property
    def key_id(self) -> str:
        return key_id(self.key)

    def seal(self, name: str, key: str, value: str) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = AESGCM(self.key).encrypt(nonce, value.encode("utf-8"), _aad(name, key))
        return FORMAT_V1 + nonce + sealed

    def open(self, name: str, key: str, blob: bytes, stored_key_id: str) -> str:
        """The plaintext of `blob` stored for `name`/`key` with key id `stored_key_id`."""
        if stored_key_id != self.key_id:
            raise SecretDecryptError(
                f"secret {name}/{key} cannot be decrypted: it was encrypted with key "
                f"{stored_key_id}, the current key is {self.key_id} ({self.source}); "
                "restore that key, or set the secret again")
        if len(blob) < 1 + NONCE_BYTES + 16 or blob[:1] != FORMAT_V1:
            raise SecretDecryptError(
                f"secret {name}/{key} cannot be decrypted: the stored value is not in a "
                "format this wsctl knows; set the secret again")
        nonce, sealed = blob[1:1 + NONCE_BYTES], blob[1 + NONCE_BYTES:]
        try:
            plain = AESGCM(self.key).decrypt(nonce, sealed, _aad(name, key))
        except InvalidTag:
            raise SecretDecryptError(
                f"secret {name}/{key} cannot be decrypted with key {self.key_id} "
                f"({self.source}): the stored value was altered or belongs to another "
                "secret; set the secret again") from None
        return plain.decode("utf-8")


def missing_key_error(name: str, key: str, stored_key_id: str, source: KeySource) -> str:
    return (f"secret {name}/{key} cannot be decrypted: it was encrypted with key "
            f"{stored_key_id}, and there is no key ({source.missing()}); restore the key "
            "file from a backup or set WSCTL_SECRET_KEY, or set the secret again")


class KeySource:
    """Where a store's secret key comes from: $WSCTL_SECRET_KEY, else a key file.

    Loaded at most once per source (cached). `load(create=False)` never creates
    the key file, so reading secrets never invents a key that cannot decrypt them.
    """

    def __init__(self, key_file: Path, environ: Mapping[str, str] | None = None) -> None:
        self.key_file = key_file
        self._environ = os.environ if environ is None else environ
        self._box: SecretBox | None = None

    @classmethod
    def for_data_dir(cls, data_dir: Path, environ: Mapping[str, str] | None = None
                     ) -> KeySource:
        return cls(data_dir / KEY_FILE, environ)

    def describe(self) -> str:
        if KEY_ENV in self._environ:
            return KEY_ENV
        return f"key file {self.key_file}"

    def missing(self) -> str:
        return f"key file {self.key_file} does not exist and {KEY_ENV} is not set"

    def check(self) -> None:
        """Fail now on a malformed $WSCTL_SECRET_KEY or an unsafe existing key file."""
        self.load(create=False)

    def load(self, *, create: bool) -> SecretBox | None:
        """The box, or None if there is no key yet and `create` is False."""
        if self._box is not None:
            return self._box
        text = self._environ.get(KEY_ENV)
        if text is not None:
            self._box = SecretBox(parse_key(text, KEY_ENV), KEY_ENV)
            return self._box
        source = f"key file {self.key_file}"
        raw = _read_key_file(self.key_file)
        if raw is None:
            if not create:
                return None
            try:
                raw = _create_key_file(self.key_file)
            except OSError as exc:
                raise SecretKeyError(
                    f"cannot create key file {self.key_file}: {exc.strerror or exc}") from None
        self._box = SecretBox(parse_key(raw, source), source)
        return self._box

    def require(self) -> SecretBox:
        box = self.load(create=True)
        assert box is not None
        return box


def _read_key_file(path: Path) -> str | None:
    return read_private_file(path, "key file", SecretKeyError)


def read_private_file(path: Path, what: str,
                      error: type[PrivateFileError] = PrivateFileError) -> str | None:
    """The text of `path` (first 4 KiB), None if it does not exist; `error` naming
    `what` if it is not a regular file or group or others can access it (as ssh
    refuses a private key)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{what} {path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise error(
                f"{what} {path} has mode {mode:04o}: it must not be accessible by "
                f"group or others; run `chmod 600 {path}` (and check who may have read it)")
        with os.fdopen(os.dup(fd), "r", encoding="ascii", errors="replace") as handle:
            return handle.read(4096)
    finally:
        os.close(fd)


def _create_key_file(path: Path) -> str:
    """A new key in `path`, or the one another process created first.

    The key is written and synced under a unique temporary name (O_EXCL, 0600)
    and then hard-linked to `path`, which fails if `path` exists: `path` never
    exists half-written, and of two racing processes exactly one key wins.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    text = base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii") + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, text.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):  # another process won the race: use its key
            os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    with contextlib.suppress(OSError):  # make the new name durable too
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    found = _read_key_file(path)
    if found is None:
        raise SecretKeyError(f"key file {path} vanished right after it was created")
    return found
