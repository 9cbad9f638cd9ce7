"""What every provider's steps share, over a real private Redis: a document fetched into the spool once, a lock
that defers the step while another worker holds it, and the mark a write leaves while its outcome is not known."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline import runtime
from pipeline.config import reset_settings
from pipeline.errors import Deferred, OutcomeUnknown, RateLimited
from pipeline.model import Document
from pipeline.stepkit import deferred_while_busy, post_started, spool_path, spooled
from pipeline.store import LockBusy, Record, Store, record_id
from tests.conftest import flushed_store

HOST = "203.0.113.9:8443"
PDF = b"%PDF-1.4 a scanned invoice\n%%EOF\n"


@pytest.fixture
def store(redis_server: Any) -> Iterator[Store]:
    with flushed_store(redis_server, 12) as s:
        yield s


@pytest.fixture
def spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("HUBSYNC_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("HUBSYNC_DOCUMENT_HOSTS", HOST)
    reset_settings()
    yield tmp_path / "spool"
    reset_settings()


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[httpx.Request]:
    """The document store's requests; it serves ``PDF`` at any URL."""
    seen: list[httpx.Request] = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=PDF, headers={"Content-Type": "application/pdf"})

    client = httpx.Client(transport=httpx.MockTransport(respond))
    monkeypatch.setattr(runtime, "http", lambda name: client)
    return seen


def _record(store: Store, doc: Document) -> Record:
    rid = record_id("acd", "cf_kit", "ent_kit")
    event = {"event_id": "evt_kit", "documents": [{"id": doc.id, "url": doc.url}]}
    return store.records.create(rid, event, "evt_kit")


def _doc(sha256: str | None = None) -> Document:
    return Document(
        id="doc_1",
        url=f"https://{HOST}/d/1?token=t",
        filename="facture.pdf",
        kind="supplier_invoice",
        size=len(PDF),
        sha256=sha256 or hashlib.sha256(PDF).hexdigest(),
    )


def test_a_document_is_fetched_once_and_what_to_note_comes_with_the_first_fetch(
    store: Store, spool: Path, served: list[Any]
) -> None:
    # given a record whose document this machine has not fetched
    doc = _doc()
    rec = _record(store, doc)
    assert spool_path(rec, doc) is None

    # when a step needs the file, then notes what it was told to, and a later step needs it again
    first = spooled(rec, doc, max_bytes=1_000_000)
    store.records.update_doc(rec.id, doc.id, **first.noted)
    again = store.records.get(rec.id)
    assert again is not None
    second = spooled(again, doc, max_bytes=1_000_000)

    # then it was fetched once, sits in the spool under its hash, and only the first fetch had something to note
    assert len(served) == 1
    assert first.path == second.path == spool / doc.sha256 and first.path.read_bytes() == PDF
    assert first.noted == {
        "sha256": doc.sha256,
        "size": len(PDF),
        "content_type": "application/pdf",
        "filename": "facture.pdf",
    }
    assert second.noted == {}


def test_a_document_this_machine_lost_is_fetched_again_against_the_noted_hash(
    store: Store, spool: Path, served: list[Any]
) -> None:
    # given a document fetched once (on another worker's machine, say) and noted on the record, missing here
    doc = _doc()
    rec = _record(store, doc)
    store.records.update_doc(rec.id, doc.id, sha256=doc.sha256, size=len(PDF))
    noted = store.records.get(rec.id)
    assert noted is not None and spool_path(noted, doc) is None

    # when a later step needs it, under an event that announces another hash
    again = spooled(noted, _doc(sha256="0" * 64), max_bytes=1_000_000)

    # then it is fetched again and checked against what the record noted, with nothing new to note
    assert len(served) == 1 and again.path.read_bytes() == PDF and again.noted == {}


def test_a_lock_another_worker_holds_defers_the_step(store: Store) -> None:
    # given another worker holding the lock
    taken = store.locks.hold("post:rid", ttl_seconds=30)
    with taken, pytest.raises(Deferred) as deferred:
        # when a step needs it
        lock = store.locks.hold("post:rid", ttl_seconds=30)
        with deferred_while_busy(lock, "another worker posts", 3.0):
            pytest.fail("the work ran without the lock")

    # then the step is deferred, saying why and for how long

    assert deferred.value.message == "another worker posts" and deferred.value.retry_after == 3.0


def test_a_busy_lock_met_by_the_work_itself_is_not_taken_for_this_one(store: Store) -> None:
    # given a lock the step's work will meet held elsewhere
    inner = store.locks.hold("inner", ttl_seconds=30)
    with inner, pytest.raises(LockBusy):
        # when the work, under its own lock, meets it
        outer = store.locks.hold("outer", ttl_seconds=30)
        with deferred_while_busy(outer, "another worker posts"), store.locks.hold("inner", ttl_seconds=30):
            pass
    # then that is not the step's lock being busy (no Deferred), and the step's lock was let go
    with store.locks.hold("outer", ttl_seconds=30):
        pass


def test_the_write_mark_goes_when_the_write_surely_did_not_land(store: Store) -> None:
    rec = _record(store, _doc())
    undone: list[str] = []

    with pytest.raises(RateLimited), post_started(store, rec.id, undo=lambda: undone.append("sending")):
        assert store.records.fields(rec.id, "post_started_at")[0] is not None
        raise RateLimited("the server answered 429 before taking anything")

    assert store.records.fields(rec.id, "post_started_at") == [None] and undone == ["sending"]


@pytest.mark.parametrize("error", [OutcomeUnknown("read timeout after the body went out"), KeyError("a bug")])
def test_the_write_mark_stays_when_the_write_may_have_landed(store: Store, error: Exception) -> None:
    rec = _record(store, _doc())

    with pytest.raises(type(error)), post_started(store, rec.id, at=1234.5, undo=lambda: pytest.fail("undone")):
        raise error

    assert store.records.fields(rec.id, "post_started_at") == ["1234.5"]
