"""Credentials at rest: encrypted with a key the operator provides, hidden from reprs and logs.

Uses ``cryptography``'s Fernet (AES-128-CBC + HMAC-SHA256, with a timestamp) rather than home-made crypto.
The key comes from ``HUBSYNC_SECRET_KEY`` or the file named by ``HUBSYNC_SECRET_KEY_FILE``; without either,
a key file is created once under ``HUBSYNC_HOME`` (every worker of a deployment must then share that file).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from pipeline.config import settings

log = logging.getLogger(__name__)


class Secret:
    """A string that never shows itself in a repr, a log line or an exception."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The clear value, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('[secure]')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret is never pickled or sent in a message")


class SecretKeyError(RuntimeError):
    """The operator's key is missing, malformed, or not the one the credentials were sealed with."""


def _load_key() -> bytes:
    env_key = os.environ.get("HUBSYNC_SECRET_KEY")
    if env_key:
        return env_key.encode()
    key_file = os.environ.get("HUBSYNC_SECRET_KEY_FILE")
    path = Path(key_file) if key_file else settings().home / "secret.key"
    if path.exists():
        return path.read_bytes().strip()
    if key_file:
        raise SecretKeyError(f"HUBSYNC_SECRET_KEY_FILE names {path}, which does not exist")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    log.warning("no HUBSYNC_SECRET_KEY given: created a key file at %s; share it with every worker", path)
    return key


@functools.lru_cache(maxsize=8)
def _fernet_of(key: bytes) -> Fernet:
    try:
        return Fernet(key)
    except ValueError as exc:
        raise SecretKeyError("HUBSYNC_SECRET_KEY is not a valid key (make one with `hubsync keygen`)") from exc


def _fernet() -> Fernet:
    return _fernet_of(_load_key())


def seal(secret: Secret) -> str:
    """Encrypt a secret for storage."""
    return _fernet().encrypt(secret.reveal().encode()).decode()


@functools.lru_cache(maxsize=1024)
def _decrypted(key: bytes, token: str) -> str:
    # Every step of every entry unseals its connection's password (and a shared token): the clear value of a
    # sealed text this process already opened is kept in its memory, where it is used anyway, keyed by the
    # operator's key too so that another key never reads it.
    return _fernet_of(key).decrypt(token.encode()).decode()


def unseal(token: str) -> Secret:
    """Decrypt a stored secret."""
    try:
        return Secret(_decrypted(_load_key(), token))
    except InvalidToken as exc:
        raise SecretKeyError(
            "stored credentials cannot be decrypted with this HUBSYNC_SECRET_KEY: give every process the key "
            "the connection was made with, or connect the client file again"
        ) from exc


def fingerprint(secret: Secret) -> str:
    """A keyed digest of a secret (HMAC with the operator's key), to recognise it without storing it."""
    return hmac.new(_load_key(), secret.reveal().encode(), hashlib.sha256).hexdigest()[:32]


def generate_key() -> str:
    """A fresh key for ``HUBSYNC_SECRET_KEY``."""
    return Fernet.generate_key().decode()
