"""Pending documents and the daily export to Cegid Loop (20:00 UTC).

Ingest records each receipt, supplier invoice and customer invoice of a connected client file as a pending
record (``cegid_loop:{client file}:{document}``) in a per-client-file queue ordered by arrival time; it
exports nothing. The export first reads the dossier (``GET /journal``): a code Loop no longer knows, or a
key it no longer accepts, stops the export of that client file with the reason on its connection, and its
documents stay pending rather than go where Loop would swallow them. It then takes the documents that
arrived before it started and starts one chain per document, exactly once even when two exports overlap:

- a lock per client file lets one export at a time take documents;
- a per-record marker (``export_id``, set with HSETNX) lets only one export start a record's chain, even if
  the lock expired under a slow export; a marker left by an export that crashed before it enqueued is taken
  over by the next one;
- documents that arrive while an export runs have a later arrival time and wait for the next export.

An entry validated again (same ``entry.id``, a new event) without one of its documents withdraws that
document's record: settled as ``skipped`` with the reason when nothing of it was sent (its dead letter, if
any, closed as superseded), under the deposit step's lock so a deposit in flight cannot slip past. One whose
deposit went out (or whose outcome is unknown) stays, with a note: Loop keeps what it was given.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.cegid.connect import PROVIDER, check_dossier, context
from pipeline.cegid.mapping import EXPORTED_KINDS
from pipeline.cegid.steps import CHAIN, OUTCOME_UNKNOWN, SETTLED, skip
from pipeline.config import settings
from pipeline.errors import ErrorKind, HubsyncError
from pipeline.model import Event
from pipeline.providers import Enqueue
from pipeline.store import LockBusy, Record, Store, now, record_id

log = logging.getLogger(__name__)

EXPORT_HOUR_UTC = 20
EXPORT_LOCK_TTL_SECONDS = 300.0
EXPORT_LOCK_WAIT_SECONDS = 60.0
FIRST_STEP = CHAIN[0].name
CHECK_FAILED = "dossier_check_failed"
WITHDRAW_LOCK_WAIT_SECONDS = 2.0


def next_export_at(current: datetime | None = None) -> datetime:
    """The next daily export (20:00 UTC) strictly after ``current``, whatever the machine's time zone."""
    moment = datetime.now(UTC) if current is None else current
    if moment.tzinfo is None:
        raise ValueError("next_export_at needs an aware datetime (a naive one would be read in local time)")
    moment = moment.astimezone(UTC)
    run = moment.replace(hour=EXPORT_HOUR_UTC, minute=0, second=0, microsecond=0)
    return run if run > moment else run + timedelta(days=1)


def pending(store: Store, client_file_id: str) -> list[str]:
    """The record ids waiting for the next export, oldest first."""
    return store.loop.pending(client_file_id)


def fan_out_cegid_loop(store: Store, event: Event, data: dict[str, Any], enqueue: Enqueue) -> tuple[str, bool]:
    """Record the event's receipts and invoices as pending for the next export, and withdraw those its
    re-validation removed from the entry; says whether it acted."""
    cf = event.client_file_id
    seen = store.loop.first_sight(cf, event.event_id, settings().event_ttl_seconds)
    rids = []
    for doc in event.documents:
        if doc.kind not in EXPORTED_KINDS:
            continue
        rid = record_id(PROVIDER, cf, doc.id)
        rids.append(rid)
        with store.locks.hold(f"record:{rid}", ttl_seconds=30, wait_seconds=15):
            rec = store.records.get(rid)
            if rec is None:
                store.records.create(rid, data, event.event_id, step="pending")
                store.records.update_doc(rid, doc.id, filename=doc.filename, kind=doc.kind)
                store.records.file_under_entry(event.entry.id, rid)
                store.loop.add_pending(cf, rid, now())
            elif rec.event_id != event.event_id:
                _kept(store, rec, event, data)
    if seen:
        _withdraw_removed(store, event, set(rids))
    shown = ", ".join(rids) or record_id(PROVIDER, cf, f"{event.entry.id} (no receipt or invoice)")
    return shown, bool(seen)


def _kept(store: Store, rec: Record, event: Event, data: dict[str, Any]) -> None:
    """A document still in the entry after its re-validation: the deposit will carry the latest date, kind and
    party; one an earlier re-validation withdrew before it was sent waits for the next export again."""
    withdrawn = store.records.fields(rec.id, "withdrawn")[0]
    if rec.step == "pending" and rec.state == "received":
        store.records.update(rec.id, event=data, event_id=event.event_id, withdrawn=None)
    elif withdrawn and rec.state == "skipped" and not rec.trimmed:
        store.records.update_doc(rec.id, rec.entry_id, skip_reason=None)
        store.records.update(
            rec.id,
            event=data,
            event_id=event.event_id,
            generation=rec.generation + 1,
            state="received",
            step="pending",
            note=None,
            withdrawn=None,
            export_id=None,
        )
        store.records.add_attempt(rec.id, {"step": "received", "outcome": "back_in_entry", "event_id": event.event_id})
        store.loop.add_pending(rec.client_file_id, rec.id, now())
    elif withdrawn:
        store.records.update(rec.id, withdrawn=None)  # back in the entry while its deposit was under way: let it go


def _withdraw_removed(store: Store, event: Event, kept: set[str]) -> None:
    """Withdraw the entry's documents that its re-validation removed, unless Loop may already hold them."""
    prefix = f"{PROVIDER}:{event.client_file_id}:"
    members = store.records.entry_record_ids(event.entry.id)
    for rid in sorted(m for m in members if m.startswith(prefix) and m not in kept):
        with store.locks.hold(f"record:{rid}", ttl_seconds=30, wait_seconds=15):
            _withdraw(store, rid, event)


def _withdraw(store: Store, rid: str, event: Event) -> None:
    rec = store.records.get(rid)
    if rec is None or rec.trimmed or rec.state == "skipped" or rec.event_id == event.event_id:
        return
    removed = f"removed from entry {event.entry.id} by its re-validation {event.event_id}"
    reason = f"{removed} before it was exported"
    sent = f"{removed} after its deposit went out: Cegid Loop may hold it, and keeps what it was given"
    if rec.state in SETTLED:
        _note_kept(store, rid, event, sent)
        return
    try:
        # The deposit step holds this lock from its last look at the record until the ledger is written.
        with store.locks.hold(f"deposit:{rid}", ttl_seconds=30, wait_seconds=WITHDRAW_LOCK_WAIT_SECONDS):
            rec = store.records.get(rid)
            if rec is None or rec.state == "skipped":
                return
            meta = rec.docs.get(rec.entry_id) or {}
            unknown = rec.state == "dead" and (rec.last_error or {}).get("error_class") == OUTCOME_UNKNOWN
            if rec.state in SETTLED or meta.get("deposit") or meta.get("sending") or unknown:
                _note_kept(store, rid, event, sent + ("; its dead letter waits for an operator" if unknown else ""))
                return
            if rec.state == "dead" and rec.dead_letter_id:
                store.dead_letters.close(
                    rec.dead_letter_id, "superseded", "revalidated", reason=event.event_id, who="hubsync"
                )
            skip(
                store,
                rid,
                rec.entry_id,
                "received",
                reason,
                generation=rec.generation + 1,  # a step still queued for it finds its message stale
                withdrawn=reason,
                dead_letter_id=None,
                retry_since=None,
                next_retry_at=None,
            )
            store.loop.remove_pending(rec.client_file_id, rid)
    except LockBusy:
        # Its deposit is under way: the mark makes a retry of a deposit that did not go out skip it instead.
        store.records.update(rid, withdrawn=reason)
        _note_kept(store, rid, event, f"{removed} while its deposit was under way: Cegid Loop may receive it")


def _note_kept(store: Store, rid: str, event: Event, note: str) -> None:
    store.records.update(rid, note=note)
    store.records.add_attempt(rid, {"step": "received", "outcome": "removed_from_entry", "event_id": event.event_id})
    log.warning("%s: %s", rid, note)


@dataclass
class ExportResult:
    """What one export of one client file did."""

    client_file_id: str
    export_id: str
    started_at: float
    enqueued: list[str] = field(default_factory=list)
    already_started: list[str] = field(default_factory=list)
    left_for_next: int = 0
    dossier: str = ""
    busy: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON form for ``--json`` and the export history."""
        return {
            "client_file_id": self.client_file_id,
            "export_id": self.export_id,
            "started_at": self.started_at,
            "dossier": self.dossier,
            "enqueued": len(self.enqueued),
            "already_started": len(self.already_started),
            "left_for_next": self.left_for_next,
            "busy": self.busy,
        }


def _claim(store: Store, rid: str, export_id: str) -> bool:
    """Take a pending record for this export; False when another export holds it or it already started."""
    holder = store.records.claim(rid, "export_id", export_id)
    if holder == export_id:
        return True
    if holder and store.loop.export_live(holder):
        return False
    if store.records.fields(rid, "step")[0] != "pending":
        return False
    store.records.set_field(rid, "export_id", export_id)  # its export crashed before it enqueued: take it over
    return True


def _check(store: Store, client_file_id: str) -> str:
    """Read the dossier before exporting; a refusal is written on the connection, where status shows it."""
    ctx = context(store, client_file_id)
    conn = store.connections.get(client_file_id, PROVIDER)
    try:
        check_dossier(ctx.client, ctx.dossier, ctx.client.creds.api_key)
    except HubsyncError as exc:
        if exc.kind is not ErrorKind.TRANSIENT:
            store.connections.set_status(
                client_file_id, PROVIDER, CHECK_FAILED, f"export stopped, documents wait: {exc.message}"
            )
        raise
    if conn is not None and conn.status == CHECK_FAILED:
        store.connections.set_status(client_file_id, PROVIDER, "ready", f"dossier {ctx.dossier} readable again")
    return ctx.dossier


def run_export(
    store: Store, client_file_id: str, enqueue: Enqueue, on_enqueued: Callable[[str], None] | None = None
) -> ExportResult:
    """Export a client file now: read its dossier, then start one chain per pending document."""
    export_id = f"exp_{int(now() * 1000):x}{uuid.uuid4().hex[:6]}"
    result = ExportResult(client_file_id, export_id, now())
    try:
        with store.locks.hold(f"cegid_loop:export:{client_file_id}", EXPORT_LOCK_TTL_SECONDS, EXPORT_LOCK_WAIT_SECONDS):
            result.dossier = _check(store, client_file_id)
            cutoff = result.started_at = now()
            store.loop.export_started(export_id, EXPORT_LOCK_TTL_SECONDS)
            try:
                taken = store.loop.pending(client_file_id, until=cutoff)
                for rid in taken:
                    if not _claim(store, rid, export_id):
                        result.already_started.append(rid)
                    else:
                        generation = int(store.records.fields(rid, "generation")[0] or 0)
                        store.records.update(rid, step="queued")
                        enqueue(PROVIDER, rid, generation, FIRST_STEP)
                        result.enqueued.append(rid)
                        if on_enqueued is not None:
                            on_enqueued(rid)
                    store.loop.remove_pending(client_file_id, rid)
                result.left_for_next = store.loop.pending_counts([client_file_id])[0]
            finally:
                store.loop.export_ended(export_id)
    except LockBusy:
        result.busy = True
        log.warning("export of %s: another export held the lock for %.0fs", client_file_id, EXPORT_LOCK_WAIT_SECONDS)
        return result
    store.loop.add_export(client_file_id, {**result.to_dict(), "finished_at": now()})
    log.info("export %s of %s: %d document(s) started", export_id, client_file_id, len(result.enqueued))
    return result


def exports(store: Store, client_file_id: str) -> list[dict[str, Any]]:
    """The client file's latest exports, newest first."""
    return store.loop.exports(client_file_id)


def connected_client_files(store: Store) -> list[str]:
    """Every client file with a Cegid Loop connection."""
    return [conn.client_file_id for conn in store.connections.all() if conn.provider == PROVIDER]
