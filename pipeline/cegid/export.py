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

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.cegid.connect import PROVIDER, check_dossier, context
from pipeline.cegid.mapping import EXPORTED_KINDS
from pipeline.cegid.steps import OUTCOME_UNKNOWN, SETTLED, skip
from pipeline.config import settings
from pipeline.deadletters import Enqueue
from pipeline.errors import ErrorKind, HubsyncError
from pipeline.model import Event
from pipeline.store import LockBusy, P, Record, Store, now, record_id

log = logging.getLogger(__name__)

EXPORT_HOUR_UTC = 20
EXPORT_LOCK_TTL_SECONDS = 300.0
EXPORT_LOCK_WAIT_SECONDS = 60.0
EXPORTS_KEPT = 60
FIRST_STEP = "fetch"
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


def pending_key(client_file_id: str) -> str:
    """The Redis sorted set of a client file's pending records, scored by arrival time."""
    return f"{P}:cegid_loop:pending:{client_file_id}"


def _rkey(rid: str) -> str:
    return f"{P}:rec:{{{rid}}}"


def _live_key(export_id: str) -> str:
    return f"{P}:cegid_loop:export_live:{export_id}"


def pending(store: Store, client_file_id: str) -> list[str]:
    """The record ids waiting for the next export, oldest first."""
    members: list[str] = store.r.zrange(pending_key(client_file_id), 0, -1)
    return members


def fan_out_cegid_loop(store: Store, event: Event, data: dict[str, Any], enqueue: Enqueue) -> tuple[str, bool]:
    """Record the event's receipts and invoices as pending for the next export, and withdraw those its
    re-validation removed from the entry; says whether it acted."""
    cf = event.client_file_id
    seen = store.r.set(f"{P}:cegid_loop:seen:{cf}:{event.event_id}", "1", nx=True, ex=settings().event_ttl_seconds)
    rids = []
    for doc in event.documents:
        if doc.kind not in EXPORTED_KINDS:
            continue
        rid = record_id(PROVIDER, cf, doc.id)
        rids.append(rid)
        with store.lock(f"record:{rid}", ttl_seconds=30, wait_seconds=15):
            rec = store.record(rid)
            if rec is None:
                store.create_record(rid, data, event.event_id)
                store.update(rid, step="pending")
                store.update_doc(rid, doc.id, filename=doc.filename, kind=doc.kind)
                store.r.sadd(f"{P}:entry:{event.entry.id}", rid)
                store.r.zadd(pending_key(cf), {rid: now()})
            elif rec.event_id != event.event_id:
                _kept(store, rec, event, data)
    if seen:
        _withdraw_removed(store, event, set(rids))
    shown = ", ".join(rids) or record_id(PROVIDER, cf, f"{event.entry.id} (no receipt or invoice)")
    return shown, bool(seen)


def _kept(store: Store, rec: Record, event: Event, data: dict[str, Any]) -> None:
    """A document still in the entry after its re-validation: the deposit will carry the latest date, kind and
    party; one an earlier re-validation withdrew before it was sent waits for the next export again."""
    withdrawn = store.fields(rec.id, "withdrawn")[0]
    if rec.step == "pending" and rec.state == "received":
        store.update(rec.id, event=data, event_id=event.event_id, withdrawn=None)
    elif withdrawn and rec.state == "skipped" and not rec.trimmed:
        store.update_doc(rec.id, rec.entry_id, skip_reason=None)
        store.update(
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
        store.add_attempt(rec.id, {"step": "received", "outcome": "back_in_entry", "event_id": event.event_id})
        store.r.zadd(pending_key(rec.client_file_id), {rec.id: now()})
    elif withdrawn:
        store.update(rec.id, withdrawn=None)  # back in the entry while its deposit was under way: let it go


def _withdraw_removed(store: Store, event: Event, kept: set[str]) -> None:
    """Withdraw the entry's documents that its re-validation removed, unless Loop may already hold them."""
    prefix = f"{PROVIDER}:{event.client_file_id}:"
    members: set[str] = store.r.smembers(f"{P}:entry:{event.entry.id}")
    for rid in sorted(m for m in members if m.startswith(prefix) and m not in kept):
        with store.lock(f"record:{rid}", ttl_seconds=30, wait_seconds=15):
            _withdraw(store, rid, event)


def _withdraw(store: Store, rid: str, event: Event) -> None:
    rec = store.record(rid)
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
        with store.lock(f"deposit:{rid}", ttl_seconds=30, wait_seconds=WITHDRAW_LOCK_WAIT_SECONDS):
            rec = store.record(rid)
            if rec is None or rec.state == "skipped":
                return
            meta = rec.docs.get(rec.entry_id) or {}
            unknown = rec.state == "dead" and (rec.last_error or {}).get("error_class") == OUTCOME_UNKNOWN
            if rec.state in SETTLED or meta.get("deposit") or meta.get("sending") or unknown:
                _note_kept(store, rid, event, sent + ("; its dead letter waits for an operator" if unknown else ""))
                return
            if rec.state == "dead" and rec.dead_letter_id:
                store.close_dead_letter(
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
            store.r.zrem(pending_key(rec.client_file_id), rid)
    except LockBusy:
        # Its deposit is under way: the mark makes a retry of a deposit that did not go out skip it instead.
        store.update(rid, withdrawn=reason)
        _note_kept(store, rid, event, f"{removed} while its deposit was under way: Cegid Loop may receive it")


def _note_kept(store: Store, rid: str, event: Event, note: str) -> None:
    store.update(rid, note=note)
    store.add_attempt(rid, {"step": "received", "outcome": "removed_from_entry", "event_id": event.event_id})
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
    key = _rkey(rid)
    if store.r.hsetnx(key, "export_id", export_id):
        return True
    holder = store.r.hget(key, "export_id")
    if holder == export_id:
        return True
    if holder and store.r.exists(_live_key(holder)):
        return False
    if store.r.hget(key, "step") != "pending":
        return False
    store.r.hset(key, "export_id", export_id)  # its export crashed before it enqueued: take it over
    return True


def _check(store: Store, client_file_id: str) -> str:
    """Read the dossier before exporting; a refusal is written on the connection, where status shows it."""
    ctx = context(store, client_file_id)
    conn = store.connection(client_file_id, PROVIDER)
    try:
        check_dossier(ctx.client, ctx.dossier, ctx.client.creds.api_key)
    except HubsyncError as exc:
        if exc.kind is not ErrorKind.TRANSIENT:
            store.set_connection_status(
                client_file_id, PROVIDER, CHECK_FAILED, f"export stopped, documents wait: {exc.message}"
            )
        raise
    if conn is not None and conn.status == CHECK_FAILED:
        store.set_connection_status(client_file_id, PROVIDER, "ready", f"dossier {ctx.dossier} readable again")
    return ctx.dossier


def run_export(
    store: Store, client_file_id: str, enqueue: Enqueue, on_enqueued: Callable[[str], None] | None = None
) -> ExportResult:
    """Export a client file now: read its dossier, then start one chain per pending document."""
    export_id = f"exp_{int(now() * 1000):x}{uuid.uuid4().hex[:6]}"
    result = ExportResult(client_file_id, export_id, now())
    try:
        with store.lock(f"cegid_loop:export:{client_file_id}", EXPORT_LOCK_TTL_SECONDS, EXPORT_LOCK_WAIT_SECONDS):
            result.dossier = _check(store, client_file_id)
            cutoff = result.started_at = now()
            store.r.set(_live_key(export_id), "1", px=int(EXPORT_LOCK_TTL_SECONDS * 1000))
            try:
                taken: list[str] = store.r.zrangebyscore(pending_key(client_file_id), "-inf", cutoff)
                for rid in taken:
                    if not _claim(store, rid, export_id):
                        result.already_started.append(rid)
                    else:
                        generation = int(store.r.hget(_rkey(rid), "generation") or 0)
                        store.update(rid, step="queued")
                        enqueue(PROVIDER, rid, generation, FIRST_STEP)
                        result.enqueued.append(rid)
                        if on_enqueued is not None:
                            on_enqueued(rid)
                    store.r.zrem(pending_key(client_file_id), rid)
                result.left_for_next = int(store.r.zcard(pending_key(client_file_id)))
            finally:
                store.r.delete(_live_key(export_id))
    except LockBusy:
        result.busy = True
        log.warning("export of %s: another export held the lock for %.0fs", client_file_id, EXPORT_LOCK_WAIT_SECONDS)
        return result
    history = f"{P}:cegid_loop:exports:{client_file_id}"
    store.r.lpush(history, json.dumps({**result.to_dict(), "finished_at": now()}))
    store.r.ltrim(history, 0, EXPORTS_KEPT - 1)
    log.info("export %s of %s: %d document(s) started", export_id, client_file_id, len(result.enqueued))
    return result


def exports(store: Store, client_file_id: str) -> list[dict[str, Any]]:
    """The client file's latest exports, newest first."""
    return [json.loads(raw) for raw in store.r.lrange(f"{P}:cegid_loop:exports:{client_file_id}", 0, -1)]


def connected_client_files(store: Store) -> list[str]:
    """Every client file with a Cegid Loop connection."""
    return [conn.client_file_id for conn in store.connections() if conn.provider == PROVIDER]
