"""The document store sandbox streams documents, faults included: a real server on loopback, spoken to with httpx."""

from __future__ import annotations

import hashlib
import time
import tracemalloc

import httpx
import pytest

from hubsync_sandbox import Fault, SandboxServer
from hubsync_sandbox.acd import AcdSandbox, demo_acd_firms
from hubsync_sandbox.docstore import DocStore
from tests.conftest import SHARED_DOCUMENTS

SAMPLE_PDF = SHARED_DOCUMENTS / "facturx-invoice-en16931.pdf"
MB = 1024 * 1024
# Building an SSL context costs ~50 ms per client; these clients only speak plain HTTP on loopback.
TLS = httpx.create_ssl_context()


@pytest.fixture(scope="module")
def server():
    srv = SandboxServer(acd=AcdSandbox(demo_acd_firms()), docs=DocStore())
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def docs(server):
    server.docs.reset()
    yield server.docs
    server.docs.reset()


@pytest.fixture
def http():
    with httpx.Client(timeout=10, verify=TLS) as client:
        yield client


def test_a_stored_document_is_served_with_its_length_type_and_bytes(server, docs, http):
    stored = docs.put("doc_1", b"%PDF-1.4\nhello", content_type="application/pdf", filename="facture.pdf")

    response = http.get(stored["url"])

    assert stored == {
        "url": server.docs_url("doc_1"),
        "size": 14,
        "sha256": hashlib.sha256(b"%PDF-1.4\nhello").hexdigest(),
    }
    assert response.status_code == 200 and response.content == b"%PDF-1.4\nhello"
    assert response.headers["Content-Length"] == "14"
    assert response.headers["Content-Type"] == "application/pdf"
    assert 'filename="facture.pdf"' in response.headers["Content-Disposition"]


def test_the_query_token_is_ignored(server, docs, http):
    docs.put("doc_551", b"receipt", content_type="image/jpeg")

    response = http.get(f"{server.docs_url('doc_551')}?token=abc123")

    assert response.status_code == 200 and response.content == b"receipt"


def test_an_unknown_document_is_404(server, docs, http):
    assert http.get(server.docs_url("nope")).status_code == 404


def test_only_get_and_head_are_served(server, docs, http):
    docs.put("doc_1", b"abc")

    head = http.head(server.docs_url("doc_1"))
    post = http.post(server.docs_url("doc_1"), content=b"x")

    assert head.status_code == 200 and head.headers["Content-Length"] == "3" and head.content == b""
    assert post.status_code == 405


def test_hits_count_every_request_for_a_document_faulted_ones_included(server, docs, http):
    docs.put("doc_1", b"abc")
    docs.set_fault(Fault(mode="status", status=503, count=1))

    statuses = [http.get(server.docs_url("doc_1")).status_code for _ in range(3)]

    assert statuses == [503, 200, 200]
    assert docs.hits("doc_1") == 3 and docs.hits("doc_2") == 0


def test_a_file_on_disk_is_streamed_with_its_sha256(server, docs, http):
    stored = docs.put_file("doc_2", SAMPLE_PDF, content_type="application/pdf")

    with http.stream("GET", stored["url"]) as response:
        digest = hashlib.sha256()
        for chunk in response.iter_bytes():
            digest.update(chunk)

    assert stored["size"] == SAMPLE_PDF.stat().st_size
    assert digest.hexdigest() == stored["sha256"] == hashlib.sha256(SAMPLE_PDF.read_bytes()).hexdigest()


def test_a_50_mb_generated_document_streams_with_a_matching_sha256(server, docs, http):
    stored = docs.put_generated("doc_big", size=50 * MB, content_type="application/pdf")

    digest = hashlib.sha256()
    received = 0
    with http.stream("GET", stored["url"]) as response:
        assert response.headers["Content-Length"] == str(50 * MB)
        assert response.headers["Content-Type"] == "application/pdf"
        for index, chunk in enumerate(response.iter_raw(1024 * 1024)):
            if index == 0:
                assert chunk.startswith(b"%PDF-1.4\n")
            digest.update(chunk)
            received += len(chunk)

    assert received == 50 * MB
    assert digest.hexdigest() == stored["sha256"]


def test_generated_documents_are_deterministic_and_never_built_whole_in_memory(docs):
    tracemalloc.start()
    try:
        first = docs.put_generated("doc_big", size=20 * MB)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    again = DocStore().put_generated("doc_big", size=20 * MB)

    assert peak < 2 * MB
    assert first["sha256"] == again["sha256"] and first["size"] == 20 * MB


def test_off_fault_resets_the_connection(server, docs, http):
    docs.put("doc_1", b"abc")
    docs.set_fault(Fault(mode="off"))

    with pytest.raises(httpx.TransportError):
        http.get(server.docs_url("doc_1"))
    docs.clear_faults()
    assert http.get(server.docs_url("doc_1")).content == b"abc"


def test_a_fault_on_one_document_leaves_the_others_alone(server, docs, http):
    docs.put("doc_1", b"one")
    docs.put("doc_10", b"ten")
    docs.set_fault(Fault(mode="status", status=502, route="doc_1"))

    assert http.get(server.docs_url("doc_1")).status_code == 502
    assert http.get(server.docs_url("doc_10")).status_code == 200


def test_rate_limit_and_slow_faults(server, docs, http):
    docs.put("doc_1", b"abc")
    docs.set_fault(Fault(mode="rate_limit", retry_after=3, count=1))
    docs.set_fault(Fault(mode="slow", delay_seconds=0.2, count=1))

    limited = http.get(server.docs_url("doc_1"))
    started = time.monotonic()
    slow = http.get(server.docs_url("doc_1"))

    assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
    assert slow.status_code == 200 and time.monotonic() - started >= 0.2


def test_garbage_fault_serves_something_else_with_200(server, docs, http):
    docs.put("doc_1", b"%PDF-1.4\nreal", content_type="application/pdf")
    docs.set_fault(Fault(mode="garbage"))

    bodies = [http.get(server.docs_url("doc_1")) for _ in range(3)]

    assert all(r.status_code == 200 and r.content != b"%PDF-1.4\nreal" for r in bodies)
    assert bodies[2].headers["Content-Type"].startswith("text/html")


def test_truncate_fault_cuts_the_download_short(server, docs, http):
    docs.put_generated("doc_big", size=4 * MB)
    docs.set_fault(Fault(mode="truncate", count=1))

    with pytest.raises(httpx.TransportError):
        http.get(server.docs_url("doc_big"))
    assert len(http.get(server.docs_url("doc_big")).content) == 4 * MB


def test_admin_api_uploads_a_document_and_flips_faults(server, docs, http):
    admin = f"{server.url}/_sandbox/docs"

    uploaded = http.post(
        f"{admin}/doc_9", content=b"%PDF-1.4\nadmin", headers={"Content-Type": "application/pdf", "X-Filename": "a.pdf"}
    )
    served = http.get(uploaded.json()["url"])
    http.post(f"{admin}/faults", json={"mode": "status", "status": 500})
    faulted = http.get(server.docs_url("doc_9"))
    http.delete(f"{admin}/faults")
    healed = http.get(server.docs_url("doc_9"))
    http.post(f"{server.url}/_sandbox/reset")
    after_reset = http.get(server.docs_url("doc_9"))

    assert uploaded.status_code == 201
    assert uploaded.json() == {
        "url": server.docs_url("doc_9"),
        "size": 14,
        "sha256": hashlib.sha256(b"%PDF-1.4\nadmin").hexdigest(),
    }
    assert served.content == b"%PDF-1.4\nadmin" and served.headers["Content-Type"] == "application/pdf"
    assert 'filename="a.pdf"' in served.headers["Content-Disposition"]
    assert faulted.status_code == 500 and healed.status_code == 200
    assert after_reset.status_code == 404
