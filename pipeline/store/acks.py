"""ACK codes ``(#XXXX#)``: four characters unique within one scope (an ACD dossier), the same for one owner on
every retry and replay."""

from __future__ import annotations

import hashlib

from pipeline.store import keys
from pipeline.store.client import Redis

ACK_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


class AckStore:
    """The codes handed out per scope and who holds each."""

    def __init__(self, client: Redis) -> None:
        self.r = client

    def allocate(self, scope: str, owner: str) -> str:
        """A 4-character code unique within ``scope`` and always the same for ``owner``."""
        key = keys.acks(scope)
        for n in range(10_000):
            digest = hashlib.sha256(f"{scope}|{owner}|{n}".encode()).digest()
            code = "".join(ACK_ALPHABET[b % len(ACK_ALPHABET)] for b in digest[:4])
            if self.r.hsetnx(key, code, owner) or self.r.hget(key, code) == owner:
                return code
        raise RuntimeError(f"no free ACK code left in {scope}")

    def owners(self, scope: str) -> dict[str, str]:
        """Every code handed out in ``scope`` and its owner."""
        owners: dict[str, str] = self.r.hgetall(keys.acks(scope))
        return owners
