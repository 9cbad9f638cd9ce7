"""What the store holds, as Python values: records, dead letters, connections, and the packed form a record
keeps once its history window has passed."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

STATES = ("received", "waiting_retry", "posted", "confirmed", "exported", "skipped", "dead")
FINAL_STATES = ("confirmed", "exported", "skipped")
IN_FLIGHT_STATES = ("received", "posted", "waiting_retry")

# What a settled record keeps for good once its history window has passed, in this order (``|``-separated;
# the provider id goes last so that nothing it holds can shift the others). Enough to never post it twice:
# the state (counted), the event it came from (a redelivery of it is recognised), its ACK code, when it
# settled and whether (when) it was posted, the start of a post whose outcome stayed unknown (a re-validation
# looks it up before posting), the dead letter a discarded record was closed with. It is packed small (a
# letter per state, times in base 36: about 50 bytes, so that Redis stores it in a smaller block): its
# confirmation time is its settling time, and a discarded record's dead letter is the one it was discarded
# with. The record scripts (``lua/record.lua``) pack and unpack the same way.
COMPACT_FIELDS = (
    "state",
    "event_id",
    "ack",
    "generation",
    "settled_at",
    "posted_at",
    "post_started_at",
    "discarded",
    "provider_id",
)
COMPACT_TIMES = ("settled_at", "posted_at", "post_started_at")
STATE_CODES = {
    "received": "r",
    "waiting_retry": "w",
    "posted": "p",
    "confirmed": "c",
    "exported": "e",
    "skipped": "s",
    "dead": "d",
}
_STATE_NAMES = {code: name for name, code in STATE_CODES.items()}


_clock: Callable[[], float] | None = None


def now() -> float:
    """Wall-clock seconds; one place to read the time."""
    return time.time() if _clock is None else _clock()


def use_clock(clock: Callable[[], float] | None) -> None:
    """Read the time from ``clock`` (a benchmark replaying months), or from the wall again (None)."""
    global _clock
    _clock = clock


def record_id(provider: str, client_file_id: str, entry_id: str) -> str:
    """The id of an entry's record with one provider."""
    return f"{provider}:{client_file_id}:{entry_id}"


def split_record_id(rid: str) -> tuple[str, str, str]:
    """A record id's provider, client file and entry id."""
    provider, client_file_id, entry_id = rid.split(":", 2)
    return provider, client_file_id, entry_id


def new_dead_letter_id() -> str:
    """A fresh, sortable dead-letter id."""
    return f"dl_{int(now() * 1000):x}{uuid.uuid4().hex[:6]}"


def dumps(value: Any) -> str:
    """Compact JSON, as every structured field is stored."""
    return json.dumps(value, separators=(",", ":"), default=str)


def loads(raw: str | None, default: Any = None) -> Any:
    """JSON read back (``default`` when absent or empty)."""
    return default if raw is None or raw == "" else json.loads(raw)


def unpack_compact(packed: str) -> dict[str, str]:
    """The fields a trimmed record kept, decoded (with those derived from them: ``confirmed_at``,
    ``dead_letter_id``), as its hash would hold them."""
    values = packed.split("|", len(COMPACT_FIELDS) - 1)
    h = {name: value for name, value in zip(COMPACT_FIELDS, values, strict=False) if value}
    if "state" in h:
        h["state"] = _STATE_NAMES.get(h["state"], h["state"])
    for name in COMPACT_TIMES:
        if name in h:
            h[name] = str(int(h[name], 36))
    if h.get("state") in ("confirmed", "exported") and "settled_at" in h:
        h["confirmed_at"] = h["settled_at"]
    if "discarded" in h:
        h["dead_letter_id"] = h["discarded"]
    return h


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


_MODELLED = frozenset(
    (
        "state",
        "step",
        "event",
        "event_id",
        "ack",
        "payload",
        "provider_id",
        "post_started_at",
        "posted_at",
        "confirmed_at",
        "retry_since",
        "next_retry_at",
        "last_error",
        "dead_letter_id",
        "created_at",
        "updated_at",
        "generation",
        "attempts_count",
        "note",
        "settled_at",
    )
)


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
    settled_at: float | None = None
    trimmed: bool = False
    extra: dict[str, str] = field(default_factory=dict)
    """Fields a provider keeps on its records that this model does not name (e.g. ACD's FEC outcome)."""

    @classmethod
    def from_hash(cls, rid: str, h: dict[str, str]) -> Record:
        """Rebuild a record from its Redis hash."""

        def opt_float(name: str) -> float | None:
            raw = h.get(name)
            return float(raw) if raw else None

        provider, client_file_id, entry_id = split_record_id(rid)
        return cls(
            id=rid,
            provider=provider,
            client_file_id=client_file_id,
            entry_id=entry_id,
            state=h.get("state", "received"),
            step=h.get("step", ""),
            event=loads(h.get("event"), {}),
            event_id=h.get("event_id", ""),
            ack=h.get("ack") or None,
            docs={k[4:]: json.loads(v) for k, v in h.items() if k.startswith("doc:")},
            payload=loads(h.get("payload")),
            provider_id=h.get("provider_id") or None,
            post_started_at=opt_float("post_started_at"),
            posted_at=opt_float("posted_at"),
            confirmed_at=opt_float("confirmed_at"),
            retry_since=opt_float("retry_since"),
            next_retry_at=opt_float("next_retry_at"),
            last_error=loads(h.get("last_error")),
            dead_letter_id=h.get("dead_letter_id") or None,
            created_at=float(h.get("created_at") or 0),
            updated_at=float(h.get("updated_at") or 0),
            generation=int(h.get("generation") or 0),
            attempts_count=int(h.get("attempts_count") or 0),
            note=h.get("note", ""),
            settled_at=opt_float("settled_at"),
            extra={k: v for k, v in h.items() if k not in _MODELLED and not k.startswith("doc:")},
        )

    @classmethod
    def from_compact(cls, rid: str, packed: str) -> Record:
        """Rebuild what a trimmed record kept (``COMPACT_FIELDS``): no event, payload, documents or attempts."""
        rec = cls.from_hash(rid, unpack_compact(packed))
        rec.trimmed = True
        return rec


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
