"""The Cegid Loop chain, one record per document: fetch → check its type from the bytes → rename → map the
metadata → deposit it into the "Qonto" partner folder → confirm it is listed there → ``exported``.

A file that is not JPEG, PNG or PDF is settled as ``skipped`` with its reason at the check step (or when
Loop answers 415): that is an expected outcome, never an error loop. Each step reads the record, does only
what is not done yet and writes its progress back, so it can run again on any worker after a crash, a
retry or a replay without depositing anything twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline import documents, runtime
from pipeline.cegid.connect import LoopContext, context, ensure_folder
from pipeline.cegid.errors import (
    DepositOutcomeUnknown,
    DocumentExists,
    DocumentTooLarge,
    DossierNotFound,
    MalformedResponse,
    NotYetListed,
    UnsupportedFileType,
)
from pipeline.cegid.mapping import metadonnees
from pipeline.config import settings
from pipeline.errors import Deferred, HubsyncError, PermanentError
from pipeline.model import Document, Event
from pipeline.store import LockBusy, Record, Store, now
from schemas.event import load_event

log = logging.getLogger(__name__)

PROVIDER = "cegid_loop"
STEPS = ("fetch", "check", "rename", "map", "deposit", "confirm")
DEPOSIT_MAX_BYTES = 20 * 1024 * 1024
SETTLED = ("exported", "skipped")


class DocumentNotInEvent(PermanentError):
    """The record's document is not in its event any more."""

    default_hint = "The entry was validated again without this document; discard the dead letter."


class DocumentNotFoundAfterDeposit(PermanentError):
    """Cegid Loop acknowledged the deposit, yet the document is not in the partner folder."""

    default_hint = (
        "Cegid Loop answered that the document was deposited, yet its partner folder does not list it. Check the "
        "Qonto folder in Loop (was it deleted?); replay confirms again and deposits only if it is missing."
    )


def _event_and_doc(rec: Record) -> tuple[Event, Document]:
    event = load_event(rec.event)
    doc = next((d for d in event.documents if d.id == rec.entry_id), None)
    if doc is None:
        raise DocumentNotInEvent(f"document {rec.entry_id} is not in event {rec.event_id}")
    return event, doc


def _spool() -> Path:
    return settings().spool_dir


def _ensure_spooled(store: Store, rec: Record, doc: Document) -> Path:
    """The document's spool file, fetched again (and checked against its hash) when this machine lacks it."""
    meta = rec.docs.get(doc.id) or {}
    if meta.get("sha256"):
        path: Path = _spool() / str(meta["sha256"])
        if path.exists():
            return path
    s = settings()
    documents.check_url(doc.url, s.document_hosts, s.document_allow_private)
    fetched = documents.fetch(
        runtime.http("docs"),
        doc.url,
        _spool(),
        max_bytes=s.document_max_bytes,
        expected_size=meta.get("size", doc.size),
        expected_sha256=meta.get("sha256", doc.sha256),
    )
    if not meta.get("sha256"):
        store.update_doc(rec.id, doc.id, sha256=fetched.sha256, size=fetched.size, filename=doc.filename)
    return fetched.path


def _skip(store: Store, rec: Record, doc_id: str, step: str, reason: str) -> None:
    """Settle a record as ``skipped`` with its reason, visible in ``hubsync entry`` and counted by status."""
    store.update_doc(rec.id, doc_id, skip_reason=reason)
    store.update(rec.id, state="skipped", note=f"skipped: {reason}", post_started_at=None)
    store.add_attempt(rec.id, {"step": step, "outcome": "skipped", "reason": reason})
    log.info("%s skipped: %s", rec.id, reason)


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
    meta = rec.docs.get(doc.id) or {}
    if meta.get("sha256") and (_spool() / str(meta["sha256"])).exists():
        return
    _ensure_spooled(store, rec, doc)


def check(store: Store, rec: Record) -> None:
    """Check the type from the bytes: JPEG, PNG or PDF go on; anything else is skipped with its reason."""
    if rec.state in SETTLED:
        return
    _event, doc = _event_and_doc(rec)
    path = _ensure_spooled(store, rec, doc)
    with path.open("rb") as fh:
        head = fh.read(1024)
    kind = documents.sniff_type(head)
    if kind is None:
        declared = f" (named {doc.filename!r})" if doc.filename else ""
        _skip(
            store,
            rec,
            doc.id,
            "check",
            f"the file{declared} is {describe_bytes(head)}, not JPEG, PNG or PDF: Cegid Loop takes only those",
        )
        return
    size = path.stat().st_size
    if size > DEPOSIT_MAX_BYTES:
        raise DocumentTooLarge(f"the document has {size} bytes; Cegid Loop takes at most {DEPOSIT_MAX_BYTES}")
    store.update_doc(rec.id, doc.id, content_type=kind, size=size, checked=True)


def rename(store: Store, rec: Record) -> None:
    """Give the document its unique name: the same on every retry, unique per entry, document and content."""
    if rec.state in SETTLED:
        return
    event, doc = _event_and_doc(rec)
    meta = rec.docs.get(doc.id) or {}
    if meta.get("name"):
        return
    if not meta.get("checked"):
        raise Deferred(f"document {doc.id} is not checked yet", retry_after=1.0)
    prefix = event.entry.date.strftime("%Y%m%d")
    name = documents.unique_name(prefix, event.entry.id, doc.id, meta["sha256"], doc.filename, meta["content_type"])
    store.update_doc(rec.id, doc.id, name=name)


def map_step(store: Store, rec: Record) -> None:
    """Build the deposit's metadata from the entry and the document."""
    if rec.state in SETTLED:
        return
    event, doc = _event_and_doc(rec)
    store.update(rec.id, payload=metadonnees(event.entry, doc))


def _find(ctx: LoopContext, folder_id: str, name: str) -> list[dict[str, Any]]:
    return ctx.client.find_documents(ctx.dossier, folder_id, name)


def _mark_deposited(
    store: Store, rec: Record, doc_id: str, found: list[dict[str, Any]], folder_id: str, outcome: str
) -> None:
    ids = sorted(str(item.get("id")) for item in found)
    if len(ids) > 1:
        log.error("%s has %d copies in Cegid Loop (%s)", rec.id, len(ids), ", ".join(ids))
        store.update(rec.id, note=f"Cegid Loop holds {len(ids)} copies: {', '.join(ids)}")
    store.update_doc(rec.id, doc_id, loop_id=ids[0], folder_id=folder_id)
    store.update(rec.id, provider_id=ids[0], posted_at=now(), post_started_at=None, state="posted")
    store.add_attempt(rec.id, {"step": "deposit", "outcome": outcome, "provider_id": ids[0]})


def deposit(store: Store, rec: Record) -> None:
    """Deposit the document once: after a 409 or an unknown outcome, look it up by name in the folder first."""
    if rec.state in SETTLED or rec.provider_id:
        return
    _event, doc = _event_and_doc(rec)
    meta = rec.docs.get(doc.id) or {}
    if rec.payload is None or not meta.get("name"):
        raise Deferred("the document is not renamed and mapped yet", retry_after=1.0)
    name = str(meta["name"])
    ctx = context(store, rec.client_file_id)
    try:
        with store.lock(f"deposit:{rec.id}", ttl_seconds=settings().http_timeout_seconds * 2 + 30):
            fresh = store.record(rec.id) or rec
            if fresh.provider_id or fresh.state in SETTLED:
                return
            if fresh.post_started_at is not None:
                found = _find(ctx, ctx.folder_id, name)
                if found:
                    _mark_deposited(store, fresh, doc.id, found, ctx.folder_id, "found_by_name")
                    return
            path = _ensure_spooled(store, fresh, doc)
            store.update(rec.id, post_started_at=now())
            body = {"dossierPartenaireId": ctx.folder_id, **fresh.payload} if fresh.payload else {}
            try:
                result = ctx.client.deposit(ctx.dossier, body, name, path, str(meta["content_type"]))
            except DepositOutcomeUnknown:
                raise  # post_started_at stays: the next attempt looks it up first
            except DocumentExists as exc:
                found = _find(ctx, ctx.folder_id, name)
                if found:
                    _mark_deposited(store, fresh, doc.id, found, ctx.folder_id, "already_there")
                    return
                raise MalformedResponse(f"Cegid Loop says {name} is in the folder but does not list it") from exc
            except UnsupportedFileType:
                _skip(store, fresh, doc.id, "deposit", "Cegid Loop refused its content (415): not JPEG, PNG or PDF")
                return
            except DossierNotFound:
                store.update(rec.id, post_started_at=None)
                folder_id, changed = ensure_folder(ctx)
                if changed:
                    store.add_attempt(rec.id, {"step": "deposit", "outcome": "folder_recreated", "folder": folder_id})
                    raise Deferred("the partner folder had disappeared and was recreated", retry_after=0.2) from None
                raise
            except HubsyncError:
                store.update(rec.id, post_started_at=None)
                raise
            _mark_deposited(store, fresh, doc.id, [result], ctx.folder_id, "deposited")
    except LockBusy as exc:
        raise Deferred("another worker is depositing this document", retry_after=2.0) from exc


def confirm(store: Store, rec: Record) -> None:
    """Confirm the document is in its partner folder by finding it there by name; then it is ``exported``."""
    if rec.state in SETTLED:
        return
    if not rec.provider_id:
        raise Deferred("the document is not deposited yet", retry_after=1.0)
    meta = rec.docs.get(rec.entry_id) or {}
    ctx = context(store, rec.client_file_id)
    found = _find(ctx, str(meta.get("folder_id") or ctx.folder_id), str(meta.get("name")))
    if not found:
        posted_at = rec.posted_at or now()
        if now() - posted_at > settings().confirm_window_seconds:
            raise DocumentNotFoundAfterDeposit(
                f"document {meta.get('name')} ({rec.provider_id}) is not in the partner folder "
                f"{now() - posted_at:.0f}s after its deposit"
            )
        raise NotYetListed(f"{meta.get('name')} is not listed yet", retry_after=1.0)
    if len(found) > 1:
        ids = sorted(str(item.get("id")) for item in found)
        store.update(rec.id, note=f"Cegid Loop holds {len(ids)} copies: {', '.join(ids)}")
    store.update(rec.id, confirmed_at=now(), state="exported")
    store.add_attempt(rec.id, {"step": "confirm", "outcome": "exported", "provider_id": rec.provider_id})


STEP_FUNCTIONS: dict[str, Callable[[Store, Record], None]] = {
    "fetch": fetch,
    "check": check,
    "rename": rename,
    "map": map_step,
    "deposit": deposit,
    "confirm": confirm,
}
