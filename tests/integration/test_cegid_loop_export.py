"""The Cegid Loop export end to end: a real Redis, a real worker process, the Cegid Loop and document
sandboxes over loopback, and the real test documents."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pipeline.cegid.connect import PROVIDER
from pipeline.cegid.export import ExportResult, pending, run_export
from pipeline.cegid.sandbox import (
    DEMO_API_KEY,
    DEMO_API_SECRET,
    DEMO_DOMAIN,
    DEMO_SUBSCRIPTION_KEY,
    CegidLoopSandbox,
)
from pipeline.samples import document_ref, sample_entry, sample_event, tiny_pdf
from pipeline.sandbox import Fault
from tests.conftest import SHARED_DOCUMENTS, Hub, run_cli

pytestmark = pytest.mark.integration
SETTLED = ("exported", "skipped", "dead")


def _loop(hub: Hub) -> CegidLoopSandbox:
    app = hub.sandbox.app("cegid")
    assert isinstance(app, CegidLoopSandbox)
    return app


def _enqueue(provider: str, rid: str, generation: int, step: str) -> None:
    # Imported late: `tasks` reads the broker URL of the environment the fixtures set up.
    from tasks.chains import enqueue

    enqueue(provider, rid, generation, step)


def _connect(hub: Hub, name: str) -> tuple[str, str]:
    """A client file connected to a dossier of its own (so tests never share a partner folder)."""
    cf, dossier = hub.cf(name), f"{name}{hub.run}".upper()
    hub.connect_loop(cf, dossier, f"Client {name}")
    return cf, dossier


def _shared(name: str) -> Path:
    path = SHARED_DOCUMENTS / name
    if not path.exists():
        pytest.fail(f"test document {path} is missing (the shared data folder must sit beside the project)")
    return path


def _doc(
    hub: Hub, name: str, kind: str, path: Path | None = None, data: bytes | None = None, paid: bool | None = None
) -> dict[str, Any]:
    doc_id = f"doc_{name}_{hub.run}"
    if path is not None:
        content_type = {".pdf": "application/pdf", ".png": "image/png", ".jpg": "image/jpeg"}.get(path.suffix)
        info = hub.sandbox.docs.put_file(doc_id, str(path), content_type=content_type or "application/xml")
        data = path.read_bytes()
        filename = path.name
    else:
        assert data is not None
        content_type = "application/pdf"
        info = hub.sandbox.docs.put(doc_id, data, content_type=content_type, filename=f"{name}.pdf")
        filename = f"{name}.pdf"
    ref = document_ref(doc_id, f"{info['url']}?token=t0k3n", data, kind, filename, paid)
    ref["content_type"] = content_type or "application/xml"
    return ref


def _event(hub: Hub, cf: str, kind: str, n: int, docs: list[dict[str, Any]]) -> dict[str, Any]:
    entry = sample_entry(kind, n)
    entry["id"] = f"{entry['id']}_{hub.run}"
    return sample_event(cf, entry, documents=docs)


def _rid(cf: str, doc: dict[str, Any]) -> str:
    return f"{PROVIDER}:{cf}:{doc['id']}"


def _wait_pending(hub: Hub, cf: str, count: int) -> None:
    hub.wait(lambda: len(pending(hub.store, cf)) >= count, 30, f"{count} pending documents for {cf}")


def _wait_settled(hub: Hub, rids: list[str], timeout: float = 90) -> dict[str, Any]:
    def done() -> bool:
        return all((rec := hub.store.record(rid)) is not None and rec.state in SETTLED for rid in rids)

    try:
        hub.wait(done, timeout, f"{rids} settled")
    except AssertionError:
        states = {rid: (r.state, r.step, r.last_error) if (r := hub.store.record(rid)) else None for rid in rids}
        raise AssertionError(f"documents not settled: {json.dumps(states, default=str)[:3000]}") from None
    return {rid: hub.store.record(rid) for rid in rids}


def _names_in_loop(hub: Hub, dossier: str) -> Counter[str]:
    return Counter(d["nom"] for d in _loop(hub).documents(dossier))


def _deposits(hub: Hub, dossier: str) -> int:
    return sum(1 for m, p, _s in _loop(hub).calls() if m == "POST" and p == f"/pia/dossiers/{dossier}/documents")


def test_days_export_lands_pdf_png_jpeg_once_and_skips_xml_and_fake_pdf_with_their_reasons(hub: Hub) -> None:
    # given a client file connected to Cegid Loop and a day's entries with the real test documents
    cf, dossier = _connect(hub, "mixed")
    pdf = _doc(hub, "pdf", "supplier_invoice", _shared("facturx-invoice-en16931.pdf"), paid=False)
    xml = _doc(hub, "xml", "supplier_invoice", _shared("facturx-minimum.xml"))
    png = _doc(hub, "png", "customer_invoice", _shared("invoice-customer.png"), paid=True)
    jpg = _doc(hub, "jpg", "receipt", _shared("receipt-bakery.jpg"))
    fake = _doc(hub, "fake", "receipt", _shared("not-really-a.pdf"))
    events = [
        _event(hub, cf, "purchase", 1, [pdf, xml]),
        _event(hub, cf, "sale", 2, [png]),
        _event(hub, cf, "expense_report", 3, [jpg]),
        _event(hub, cf, "expense_report", 4, [fake]),
    ]
    for event in events:
        hub.emit(event)
    # when they are ingested, nothing is exported before the export runs
    _wait_pending(hub, cf, 5)
    time.sleep(0.5)
    assert _loop(hub).documents(dossier) == []
    # and when the export runs (as an operator would, instead of waiting for 20:00 UTC)
    shown = run_cli(hub.env, "export", "cegid-loop", "--client-file", cf, "--wait", "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    # then the PDF, PNG and JPEG land once each; the XML and the text named .pdf are skipped with a reason
    assert report["documents"] == 5
    assert report["counts"] == {"exported": 3, "skipped": 2, "dead": 0, "waiting": 0}
    assert "XML" in report["skipped"][xml["id"]] and "not JPEG, PNG or PDF" in report["skipped"][xml["id"]]
    assert "plain text" in report["skipped"][fake["id"]] and "not-really-a.pdf" in report["skipped"][fake["id"]]
    stored = {d["nom"]: d for d in _loop(hub).documents(dossier)}
    assert len(stored) == 3 and max(_names_in_loop(hub, dossier).values()) == 1
    for doc, kind, status in ((pdf, "facture_fournisseur", "non_paye"), (png, "facture_client", "paye")):
        rec = hub.store.record(_rid(cf, doc))
        assert rec.state == "exported"
        name = rec.docs[doc["id"]]["name"]
        assert stored[name]["sha256"] == doc["sha256"]
        assert (stored[name]["metadonnees"]["typeDocument"], stored[name]["metadonnees"]["statutPaiement"]) == (
            kind,
            status,
        )
    jpg_rec = hub.store.record(_rid(cf, jpg))
    jpg_meta = stored[jpg_rec.docs[jpg["id"]]["name"]]["metadonnees"]
    assert (jpg_meta["typeDocument"], jpg_meta["statutPaiement"]) == ("recu", "paye")
    assert jpg_rec.docs[jpg["id"]]["name"].endswith(".jpg")
    # and the operator sees it: `hubsync entry` per entry, `hubsync status` per client file
    entry = json.loads(run_cli(hub.env, "entry", events[0]["entry"]["id"], "--json").stdout)
    states = {p["entry_id"]: p["state"] for p in entry["providers"] if p["provider"] == PROVIDER}
    assert states == {pdf["id"]: "exported", xml["id"]: "skipped"}
    skipped_note = next(p["note"] for p in entry["providers"] if p["entry_id"] == xml["id"])
    assert skipped_note.startswith("skipped: ")
    status = json.loads(run_cli(hub.env, "status", "--json").stdout)
    counts = status["providers"][PROVIDER][cf]
    assert (counts["exported"], counts["skipped"], counts["dead"]) == (3, 2, 0)
    print(
        f"\nfigures: pending {report['documents']}, deposited {report['counts']['exported']}, skipped "
        f"{report['counts']['skipped']} ({report['skipped']}), duplicates in the sandbox "
        f"{sum(n - 1 for n in _names_in_loop(hub, dossier).values())}"
    )


def test_two_overlapping_exports_deposit_each_document_once(hub: Hub) -> None:
    # given six pending documents
    cf, dossier = _connect(hub, "overlap")
    docs = [_doc(hub, f"ov{n}", "supplier_invoice", data=tiny_pdf(f"overlap {n} {hub.run}")) for n in range(6)]
    for n, doc in enumerate(docs):
        hub.emit(_event(hub, cf, "purchase", 40 + n, [doc]))
    _wait_pending(hub, cf, 6)
    # when one export is slow and a second starts meanwhile, then a third runs after its lock was lost
    results: list[ExportResult] = []
    lock_key = f"hubsync:lock:cegid_loop:export:{cf}"
    third_started = threading.Event()

    def slow_enqueue(provider: str, rid: str, generation: int, step: str) -> None:
        _enqueue(provider, rid, generation, step)
        time.sleep(0.3)

    def first() -> None:
        results.append(run_export(hub.store, cf, slow_enqueue))

    def second() -> None:
        results.append(run_export(hub.store, cf, _enqueue))

    def third() -> None:
        hub.wait(lambda: bool(hub.store.r.exists(lock_key)), 10, "the first export's lock")
        hub.store.r.delete(lock_key)  # as if the first export outlived its lock
        third_started.set()
        results.append(run_export(hub.store, cf, _enqueue))

    threads = [threading.Thread(target=f) for f in (first, third, second)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join(90)
    assert third_started.is_set()
    # then every document was started once, and lands once
    started = [rid for r in results for rid in r.enqueued]
    assert sorted(started) == sorted(_rid(cf, d) for d in docs)
    records = _wait_settled(hub, started)
    assert {r.state for r in records.values()} == {"exported"}
    names = _names_in_loop(hub, dossier)
    assert len(names) == 6 and set(names.values()) == {1}
    assert _deposits(hub, dossier) == 6


def test_rate_limit_storm_with_retry_after_still_lands_everything_once(hub: Hub) -> None:
    # given four pending documents, and Cegid Loop answering 429 (Retry-After: 1) to the next 12 calls
    cf, dossier = _connect(hub, "storm")
    docs = [_doc(hub, f"st{n}", "supplier_invoice", data=tiny_pdf(f"storm {n} {hub.run}")) for n in range(4)]
    for n, doc in enumerate(docs):
        hub.emit(_event(hub, cf, "purchase", 60 + n, [doc]))
    _wait_pending(hub, cf, 4)
    loop = _loop(hub)
    loop.set_fault(Fault(mode="rate_limit", retry_after=1, count=12, route="documents"))
    try:
        # when the export runs
        result = run_export(hub.store, cf, _enqueue)
        records = _wait_settled(hub, result.enqueued, timeout=120)
    finally:
        loop.clear_faults()
    # then everything lands once, after waiting out each Retry-After
    assert {r.state for r in records.values()} == {"exported"}
    names = _names_in_loop(hub, dossier)
    assert len(names) == 4 and set(names.values()) == {1}
    limited = [c for c in loop.calls() if c[1].startswith(f"/pia/dossiers/{dossier}/") and c[2] == 429]
    assert len(limited) == 12
    waited = [
        a
        for rid in result.enqueued
        for a in hub.store.attempts(rid)
        if a.get("error_class") == "RateLimited" and a.get("outcome") == "retry"
    ]
    assert len(waited) == 12


def test_document_arriving_mid_export_goes_in_the_next_export(hub: Hub) -> None:
    # given two pending documents
    cf, dossier = _connect(hub, "midway")
    early = [_doc(hub, f"mid{n}", "receipt", data=tiny_pdf(f"early {n} {hub.run}")) for n in range(2)]
    for n, doc in enumerate(early):
        hub.emit(_event(hub, cf, "expense_report", 70 + n, [doc]))
    _wait_pending(hub, cf, 2)
    late = _doc(hub, "late", "receipt", data=tiny_pdf(f"late {hub.run}"))
    arrived = threading.Event()

    def arrive_once(rid: str) -> None:
        if not arrived.is_set():
            arrived.set()
            hub.emit(_event(hub, cf, "expense_report", 79, [late]))
            hub.wait(lambda: _rid(cf, late) in pending(hub.store, cf), 30, "the late document pending")

    # when a document arrives while the export runs
    first = run_export(hub.store, cf, _enqueue, on_enqueued=arrive_once)
    # then this export takes only the two early ones; the late one waits for the next export
    assert sorted(first.enqueued) == sorted(_rid(cf, d) for d in early)
    assert first.left_for_next == 1
    _wait_settled(hub, first.enqueued)
    time.sleep(0.5)
    late_rec = hub.store.record(_rid(cf, late))
    assert (late_rec.state, late_rec.step) == ("received", "pending")
    assert len(_loop(hub).documents(dossier)) == 2
    second = run_export(hub.store, cf, _enqueue)
    assert second.enqueued == [_rid(cf, late)]
    assert _wait_settled(hub, second.enqueued)[_rid(cf, late)].state == "exported"
    names = _names_in_loop(hub, dossier)
    assert len(names) == 3 and set(names.values()) == {1}


def test_removed_partner_folder_is_recreated_and_said_in_status_without_depositing_old_documents_again(
    hub: Hub,
) -> None:
    # given a client file whose first document was exported
    cf, dossier = _connect(hub, "folder")
    loop = _loop(hub)
    first = _doc(hub, "f1", "supplier_invoice", data=tiny_pdf(f"first {hub.run}"))
    hub.emit(_event(hub, cf, "purchase", 80, [first]))
    _wait_pending(hub, cf, 1)
    _wait_settled(hub, run_export(hub.store, cf, _enqueue).enqueued)
    old_folder = loop.folders(dossier)[0]["id"]
    # when somebody deletes the Qonto folder in Loop before the next export
    assert loop.remove_folder(dossier) == 1
    second = _doc(hub, "f2", "supplier_invoice", data=tiny_pdf(f"second {hub.run}"))
    hub.emit(_event(hub, cf, "purchase", 81, [second]))
    _wait_pending(hub, cf, 1)
    result = run_export(hub.store, cf, _enqueue)
    # then the export recreates it once, deposits the new document there, and says so
    assert result.folder_replaced
    assert _wait_settled(hub, result.enqueued)[_rid(cf, second)].state == "exported"
    (folder,) = loop.folders(dossier)
    assert folder["id"] != old_folder and folder["nom"] == "Qonto"
    assert [d["dossierPartenaireId"] for d in loop.documents(dossier)] == [folder["id"]]
    status = json.loads(run_cli(hub.env, "status", "--json").stdout)
    (conn,) = [c for c in status["connections"] if c["client_file_id"] == cf]
    assert "disappeared" in conn["message"] and "recreated" in conn["message"]
    # and when it disappears again in the middle of an export, the deposit recreates it and lands
    third = _doc(hub, "f3", "supplier_invoice", data=tiny_pdf(f"third {hub.run}"))
    hub.emit(_event(hub, cf, "purchase", 82, [third]))
    _wait_pending(hub, cf, 1)

    def remove_then_enqueue(provider: str, rid: str, generation: int, step: str) -> None:
        loop.remove_folder(dossier)
        _enqueue(provider, rid, generation, step)

    late = run_export(hub.store, cf, remove_then_enqueue)
    rec = _wait_settled(hub, late.enqueued)[_rid(cf, third)]
    assert rec.state == "exported"
    assert any(a.get("outcome") == "folder_recreated" for a in hub.store.attempts(rec.id))
    (newest,) = loop.folders(dossier)
    assert [d["dossierPartenaireId"] for d in loop.documents(dossier)] == [newest["id"]]
    # the first document, exported before, was never deposited again
    first_attempts = hub.store.attempts(_rid(cf, first))
    assert [a["outcome"] for a in first_attempts if a["step"] == "deposit"] == ["deposited"]


def test_connect_explains_a_wrong_secret_and_a_dossier_without_qonto_in_loop_hub(hub: Hub) -> None:
    cf = hub.cf("conn")
    env = {**hub.env, "HUBSYNC_CEGID_SUBSCRIPTION_KEY": DEMO_SUBSCRIPTION_KEY}
    args = ["connect", "cegid-loop", "--client-file", cf, "--url", hub.sandbox.app_url("cegid")]
    args += ["--domain", DEMO_DOMAIN, "--api-key", DEMO_API_KEY]
    wrong = run_cli({**env, "HUBSYNC_CEGID_API_SECRET": "not-the-secret"}, *args, "--dossier", "DUPONT01")
    assert wrong.returncode != 0 and "wrong key or secret" in wrong.stderr
    assert "not-the-secret" not in wrong.stderr + wrong.stdout
    unlinked = run_cli({**env, "HUBSYNC_CEGID_API_SECRET": DEMO_API_SECRET}, *args, "--dossier", "DUPONT02")
    assert unlinked.returncode != 0
    for field in ("Loop Hub", "Type: Partenaire", "Application: Qonto", "API Key", "Email prestataire"):
        assert field in unlinked.stderr
    ok = run_cli(env, *args, "--dossier", "DUPONT01", "--api-secret-stdin", "--json", stdin=DEMO_API_SECRET + "\n")
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    again = run_cli(env, *args, "--dossier", "DUPONT01", "--api-secret-stdin", "--json", stdin=DEMO_API_SECRET + "\n")
    assert (
        json.loads(again.stdout)["folder_id"] == report["folder_id"] and not json.loads(again.stdout)["folder_created"]
    )
    assert [f["nom"] for f in _loop(hub).folders("DUPONT01")] == ["Qonto"]
    conn = hub.store.connection(cf, PROVIDER)
    assert DEMO_API_SECRET not in json.dumps(conn.params) and DEMO_API_SECRET not in conn.sealed_secret


def test_scheduled_export_task_exports_pending_documents_on_the_worker(hub: Hub) -> None:
    # given a pending receipt
    cf, dossier = _connect(hub, "beat")
    doc = _doc(hub, "beat", "receipt", _shared("receipt-bakery.jpg"))
    hub.emit(_event(hub, cf, "expense_report", 90, [doc]))
    _wait_pending(hub, cf, 1)
    # when the task `hubsync beat` sends at 20:00 UTC runs on the worker
    from tasks import app

    app.send_task("hubsync.cegid_loop.export", args=[cf], queue="cegid_loop")
    # then the receipt is exported, once
    hub.wait(lambda: not pending(hub.store, cf), 30, "the export to take the receipt")
    assert _wait_settled(hub, [_rid(cf, doc)])[_rid(cf, doc)].state == "exported"
    assert list(_names_in_loop(hub, dossier).values()) == [1]
