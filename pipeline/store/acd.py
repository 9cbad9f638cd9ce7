"""What the ACD side keeps besides records: login tokens (sealed), refused passwords (as fingerprints), the
counters of logins, sessions and FEC reads, each dossier's FEC coordination and its reference data."""

from __future__ import annotations

import json
from typing import Any

from pipeline.store import keys
from pipeline.store.client import Redis, script


class AcdStore:
    """ACD tokens, refused logins and counters."""

    def __init__(self, client: Redis) -> None:
        self.r = client
        self._drop = script(client, "token_drop")
        self._touch = script(client, "token_touch")

    # -- tokens ---------------------------------------------------------------------------------------------

    def token_use(self, key_id: str) -> tuple[str | None, str | None]:
        """A token's fingerprint and when it was last used (None, None when there is none)."""
        fp, used_at = self.r.hmget(keys.acd_token(key_id), ["fp", "used_at"])
        return fp, used_at

    def sealed_token(self, key_id: str) -> str | None:
        """A token's sealed value, or None."""
        sealed: str | None = self.r.hget(keys.acd_token(key_id), "sealed")
        return sealed

    def put_token(self, key_id: str, sealed: str, fp: str, issued_at: float, label: str, ttl_seconds: float) -> None:
        """Publish a token (replacing any older one), expiring ``ttl_seconds`` after it was issued."""
        key = keys.acd_token(key_id)
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(
            key,
            mapping={"sealed": sealed, "fp": fp, "issued_at": issued_at, "used_at": issued_at, "label": label},
        )
        pipe.pexpireat(key, int((issued_at + ttl_seconds) * 1000))
        pipe.execute()

    def drop_token(self, key_id: str, fp: str) -> None:
        """Forget a token unless another process already replaced it."""
        self._drop(keys=[keys.acd_token(key_id)], args=[fp])

    def touch_token(self, key_id: str, fp: str, stamp: float) -> None:
        """Note a token's use unless another process replaced it."""
        self._touch(keys=[keys.acd_token(key_id)], args=[fp, stamp])

    # -- refused logins -------------------------------------------------------------------------------------

    def refused_password(self, access: str) -> str | None:
        """The fingerprint of the password ACD last refused for an API access, or None."""
        value: str | None = self.r.get(keys.acd_refused_login(access))
        return value

    def refuse_password(self, access: str, fp: str, ttl_seconds: int) -> None:
        """Remember that ACD refused this password for this API access."""
        self.r.set(keys.acd_refused_login(access), fp, ex=ttl_seconds)

    def forget_refusal(self, access: str) -> None:
        """A login succeeded by hand: the workers may log in again."""
        self.r.delete(keys.acd_refused_login(access))

    # -- counters -------------------------------------------------------------------------------------------

    def count(self, name: str, label: str | None = None, amount: int = 1) -> None:
        """Bump an ACD counter (``logins``, ``sessions``, ``fec_fetches``…), in total and for ``label``."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hincrby(keys.ACD_STATS, name, amount)
        if label:
            pipe.hincrby(keys.ACD_STATS, f"{name}:{label}", amount)
        pipe.execute()

    def stats(self) -> dict[str, int]:
        """Every ACD counter."""
        raw: dict[str, Any] = self.r.hgetall(keys.ACD_STATS)
        return {k: int(v) for k, v in raw.items()}


class FecStore:
    """Each dossier's FEC board: the records waiting for a read, and the last read's times."""

    def __init__(self, client: Redis) -> None:
        self.r = client

    def register(
        self, scope: str, rid: str, conclusive_from: float, wanted: dict[str, Any]
    ) -> tuple[dict[str, str], float | None]:
        """Put a record in its dossier's waiting set (idempotent; a later ``conclusive_from`` wins); returns the
        board as it was then, read in the same round trip: the last read (``last_read``) and the planned one
        (``planned_read``)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(keys.fec_waiting(scope), {rid: conclusive_from}, gt=True)
        pipe.hset(keys.fec_wait(scope), rid, json.dumps(wanted))
        pipe.hgetall(keys.fec(scope))
        pipe.get(keys.fec_next(scope))
        _, _, meta, planned = pipe.execute()
        return meta, float(planned) if planned is not None else None

    def unregister(self, scope: str, *rids: str) -> None:
        """Take records out of their dossier's waiting set (two commands however many)."""
        if not rids:
            return
        pipe = self.r.pipeline(transaction=False)
        pipe.zrem(keys.fec_waiting(scope), *rids)
        pipe.hdel(keys.fec_wait(scope), *rids)
        pipe.execute()

    def waiting_count(self, scope: str) -> int:
        """How many records of a dossier wait for its FEC."""
        return int(self.r.zcard(keys.fec_waiting(scope)))

    def waiting(self, scope: str) -> list[tuple[str, float, dict[str, Any] | None]]:
        """Every waiting record with its ``conclusive_from`` and what it looks for (None: its details are gone)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.zrange(keys.fec_waiting(scope), 0, -1, withscores=True)
        pipe.hgetall(keys.fec_wait(scope))
        members, details = pipe.execute()
        return [(rid, float(score), json.loads(details[rid]) if rid in details else None) for rid, score in members]

    def forget_waiting(self, scope: str, rid: str) -> None:
        """Drop a waiting record whose details are gone."""
        self.r.zrem(keys.fec_waiting(scope), rid)

    def last_read(self, scope: str) -> dict[str, str]:
        """The dossier's last read: ``started_at``, ``duration``, ``finished_at`` (empty when never read)."""
        meta: dict[str, str] = self.r.hgetall(keys.fec(scope))
        return meta

    def read_started(self, scope: str, started_at: float) -> None:
        """A read starts: note when, and forget the read planned before it."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(keys.fec(scope), "started_at", started_at)
        pipe.delete(keys.fec_next(scope))
        pipe.execute()

    def read_finished(self, scope: str, duration: float, finished_at: float) -> None:
        """A read ended (read or failed): how long it took."""
        self.r.hset(keys.fec(scope), mapping={"duration": duration, "finished_at": finished_at})

    def planned_read(self, scope: str) -> float | None:
        """When the dossier's next read is planned, or None."""
        raw = self.r.get(keys.fec_next(scope))
        return float(raw) if raw is not None else None

    def plan_read(self, scope: str, due: float, ttl_seconds: float) -> None:
        """Note when the next read is planned (forgotten after ``ttl_seconds``)."""
        self.r.set(keys.fec_next(scope), due, px=int(ttl_seconds * 1000))


class ReferenceStore:
    """Each ACD dossier's reference data: a hash of JSON fields and two sets of account codes."""

    def __init__(self, client: Redis) -> None:
        self.r = client

    def save(self, scope: str, fields: dict[str, Any], general: set[str], subsidiaries: set[str]) -> None:
        """Replace a dossier's reference data, all at once."""
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(keys.reference_general(scope), keys.reference_subsidiaries(scope))
        if general:
            pipe.sadd(keys.reference_general(scope), *sorted(general))
        if subsidiaries:
            pipe.sadd(keys.reference_subsidiaries(scope), *sorted(subsidiaries))
        pipe.hset(keys.reference(scope), mapping=fields)
        pipe.execute()

    def load(self, scope: str) -> tuple[dict[str, str], set[str], set[str]]:
        """A dossier's reference fields, general accounts and subsidiary accounts (empty when never fetched)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(keys.reference(scope))
        pipe.smembers(keys.reference_general(scope))
        pipe.smembers(keys.reference_subsidiaries(scope))
        meta, general, tiers = pipe.execute()
        return meta, set(general), set(tiers)

    def refreshed_at(self, scope: str) -> float | None:
        """When a dossier's reference data was last fetched, or None."""
        raw = self.r.hget(keys.reference(scope), "refreshed_at")
        return float(raw) if raw else None

    def has_subsidiary(self, scope: str, code: str) -> bool:
        """Whether a subsidiary account is known to exist in the dossier."""
        return bool(self.r.sismember(keys.reference_subsidiaries(scope), code))

    def add_subsidiary(self, scope: str, code: str) -> None:
        """Record at once a subsidiary account created in (or found in) the dossier."""
        self.r.sadd(keys.reference_subsidiaries(scope), code)
