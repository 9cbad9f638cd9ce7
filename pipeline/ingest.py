"""Ingest: validate an ``entry.validated`` event, drop repeats, and fan it out to every connected provider."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from marshmallow import ValidationError

from pipeline.cegid.export import fan_out_cegid_loop
from pipeline.deadletters import Enqueue, dead_letter_event
from pipeline.errors import InvalidEvent, NoConnection
from pipeline.model import Event
from pipeline.store import Store, record_id
from schemas.event import MAX_EVENT_BYTES, flatten_errors, load_event

log = logging.getLogger(__name__)

FIRST_STEP = {"acd": "fetch"}


@dataclass
class IngestResult:
    """What became of one event: ``accepted``, ``duplicate`` or ``refused`` (with the reasons)."""

    outcome: str
    event_id: str | None = None
    errors: list[str] = field(default_factory=list)
    dead_letter_id: str | None = None
    records: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs and the command line."""
        if self.outcome == "refused":
            return "refused: " + "; ".join(self.errors)
        return f"{self.outcome} ({', '.join(self.records) or 'no record'})"


def parse(raw: Any) -> tuple[Event | None, Any, list[str]]:
    """Decode (when needed) and validate; returns the event, the decoded data and the errors."""
    data = raw
    if isinstance(raw, bytes | bytearray):
        if len(raw) > MAX_EVENT_BYTES:
            return None, raw[:4096].decode("utf-8", "replace"), [f"event: larger than {MAX_EVENT_BYTES} bytes"]
        raw = raw.decode("utf-8", "replace")
    if isinstance(raw, str):
        if len(raw.encode("utf-8", "surrogatepass")) > MAX_EVENT_BYTES:
            return None, raw, [f"event: larger than {MAX_EVENT_BYTES} bytes"]
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            return None, raw, [f"event: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"]
        except RecursionError:
            return None, raw[:4096], ["event: nested too deeply"]
    elif len(json.dumps(raw, default=str)) > MAX_EVENT_BYTES:
        return None, raw, [f"event: larger than {MAX_EVENT_BYTES} bytes"]
    try:
        return load_event(data), data, []
    except ValidationError as exc:
        return None, data, flatten_errors(exc.messages)
    except RecursionError:
        return None, data, ["event: nested too deeply"]


def refuse(store: Store, data: Any, errors: list[str]) -> IngestResult:
    """Keep a refused event as a dead letter naming every field error."""
    ids = data if isinstance(data, dict) else {}
    entry = ids.get("entry") if isinstance(ids.get("entry"), dict) else {}
    dl = dead_letter_event(
        store,
        data,
        InvalidEvent("; ".join(errors)),
        client_file_id=str(ids.get("client_file_id", ""))[:128],
        entry_id=str(entry.get("id", ""))[:128] if entry else "",
    )
    store.events.count("events_refused")
    return IngestResult("refused", dl.event_id or None, errors, dead_letter_id=dl.id)


def ingest(store: Store, raw: Any, enqueue: Enqueue) -> IngestResult:
    """Validate and fan out one event; a second delivery of the same ``event_id`` has no effect."""
    event, data, errors = parse(raw)
    if event is None:
        result = refuse(store, data, errors)
        log.warning("event refused (%s): %s", result.dead_letter_id, "; ".join(errors))
        return result
    if store.events.status(event.event_id) == "done":
        store.events.count("events_duplicate")
        return IngestResult("duplicate", event.event_id)
    conns = store.connections.of_client_file(event.client_file_id, list(FANOUT))
    if not conns:
        dl = dead_letter_event(
            store,
            data,
            NoConnection(f"client file {event.client_file_id} has no provider connected"),
            step="fan_out",
            client_file_id=event.client_file_id,
            entry_id=event.entry.id,
        )
        store.events.mark(event.event_id, "no_connection")
        store.events.count("events_received")
        return IngestResult("refused", event.event_id, [dl.message], dead_letter_id=dl.id)
    result = IngestResult("accepted", event.event_id)
    acted = False
    for conn in conns:
        rid, did = FANOUT[conn.provider](store, event, data, enqueue)
        result.records.append(rid)
        acted = acted or did
    store.events.mark(event.event_id, "done")
    if not acted:
        # Two deliveries of one event raced past the first check; the record lock let only one through.
        store.events.count("events_duplicate")
        result.outcome = "duplicate"
    else:
        store.events.count("events_received")
    return result


def fan_out_acd(store: Store, event: Event, data: dict[str, Any], enqueue: Enqueue) -> tuple[str, bool]:
    """Create (or update) the entry's ACD record and start its chain, once per event; says whether it acted."""
    rid = record_id("acd", event.client_file_id, event.entry.id)
    # An entry's first event (the common case) needs no lock: the record is created only if none exists, in one
    # script, and only the delivery that created it starts the chain. It says its event is enqueued before the
    # message goes: a worker dying in between leaves a record in flight that the resume sweep sends on.
    if store.records.create_new(rid, data, event.event_id, enqueued_event=event.event_id) is not None:
        enqueue("acd", rid, 0, FIRST_STEP["acd"])
        return rid, True
    with store.locks.hold(f"record:{rid}", ttl_seconds=30, wait_seconds=15):
        rec = store.records.get(rid)
        if rec is None:
            store.records.create(rid, data, event.event_id)
            enqueue("acd", rid, 0, FIRST_STEP["acd"])
            store.records.update(rid, enqueued_event=event.event_id)
            return rid, True
        if rec.event_id == event.event_id:
            if store.records.enqueued_event(rid) != event.event_id:
                enqueue("acd", rid, rec.generation, FIRST_STEP["acd"])
                store.records.update(rid, enqueued_event=event.event_id)
                return rid, True
            return rid, False
        if rec.posted_at or rec.provider_id:
            number = f"EcritureNum {rec.provider_id}" if rec.provider_id else f"ACK code (#{rec.ack}#)"
            store.records.update(
                rid,
                note=(
                    f"validated again by {event.event_id} after it was posted to ACD ({number}); "
                    "ACD entries cannot be changed through its API: change it in ACD if needed"
                ),
            )
            store.records.add_attempt(
                rid, {"step": "received", "outcome": "revalidated_after_post", "event_id": event.event_id}
            )
            return rid, True
        generation = rec.generation + 1
        if rec.dead_letter_id:
            store.dead_letters.close(
                rec.dead_letter_id, "superseded", "revalidated", reason=event.event_id, who="hubsync"
            )
        store.records.update(
            rid,
            event=data,
            event_id=event.event_id,
            generation=generation,
            state="received",
            step="received",
            payload=None,
            retry_since=None,
            dead_letter_id=None,
            post_started_at=rec.post_started_at,
        )
        store.records.add_attempt(rid, {"step": "received", "outcome": "revalidated", "event_id": event.event_id})
        enqueue("acd", rid, generation, FIRST_STEP["acd"])
        store.records.update(rid, enqueued_event=event.event_id)
        return rid, True


FANOUT: dict[str, Callable[[Store, Event, dict[str, Any], Enqueue], tuple[str, bool]]] = {
    "acd": fan_out_acd,
    "cegid_loop": fan_out_cegid_loop,
}
