"""Ingest: validate an ``entry.validated`` event, drop repeats, and fan it out to every connected provider
(each one's ``fan_out``, from ``pipeline.registry``)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from marshmallow import ValidationError

from pipeline.deadletters import dead_letter_event
from pipeline.errors import InvalidEvent, NoConnection
from pipeline.model import Event
from pipeline.providers import Enqueue
from pipeline.registry import PROVIDERS
from pipeline.store import Store
from schemas.event import MAX_EVENT_BYTES, flatten_errors, load_event

log = logging.getLogger(__name__)

INGEST_TASK = "hubsync.ingest_event"
"""The task the upstream publishes each event to, on the ``events`` queue (``pipeline.queues.EVENTS_QUEUE``)."""


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
    conns = store.connections.of_client_file(event.client_file_id, PROVIDERS.names())
    if not conns:
        dl = dead_letter_event(
            store,
            data,
            NoConnection(f"client file {event.client_file_id} has no provider connected"),
            step="fan_out",
            client_file_id=event.client_file_id,
            entry_id=event.entry.id,
        )
        store.events.mark(event.event_id, "no_connection", count="events_received")
        return IngestResult("refused", event.event_id, [dl.message], dead_letter_id=dl.id)
    result = IngestResult("accepted", event.event_id)
    acted = False
    for conn in conns:
        rid, did = PROVIDERS.get(conn.provider).fan_out(store, event, data, enqueue)
        result.records.append(rid)
        acted = acted or did
    # Not acted: two deliveries of one event raced past the first check; the record lock let only one through.
    store.events.mark(event.event_id, "done", count="events_received" if acted else "events_duplicate")
    if not acted:
        result.outcome = "duplicate"
    return result
