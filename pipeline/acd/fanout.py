"""Ingest's part for ACD: one record per entry and client file, its chain started once per event.

A later event of the same entry (validated again) restarts the chain from the start while nothing reached ACD;
once the entry was posted, ACD's API cannot change it, and the record only says so.
"""

from __future__ import annotations

from typing import Any

from pipeline.acd.context import PROVIDER
from pipeline.acd.steps import CHAIN
from pipeline.model import Event
from pipeline.providers import Enqueue
from pipeline.store import Store, record_id

FIRST_STEP = CHAIN[0].name


def fan_out_acd(store: Store, event: Event, data: dict[str, Any], enqueue: Enqueue) -> tuple[str, bool]:
    """Create (or update) the entry's ACD record and start its chain, once per event; says whether it acted."""
    rid = record_id(PROVIDER, event.client_file_id, event.entry.id)
    # An entry's first event (the common case) needs no lock: the record is created only if none exists, in one
    # script, and only the delivery that created it starts the chain. It says its event is enqueued before the
    # message goes: a worker dying in between leaves a record in flight that the resume sweep sends on.
    if store.records.create_new(rid, data, event.event_id, enqueued_event=event.event_id) is not None:
        enqueue(PROVIDER, rid, 0, FIRST_STEP)
        return rid, True
    with store.locks.hold(f"record:{rid}", ttl_seconds=30, wait_seconds=15):
        rec = store.records.get(rid)
        if rec is None:
            store.records.create(rid, data, event.event_id)
            enqueue(PROVIDER, rid, 0, FIRST_STEP)
            store.records.update(rid, enqueued_event=event.event_id)
            return rid, True
        if rec.event_id == event.event_id:
            if store.records.enqueued_event(rid) != event.event_id:
                enqueue(PROVIDER, rid, rec.generation, FIRST_STEP)
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
        enqueue(PROVIDER, rid, generation, FIRST_STEP)
        store.records.update(rid, enqueued_event=event.event_id)
        return rid, True
