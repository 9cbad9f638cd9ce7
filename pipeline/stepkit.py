"""What every provider's steps share: a document fetched into the spool, a lock that defers the step while
another worker holds it, and the mark a write to the provider leaves while it is under way."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pipeline import documents, runtime
from pipeline.config import settings
from pipeline.errors import Deferred, HubsyncError, OutcomeUnknown
from pipeline.model import Document
from pipeline.store import LockBusy, Record, Store, now

T = TypeVar("T")


def spool_path(rec: Record, doc: Document) -> Path | None:
    """Where a document the record fetched sits in this machine's spool, or None when it is not there."""
    sha256 = (rec.docs.get(doc.id) or {}).get("sha256")
    if not sha256:
        return None
    path: Path = settings().spool_dir / str(sha256)
    return path if path.exists() else None


@dataclass(frozen=True)
class Spooled:
    """A document's file in this machine's spool, and what the record should note about it: its SHA-256, size,
    content type and file name the first time it is fetched, nothing once the record holds them."""

    path: Path
    noted: dict[str, Any] = field(default_factory=dict)


def spooled(rec: Record, doc: Document, max_bytes: int, limit_setting: str = "HUBSYNC_DOCUMENT_MAX_BYTES") -> Spooled:
    """The document's file in the spool, fetched when this machine lacks it: from an allowed host only,
    streamed, at most ``max_bytes`` (``limit_setting`` names where that comes from), checked against the size
    and SHA-256 the record noted (the event's the first time). The step writes what to note with its progress."""
    found = spool_path(rec, doc)
    if found is not None:
        return Spooled(found)
    s = settings()
    meta = rec.docs.get(doc.id) or {}
    documents.check_url(doc.url, s.document_hosts, s.document_allow_private)
    fetched = documents.fetch(
        runtime.http("docs"),
        doc.url,
        s.spool_dir,
        max_bytes=max_bytes,
        expected_size=meta.get("size", doc.size),
        expected_sha256=meta.get("sha256", doc.sha256),
        limit_setting=limit_setting,
    )
    if meta.get("sha256"):
        return Spooled(fetched.path)
    noted = {
        "sha256": fetched.sha256,
        "size": fetched.size,
        "content_type": fetched.content_type,
        "filename": doc.filename,
    }
    return Spooled(fetched.path, noted)


@contextlib.contextmanager
def deferred_while_busy(lock: AbstractContextManager[T], why: str, retry_after: float = 2.0) -> Iterator[T]:
    """Hold ``lock`` (one of ``store.locks``) for the step's work; when another worker holds it, the step is
    deferred (``Deferred(why, retry_after)``) instead of failing. Only taking the lock defers: a ``LockBusy``
    from the work itself is not this lock's."""
    with contextlib.ExitStack() as stack:
        try:
            held = stack.enter_context(lock)
        except LockBusy as exc:
            raise Deferred(why, retry_after=retry_after) from exc
        yield held


@contextlib.contextmanager
def post_started(
    store: Store,
    rid: str,
    at: float | None = None,
    unknown: tuple[type[HubsyncError], ...] = (OutcomeUnknown,),
    undo: Callable[[], None] | None = None,
) -> Iterator[float]:
    """Mark the record as being written to its provider (``post_started_at``, at ``at`` or now) for the time of
    the write. The mark is taken back only when the write surely did not land, a classified error other than
    ``unknown`` (``undo`` first takes back the step's own marks); an unknown outcome, a bug or a worker stopping
    mid-write leave it, and a marked record is looked up before anything is sent again."""
    stamp = now() if at is None else at
    store.records.update(rid, post_started_at=stamp)
    try:
        yield stamp
    except unknown:
        raise
    except HubsyncError:
        if undo is not None:
            undo()
        store.records.update(rid, post_started_at=None)
        raise
