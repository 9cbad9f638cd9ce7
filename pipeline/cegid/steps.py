"""The Cegid Loop chain, one record per document: fetch → check its type from the bytes → prepare its name
and transaction → deposit it with ``storeDocument`` and record the deposit in the ledger → ``exported``.

A file that is not JPEG, PNG or PDF is settled as ``skipped`` with its reason at the check step: an expected
outcome, never an error loop. Each step reads the record, does only what is not done yet and writes its
progress back, so it can run again on any worker after a crash, a retry or a replay.

The ledger is the only record of what Loop holds (Loop cannot be asked), so the deposit step is careful:

- it marks the document ``sending`` (with the record's generation) before the request, and records the
  deposit — Loop's document id, its raw answer, the file name, transaction, content type, size, SHA-256 and
  time — before the chain moves on;
- a failure before the whole file went out clears the mark and is retried;
- once the whole file went out, a lost answer leaves the mark and dead-letters the record as
  ``DepositOutcomeUnknown``; so does finding a mark of the same generation (a worker stopped between send
  and record). Nothing is sent twice without an operator: replaying that dead letter moves the record to a
  new generation, and the deposit step then sends again, noting it; discarding it means "it is in PIA" and
  settles the record as ``exported`` (``settle_discarded``);
- a file already deposited (or being deposited) into the dossier under another document, found by its
  SHA-256, is skipped with the other's name: Loop would pre-fill the client's journals from it twice;
- a document its entry's re-validation removed before it went out is withdrawn (``pipeline.cegid.export``):
  settled as ``skipped``, or, when it was withdrawn while a deposit held the lock, skipped by the next
  try of this step that has not sent it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline import documents
from pipeline.cegid.client import DEPOSIT_MAX_BYTES, Deposited
from pipeline.cegid.connect import LoopContext, context
from pipeline.cegid.errors import TOO_LARGE_HINT, DepositOutcomeUnknown, DocumentTooLarge, UnsupportedFileType
from pipeline.cegid.mapping import deposit_filename, transaction, unique_key
from pipeline.config import settings
from pipeline.errors import Deferred, HubsyncError, PermanentError
from pipeline.model import Document, Event
from pipeline.providers import ChainStep
from pipeline.stepkit import deferred_while_busy, post_started, spool_path, spooled
from pipeline.store import DeadLetter, Record, Store, now
from schemas.event import load_stored_event

log = logging.getLogger(__name__)

SETTLED = ("exported", "skipped")
OUTCOME_UNKNOWN = DepositOutcomeUnknown.__name__


class DocumentNotInEvent(PermanentError):
    """The record's document is not in its event any more."""

    default_hint = "The entry was validated again without this document; discard the dead letter."


def _event_and_doc(rec: Record) -> tuple[Event, Document]:
    event = load_stored_event(rec.event)
    doc = next((d for d in event.documents if d.id == rec.entry_id), None)
    if doc is None:
        raise DocumentNotInEvent(f"document {rec.entry_id} is not in event {rec.event_id}")
    return event, doc


def _spooled(store: Store, rec: Record, doc: Document) -> Path:
    """The document's spool file, fetched again (and checked against its hash) when this machine lacks it."""
    # Loop's own limit, not ACD's GED one (HUBSYNC_DOCUMENT_MAX_BYTES), and never above what Loop takes.
    limit = min(settings().cegid_document_max_bytes, DEPOSIT_MAX_BYTES)
    fetched = spooled(rec, doc, limit, limit_setting="HUBSYNC_CEGID_DOCUMENT_MAX_BYTES")
    if fetched.noted:
        store.records.update_doc(rec.id, doc.id, **fetched.noted)
    return fetched.path


def skip(store: Store, rid: str, doc_id: str, step: str, reason: str, **fields: Any) -> None:
    """Settle a record as ``skipped`` with its reason, visible in ``hubsync entry`` and counted by status."""
    store.records.update_doc(rid, doc_id, skip_reason=reason)
    store.records.update(
        rid,
        attempt={"step": step, "outcome": "skipped", "reason": reason},
        state="skipped",
        note=f"skipped: {reason}",
        post_started_at=None,
        **fields,
    )
    log.info("%s skipped: %s", rid, reason)


def describe_bytes(head: bytes) -> str:
    """What a file that is not JPEG, PNG or PDF looks like, in a few words, for the skip reason."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<?xml") or text.startswith(b"<"):
        return "an XML/markup file"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data of an unsupported type"
    return "plain text" if head else "an empty file"


def fetch(store: Store, rec: Record) -> None:
    """Stream the document into the spool, checking host, size and SHA-256."""
    if rec.state in SETTLED:
        return
    _event, doc = _event_and_doc(rec)
    if spool_path(rec, doc) is None:
        _spooled(store, rec, doc)


def check(store: Store, rec: Record) -> None:
    """Check the type from the bytes: JPEG, PNG or PDF go on; anything else is skipped with its reason."""
    if rec.state in SETTLED:
        return
    _event, doc = _event_and_doc(rec)
    path = _spooled(store, rec, doc)
    with path.open("rb") as fh:
        head = fh.read(1024)
    kind = documents.sniff_type(head)
    if kind is None:
        declared = f" (named {doc.filename!r})" if doc.filename else ""
        skip(
            store,
            rec.id,
            doc.id,
            "check",
            f"the file{declared} is {describe_bytes(head)}, not JPEG, PNG or PDF: Cegid Loop takes only those",
        )
        return
    size = path.stat().st_size
    if size > DEPOSIT_MAX_BYTES:
        raise DocumentTooLarge(
            f"the document has {size} bytes; Cegid Loop takes at most {DEPOSIT_MAX_BYTES}", hint=TOO_LARGE_HINT
        )
    store.records.update_doc(rec.id, doc.id, content_type=kind, size=size, checked=True)


def prepare(store: Store, rec: Record) -> None:
    """Fix the deposit's file name and transaction: the same on every retry of this record."""
    if rec.state in SETTLED:
        return
    event, doc = _event_and_doc(rec)
    meta = rec.docs.get(doc.id) or {}
    if not meta.get("checked"):
        raise Deferred(f"document {doc.id} is not checked yet", retry_after=1.0)
    sha = str(meta["sha256"])
    name = deposit_filename(event.entry, doc, sha, str(meta["content_type"]))
    if meta.get("name") != name or meta.get("transaction") != transaction(doc):
        store.records.update_doc(rec.id, doc.id, name=name, transaction=transaction(doc))
    store.records.update(rec.id, ack=unique_key(doc.id, sha))


def _ledger(ctx: LoopContext, meta: dict[str, Any], result: Deposited, sent_at: float, resent: bool) -> dict[str, Any]:
    entry = {
        "document_id": result.document_id,
        "answer": result.answer,
        "answer_truncated": result.answer_truncated,
        "status": result.status,
        "context": ctx.dossier,
        "filename": meta["name"],
        "transaction": meta["transaction"],
        "content_type": meta["content_type"],
        "upload_author": ctx.partner_email,
        "size": meta["size"],
        "sha256": meta["sha256"],
        "sent_at": sent_at,
        "deposited_at": now(),
    }
    if resent:
        entry["resent_after_unknown_outcome"] = True
    return entry


def _unknown(meta: dict[str, Any], doc_id: str, dossier: str, why: str, status: int | None) -> DepositOutcomeUnknown:
    return DepositOutcomeUnknown(
        f"deposit of {meta.get('name')} (document {doc_id}, {meta.get('size')} bytes, sha256 "
        f"{str(meta.get('sha256'))[:12]}…) into Cegid Loop dossier {dossier}: {why}. Loop may or may not hold it, "
        "and Loop cannot be asked",
        status=status,
    )


def deposit(store: Store, rec: Record) -> None:
    """Deposit the document once and record it in the ledger before the chain moves on."""
    if rec.state in SETTLED:
        return
    _event, doc = _event_and_doc(rec)
    meta = rec.docs.get(doc.id) or {}
    if meta.get("deposit"):
        return
    if not meta.get("name"):
        raise Deferred("the document is not prepared yet", retry_after=1.0)
    ctx = context(store, rec.client_file_id)
    lock = store.locks.hold(f"deposit:{rec.id}", ttl_seconds=settings().http_timeout_seconds * 2 + 30)
    with deferred_while_busy(lock, "another worker is depositing this document"):
        _deposit_locked(store, rec.id, doc, ctx)


def _same_file_elsewhere(store: Store, rec: Record, sha256: str) -> str | None:
    """Why this document must not go when the same file (by SHA-256) went, or is going, into the client's
    dossier under another document (an invoice attached to its purchase and to its payment): PIA would
    pre-fill the client's journals from it twice, and Loop has no idempotency. None when this document holds
    the file's place (claimed here, for the dedupe window), or when the other one never went."""
    ttl = settings().event_ttl_seconds
    holder = store.loop.claim_file(rec.client_file_id, sha256, rec.id, ttl)
    if holder == rec.id:
        return None
    other = store.records.get(holder) if holder else None
    if other is not None:
        meta = other.docs.get(other.entry_id) or {}
        unknown = other.state == "dead" and (other.last_error or {}).get("error_class") == OUTCOME_UNKNOWN
        if other.state == "exported" or meta.get("deposit"):
            went = "was deposited"
        elif meta.get("sending") or unknown:
            went = "was sent (its answer lost: it may be in PIA)"
        elif other.state not in ("skipped", "dead"):
            went = "is being exported"
        else:
            went = ""
        if went:
            return (
                f"the same file (sha256 {sha256[:12]}…) as document {other.entry_id}, which {went} into this "
                "dossier: Cegid Loop would pre-fill the client's journals from it twice"
            )
    store.loop.give_file(rec.client_file_id, sha256, rec.id, ttl)  # the other never went: this one takes its place
    return None


def _deposit_locked(store: Store, rid: str, doc: Document, ctx: LoopContext) -> None:
    fresh = store.records.get(rid)
    if fresh is None or fresh.state in SETTLED:
        return
    meta = fresh.docs.get(doc.id) or {}
    if meta.get("deposit"):
        return
    resent = False
    sending = meta.get("sending")
    if sending:
        if int(sending.get("generation", 0)) >= fresh.generation:
            raise _unknown(
                meta,
                doc.id,
                str(sending.get("context") or ctx.dossier),
                "an earlier attempt began sending it and never recorded an answer (its worker stopped, or the "
                "answer was lost)",
                None,
            )
        # An operator replayed the outcome-unknown dead letter: send again, and say so in the ledger.
        resent = True
        store.records.add_attempt(
            rid, {"step": "deposit", "outcome": "resending_after_unknown_outcome", "earlier": sending}
        )
    else:
        withdrawn = store.records.fields(rid, "withdrawn")[0]
        if withdrawn:
            # A re-validation removed it while an earlier try of this step held the lock, and that try did not
            # send it: it never goes now.
            skip(store, rid, doc.id, "deposit", withdrawn)
            return
        twin = _same_file_elsewhere(store, fresh, str(meta["sha256"]))
        if twin:
            skip(store, rid, doc.id, "deposit", twin)
            return
    path = _spooled(store, fresh, doc)
    size = path.stat().st_size
    if size > DEPOSIT_MAX_BYTES:
        raise DocumentTooLarge(
            f"the document has {size} bytes; Cegid Loop takes at most {DEPOSIT_MAX_BYTES}", hint=TOO_LARGE_HINT
        )
    sent_at = now()
    store.records.update_doc(
        rid, doc.id, sending={"at": sent_at, "generation": fresh.generation, "context": ctx.dossier}
    )

    def not_sent() -> None:
        store.records.update_doc(rid, doc.id, sending=None)  # it did not go out whole: a retry sends it

    try:
        with post_started(store, rid, at=sent_at, unknown=(DepositOutcomeUnknown,), undo=not_sent):
            result = ctx.client.store_document(
                ctx.dossier,
                str(meta["name"]),
                path,
                str(meta["content_type"]),
                transaction=str(meta["transaction"]),
                upload_author=ctx.partner_email or None,
            )
    except DepositOutcomeUnknown as exc:
        store.records.update_doc(rid, doc.id, unknown={"at": now(), "why": exc.message, "status": exc.status})
        raise _unknown(meta, doc.id, ctx.dossier, exc.message, exc.status) from exc
    except UnsupportedFileType as exc:
        skip(store, rid, doc.id, "deposit", f"Cegid Loop refused its content ({exc.message})")
        return
    except HubsyncError:
        raise
    except Exception as exc:
        # A bug after the request may have gone out: never guess "not sent".
        store.records.update_doc(rid, doc.id, unknown={"at": now(), "why": type(exc).__name__})
        raise _unknown(meta, doc.id, ctx.dossier, f"{type(exc).__name__} while depositing", None) from exc
    ledger = _ledger(ctx, {**meta, "size": size}, result, sent_at, resent)
    store.records.update_doc(rid, doc.id, deposit=ledger, sending=None, unknown=None)
    stamp = now()
    store.records.update(
        rid,
        attempt={
            "step": "deposit",
            "outcome": "deposited_again" if resent else "deposited",
            "provider_id": result.document_id,
            "filename": meta["name"],
            "status": result.status,
        },
        provider_id=result.document_id,
        posted_at=stamp,
        confirmed_at=stamp,
        post_started_at=None,
        state="exported",
    )


def settle_discarded(store: Store, dl: DeadLetter, reason: str) -> None:
    """An operator discarded an outcome-unknown deposit, meaning "it is in PIA": settle the record as exported."""
    if dl.error_class != OUTCOME_UNKNOWN or not dl.record_id:
        return
    rec = store.records.get(dl.record_id)
    if rec is None or rec.state in SETTLED:
        return
    meta = rec.docs.get(rec.entry_id) or {}
    sending = meta.get("sending") or {}
    store.records.update_doc(
        rec.id,
        rec.entry_id,
        deposit={
            "document_id": None,
            "answer": None,
            "context": sending.get("context"),
            "filename": meta.get("name"),
            "transaction": meta.get("transaction"),
            "content_type": meta.get("content_type"),
            "size": meta.get("size"),
            "sha256": meta.get("sha256"),
            "sent_at": sending.get("at"),
            "deposited_at": None,
            "settled_by_operator": {"dead_letter": dl.id, "reason": reason, "at": now()},
        },
        sending=None,
    )
    stamp = now()
    store.records.update(rec.id, state="exported", confirmed_at=stamp, post_started_at=None, dead_letter_id=None)
    store.records.add_attempt(
        rec.id, {"step": "deposit", "outcome": "settled_as_exported", "dead_letter": dl.id, "reason": reason}
    )


CHAIN = (
    ChainStep("fetch", "hubsync.cegid_loop.fetch", fetch),
    ChainStep("check", "hubsync.cegid_loop.check", check),
    ChainStep("prepare", "hubsync.cegid_loop.prepare", prepare),
    ChainStep("deposit", "hubsync.cegid_loop.deposit", deposit, writes=True),
)
"""The chain, in order, with the Celery task each step runs as."""
