"""The ACD chain: fetch supporting documents → rename and upload them to the GED (the journal's filing-plan
folder) → map the entry (creating missing subsidiary accounts) → post it → confirm it in the dossier's FEC.

Each step reads the record, does only what is not done yet, and writes its progress back, so it can run
again on any worker after a crash, a retry or a replay without doing anything twice. Every call goes
through a client bound to the record's dossier (its own token, its own session).
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from pipeline import documents, runtime
from pipeline.acd import fec, reference
from pipeline.acd.answers import as_int, ci_get
from pipeline.acd.context import PROVIDER, AcdContext, context
from pipeline.acd.errors import (
    AccountLocked,
    AuthenticationFailed,
    FecUnavailable,
    NotYetConfirmed,
    PostKeepsFailing,
)
from pipeline.acd.mapping import ack_tag, map_entry, subsidiaries
from pipeline.config import settings
from pipeline.errors import Deferred, HubsyncError, OutcomeUnknown, PermanentError
from pipeline.model import Event
from pipeline.providers import ChainStep
from pipeline.stepkit import deferred_while_busy, spooled
from pipeline.steps import Done
from pipeline.store import Record, Store, now
from schemas.event import load_stored_event

log = logging.getLogger(__name__)

UNKNOWN_OUTCOME_MARGIN_SECONDS = 1.0


class EntryNotFoundAfterPost(PermanentError):
    """ACD acknowledged the entry but its FEC does not hold its ACK code."""

    default_hint = (
        "ACD answered that the entry was created, yet no entry of the dossier's FEC carries its ACK code. Check the "
        "dossier in ACD (was the entry deleted or its label edited?); replay confirms again, it never posts twice."
    )


def on_error(rec: Record, error: HubsyncError) -> None:
    """Stop every worker from retrying a refused password (five failures lock the firm out of ACD)."""
    if isinstance(error, AuthenticationFailed | AccountLocked) and error.status in (401, 423):
        runtime.store().connections.set_status(rec.client_file_id, PROVIDER, "auth_failed", error.error_class)


def _event(rec: Record) -> Event:
    return load_stored_event(rec.event)


def fetch(store: Store, rec: Record) -> Done | None:
    """Stream every supporting document into the spool, checking host, size and SHA-256."""
    progress: dict[str, dict[str, Any]] = {}
    try:
        for doc in _event(rec).documents:
            fetched = spooled(rec, doc, settings().document_max_bytes)
            if fetched.noted:
                progress[doc.id] = {**(rec.docs.get(doc.id) or {}), **fetched.noted}
    except BaseException:
        # what was fetched before the failure is kept, so a retry does not fetch it again
        for doc_id, meta in progress.items():
            store.records.update_doc(rec.id, doc_id, **meta)
        raise
    # written with the step's end (one script for the whole step)
    return Done(fields={f"doc:{doc_id}": meta for doc_id, meta in progress.items()}) if progress else None


def _found_in_ged(ctx: AcdContext, rec: Record, doc_id: str, name: str) -> int | None:
    """After an upload whose answer was lost: the document's id if the GED holds it (a second copy is never
    sent when the first landed); None when it is not there, or when the server cannot be asked."""
    found = ctx.call(ctx.client.find_documents, name)
    if found is None:
        note = (
            f"document {name} may be stored twice in the GED: an answer was lost and this server cannot list documents"
        )
        ctx.store.records.update_doc(rec.id, doc_id, note=note)
        ctx.store.records.add_attempt(rec.id, {"step": "rename", "outcome": "possible_second_copy", "name": name})
        return None
    ids = sorted(i for d in found if (i := as_int(ci_get(d, "Id"))) is not None)
    if not ids:
        return None
    if len(ids) > 1:
        ctx.store.records.update_doc(rec.id, doc_id, note=f"the GED holds {len(ids)} copies of {name}: ids {ids}")
    ctx.store.records.add_attempt(rec.id, {"step": "rename", "outcome": "found_in_ged", "name": name, "ged_id": ids[0]})
    return ids[0]


def rename(store: Store, rec: Record) -> Done | None:
    """Give the entry its ACK code and every document its unique name, and upload them into the GED folder of
    the journal's filing plan (the root when it has none)."""
    ctx = context(store, rec.client_file_id)
    # The code is held in the dossier's ACK table under the record's id, the same on every run: the record keeps
    # a copy, written with the step's end.
    ack = rec.ack or store.acks.allocate(f"acd:{ctx.scope}", rec.id)
    event = _event(rec)
    folder: int | None = None
    uploaded: dict[str, dict[str, Any]] = {}
    try:
        for doc in event.documents:
            meta = rec.docs.get(doc.id) or {}
            if meta.get("ged_id") is not None:
                continue
            if not meta.get("sha256"):
                raise Deferred(f"document {doc.id} is not fetched yet", retry_after=1.0)
            name = documents.unique_name(
                ack, event.entry.id, doc.id, meta["sha256"], doc.filename, meta["content_type"]
            )
            if meta.get("upload_started_at"):
                # the server may still be storing it: look only once it cannot be, so a late copy is not missed
                settled = float(meta["upload_started_at"]) + _server_may_work_seconds()
                if now() < settled:
                    raise Deferred(
                        f"the GED upload of {name} got no answer; it is looked up by its name once the server cannot "
                        f"still be storing it (in {settled - now():.0f}s), and sent again only if it is not there",
                        retry_after=settled - now(),
                    )
                ged_id = _found_in_ged(ctx, rec, doc.id, name)
                if ged_id is not None:
                    store.records.update_doc(rec.id, doc.id, name=name, ged_id=ged_id, upload_started_at=None)
                    continue
            if folder is None:
                ref = reference.current(store, ctx)
                planned = ref.folder_for(event.entry.journal_code)
                folder = planned if planned is not None else ctx.ged_folder
            path = spooled(rec, doc, settings().document_max_bytes).path
            store.records.update_doc(rec.id, doc.id, name=name, folder=folder, upload_started_at=now())
            try:
                ged_id = ctx.call(ctx.client.upload_document, folder, name, path, meta["content_type"])
            except OutcomeUnknown:
                raise
            except HubsyncError as exc:
                if (exc.code or "") == "documentExisteDeja" and (found := _found_in_ged(ctx, rec, doc.id, name)):
                    # the lookup may have noted copies on the document: merged with what is stored, at once
                    store.records.update_doc(rec.id, doc.id, ged_id=found, upload_started_at=None)
                    continue
                store.records.update_doc(rec.id, doc.id, upload_started_at=None)
                raise
            # the stored document is ``meta`` and the marker just written: its end goes with the step's
            uploaded[doc.id] = {**meta, "name": name, "folder": folder, "ged_id": ged_id, "upload_started_at": None}
    except BaseException:
        # what was uploaded before the failure is kept, so a retry does not look for it again
        for doc_id, meta in uploaded.items():
            store.records.update_doc(rec.id, doc_id, **meta)
        raise
    # written with the step's end (one script for the whole step)
    fields: dict[str, Any] = {f"doc:{doc_id}": meta for doc_id, meta in uploaded.items()}
    if rec.ack != ack:
        fields["ack"] = ack
    return Done(fields=fields) if fields else None


def ensure_subsidiary(ctx: AcdContext, kind: str, code: str, label: str) -> bool:
    """Make sure a subsidiary account exists in ACD, creating it once however many workers need it at once.
    Returns True when this call created it; either way it is in the dossier's reference data afterwards."""
    if reference.has_subsidiary(ctx.store, ctx.scope, code):
        return False
    lock = ctx.store.locks.hold(
        f"tiers:{ctx.scope}:{code}", ttl_seconds=settings().http_timeout_seconds * 3, wait_seconds=30
    )
    with deferred_while_busy(lock, f"another worker is creating subsidiary account {code}"):
        if reference.has_subsidiary(ctx.store, ctx.scope, code):
            return False
        created = ctx.call(ctx.client.create_account, kind, code, label)
        reference.add_subsidiary(ctx.store, ctx.scope, code)
        return created


def map_step(store: Store, rec: Record) -> Done:
    """Check the entry against the dossier's reference data, create missing subsidiaries, build the body to post."""
    event = _event(rec)
    counterparties = subsidiaries(event.entry)
    ctx = context(store, rec.client_file_id)
    reference.check_with_refresh(store, ctx, event.entry)
    for cp in counterparties:
        if ensure_subsidiary(ctx, cp.kind, cp.code, (cp.name or cp.code)[:60]):
            store.records.add_attempt(rec.id, {"step": "map", "outcome": "created_subsidiary", "code": cp.code})
    if rec.ack is None:
        raise Deferred("the entry has no ACK code yet", retry_after=1.0)
    ged_id = next(
        (rec.docs[d.id]["ged_id"] for d in event.documents if rec.docs.get(d.id, {}).get("ged_id") is not None),
        None,
    )
    return Done(fields={"payload": map_entry(event.entry, rec.ack, ged_id)})


# -- post and confirm: both find the entry again in the FEC ----------------------------------------------


def _entry_date(payload: dict[str, Any]) -> date:
    lines = payload.get("LignesEcriture") or [{}]
    return date(int(payload["Annee"]), int(payload["Mois"]), int(lines[0].get("Jour") or 1))


def _fec_years(store: Store, ctx: AcdContext, payload: dict[str, Any]) -> fec.FecYears:
    ref = reference.current(store, ctx)
    return fec.fec_years(_entry_date(payload), ref.fiscal_years)


def _lookup(store: Store, ctx: AcdContext, rec: Record, conclusive_from: float, posted: bool = False) -> list[str]:
    """The entry's EcritureNum(s) in the FEC (shared read); ``[]`` when a conclusive read misses it. ``posted``:
    the entry is posted, and another entry's read may confirm it."""
    assert rec.payload is not None and rec.ack is not None
    where = _fec_years(store, ctx, rec.payload)
    try:
        return fec.lookup(
            store,
            ctx.scope,
            rec.id,
            rec.ack,
            where,
            conclusive_from,
            ctx.fetch_fec,
            server=ctx.api_base.casefold(),
            generation=rec.generation if posted else None,
        )
    except FecUnavailable:
        # the dossier's fiscal years may have changed since they were read: read them again for the next look
        reference.refresh_context(store, ctx)
        raise


def _unknown_since(rec: Record) -> float:
    """From when a FEC is conclusive about a post whose outcome is unknown: the server may go on with a request
    after the hub stopped waiting (timeout, cut connection, a gateway's 504), until its own request timeout
    (IIS and ASP.NET: 110 to 120 s), and a committed entry then takes the index lag to reach the FEC."""
    assert rec.post_started_at is not None
    return rec.post_started_at + _server_may_work_seconds() + settings().acd_index_lag_seconds


def _server_may_work_seconds() -> float:
    """How long after a request went out the firm's server may still act on it (the hub's timeout, or the
    server's own request timeout when longer), with a margin."""
    s = settings()
    return max(s.http_timeout_seconds, s.acd_server_request_timeout_seconds) + UNKNOWN_OUTCOME_MARGIN_SECONDS


def _mark_found(store: Store, rec: Record, numbers: list[str], outcome: str) -> None:
    """The FEC holds the entry: it is posted (and the confirm step will see it at once)."""
    if len(numbers) > 1:
        _note_copies(store, rec, numbers)
    store.records.update(
        rec.id,
        attempt={"step": "post", "outcome": outcome, "provider_id": numbers[0]},
        provider_id=numbers[0],
        posted_at=now(),
        post_started_at=None,
        state="posted",
    )


def _note_copies(store: Store, rec: Record, numbers: list[str]) -> None:
    log.error("entry %s has %d copies in ACD (EcritureNum %s)", rec.id, len(numbers), ", ".join(numbers))
    store.records.update(rec.id, note=f"ACD holds {len(numbers)} copies: EcritureNum {', '.join(numbers)}")


def post(store: Store, rec: Record) -> Done | None:
    """Post the entry once: after any attempt whose outcome is unknown, look it up in the FEC first."""
    if rec.posted_at or rec.provider_id:
        return None
    if rec.payload is None or rec.ack is None:
        raise Deferred("the entry is not mapped yet", retry_after=1.0)
    ctx = context(store, rec.client_file_id)
    s = settings()
    if rec.post_started_at is not None:
        # An earlier post's outcome is unknown: look the entry up in the FEC (a read shared with the dossier's
        # other entries) before anything is sent again.
        found = _lookup(store, ctx, rec, _unknown_since(rec))
        if found:
            if not store.records.fields(rec.id, "posted_at")[0]:
                _mark_found(store, rec, found, "found_in_fec")
            return None
        known = fec.outcome(store, rec.id)
        if known is None or known.found or known.checked_at < _unknown_since(rec):
            raise Deferred("the FEC has not been read since the unknown outcome", retry_after=1.0)
    # The claim: the "post started" marker, set only if it is still what this run saw and nothing was posted, in
    # one script. Two runs of the entry (a redelivery racing the first) can never both send it.
    claim, _marker = store.records.claim_start(
        rec.id, "post_started_at", rec.post_started_at, now(), done_when=("posted_at", "provider_id")
    )
    if claim == "done":
        return None
    if claim != "claimed":
        raise Deferred("the entry was sent again meanwhile; looking it up first", retry_after=1.0)
    if rec.post_started_at is not None:
        reposts = int(rec.extra.get("reposts") or 0) + 1
        attempt = {"step": "post", "outcome": "not_in_fec", "message": "not in the FEC: sent again"}
        if reposts > s.acd_max_reposts:
            # given up before sending: the marker goes back to the unsure start it was, a replay starts a fresh count
            store.records.update(rec.id, attempt=attempt, reposts=None, post_started_at=rec.post_started_at)
            last = (rec.last_error or {}).get("message", "")
            raise PostKeepsFailing(
                f"the entry was sent {reposts} times and never landed (each time absent from the FEC); "
                f"ACD's last answer: {last or 'none'}"
            )
        store.records.update(rec.id, attempt=attempt, reposts=reposts)
    try:
        ctx.call(ctx.client.post_entry, rec.payload)
    except OutcomeUnknown:
        raise
    except HubsyncError:
        store.records.note(rec.id, post_started_at=None)
        raise
    # Written with the step's end: a second run meeting the marker without posted_at looks the entry up (or
    # waits) before anything is sent again.
    posted_at = now()
    first_look, must_look = _confirm_plan(store, ctx, rec, posted_at)
    return Done(
        fields={"posted_at": posted_at, "post_started_at": None},
        attempt={"step": "post", "outcome": "posted"},
        next_in=first_look,
        publish_next=must_look,
    )


def _confirm_plan(store: Store, ctx: AcdContext, rec: Record, posted_at: float) -> tuple[float, bool]:
    """The just-posted entry on its dossier's FEC board: when its confirm step should first look, and whether it
    must run at all. The entry that plans a read runs its confirm step to make it; an entry that rides a read
    already planned is confirmed by that read (no message of its own; if that read never comes, the resume
    sweep publishes its confirm step)."""
    assert rec.payload is not None and rec.ack is not None
    where = _fec_years(store, ctx, rec.payload)
    conclusive_from = posted_at + settings().acd_index_lag_seconds
    return fec.plan(store, ctx.scope, rec.id, rec.ack, where, conclusive_from, rec.generation)


def _give_up_after_window(rec: Record, posted_at: float, read_at: float) -> None:
    """Dead-letter an entry that a FEC *requested* more than the window after the post still misses. The window
    is judged by the read, not the clock: a dossier whose FEC is slow to build is read rarely, and an entry must
    not be given up on because no read came within the window."""
    assert rec.ack is not None
    if read_at - posted_at > settings().confirm_window_seconds:
        raise EntryNotFoundAfterPost(
            f"ACK code {ack_tag(rec.ack)} is not in the dossier's FEC read {read_at - posted_at:.0f}s after ACD "
            "took the entry"
        )


def confirm(store: Store, rec: Record) -> Done | None:
    """Confirm the entry landed: find its ACK code in the dossier's FEC (a read shared with every waiting entry)."""
    if rec.confirmed_at:
        return None
    if not (rec.posted_at or rec.provider_id) or rec.payload is None or rec.ack is None:
        raise Deferred("the entry is not posted yet", retry_after=1.0)
    s = settings()
    posted_at = rec.posted_at or now()
    conclusive_from = posted_at + s.acd_index_lag_seconds
    known = fec.outcome_of(rec)
    if known is not None and known.found:
        return _confirmed(store, rec, known.found)  # a read found it (and took it off the waiting set)
    ctx = context(store, rec.client_file_id)
    if known is not None and not known.found and not known.error and known.checked_at >= conclusive_from:
        # a conclusive read already missed it: only a newer one can tell more
        _give_up_after_window(rec, posted_at, known.checked_at)
        conclusive_from = known.checked_at + 0.001
    found = _lookup(store, ctx, rec, conclusive_from, posted=True)
    if not found:
        known = fec.outcome(store, rec.id)
        _give_up_after_window(rec, posted_at, known.checked_at if known else now())
        raise NotYetConfirmed(
            f"ACK code {ack_tag(rec.ack)} not in the FEC yet", retry_after=s.acd_fec_min_interval_seconds
        )
    return _confirmed(store, rec, found)


def _confirmed(store: Store, rec: Record, found: list[str]) -> Done:
    """The entry is in ACD: its EcritureNum and confirmation, written with the step's end."""
    if len(found) > 1:
        _note_copies(store, rec, found)
    return Done(
        fields={"provider_id": found[0], "confirmed_at": now()},
        attempt={"step": "confirm", "outcome": "confirmed", "provider_id": found[0]},
    )


def _confirm_countdown() -> float:
    """The confirm step waits for ACD to write a new entry into its FEC (unless the post planned its look)."""
    return settings().acd_index_lag_seconds + 0.2


CHAIN = (
    ChainStep("fetch", "hubsync.acd.fetch_document", fetch),
    ChainStep("rename", "hubsync.acd.rename_document", rename),
    ChainStep("map", "hubsync.acd.map_entry", map_step),
    ChainStep("post", "hubsync.acd.post_entry", post, writes=True),
    ChainStep("confirm", "hubsync.acd.confirm_ack", confirm, countdown=_confirm_countdown),
)
"""The chain, in order, with the Celery task each step runs as."""
