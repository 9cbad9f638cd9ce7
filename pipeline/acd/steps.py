"""The ACD chain: fetch supporting documents → rename and upload them to the GED → map the entry (creating
missing subsidiary accounts) → post it → confirm it by its ACK code.

Each step reads the record, does only what is not done yet, and writes its progress back, so it can run
again on any worker after a crash, a retry or a replay without doing anything twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pipeline import documents, runtime
from pipeline.acd import reference
from pipeline.acd.client import AcdClient, AcdCredentials
from pipeline.acd.errors import (
    AccountLocked,
    AcdTimeout,
    AuthenticationFailed,
    MalformedResponse,
    NotYetConfirmed,
    PostOutcomeUnknown,
    ServerUnavailable,
)
from pipeline.acd.login_gate import login_gate
from pipeline.acd.mapping import ack_tag, map_entry, subsidiaries
from pipeline.acd.reference import dossier_scope
from pipeline.breaker import Breaker
from pipeline.config import settings
from pipeline.errors import Deferred, HubsyncError, NoConnection, PermanentError
from pipeline.model import Event
from pipeline.secrets import unseal
from pipeline.store import LockBusy, Record, Store, now
from schemas.event import load_event

log = logging.getLogger(__name__)

PROVIDER = "acd"
STEPS = ("fetch", "rename", "map", "post", "confirm")
T = TypeVar("T")
BREAKER_ERRORS = (ServerUnavailable, AcdTimeout, MalformedResponse, PostOutcomeUnknown)


class EntryNotFoundAfterPost(PermanentError):
    """ACD acknowledged the entry but it cannot be found by its ACK code."""

    default_hint = (
        "ACD answered that the entry was created, yet no entry carries its ACK code. Check the dossier in ACD "
        "(was the entry deleted or its label edited?); replay confirms again, it never posts twice."
    )


@dataclass
class AcdContext:
    """What a step needs to talk to one client file's ACD dossier."""

    store: Store
    client: AcdClient
    dossier: str
    url: str
    ged_folder: int
    breaker: Breaker

    @property
    def scope(self) -> str:
        """The ACD dossier's identity, in which ACK codes and subsidiary codes are unique."""
        return dossier_scope(self.url, self.dossier)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ACD through the firm's circuit breaker."""
        self.breaker.before_call()
        try:
            result = fn(*args, **kwargs)
        except BREAKER_ERRORS:
            self.breaker.failure()
            raise
        except HubsyncError:
            self.breaker.success()
            raise
        self.breaker.success()
        return result


def context(store: Store, client_file_id: str) -> AcdContext:
    """Build the context of a client file's ACD connection, without any network call."""
    conn = store.connection(client_file_id, PROVIDER)
    if conn is None:
        raise NoConnection(f"client file {client_file_id} has no ACD connection")
    if conn.status == "auth_failed":
        raise AuthenticationFailed(
            f"ACD refused the credentials of client file {client_file_id} earlier ({conn.status_message}); "
            "no new login is tried until it is connected again"
        )
    p = conn.params
    creds = AcdCredentials(url=p["url"], cnx=p["cnx"], api_code=p["api_code"], password=unseal(conn.sealed_secret))
    s = settings()
    return AcdContext(
        store=store,
        client=AcdClient(runtime.http(PROVIDER), creds, gate=login_gate(store, creds)),
        dossier=p["dossier"],
        url=p["url"],
        ged_folder=int(p.get("ged_folder", 0)),
        breaker=Breaker(
            store,
            f"acd:{creds.url.rstrip('/')}",
            threshold=s.breaker_threshold,
            cooldown_seconds=s.breaker_cooldown_seconds,
            probe_ttl_seconds=s.http_timeout_seconds + 5,
        ),
    )


def on_error(rec: Record, error: HubsyncError) -> None:
    """Stop every worker from retrying a refused password (five failures lock the firm out of ACD)."""
    if isinstance(error, AuthenticationFailed | AccountLocked) and error.status in (401, 423):
        runtime.store().set_connection_status(rec.client_file_id, PROVIDER, "auth_failed", error.error_class)


def _event(rec: Record) -> Event:
    return load_event(rec.event)


def _spool() -> Path:
    return settings().spool_dir


def _ensure_spooled(store: Store, rec: Record, doc_id: str, url: str) -> Path:
    meta = rec.docs[doc_id]
    path: Path = _spool() / str(meta["sha256"])
    if path.exists():
        return path
    s = settings()
    documents.check_url(url, s.document_hosts, s.document_allow_private)
    fetched = documents.fetch(
        runtime.http("docs"),
        url,
        _spool(),
        max_bytes=s.document_max_bytes,
        expected_size=meta["size"],
        expected_sha256=meta["sha256"],
    )
    return fetched.path


def fetch(store: Store, rec: Record) -> None:
    """Stream every supporting document into the spool, checking host, size and SHA-256."""
    s = settings()
    for doc in _event(rec).documents:
        meta = rec.docs.get(doc.id, {})
        if meta.get("sha256") and (_spool() / meta["sha256"]).exists():
            continue
        documents.check_url(doc.url, s.document_hosts, s.document_allow_private)
        fetched = documents.fetch(
            runtime.http("docs"),
            doc.url,
            _spool(),
            max_bytes=s.document_max_bytes,
            expected_size=doc.size,
            expected_sha256=doc.sha256,
        )
        store.update_doc(
            rec.id,
            doc.id,
            sha256=fetched.sha256,
            size=fetched.size,
            content_type=fetched.content_type,
            filename=doc.filename,
        )


def rename(store: Store, rec: Record) -> None:
    """Give the entry its ACK code and every document its unique name, and upload them to the GED."""
    ctx = context(store, rec.client_file_id)
    ack = rec.ack or store.allocate_ack(f"acd:{ctx.scope}", rec.id)
    if rec.ack != ack:
        store.update(rec.id, ack=ack)
    event = _event(rec)
    for doc in event.documents:
        meta = rec.docs.get(doc.id) or {}
        if meta.get("ged_id") is not None:
            continue
        if not meta.get("sha256"):
            raise Deferred(f"document {doc.id} is not fetched yet", retry_after=1.0)
        name = documents.unique_name(ack, event.entry.id, doc.id, meta["sha256"], doc.filename, meta["content_type"])
        path = _ensure_spooled(store, rec, doc.id, doc.url)
        try:
            ged_id = ctx.call(ctx.client.upload_document, ctx.dossier, ctx.ged_folder, name, path, meta["content_type"])
        except HubsyncError as exc:
            if exc.code != "documentExisteDeja":
                raise
            ged_id = _find_document(ctx, name)
        store.update_doc(rec.id, doc.id, name=name, ged_id=ged_id)


def _find_document(ctx: AcdContext, name: str) -> int:
    for item in ctx.call(ctx.client.find_documents, ctx.dossier, name):
        if item.get("Nom") == name and isinstance(item.get("Id"), int):
            found: int = item["Id"]
            return found
    raise MalformedResponse(f"ACD says {name} exists in the GED but does not list it")


def ensure_subsidiary(ctx: AcdContext, kind: str, code: str, label: str) -> bool:
    """Make sure a subsidiary account exists in ACD, creating it once however many workers need it at once.
    Returns True when this call created it; either way it is in the dossier's reference data afterwards."""
    if reference.has_subsidiary(ctx.store, ctx.scope, code):
        return False
    try:
        with ctx.store.lock(
            f"tiers:{ctx.scope}:{code}", ttl_seconds=settings().http_timeout_seconds * 3, wait_seconds=30
        ):
            if reference.has_subsidiary(ctx.store, ctx.scope, code):
                return False
            created = ctx.call(ctx.client.create_account, ctx.dossier, kind, code, label)
            reference.add_subsidiary(ctx.store, ctx.scope, code)
            return created
    except LockBusy as exc:
        raise Deferred(f"another worker is creating subsidiary account {code}", retry_after=2.0) from exc


def map_step(store: Store, rec: Record) -> None:
    """Check the entry against the dossier's reference data, create missing subsidiaries, build the body to post."""
    event = _event(rec)
    counterparties = subsidiaries(event.entry)
    ctx = context(store, rec.client_file_id)
    reference.check_with_refresh(store, ctx, event.entry)
    for cp in counterparties:
        if ensure_subsidiary(ctx, cp.kind, cp.code, (cp.name or cp.code)[:60]):
            store.add_attempt(rec.id, {"step": "map", "outcome": "created_subsidiary", "code": cp.code})
    if rec.ack is None:
        raise Deferred("the entry has no ACK code yet", retry_after=1.0)
    ged_id = next(
        (rec.docs[d.id]["ged_id"] for d in event.documents if rec.docs.get(d.id, {}).get("ged_id") is not None),
        None,
    )
    payload = map_entry(event.entry, ctx.dossier, rec.ack, ged_id)
    store.update(rec.id, payload=payload)


def find_by_ack(ctx: AcdContext, payload: dict[str, Any], ack: str) -> list[dict[str, Any]]:
    """The entries of the dossier carrying this ACK code at the end of their labels."""
    tag = ack_tag(ack)
    found = ctx.call(
        ctx.client.find_entries, ctx.dossier, tag, payload.get("Journal"), payload.get("Annee"), payload.get("Mois")
    )
    return [
        e
        for e in found
        if any(
            str(line.get("Libelle", "")).endswith(tag)
            for line in e.get("LignesEcriture") or []
            if isinstance(line, dict)
        )
    ]


def post(store: Store, rec: Record) -> None:
    """Post the entry once: after any attempt whose outcome is unknown, look it up by ACK code first."""
    if rec.provider_id:
        return
    if rec.payload is None or rec.ack is None:
        raise Deferred("the entry is not mapped yet", retry_after=1.0)
    ctx = context(store, rec.client_file_id)
    s = settings()
    try:
        with store.lock(f"post:{rec.id}", ttl_seconds=s.http_timeout_seconds + 30):
            fresh = store.record(rec.id) or rec
            if fresh.provider_id:
                return
            if fresh.post_started_at is not None:
                # The earlier request may still be running on the server until our timeout hit, and a
                # committed entry takes the indexing lag to become findable: only then is "not found" true.
                settle = s.http_timeout_seconds + s.acd_index_lag_seconds + 1.0
                wait = fresh.post_started_at + settle - now()
                if wait > 0:
                    raise Deferred(
                        f"an earlier post may have landed; looking it up in {wait:.1f}s, once ACD indexed it",
                        retry_after=wait,
                    )
                found = find_by_ack(ctx, rec.payload, rec.ack)
                if found:
                    _mark_posted(store, rec, found)
                    return
            store.update(rec.id, post_started_at=now())
            try:
                entry_id = ctx.call(ctx.client.post_entry, rec.payload)
            except PostOutcomeUnknown:
                raise
            except HubsyncError:
                store.update(rec.id, post_started_at=None)
                raise
            store.update(rec.id, provider_id=str(entry_id), posted_at=now(), post_started_at=None, state="posted")
            store.add_attempt(rec.id, {"step": "post", "outcome": "posted", "provider_id": entry_id})
    except LockBusy as exc:
        raise Deferred("another worker is posting this entry", retry_after=2.0) from exc


def _mark_posted(store: Store, rec: Record, found: list[dict[str, Any]]) -> None:
    ids = sorted(str(e.get("IdEcriture")) for e in found)
    if len(ids) > 1:
        log.error("entry %s has %d copies in ACD (IdEcriture %s)", rec.id, len(ids), ", ".join(ids))
        store.update(rec.id, note=f"ACD holds {len(ids)} copies: IdEcriture {', '.join(ids)}")
    store.update(rec.id, provider_id=ids[0], posted_at=now(), post_started_at=None, state="posted")
    store.add_attempt(rec.id, {"step": "post", "outcome": "found_by_ack", "provider_id": ids[0]})


def confirm(store: Store, rec: Record) -> None:
    """Confirm the entry landed by finding it again by its ACK code (once ACD indexed it)."""
    if rec.confirmed_at:
        return
    if not rec.provider_id or rec.payload is None or rec.ack is None:
        raise Deferred("the entry is not posted yet", retry_after=1.0)
    s = settings()
    posted_at = rec.posted_at or now()
    wait = posted_at + s.acd_index_lag_seconds - now()
    if wait > 0:
        raise Deferred(f"ACD indexes new entries within {s.acd_index_lag_seconds:.0f}s", retry_after=wait + 0.1)
    ctx = context(store, rec.client_file_id)
    found = find_by_ack(ctx, rec.payload, rec.ack)
    if not found:
        if now() - posted_at > s.confirm_window_seconds:
            raise EntryNotFoundAfterPost(
                f"ACD entry {rec.provider_id} not found by ACK code {ack_tag(rec.ack)} "
                f"{now() - posted_at:.0f}s after it was posted"
            )
        raise NotYetConfirmed(f"ACK code {ack_tag(rec.ack)} not found yet", retry_after=1.0)
    if len(found) > 1:
        ids = sorted(str(e.get("IdEcriture")) for e in found)
        store.update(rec.id, note=f"ACD holds {len(ids)} copies: IdEcriture {', '.join(ids)}")
        log.error("entry %s has %d copies in ACD", rec.id, len(found))
    store.update(rec.id, confirmed_at=now(), state="confirmed")
    store.add_attempt(rec.id, {"step": "confirm", "outcome": "confirmed", "provider_id": rec.provider_id})


STEP_FUNCTIONS: dict[str, Callable[[Store, Record], None]] = {
    "fetch": fetch,
    "rename": rename,
    "map": map_step,
    "post": post,
    "confirm": confirm,
}
