"""The dead-letter store's rules: what a dead letter holds, and how a replay resumes without duplicates."""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from collections.abc import Callable
from typing import Any

from pipeline.errors import HubsyncError
from pipeline.store import DeadLetter, Record, Store, new_dead_letter_id, now

Enqueue = Callable[[str, str, int, str], None]
"""``enqueue(provider, record_id, generation, from_step)``: start a provider's chain at a step."""

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


class ReplayError(RuntimeError):
    """A replay that cannot happen (unknown id, already closed, nothing to replay)."""


def replay(store: Store, dl_id: str, enqueue: Enqueue, ingest: Callable[[Any], str], who: str = "") -> str:
    """Resume a dead-lettered chain from its failed step (or re-check a kept event); returns what happened."""
    dl = store.dead_letters.get(dl_id)
    if dl is None:
        raise ReplayError(f"no dead letter {dl_id}")
    if dl.status != "open":
        raise ReplayError(f"dead letter {dl_id} is {dl.status}, not open")
    if dl.provider == INGEST:
        if isinstance(dl.event, dict) and dl.event.get("truncated"):
            raise ReplayError(f"dead letter {dl_id} kept only the head of a huge event; emit a corrected one")
        store.dead_letters.close(dl_id, "replayed", "replay", who=who)
        outcome = ingest(dl.event)
        return f"event re-checked: {outcome}"
    rec = store.records.get(dl.record_id)
    if rec is None:
        raise ReplayError(f"the record {dl.record_id} of dead letter {dl_id} is gone")
    generation = rec.generation + 1
    state = "confirmed" if rec.confirmed_at else ("posted" if rec.posted_at or rec.provider_id else "received")
    store.records.update(
        rec.id,
        generation=generation,
        state=state,
        step=dl.step,
        retry_since=None,
        next_retry_at=None,
        dead_letter_id=None,
    )
    store.records.add_attempt(rec.id, {"step": dl.step, "outcome": "replayed", "dead_letter": dl_id})
    store.dead_letters.close(dl_id, "replayed", "replay", who=who)
    enqueue(rec.provider, rec.id, generation, dl.step)
    return f"chain resumed at {dl.step}"


def discard(store: Store, dl_id: str, reason: str, who: str = "") -> None:
    """Close a dead letter on purpose, with the reason kept in its audit trail."""
    if not reason.strip():
        raise ReplayError("a discard needs a reason")
    dl = store.dead_letters.get(dl_id)
    if dl is None:
        raise ReplayError(f"no dead letter {dl_id}")
    if not store.dead_letters.close(dl_id, "discarded", "discard", reason=reason, who=who):
        raise ReplayError(f"dead letter {dl_id} is {dl.status}, not open")
    if dl.record_id:
        store.records.add_attempt(dl.record_id, {"step": dl.step, "outcome": "discarded", "reason": reason})
        settle = DISCARD_SETTLERS.get(dl.provider)
        if settle is not None:
            module, _, name = settle.partition(":")
            getattr(importlib.import_module(module), name)(store, dl, reason)
        rec = store.records.get(dl.record_id)
        if rec is not None and rec.dead_letter_id == dl_id:
            # settled for good: nothing waits on it any more, so retention may shrink it after the window
            store.records.update(dl.record_id, discarded=dl_id)


# A provider whose discard can mean "it landed after all" settles its record here (imported when needed, so
# that the command line and the dashboard need not know the provider).
DISCARD_SETTLERS = {"cegid_loop": "pipeline.cegid.steps:settle_discarded"}
