"""ACD login tokens, one per (API base, CNX, API code, dossier), shared by every worker process through Redis.

A token works on the dossier last opened with it, so a token shared by two dossiers would post one client's
entries into the other's books. Here a token is bound to one dossier for its whole life: it is opened on that
dossier right after its login, before anyone else can see it, and the key that finds it names the dossier.

Redis is the truth; each process keeps a small copy keyed the same way, re-checked against Redis on every
use (by fingerprint, so the copy never outlives a replacement). Tokens are stored sealed (Fernet, like the
passwords) and expire before ACD's 60 minutes; one used by nobody for ``idle_seconds`` is treated as dead,
since ACD kills a token after 15 minutes without a call.

Keys::

    hubsync:acd:token:<key id>    hash: sealed, fp (keyed digest), issued_at, used_at, label; expires at issue + ttl
    hubsync:acd:stats             hash: logins, sessions, fec_fetches, … and the same per dossier (bench, status)
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

from pipeline.config import settings
from pipeline.secrets import Secret, fingerprint, seal, unseal
from pipeline.store import Store, now

TOUCH_EVERY_SECONDS = 30.0
TRUST_SECONDS = 1.0


@dataclass(frozen=True)
class TokenKey:
    """Everything a token's session depends on: the server's API base, CNX, API code and the dossier opened.
    ``dossier`` None is a token no dossier is ever opened with (listing the firm's dossiers)."""

    api_base: str
    cnx: str
    api_code: str
    dossier: str | None

    @property
    def id(self) -> str:
        """The Redis key suffix (a digest: no address or code in key names). The API base, CNX and dossier are
        case-folded (ACD matches them whatever their case, so ``cnx1225`` and ``CNX1225`` share one token); the
        API code is kept as typed, since two accesses must never share a token."""
        raw = "|".join(
            (
                self.api_base.rstrip("/").casefold(),
                self.cnx.strip().casefold(),
                self.api_code,
                (self.dossier or "").casefold(),
            )
        )
        return hashlib.sha256(raw.encode()).hexdigest()[:24]

    @property
    def label(self) -> str:
        """A readable name for counters and logs (no secret in it)."""
        return f"{self.api_code}/{self.dossier or '-'}"


@dataclass(frozen=True)
class Token:
    """A token as read from the store: its value, its fingerprint, and whether it went idle too long."""

    value: str
    fp: str
    idle: bool = False

    def __repr__(self) -> str:
        return f"Token(fp={self.fp[:8]}…, idle={self.idle})"


def token_fingerprint(value: str) -> str:
    """A keyed digest of a token, to compare tokens without unsealing or storing them in clear."""
    return fingerprint(Secret(value))


class TokenStore:
    """Sealed tokens in Redis, with this process's copy of each."""

    def __init__(self, store: Store, ttl_seconds: float | None = None, idle_seconds: float | None = None) -> None:
        s = settings()
        self.store = store
        self.ttl_seconds = ttl_seconds if ttl_seconds is not None else s.acd_token_ttl_seconds
        self.idle_seconds = idle_seconds if idle_seconds is not None else s.acd_token_idle_seconds
        # key id -> (fingerprint, token, monotonic time Redis last confirmed it)
        self._copies: dict[str, tuple[str, str, float]] = {}
        self._touched: dict[str, float] = {}
        self._lock = threading.Lock()

    def get(self, key: TokenKey) -> Token | None:
        """The token for ``key`` as Redis has it now, or None; a copy Redis confirmed less than
        ``TRUST_SECONDS`` ago is used without asking again (one replaced meanwhile gets a 401, is dropped, and
        the next look reads Redis)."""
        with self._lock:
            copy = self._copies.get(key.id)
        # never trusted for longer than a fraction of the idle limit, so a token going idle is still seen
        if copy is not None and time.monotonic() - copy[2] < min(TRUST_SECONDS, self.idle_seconds / 4):
            return Token(copy[1], copy[0])
        fp, used_at = self.store.acd.token_use(key.id)
        if not fp:
            return None
        idle = used_at is not None and now() - float(used_at) > self.idle_seconds
        if copy is not None and copy[0] == fp:
            if not idle:
                with self._lock:
                    self._copies[key.id] = (fp, copy[1], time.monotonic())
            return Token(copy[1], fp, idle)
        sealed = self.store.acd.sealed_token(key.id)
        if not sealed:
            return None
        value = unseal(sealed).reveal()
        with self._lock:
            self._copies[key.id] = (fp, value, 0.0 if idle else time.monotonic())
        return Token(value, fp, idle)

    def put(self, key: TokenKey, value: str) -> Token:
        """Publish a token whose session is already open on ``key.dossier`` (it replaces any older one)."""
        fp = token_fingerprint(value)
        issued = now()
        self.store.acd.put_token(key.id, seal(Secret(value)), fp, issued, key.label, self.ttl_seconds)
        with self._lock:
            self._copies[key.id] = (fp, value, time.monotonic())
            self._touched[key.id] = issued
        return Token(value, fp)

    def drop(self, key: TokenKey, token: Token) -> None:
        """Forget ``token`` (dead on the server), unless another process already replaced it."""
        self.store.acd.drop_token(key.id, token.fp)
        with self._lock:
            if self._copies.get(key.id, ("", "", 0.0))[0] == token.fp:
                self._copies.pop(key.id, None)

    def touch(self, key: TokenKey, token: Token) -> None:
        """Note that ``token`` was used (at most every 30 s per process, far within the idle limit), for the idle
        rule."""
        stamp = now()
        every = min(TOUCH_EVERY_SECONDS, self.idle_seconds / 4)
        with self._lock:
            if stamp - self._touched.get(key.id, 0.0) < every:
                return
            self._touched[key.id] = stamp
        self.store.acd.touch_token(key.id, token.fp, stamp)


def count(store: Store, name: str, label: str | None = None, amount: int = 1) -> None:
    """Bump an ACD counter (``logins``, ``sessions``, ``fec_fetches``…), in total and for ``label``."""
    store.acd.count(name, label, amount)


def stats(store: Store) -> dict[str, int]:
    """Every ACD counter."""
    return store.acd.stats()
