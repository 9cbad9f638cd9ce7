"""Locks shared by every worker on every machine (``SET NX PX`` with a holder token; released only by their
holder)."""

from __future__ import annotations

import contextlib
import secrets
import time
import uuid
from collections.abc import Iterator, Sequence

from pipeline.store import keys
from pipeline.store.client import Redis, script


class LockBusy(RuntimeError):
    """Somebody else holds the lock."""


class Locks:
    """Named locks with a time to live."""

    def __init__(self, client: Redis) -> None:
        self.r = client
        self._release = script(client, "release")

    @contextlib.contextmanager
    def hold(self, name: str, ttl_seconds: float, wait_seconds: float = 0.0) -> Iterator[None]:
        """Hold lock ``name``; raises ``LockBusy`` after ``wait_seconds``."""
        key = keys.lock(name)
        token = uuid.uuid4().hex
        deadline = time.monotonic() + wait_seconds
        while not self.r.set(key, token, nx=True, px=int(ttl_seconds * 1000)):
            if time.monotonic() >= deadline:
                raise LockBusy(name)
            time.sleep(0.02 + secrets.randbelow(30) / 1000)
        try:
            yield
        finally:
            self._release(keys=[key], args=[token])

    @contextlib.contextmanager
    def hold_one_of(self, names: Sequence[str], ttl_seconds: float) -> Iterator[str]:
        """The first free lock of ``names``: a semaphore of ``len(names)`` holders shared by every worker; yields
        the lock's name (to extend its life with ``extend``); raises ``LockBusy`` when every one is held."""
        token = uuid.uuid4().hex
        for name in names:
            key = keys.lock(name)
            if self.r.set(key, token, nx=True, px=int(ttl_seconds * 1000)):
                break
        else:
            raise LockBusy(", ".join(names))
        try:
            yield name
        finally:
            self._release(keys=[key], args=[token])

    def extend(self, names: Sequence[str], ttl_seconds: float) -> None:
        """Give held locks ``ttl_seconds`` more to live (a long job under them goes on)."""
        pipe = self.r.pipeline(transaction=False)
        for name in names:
            pipe.pexpire(keys.lock(name), int(ttl_seconds * 1000))
        pipe.execute()

    def take_turn(self, name: str, ttl_seconds: float) -> bool:
        """Take a turn that nobody releases (it expires): True when it was free, so that one caller in
        ``ttl_seconds`` does a periodic job."""
        return bool(self.r.set(keys.lock(name), "1", nx=True, px=int(max(0.001, ttl_seconds) * 1000)))
