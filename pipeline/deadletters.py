"""Dead letters: what one holds when a chain stops at a step or an event cannot go further (what an operator
then does with it is ``pipeline.dlq``)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pipeline.errors import HubsyncError
from pipeline.store import DeadLetter, Record, Store, new_dead_letter_id, now

INGEST = "ingest"
MAX_KEPT_EVENT_CHARS = 256 * 1024


def dead_letter_record(store: Store, rec: Record, step: str, error: HubsyncError) -> DeadLetter:
    """Stop a record's chain at ``step`` and keep it for an operator (once, however often it is called)."""
    if rec.dead_letter_id:
        existing = store.dead_letters.get(rec.dead_letter_id)
        if existing is not None and existing.status == "open":
            return existing
    dl = DeadLetter(
        id=new_dead_letter_id(),
        provider=rec.provider,
        client_file_id=rec.client_file_id,
        entry_id=rec.entry_id,
        record_id=rec.id,
        step=step,
        error_class=error.error_class,
        error_kind=str(error.kind),
        message=error.message,
        hint=error.hint,
        created_at=now(),
        event=rec.event,
        attempts=store.records.attempts(rec.id),
        event_id=rec.event_id,
    )
    store.dead_letters.add(dl)
    store.records.update(
        rec.id, state="dead", step=step, dead_letter_id=dl.id, last_error=error.to_dict(), next_retry_at=None
    )
    return dl


_EVENT_ID_IN_TEXT = re.compile(r'"event_id"\s*:\s*"((?:[^"\\]|\\.){1,128})"')


def event_id_of(raw: Any) -> str:
    """The ``event_id`` of an event, even one that is not valid JSON when ``"event_id": "…"`` can be read in it."""
    if isinstance(raw, dict):
        value = raw.get("event_id")
        return str(value)[:128] if isinstance(value, str | int | float) and not isinstance(value, bool) else ""
    if isinstance(raw, bytes | bytearray):
        raw = bytes(raw[:MAX_KEPT_EVENT_CHARS]).decode("utf-8", "replace")
    if isinstance(raw, str):
        match = _EVENT_ID_IN_TEXT.search(raw[:MAX_KEPT_EVENT_CHARS])
        if match:
            try:
                value = json.loads(f'"{match.group(1)}"')
            except ValueError:
                return match.group(1)
            return str(value)
    return ""


def dead_letter_event(
    store: Store, raw: Any, error: HubsyncError, *, step: str = "validate", client_file_id: str = "", entry_id: str = ""
) -> DeadLetter:
    """Keep an event that cannot go further (refused, or no provider connected). The id is derived from the
    event itself so that a redelivery keeps one dead letter."""
    text = raw if isinstance(raw, str) else json.dumps(raw, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    kept: Any = raw
    if len(text) > MAX_KEPT_EVENT_CHARS:
        kept = {
            "truncated": True,
            "size_chars": len(text),
            "sha256": digest,
            "head": text[:4096],
        }
    dl = DeadLetter(
        id=f"dl_evt_{digest[:20]}",
        provider=INGEST,
        client_file_id=client_file_id,
        entry_id=entry_id,
        record_id="",
        step=step,
        error_class=error.error_class,
        error_kind=str(error.kind),
        message=error.message,
        hint=error.hint,
        created_at=now(),
        event=kept,
        attempts=[{"at": now(), "step": step, **error.to_dict()}],
        event_id=event_id_of(raw),
    )
    existing = store.dead_letters.get(dl.id)
    if existing is not None and existing.status != "open":
        store.dead_letters.reopen(dl.id, f"refused again: {error.message}")
        return existing
    store.dead_letters.add(dl)
    return dl
