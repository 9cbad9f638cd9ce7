"""The durable records: connections, one record per entry per provider, dead letters, locks, ACK codes.

The record is the truth and a broker message is disposable: a task carries a record id, reads what it
needs here, and writes its progress back, so any step can run again on any worker and a replay only has
to re-enqueue an id. Everything lives in Redis under ``hubsync:``; the keys of one record share a hash
tag (``{provider:client_file:entry}``) so they land in one slot of a Redis cluster.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import secrets as _random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from pipeline.config import settings

P = "hubsync"
ATTEMPTS_KEPT = 100

STATES = ("received", "waiting_retry", "posted", "confirmed", "exported", "skipped", "dead")
ACK_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""


def now() -> float:
    """Wall-clock seconds; one place to read the time."""
    return time.time()


def record_id(provider: str, client_file_id: str, entry_id: str) -> str:
    """The id of an entry's record with one provider."""
    return f"{provider}:{client_file_id}:{entry_id}"


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _loads(raw: str | None, default: Any = None) -> Any:
    return default if raw is None or raw == "" else json.loads(raw)


@dataclass
class Connection:
    """A client file's connection to one provider. ``secret`` is sealed; only the client unseals it."""

    provider: str
    client_file_id: str
    params: dict[str, Any]
    sealed_secret: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
    status: str = "ready"
    status_message: str = ""


@dataclass
class Record:
    """Where one entry stands with one provider."""

    id: str
    provider: str
    client_file_id: str
    entry_id: str
    state: str
    step: str
    event: dict[str, Any]
    event_id: str
    ack: str | None = None
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    payload: dict[str, Any] | None = None
    provider_id: str | None = None
    post_started_at: float | None = None
    posted_at: float | None = None
    confirmed_at: float | None = None
    retry_since: float | None = None
    next_retry_at: float | None = None
    last_error: dict[str, Any] | None = None
    dead_letter_id: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    generation: int = 0
    attempts_count: int = 0
    note: str = ""

    @classmethod
    def from_hash(cls, rid: str, h: dict[str, str]) -> Record:
        """Rebuild a record from its Redis hash."""

        def opt_float(name: str) -> float | None:
            raw = h.get(name)
            return float(raw) if raw else None

        provider, client_file_id, entry_id = rid.split(":", 2)
        return cls(
            id=rid,
            provider=provider,
            client_file_id=client_file_id,
            entry_id=entry_id,
            state=h.get("state", "received"),
            step=h.get("step", ""),
            event=_loads(h.get("event"), {}),
            event_id=h.get("event_id", ""),
            ack=h.get("ack") or None,
            docs={k[4:]: json.loads(v) for k, v in h.items() if k.startswith("doc:")},
            payload=_loads(h.get("payload")),
            provider_id=h.get("provider_id") or None,
            post_started_at=opt_float("post_started_at"),
            posted_at=opt_float("posted_at"),
            confirmed_at=opt_float("confirmed_at"),
            retry_since=opt_float("retry_since"),
            next_retry_at=opt_float("next_retry_at"),
            last_error=_loads(h.get("last_error")),
            dead_letter_id=h.get("dead_letter_id") or None,
            created_at=float(h.get("created_at") or 0),
            updated_at=float(h.get("updated_at") or 0),
            generation=int(h.get("generation") or 0),
            attempts_count=int(h.get("attempts_count") or 0),
            note=h.get("note", ""),
        )


@dataclass
class DeadLetter:
    """A chain (or an event) that stopped and waits for an operator."""

    id: str
    provider: str
    client_file_id: str
    entry_id: str
    record_id: str
    step: str
    error_class: str
    error_kind: str
    message: str
    hint: str
    created_at: float
    event: Any = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    status: str = "open"
    audit: list[dict[str, Any]] = field(default_factory=list)
    event_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for ``--json`` and the dashboard."""
        return {
            "id": self.id,
            "event_id": self.event_id,
            "provider": self.provider,
            "client_file_id": self.client_file_id,
            "entry_id": self.entry_id,
            "record_id": self.record_id,
            "step": self.step,
            "error_class": self.error_class,
            "error_kind": self.error_kind,
            "message": self.message,
            "hint": self.hint,
            "created_at": self.created_at,
            "attempts": self.attempts,
            "status": self.status,
            "audit": self.audit,
            "event": self.event,
        }


class LockBusy(RuntimeError):
    """Somebody else holds the lock."""


class Store:
    """Typed access to everything hubsync keeps in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        # redis-py's annotations do not model decode_responses=True (every reply here is a str).
        self.r: Any = client
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(cls, url: str | None = None) -> Store:
        """Connect to the store at ``url`` (default: ``HUBSYNC_REDIS_URL``)."""
        return cls(redis.Redis.from_url(url or settings().redis_url, decode_responses=True))

    # -- connections -------------------------------------------------------------------------------

    def save_connection(self, conn: Connection) -> None:
        """Create or replace a client file's connection to a provider."""
        key = f"{P}:conn:{conn.client_file_id}:{conn.provider}"
        existing = self.r.hget(key, "created_at")
        stamp = now()
        self.r.hset(
            key,
            mapping={
                "provider": conn.provider,
                "client_file_id": conn.client_file_id,
                "params": _dumps(conn.params),
                "secret": conn.sealed_secret,
                "created_at": existing or stamp,
                "updated_at": stamp,
                "status": conn.status,
                "status_message": conn.status_message,
            },
        )
        self.r.sadd(f"{P}:conns", f"{conn.client_file_id}:{conn.provider}")

    def connection(self, client_file_id: str, provider: str) -> Connection | None:
        """One connection, or None."""
        h = self.r.hgetall(f"{P}:conn:{client_file_id}:{provider}")
        if not h:
            return None
        return Connection(
            provider=h["provider"],
            client_file_id=h["client_file_id"],
            params=_loads(h.get("params"), {}),
            sealed_secret=h.get("secret", ""),
            created_at=float(h.get("created_at") or 0),
            updated_at=float(h.get("updated_at") or 0),
            status=h.get("status", "ready"),
            status_message=h.get("status_message", ""),
        )

    def connections(self, client_file_id: str | None = None) -> list[Connection]:
        """Every connection, or those of one client file."""
        out = []
        for member in sorted(self.r.smembers(f"{P}:conns")):
            cf, provider = member.rsplit(":", 1)
            if client_file_id is not None and cf != client_file_id:
                continue
            conn = self.connection(cf, provider)
            if conn is not None:
                out.append(conn)
        return out

    def set_connection_status(self, client_file_id: str, provider: str, status: str, message: str = "") -> None:
        """Mark a connection (e.g. ``auth_failed``) so that no worker keeps trying a wrong password."""
        self.r.hset(f"{P}:conn:{client_file_id}:{provider}", mapping={"status": status, "status_message": message})

    # -- events ------------------------------------------------------------------------------------

    def event_status(self, event_id: str) -> str | None:
        """``done`` once an event's fan-out finished; None when never seen."""
        value: str | None = self.r.get(f"{P}:event:{event_id}")
        return value

    def mark_event(self, event_id: str, status: str) -> None:
        """Remember an event id so that a second delivery has no effect."""
        self.r.set(f"{P}:event:{event_id}", status, ex=settings().event_ttl_seconds)

    def count(self, name: str, amount: int = 1) -> None:
        """Bump a global counter (events received, duplicates, refused…)."""
        self.r.hincrby(f"{P}:counters", name, amount)

    def counters(self) -> dict[str, int]:
        """Every global counter."""
        return {k: int(v) for k, v in self.r.hgetall(f"{P}:counters").items()}

    # -- records -----------------------------------------------------------------------------------

    def _rkey(self, rid: str) -> str:
        return f"{P}:rec:{{{rid}}}"

    def record(self, rid: str) -> Record | None:
        """One record, or None."""
        h = self.r.hgetall(self._rkey(rid))
        return Record.from_hash(rid, h) if h else None

    def fields(self, rid: str, *names: str) -> list[str | None]:
        """Some fields of a record, as stored (None where missing)."""
        return list(self.r.hmget(self._rkey(rid), list(names)))

    def create_record(self, rid: str, event: dict[str, Any], event_id: str) -> Record:
        """A new record in state ``received`` for an entry's first event."""
        stamp = now()
        provider, client_file_id, entry_id = rid.split(":", 2)
        self.r.hset(
            self._rkey(rid),
            mapping={
                "state": "received",
                "step": "received",
                "event": _dumps(event),
                "event_id": event_id,
                "created_at": stamp,
                "updated_at": stamp,
                "generation": 0,
            },
        )
        self.r.sadd(f"{P}:idx:{provider}:{client_file_id}", entry_id)
        self.r.sadd(f"{P}:idx", f"{provider}:{client_file_id}")
        self.r.sadd(f"{P}:entry:{entry_id}", rid)
        record = self.record(rid)
        assert record is not None
        return record

    def update(self, rid: str, **fields: Any) -> None:
        """Write some fields of a record; None clears a field, dicts and lists are stored as JSON."""
        mapping: dict[str, str | float | int] = {"updated_at": now()}
        clear = []
        for name, value in fields.items():
            if value is None:
                clear.append(name)
            elif isinstance(value, dict | list):
                mapping[name] = _dumps(value)
            elif isinstance(value, bool):
                mapping[name] = int(value)
            else:
                mapping[name] = value
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(self._rkey(rid), mapping=mapping)
        if clear:
            pipe.hdel(self._rkey(rid), *clear)
        pipe.execute()

    def update_doc(self, rid: str, doc_id: str, **fields: Any) -> dict[str, Any]:
        """Merge fields into one document's progress inside a record."""
        key = self._rkey(rid)
        doc: dict[str, Any] = _loads(self.r.hget(key, f"doc:{doc_id}"), {})
        doc.update(fields)
        self.r.hset(key, f"doc:{doc_id}", _dumps(doc))
        return doc

    def enqueued_event(self, rid: str) -> str | None:
        """The event whose chain was last enqueued for a record."""
        value: str | None = self.r.hget(self._rkey(rid), "enqueued_event")
        return value

    def add_attempt(self, rid: str, attempt: dict[str, Any]) -> None:
        """Append to a record's attempt history (the newest ``ATTEMPTS_KEPT`` are kept)."""
        key = f"{P}:rec:{{{rid}}}:attempts"
        pipe = self.r.pipeline(transaction=False)
        pipe.rpush(key, _dumps({"at": now(), **attempt}))
        pipe.ltrim(key, -ATTEMPTS_KEPT, -1)
        pipe.hincrby(self._rkey(rid), "attempts_count", 1)
        pipe.execute()

    def attempts(self, rid: str) -> list[dict[str, Any]]:
        """A record's attempt history, oldest first."""
        return [json.loads(a) for a in self.r.lrange(f"{P}:rec:{{{rid}}}:attempts", 0, -1)]

    def record_ids(self, provider: str, client_file_id: str) -> list[str]:
        """Every record id of a provider and client file."""
        return [
            record_id(provider, client_file_id, e)
            for e in sorted(self.r.smembers(f"{P}:idx:{provider}:{client_file_id}"))
        ]

    def record_groups(self) -> list[tuple[str, str]]:
        """Every (provider, client file) pair that has records."""
        pairs = (m.split(":", 1) for m in self.r.smembers(f"{P}:idx"))
        return sorted((provider, client_file) for provider, client_file in pairs)

    def records_of_entry(self, entry_id: str) -> list[Record]:
        """An entry's records with every provider."""
        out = []
        for rid in sorted(self.r.smembers(f"{P}:entry:{entry_id}")):
            rec = self.record(rid)
            if rec is not None:
                out.append(rec)
        return out

    def states(self, provider: str, client_file_id: str) -> dict[str, int]:
        """How many records of a group are in each state."""
        counts = dict.fromkeys(STATES, 0)
        ids = self.record_ids(provider, client_file_id)
        pipe = self.r.pipeline(transaction=False)
        for rid in ids:
            pipe.hget(self._rkey(rid), "state")
        for state in pipe.execute():
            if state:
                counts[state] = counts.get(state, 0) + 1
        return counts

    # -- ACK codes ---------------------------------------------------------------------------------

    def allocate_ack(self, scope: str, owner: str) -> str:
        """A 4-character code unique within ``scope`` (one ACD dossier) and always the same for ``owner``."""
        key = f"{P}:ack:{scope}"
        for n in range(10_000):
            digest = hashlib.sha256(f"{scope}|{owner}|{n}".encode()).digest()
            code = "".join(ACK_ALPHABET[b % len(ACK_ALPHABET)] for b in digest[:4])
            if self.r.hsetnx(key, code, owner) or self.r.hget(key, code) == owner:
                return code
        raise RuntimeError(f"no free ACK code left in {scope}")

    # -- dead letters ------------------------------------------------------------------------------

    def add_dead_letter(self, dl: DeadLetter) -> None:
        """Keep a dead letter; writing the same id twice keeps the first."""
        key = f"{P}:dlq:{dl.id}"
        if self.r.exists(key):
            return
        self.r.hset(key, mapping={"data": _dumps(dl.to_dict())})
        self.r.zadd(f"{P}:dlq:open", {dl.id: dl.created_at})

    def dead_letter(self, dl_id: str) -> DeadLetter | None:
        """One dead letter, or None."""
        raw = self.r.hget(f"{P}:dlq:{dl_id}", "data")
        if raw is None:
            return None
        return DeadLetter(**json.loads(raw))

    def dead_letters(self, provider: str | None = None, status: str = "open") -> list[DeadLetter]:
        """Dead letters, oldest first; ``status`` is ``open`` or ``closed``."""
        ids = self.r.zrange(f"{P}:dlq:{status}", 0, -1)
        pipe = self.r.pipeline(transaction=False)
        for dl_id in ids:
            pipe.hget(f"{P}:dlq:{dl_id}", "data")
        out = []
        for raw in pipe.execute():
            if raw is None:
                continue
            dl = DeadLetter(**json.loads(raw))
            if provider is None or dl.provider == provider:
                out.append(dl)
        return out

    def close_dead_letter(self, dl_id: str, status: str, action: str, reason: str = "", who: str = "") -> bool:
        """Mark a dead letter replayed or discarded, with an audit line; False if it was not open."""
        if not self.r.zrem(f"{P}:dlq:open", dl_id):
            return False
        dl = self.dead_letter(dl_id)
        if dl is None:
            return False
        entry = {"at": now(), "who": who or _whoami(), "action": action, "reason": reason}
        dl.status = status
        dl.audit.append(entry)
        self.r.hset(f"{P}:dlq:{dl_id}", "data", _dumps(dl.to_dict()))
        self.r.zadd(f"{P}:dlq:closed", {dl_id: now()})
        self.r.lpush(f"{P}:audit", _dumps({**entry, "dead_letter": dl_id}))
        return True

    def reopen_dead_letter(self, dl_id: str, note: str) -> None:
        """Open a closed dead letter again (a replayed event was refused once more)."""
        dl = self.dead_letter(dl_id)
        if dl is None:
            return
        dl.status = "open"
        dl.audit.append({"at": now(), "who": "hubsync", "action": "reopened", "reason": note})
        self.r.hset(f"{P}:dlq:{dl_id}", "data", _dumps(dl.to_dict()))
        self.r.zrem(f"{P}:dlq:closed", dl_id)
        self.r.zadd(f"{P}:dlq:open", {dl_id: now()})

    # -- locks -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, name: str, ttl_seconds: float, wait_seconds: float = 0.0) -> Iterator[None]:
        """A lock shared by every worker on every machine; raises ``LockBusy`` after ``wait_seconds``."""
        key = f"{P}:lock:{name}"
        token = uuid.uuid4().hex
        deadline = time.monotonic() + wait_seconds
        while not self.r.set(key, token, nx=True, px=int(ttl_seconds * 1000)):
            if time.monotonic() >= deadline:
                raise LockBusy(name)
            time.sleep(0.02 + _random.randbelow(30) / 1000)
        try:
            yield
        finally:
            self._release(keys=[key], args=[token])


def _whoami() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # pragma: no cover - no user database in some containers
        return "unknown"


def new_dead_letter_id() -> str:
    """A fresh, sortable dead-letter id."""
    return f"dl_{int(now() * 1000):x}{uuid.uuid4().hex[:6]}"
