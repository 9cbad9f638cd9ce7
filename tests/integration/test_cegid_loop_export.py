"""The Cegid Loop export end to end: a real Redis, a real worker process, the Cegid Loop and document
sandboxes over loopback, the real test documents, and `hubsync` run as an operator runs it."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from hubsync_sandbox import Fault
from hubsync_sandbox.cegid import (
    DEMO_API_KEY,
    DEMO_API_SECRET,
    DEMO_DOMAIN,
    DEMO_SUBSCRIPTION_KEY,
    CegidLoopSandbox,
)
from hubsync_sandbox.cegid_demo import LoopServer, run_day
from hubsync_sandbox.samples import document_ref, sample_entry, sample_event, tiny_pdf
from pipeline.cegid.connect import PROVIDER
from pipeline.cegid.export import ExportResult, pending, run_export
from tests.conftest import SHARED_DOCUMENTS, Hub, run_cli

pytestmark = pytest.mark.integration
SETTLED = ("exported", "skipped", "dead")
PARTNER = f"qonto@{DEMO_DOMAIN}.onmicrosoft.com"


def _loop(hub: Hub) -> CegidLoopSandbox:
    app = hub.sandbox.app("cegid")
    assert isinstance(app, CegidLoopSandbox)
    return app


def _enqueue(provider: str, rid: str, generation: int, step: str) -> None:
    # Imported late: `tasks` reads the broker URL of the environment the fixtures set up.
    from tasks.chains import enqueue

    enqueue(provider, rid, generation, step)


def _connect(hub: Hub, name: str) -> tuple[str, str]:
    """A client file connected to a dossier of its own."""
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
        return all((rec := hub.store.records.get(rid)) is not None and rec.state in SETTLED for rid in rids)

    try:
        hub.wait(done, timeout, f"{rids} settled")
    except AssertionError:
        states = {rid: (r.state, r.step, r.last_error) if (r := hub.store.records.get(rid)) else None for rid in rids}
        raise AssertionError(f"documents not settled: {json.dumps(states, default=str)[:3000]}") from None
    return {rid: hub.store.records.get(rid) for rid in rids}


def data_sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _copies(hub: Hub, dossier: str) -> Counter[str]:
    """How many times Loop received each content (sha256) in the dossier."""
    return Counter(d["sha256"] for d in _loop(hub).deposits(dossier))


def test_days_export_lands_pdf_png_jpeg_once_with_transaction_and_type_and_never_sends_xml_or_a_fake_pdf(
    hub: Hub,
) -> None:
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
    # when they are ingested, nothing is deposited before the export runs
    _wait_pending(hub, cf, 5)
    time.sleep(0.5)
    assert _loop(hub).deposits(dossier) == []
    # and when the export runs (as an operator would, instead of waiting for 20:00 UTC)
    shown = run_cli(hub.env, "export", "cegid-loop", "--client-file", cf, "--wait", "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    # then the PDF, PNG and JPEG land once each; the XML and the text named .pdf are skipped with a reason
    assert report["documents"] == 5
    assert report["counts"] == {"exported": 3, "skipped": 2, "dead": 0, "waiting": 0, "outcome_unknown": 0}
    assert "XML" in report["skipped"][xml["id"]] and "not JPEG, PNG or PDF" in report["skipped"][xml["id"]]
    assert "plain text" in report["skipped"][fake["id"]] and "not-really-a.pdf" in report["skipped"][fake["id"]]
    received = {d["sha256"]: d for d in _loop(hub).deposits(dossier)}
    assert set(received) == {pdf["sha256"], png["sha256"], jpg["sha256"]}  # the XML and the fake never went
    assert set(_copies(hub, dossier).values()) == {1}
    for doc, transaction, content_type in (
        (pdf, "PURCHASE", "application/pdf"),
        (png, "SALE", "image/png"),
        (jpg, "PURCHASE", "image/jpeg"),
    ):
        got = received[doc["sha256"]]
        rec = hub.store.records.get(_rid(cf, doc))
        assert rec.state == "exported" and rec.provider_id == got["documentId"]
        assert (got["transaction"], got["content_type"]) == (transaction, content_type)
        assert got["sniffed_type"] == content_type
        assert (got["uploadMode"], got["uploadAuthor"], got["known_context"]) == ("API", PARTNER, True)
        assert got["filename"] == rec.docs[doc["id"]]["name"] == rec.docs[doc["id"]]["deposit"]["filename"]
    assert "_facture-fournisseur_non-payee_" in received[pdf["sha256"]]["filename"]
    assert "_facture-client_payee_" in received[png["sha256"]]["filename"]
    assert received[jpg["sha256"]]["filename"].endswith(".jpg")
    # and the operator sees it: `hubsync entry` per entry, `hubsync status` per client file
    entry = json.loads(run_cli(hub.env, "entry", events[0]["entry"]["id"], "--json").stdout)
    states = {p["entry_id"]: p["state"] for p in entry["providers"] if p["provider"] == PROVIDER}
    assert states == {pdf["id"]: "exported", xml["id"]: "skipped"}
    ledger = next(p for p in entry["providers"] if p["entry_id"] == pdf["id"])["documents"][pdf["id"]]["deposit"]
    assert ledger["document_id"] == received[pdf["sha256"]]["documentId"] and ledger["transaction"] == "PURCHASE"
    text = run_cli(hub.env, "entry", events[0]["entry"]["id"]).stdout
    assert "deposited" in text and "skipped (the file (named 'facturx-minimum.xml') is an XML" in text
    status = json.loads(run_cli(hub.env, "status", "--json").stdout)
    counts = status["providers"][PROVIDER][cf]
    assert (counts["exported"], counts["skipped"], counts["dead"]) == (3, 2, 0)


def test_a_document_removed_by_a_revalidation_before_the_export_is_skipped_never_deposited(hub: Hub) -> None:
    # given an entry validated with a wrong document, then validated again with the right one in its place
    cf, dossier = _connect(hub, "reval")
    wrong = _doc(hub, "wrong", "supplier_invoice", data=tiny_pdf(f"wrong scan {hub.run}"))
    right = _doc(hub, "right", "supplier_invoice", data=tiny_pdf(f"right scan {hub.run}"))
    first = _event(hub, cf, "purchase", 30, [wrong])
    again = sample_event(cf, first["entry"], event_id=f"{first['event_id']}_again", documents=[right])
    hub.emit(first)
    _wait_pending(hub, cf, 1)
    hub.emit(again)
    hub.wait(lambda: hub.store.events.status(again["event_id"]) == "done", 30, "the re-validation to be ingested")
    # when the export runs
    shown = run_cli(hub.env, "export", "cegid-loop", "--client-file", cf, "--wait", "--json")
    assert shown.returncode == 0, shown.stderr
    # then only the right document reaches Loop; the wrong one is skipped with the reason
    assert json.loads(shown.stdout)["counts"]["exported"] == 1
    assert set(_copies(hub, dossier)) == {right["sha256"]}
    rec = hub.store.records.get(_rid(cf, wrong))
    assert rec.state == "skipped" and rec.docs[wrong["id"]].get("deposit") is None
    entry_id = first["entry"]["id"]
    reason = f"removed from entry {entry_id} by its re-validation {again['event_id']} before it was exported"
    assert rec.docs[wrong["id"]]["skip_reason"] == reason
    text = run_cli(hub.env, "entry", first["entry"]["id"]).stdout
    assert f"document {wrong['id']}: -: skipped ({reason})" in text, text
    status = json.loads(run_cli(hub.env, "status", "--json").stdout)
    counts = status["providers"][PROVIDER][cf]
    assert (counts["exported"], counts["skipped"], counts["dead"]) == (1, 1, 0)


def test_one_file_attached_to_two_entries_is_deposited_once_and_the_other_skipped_with_its_reason(
    hub: Hub,
) -> None:
    # given the same invoice file attached, as two documents, to its purchase and to its payment
    cf, dossier = _connect(hub, "twice")
    data = tiny_pdf(f"one invoice {hub.run}")
    on_purchase = _doc(hub, "inv_purchase", "supplier_invoice", data=data, paid=True)
    on_payment = _doc(hub, "inv_payment", "supplier_invoice", data=data, paid=True)
    other = _doc(hub, "other", "receipt", data=tiny_pdf(f"another file {hub.run}"))
    hub.emit(_event(hub, cf, "purchase", 11, [on_purchase, other]))
    hub.emit(_event(hub, cf, "bank_transaction", 12, [on_payment]))
    _wait_pending(hub, cf, 3)
    # when the day's export runs
    shown = run_cli(hub.env, "export", "cegid-loop", "--client-file", cf, "--wait", "--json")
    assert shown.returncode == 0, shown.stderr
    # then Loop receives the file once, and the other document says which one went
    assert _copies(hub, dossier) == Counter({on_purchase["sha256"]: 1, other["sha256"]: 1})
    records = [hub.store.records.get(_rid(cf, d)) for d in (on_purchase, on_payment)]
    assert sorted(r.state for r in records) == ["exported", "skipped"]
    went, skipped = sorted(records, key=lambda r: r.state)
    assert f"the same file (sha256 {data_sha(data)[:12]}" in skipped.note and went.entry_id in skipped.note


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
    assert len(_loop(hub).deposits(dossier)) == 6 and set(_copies(hub, dossier).values()) == {1}


def test_rate_limit_storm_with_retry_after_still_lands_everything_once(hub: Hub) -> None:
    # given four pending documents, and Cegid Loop answering 429 (Retry-After: 1) to the next 12 deposits
    cf, dossier = _connect(hub, "storm")
    docs = [_doc(hub, f"st{n}", "supplier_invoice", data=tiny_pdf(f"storm {n} {hub.run}")) for n in range(4)]
    for n, doc in enumerate(docs):
        hub.emit(_event(hub, cf, "purchase", 60 + n, [doc]))
    _wait_pending(hub, cf, 4)
    loop = _loop(hub)
    loop.set_fault(Fault(mode="rate_limit", retry_after=1, count=12, route="storeDocument"))
    try:
        # when the export runs
        result = run_export(hub.store, cf, _enqueue)
        records = _wait_settled(hub, result.enqueued, timeout=120)
    finally:
        loop.clear_faults()
    # then everything lands once, after waiting out each Retry-After
    assert {r.state for r in records.values()} == {"exported"}
    assert len(loop.deposits(dossier)) == 4 and set(_copies(hub, dossier).values()) == {1}
    waited = [
        a
        for rid in result.enqueued
        for a in hub.store.records.attempts(rid)
        if a.get("error_class") == "RateLimited" and a.get("outcome") == "retry"
    ]
    assert len(waited) == 12


def test_commit_then_drop_ends_as_an_outcome_unknown_dead_letter_never_a_silent_second_copy(hub: Hub) -> None:
    # given two pending documents, and Loop storing the first deposit it gets, then cutting the connection
    cf, dossier = _connect(hub, "drop")
    docs = [_doc(hub, f"dr{n}", "supplier_invoice", data=tiny_pdf(f"drop {n} {hub.run}")) for n in range(2)]
    for n, doc in enumerate(docs):
        hub.emit(_event(hub, cf, "purchase", 50 + n, [doc]))
    _wait_pending(hub, cf, 2)
    loop = _loop(hub)
    loop.set_fault(Fault(mode="drop_after_commit", count=1, route="storeDocument"))
    # when the export runs
    shown = run_cli(hub.env, "export", "cegid-loop", "--client-file", cf, "--wait", "--json")
    loop.clear_faults()
    report = json.loads(shown.stdout)
    # then one lands, the other is an outcome-unknown dead letter, and Loop holds each content once
    assert report["counts"]["exported"] == 1 and report["counts"]["outcome_unknown"] == 1, report
    assert shown.returncode == 1 and "1 document(s) need a look" in shown.stderr, shown.stderr
    ((doc_id, dl_id),) = report["outcome_unknown"].items()
    time.sleep(1.0)  # nothing is sent again behind the operator's back
    assert len(loop.deposits(dossier)) == 2 and set(_copies(hub, dossier).values()) == {1}
    listed = json.loads(run_cli(hub.env, "dlq", "list", "--provider", "cegid_loop", "--json").stdout)
    letter = next(dl for dl in listed if dl["id"] == dl_id)
    name = hub.store.records.get(f"{PROVIDER}:{cf}:{doc_id}").docs[doc_id]["name"]
    assert letter["error_class"] == "DepositOutcomeUnknown" and letter["state"] == "dead"
    assert name in letter["message"] and "may or may not hold it" in letter["message"]
    assert "discard" in letter["hint"] and "replay" in letter["hint"]
    # and `hubsync reconcile` says it needs a look
    reconciled = run_cli(hub.env, "reconcile", "--client-file", cf)
    assert reconciled.returncode == 1 and f"outcome unknown   {doc_id} {name}" in reconciled.stdout
    assert f"hubsync dlq discard {dl_id}" in reconciled.stdout
    # when the accountant finds it in PIA and the operator discards the dead letter
    discarded = run_cli(hub.env, "dlq", "discard", dl_id, "--reason", "seen in PIA by the accountant")
    assert discarded.returncode == 0, discarded.stderr
    # then it counts as exported, reconcile is green, and still nothing was sent twice
    assert hub.store.records.get(f"{PROVIDER}:{cf}:{doc_id}").state == "exported"
    reconciled = run_cli(hub.env, "reconcile", "--client-file", cf, "--json")
    (result,) = json.loads(reconciled.stdout)["client_files"]
    assert reconciled.returncode == 0 and result["deposited"] == 2 and result["outcome_unknown"] == []
    status = json.loads(run_cli(hub.env, "status", "--json").stdout)
    assert status["providers"][PROVIDER][cf]["exported"] == 2
    assert len(loop.deposits(dossier)) == 2


def test_replaying_an_outcome_unknown_dead_letter_sends_it_again_because_the_operator_decided(hub: Hub) -> None:
    # given an outcome-unknown dead letter whose deposit Loop did not in fact keep
    cf, dossier = _connect(hub, "resend")
    doc = _doc(hub, "rs", "receipt", data=tiny_pdf(f"resend {hub.run}"))
    hub.emit(_event(hub, cf, "expense_report", 55, [doc]))
    _wait_pending(hub, cf, 1)
    loop = _loop(hub)
    loop.set_fault(Fault(mode="slow", delay_seconds=7, count=1, route="storeDocument"))  # past the 5 s timeout
    result = run_export(hub.store, cf, _enqueue)
    rec = _wait_settled(hub, result.enqueued)[_rid(cf, doc)]
    assert rec.state == "dead" and rec.last_error["error_class"] == "DepositOutcomeUnknown"
    assert "no answer came in time" in rec.last_error["message"]
    hub.wait(lambda: len(loop.deposits(dossier)) == 1, 15, "the slow deposit to be stored by Loop")
    # when the operator replays it
    replayed = run_cli(hub.env, "dlq", "replay", rec.dead_letter_id)
    assert replayed.returncode == 0 and "chain resumed at deposit" in replayed.stdout
    # then the worker sends it again, the ledger says so, and reconcile lists the possible duplicate as
    # needing a look
    rec = _wait_settled(hub, [_rid(cf, doc)])[_rid(cf, doc)]
    assert rec.state == "exported" and rec.docs[doc["id"]]["deposit"]["resent_after_unknown_outcome"]
    assert _copies(hub, dossier)[doc["sha256"]] == 2
    reconciled = run_cli(hub.env, "reconcile", "--client-file", cf)
    assert reconciled.returncode == 1 and f"possible duplicate {doc['id']}" in reconciled.stdout
    assert f"--checked {doc['id']}" in reconciled.stdout
    # and once the operator says PIA was checked (the second copy deleted there), reconcile is green again
    checked = run_cli(
        hub.env, "reconcile", "--client-file", cf, "--checked", doc["id"], "--reason", "second copy deleted in PIA"
    )
    assert checked.returncode == 0 and "possible duplicate" not in checked.stdout, checked.stdout + checked.stderr
    history = hub.store.records.attempts(_rid(cf, doc))
    assert history[-1]["outcome"] == "duplicate_checked" and history[-1]["reason"] == "second copy deleted in PIA"


def test_connect_refuses_an_unknown_dossier_code_before_any_deposit_and_prints_loop_hub_steps(hub: Hub) -> None:
    cf = hub.cf("conn")
    env = {**hub.env, "HUBSYNC_CEGID_SUBSCRIPTION_KEY": DEMO_SUBSCRIPTION_KEY}
    args = ["connect", "cegid-loop", "--client-file", cf, "--url", hub.sandbox.app_url("cegid")]
    args += ["--domain", DEMO_DOMAIN, "--api-key", DEMO_API_KEY]
    secret = {**env, "HUBSYNC_CEGID_API_SECRET": DEMO_API_SECRET}
    # an unknown code: refused, nothing stored, so the day's documents are never deposited into it
    unknown = run_cli(secret, *args, "--dossier", f"TYPO{hub.run}")
    assert unknown.returncode != 0 and unknown.stdout == ""
    assert f"knows no dossier 'TYPO{hub.run}'" in unknown.stderr and "lost silently" in unknown.stderr
    assert hub.store.connections.get(cf, PROVIDER) is None
    doc = _doc(hub, "typo", "receipt", data=tiny_pdf(f"typo {hub.run}"))
    hub.emit(_event(hub, cf, "expense_report", 91, [doc]))
    time.sleep(1.0)
    assert hub.store.records.get(_rid(cf, doc)) is None and _loop(hub).deposits(f"TYPO{hub.run}") == []
    # a wrong secret and a dossier the key does not reach: each explained, the secret never shown
    wrong = run_cli({**env, "HUBSYNC_CEGID_API_SECRET": "not-the-secret"}, *args, "--dossier", "DUPONT01")
    assert wrong.returncode != 0 and "wrong key or secret" in wrong.stderr
    assert "not-the-secret" not in wrong.stderr + wrong.stdout
    unlinked = run_cli(secret, *args, "--dossier", "DUPONT02")
    assert unlinked.returncode != 0 and "not linked to dossier DUPONT02" in unlinked.stderr
    for shown in ("CegidLife", "Loop Hub", "Type: Partenaire", "Application: Qonto", f"Email prestataire: {PARTNER}"):
        assert shown in unlinked.stderr
    # the right dossier: connected, with the exact values to type in Loop Hub
    ok = run_cli(env, *args, "--dossier", "DUPONT01", "--api-secret-stdin", stdin=DEMO_API_SECRET + "\n")
    assert ok.returncode == 0, ok.stderr
    for shown in (
        "Type:               Partenaire",
        "Application:        Qonto",
        f"API Key:            {DEMO_API_KEY}, with the API secret generated with it in CegidLife",
        f"Email prestataire:  {PARTNER}",
        "within a few hours",
        "24 hours",
        f"hubsync disconnect cegid-loop --client-file {cf}",
    ):
        assert shown in ok.stdout
    assert DEMO_API_SECRET not in ok.stdout + ok.stderr
    conn = hub.store.connections.get(cf, PROVIDER)
    assert DEMO_API_SECRET not in json.dumps(conn.params) and DEMO_API_SECRET not in conn.sealed_secret
    # and `hubsync status` shows how long ago it was connected; `disconnect` removes it and says what it kept
    status = run_cli(hub.env, "status")
    assert f"connection cegid_loop {cf}: ready, connected " in status.stdout
    gone = run_cli(hub.env, "disconnect", "cegid-loop", "--client-file", cf)
    assert gone.returncode == 0 and f"Disconnected {cf} from Cegid Loop dossier DUPONT01." in gone.stdout
    assert hub.store.connections.get(cf, PROVIDER) is None
    again = run_cli(hub.env, "disconnect", "cegid-loop", "--client-file", cf)
    assert again.returncode != 0 and "has no Cegid Loop connection" in again.stderr


def test_export_refuses_a_dossier_loop_no_longer_knows_and_its_documents_wait(hub: Hub) -> None:
    # given a pending invoice of a client file whose dossier was then deleted in Loop
    cf, dossier = _connect(hub, "vanished")
    doc = _doc(hub, "van", "supplier_invoice", data=tiny_pdf(f"vanished {hub.run}"))
    hub.emit(_event(hub, cf, "purchase", 92, [doc]))
    _wait_pending(hub, cf, 1)
    _loop(hub).remove_dossier(dossier)
    # when the export runs
    shown = run_cli(hub.env, "export", "cegid-loop", "--client-file", cf, "--json")
    # then it refuses with the reason, sends nothing, and the invoice keeps waiting; status says why
    assert shown.returncode == 1 and f"export of {cf} failed, its documents wait" in shown.stderr
    assert "lost silently" in json.loads(shown.stdout)["refused"][cf]
    assert pending(hub.store, cf) == [_rid(cf, doc)] and _loop(hub).deposits(dossier) == []
    status = run_cli(hub.env, "status").stdout
    assert f"connection cegid_loop {cf}: dossier_check_failed" in status and "documents wait" in status


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
    late_rec = hub.store.records.get(_rid(cf, late))
    assert (late_rec.state, late_rec.step) == ("received", "pending")
    assert len(_loop(hub).deposits(dossier)) == 2
    second = run_export(hub.store, cf, _enqueue)
    assert second.enqueued == [_rid(cf, late)]
    assert _wait_settled(hub, second.enqueued)[_rid(cf, late)].state == "exported"
    assert len(_loop(hub).deposits(dossier)) == 3 and set(_copies(hub, dossier).values()) == {1}


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
    assert list(_copies(hub, dossier).values()) == [1]


def test_a_days_export_with_loop_down_a_429_storm_and_a_cut_deposit_loses_nothing_and_sends_nothing_twice(
    hub: Hub,
) -> None:
    # given a client file whose Loop runs on a server of its own, so that "down" refuses connections
    loop = LoopServer(CegidLoopSandbox())
    loop.up()
    cf, dossier = hub.cf("day"), f"DAY{hub.run}".upper()
    try:
        loop.sandbox.add_dossier(dossier, "Client day", api_keys=[DEMO_API_KEY])
        from pipeline.cegid.connect import connect
        from pipeline.secrets import Secret

        connect(
            hub.store, cf, loop.app_url, dossier, DEMO_DOMAIN, DEMO_API_KEY, Secret(DEMO_API_SECRET),
            Secret(DEMO_SUBSCRIPTION_KEY),
        )  # fmt: skip
        from tasks import app

        # when a day's documents are exported by the scheduled task while Loop is down, then meet a 429
        # storm and one deposit stored and cut
        figures = run_day(
            hub.store,
            loop,
            hub.sandbox.docs,
            cf,
            dossier,
            hub.emit,
            lambda client_file: app.send_task("hubsync.cegid_loop.export", args=[client_file], queue="cegid_loop"),
            run=hub.run,
            timeout=150,
        )
    finally:
        loop.down()
    print("\nfigures, a day's export with faults:\n" + "\n".join(figures.lines()))
    # then every document settled: ten deposited or outcome unknown, two skipped, none lost, none twice
    assert figures.pending == figures.documents == 12 and figures.not_settled == 0 and figures.other_dead == {}
    assert len(figures.skipped) == 2 and len(figures.outcome_unknown) == 1
    assert figures.deposited == 9 and figures.received == 10 and figures.duplicates == 0
    assert figures.calls == {"200": 9, "429": 8, "cut": 1}
    assert figures.export_delay_seconds >= 3.0  # it waited for Loop to come back, then ran


def test_a_connect_or_export_that_cannot_reach_loop_says_to_run_it_again_not_that_the_hub_retries(hub: Hub) -> None:
    # given a client file connected to a Cegid Loop server that is then down (its port refuses connections)
    server = LoopServer(_loop(hub))
    server.up()
    cf, dossier = hub.cf("unreachable"), f"UNREACH{hub.run}".upper()
    _loop(hub).add_dossier(dossier, "Unreachable", api_keys=[DEMO_API_KEY])
    env = {
        **hub.env,
        "HUBSYNC_CEGID_SUBSCRIPTION_KEY": DEMO_SUBSCRIPTION_KEY,
        "HUBSYNC_CEGID_API_SECRET": DEMO_API_SECRET,
    }
    args = ("--url", server.app_url, "--dossier", dossier, "--domain", DEMO_DOMAIN, "--api-key", DEMO_API_KEY)
    try:
        assert run_cli(env, "connect", "cegid-loop", "--client-file", cf, *args).returncode == 0
        server.down()
        # when an operator connects another client file to it, and exports the first one now
        connected = run_cli(env, "connect", "cegid-loop", "--client-file", f"{cf}_2", *args)
        exported = run_cli(env, "export", "cegid-loop", "--client-file", cf)
    finally:
        server.down()
    # then each fails and says to run it again (nothing retries a command), never that the hub keeps retrying
    assert connected.returncode == 1 and "run `hubsync connect cegid-loop` again" in connected.stderr
    assert exported.returncode == 1 and "run `hubsync export cegid-loop` again" in exported.stderr
    assert "the 20:00 UTC export tries again" in exported.stderr
    for shown in (connected, exported):
        assert "keeps retrying" not in shown.stderr and "Retried automatically" not in shown.stderr, shown.stderr
