"""Cegid Loop without a broker: file names and transactions, the client's wire shapes and error table
(httpx.MockTransport), the retry decision, the schedule, and the sandbox over loopback."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from hubsync_sandbox import Fault, SandboxServer
from hubsync_sandbox.cegid import DEMO_API_KEY, DEMO_API_SECRET, DEMO_SUBSCRIPTION_KEY, CegidLoopSandbox
from hubsync_sandbox.samples import sample_entry, tiny_pdf, tiny_png
from pipeline.cegid import errors
from pipeline.cegid.client import DEPOSIT_MAX_BYTES, LoopClient, LoopCredentials, document_id
from pipeline.cegid.export import next_export_at
from pipeline.cegid.mapping import FILENAME_MAX_CHARS, deposit_filename, transaction
from pipeline.retry import RetryPolicy, decide
from pipeline.secrets import Secret
from schemas.event import load_event
from tests.conftest import ROOT, SHARED_DOCUMENTS

BASE = "https://loop.test/loop-api-publiques"
SHA = "3f9a0c1b2d" + "0" * 54


def _creds(url: str = BASE, secret: str = "s3cr3t-value", key: str = "key-1") -> LoopCredentials:
    return LoopCredentials(url=url, subscription_key=Secret("sub-k3y"), api_key=key, api_secret=Secret(secret))


class _Transport(httpx.BaseTransport):
    """Like ``httpx.MockTransport``, but the handler decides whether the request body is read at all."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.handler(request)  # type: ignore[no-any-return]


def _mock(handler: Any) -> LoopClient:
    return LoopClient(httpx.Client(transport=_Transport(handler)), _creds())


def _event(kind: str, n: int, doc_kind: str, paid: bool | None = None, doc_id: str = "doc_8842") -> Any:
    doc: dict[str, Any] = {"id": doc_id, "url": "https://docs.example/d", "filename": "f.pdf", "kind": doc_kind}
    if paid is not None:
        doc["paid"] = paid
    entry = sample_entry(kind, n)
    return load_event(
        {
            "event_id": "evt_1",
            "event_type": "entry.validated",
            "occurred_at": "2026-11-19T09:12:44Z",
            "client_file_id": "cf_x",
            "entry": entry,
            "documents": [doc],
        }
    )


def _pdf(tmp_path: Path, text: str = "x") -> Path:
    path = tmp_path / "doc.pdf"
    path.write_bytes(tiny_pdf(text))
    return path


# -- file names and transactions -----------------------------------------------------------------


def test_unpaid_supplier_invoice_name_carries_date_kind_paid_counterparty_and_unique_key() -> None:
    event = _event("purchase", 0, "supplier_invoice", paid=False)
    name = deposit_filename(event.entry, event.documents[0], SHA, "application/pdf")
    assert name == f"{event.entry.date.isoformat()}_facture-fournisseur_non-payee_Orange-SA_doc-8842-3f9a0c1b2d.pdf"


def test_paid_customer_invoice_and_receipt_say_so_and_take_their_extension_from_the_content() -> None:
    sale = _event("sale", 2, "customer_invoice", paid=True)
    name = deposit_filename(sale.entry, sale.documents[0], SHA, "image/png")
    assert "_facture-client_payee_Durand-SARL_" in name and name.endswith(".png")
    receipt = _event("expense_report", 3, "receipt")
    name = deposit_filename(receipt.entry, receipt.documents[0], SHA, "image/jpeg")
    # no counterparty on an expense report: its label says what it is
    assert "_recu_paye_Note-de-frais-deplacement-client-Lyon-re_" in name and name.endswith(".jpg")


def test_name_is_ascii_bounded_and_the_same_for_the_same_record() -> None:
    # given the longest document id the hub allows and a long counterparty name in any script
    entry = sample_entry("purchase", 1)
    party = "Ünïcødé & Cie / « S.A. » " * 7
    entry["lines"][2]["counterparty"]["name"] = party
    data = {
        "event_id": "evt_1",
        "event_type": "entry.validated",
        "occurred_at": "2026-11-19T09:12:44Z",
        "client_file_id": "cf_x",
        "entry": entry,
        "documents": [{"id": "d" + "x." * 63 + "9", "url": "https://d/x", "filename": "f.pdf", "kind": "receipt"}],
    }
    # when it is named twice
    first = deposit_filename(load_event(data).entry, load_event(data).documents[0], SHA, "application/pdf")
    again = deposit_filename(load_event(data).entry, load_event(data).documents[0], SHA, "application/pdf")
    # then the name is the same, ASCII, bounded, and safe in a query string and a file system
    assert first == again
    assert first.isascii() and len(first) <= FILENAME_MAX_CHARS
    assert "/" not in first and ".." not in first and " " not in first and "&" not in first
    assert "_Unicde-Cie-S-A-Unicde-Cie-S-A-Unicde-Cie_" in first and first.endswith("-3f9a0c1b2d.pdf")


def test_different_content_of_one_document_gets_a_different_name() -> None:
    event = _event("purchase", 1, "supplier_invoice")
    a = deposit_filename(event.entry, event.documents[0], "a" * 64, "application/pdf")
    b = deposit_filename(event.entry, event.documents[0], "b" * 64, "application/pdf")
    assert a != b


@pytest.mark.parametrize(
    ("kind", "expected"), [("receipt", "PURCHASE"), ("supplier_invoice", "PURCHASE"), ("customer_invoice", "SALE")]
)
def test_transaction_is_purchase_for_receipts_and_supplier_invoices_and_sale_for_customer_invoices(
    kind: str, expected: str
) -> None:
    assert transaction(_event("purchase", 1, kind).documents[0]) == expected


# -- the client's wire shapes --------------------------------------------------------------------


def test_deposit_is_the_raw_file_with_the_query_the_contract_names_and_no_domain_header(tmp_path: Path) -> None:
    seen: list[tuple[httpx.Request, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request, request.read()))
        return httpx.Response(200, json={"documentId": "d-1", "fileName": "x.pdf", "status": "Received"})

    path = _pdf(tmp_path, "hello")
    result = _mock(handler).store_document(
        "DOSSIER 1", "2026-11-19_recu_paye_x.pdf", path, "application/pdf", transaction="PURCHASE",
        upload_author="qonto@cabinet-x.onmicrosoft.com",
    )  # fmt: skip
    assert result.document_id == "d-1" and result.status == 200
    ((request, body),) = seen
    assert request.method == "POST" and request.url.path == "/loop-api-publiques/storeDocument"
    assert dict(request.url.params) == {
        "context": "DOSSIER 1",
        "filename": "2026-11-19_recu_paye_x.pdf",
        "uploadMode": "API",
        "transaction": "PURCHASE",
        "uploadAuthor": "qonto@cabinet-x.onmicrosoft.com",
    }
    assert body == path.read_bytes()
    assert request.headers["Content-Type"] == "application/pdf"
    assert request.headers["Content-Length"] == str(path.stat().st_size)
    assert "Transfer-Encoding" not in request.headers
    assert request.headers["Ocp-Apim-Subscription-Key"] == "sub-k3y"
    assert request.headers["x-apikey"] == "key-1:s3cr3t-value"
    assert not any(name.lower().startswith("x-loop") for name in request.headers)


def test_deposit_streams_the_spool_file_in_chunks_never_whole(tmp_path: Path) -> None:
    chunks: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        for chunk in request.stream:  # type: ignore[union-attr]
            chunks.append(len(chunk))
        return httpx.Response(200, json={"documentId": "d-2"})

    path = tmp_path / "big.pdf"
    path.write_bytes(b"%PDF-1.4\n" + os.urandom(300_000))
    result = _mock(handler).store_document("D1", "big.pdf", path, "application/pdf")
    assert sum(chunks) == path.stat().st_size == result.sent_bytes
    assert len(chunks) >= 5 and max(chunks) <= 64 * 1024


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"documentId": "a1"}, "a1"),
        ({"DocumentId": "a2", "status": "Received"}, "a2"),
        ({"id": 42}, "42"),
        ({"data": {"document": {"ID": "a3"}}}, "a3"),
        ([{"objectId": "a4"}], "a4"),
        ("a5-uuid", "a5-uuid"),
        ({"status": "Received"}, None),
        ({"id": True}, None),
    ],
)
def test_the_document_id_is_found_whatever_its_case_or_shape(body: Any, expected: str | None) -> None:
    assert document_id(json.dumps(body).encode()) == expected


def test_a_200_whose_body_is_not_json_is_still_a_deposit_with_its_raw_answer_capped(tmp_path: Path) -> None:
    page = b"<html>" + b"ok " * 5000 + b"</html>"

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        return httpx.Response(200, content=page, headers={"Content-Type": "text/html"})

    result = _mock(handler).store_document("D1", "x.pdf", _pdf(tmp_path), "application/pdf")
    assert result.document_id is None and result.status == 200
    assert result.answer.startswith("<html>ok ok") and len(result.answer) == 4096 and result.answer_truncated


def _answer(status: int, headers: dict[str, str] | None = None, message: str = "nope", read: bool = True) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        if read:
            request.read()
        return httpx.Response(status, json={"statusCode": status, "message": message}, headers=headers)

    return handler


@pytest.mark.parametrize(
    ("status", "cls", "kind"),
    [
        (400, errors.DepositRefused, "permanent"),
        (401, errors.AuthenticationFailed, "customer"),
        (403, errors.DossierAccessDenied, "customer"),
        (404, errors.RouteNotFound, "customer"),
        (408, errors.LoopUnavailable, "transient"),
        (413, errors.DocumentTooLarge, "permanent"),
        (429, errors.RateLimited, "transient"),
        (503, errors.LoopUnavailable, "transient"),
        (500, errors.DepositOutcomeUnknown, "customer"),
        (502, errors.DepositOutcomeUnknown, "customer"),
        (504, errors.DepositOutcomeUnknown, "customer"),
    ],
)
def test_error_table_sorts_each_deposit_answer(tmp_path: Path, status: int, cls: type[Exception], kind: str) -> None:
    with pytest.raises(cls) as caught:
        _mock(_answer(status)).store_document("D1", "x.pdf", _pdf(tmp_path), "application/pdf")
    assert str(caught.value.kind) == kind  # type: ignore[attr-defined]
    assert "nope" in caught.value.message  # type: ignore[attr-defined] # Loop's own words are kept


def test_429_and_503_carry_retry_after_in_seconds_or_as_a_date(tmp_path: Path) -> None:
    with pytest.raises(errors.RateLimited) as limited:
        _mock(_answer(429, {"Retry-After": "7"})).store_document("D1", "x.pdf", _pdf(tmp_path), "application/pdf")
    assert limited.value.retry_after == 7.0
    headers = {"Retry-After": "Thu, 19 Nov 2026 20:00:30 GMT", "Date": "Thu, 19 Nov 2026 20:00:00 GMT"}
    with pytest.raises(errors.LoopUnavailable) as down:
        _mock(_answer(503, headers)).journals("D1")
    assert down.value.retry_after == 30.0


def test_a_refused_key_and_a_file_too_large_carry_loops_own_hints(tmp_path: Path) -> None:
    with pytest.raises(errors.AuthenticationFailed) as wrong:
        _mock(_answer(401)).journals("D1")
    assert "hubsync connect cegid-loop" in wrong.value.hint and "ACD" not in wrong.value.hint
    with pytest.raises(errors.DocumentTooLarge) as big:
        _mock(_answer(413)).store_document("D1", "x.pdf", _pdf(tmp_path), "application/pdf")
    assert "Cegid Loop takes documents up to 50,000,000 bytes" in big.value.hint


def _raising(exc_type: type[httpx.HTTPError], read_body: bool) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        if read_body:
            request.read()  # the whole body went out
        raise exc_type("boom", request=request)

    return handler


@pytest.mark.parametrize(
    ("exc_type", "read_body", "cls"),
    [
        (httpx.ConnectError, False, errors.LoopUnavailable),
        (httpx.ConnectTimeout, False, errors.LoopUnavailable),
        (httpx.PoolTimeout, False, errors.LoopUnavailable),
        (httpx.WriteError, False, errors.LoopUnavailable),
        (httpx.RemoteProtocolError, False, errors.LoopUnavailable),
        (httpx.WriteTimeout, False, errors.LoopUnavailable),
        (httpx.ReadTimeout, True, errors.DepositOutcomeUnknown),
        (httpx.ReadError, True, errors.DepositOutcomeUnknown),
        (httpx.RemoteProtocolError, True, errors.DepositOutcomeUnknown),
    ],
)
def test_sent_or_not_sent_decides_between_a_retry_and_an_unknown_outcome(
    tmp_path: Path, exc_type: type[httpx.HTTPError], read_body: bool, cls: type[Exception]
) -> None:
    with pytest.raises(cls):
        _mock(_raising(exc_type, read_body)).store_document("D1", "x.pdf", _pdf(tmp_path), "application/pdf")


def test_the_retry_decision_never_retries_an_unknown_outcome_and_waits_out_retry_after() -> None:
    policy = RetryPolicy(base_seconds=1, max_seconds=60, window_seconds=3600)
    assert not decide(errors.DepositOutcomeUnknown("lost"), 0, 0, policy).retry
    limited = decide(errors.RateLimited("429", retry_after=7), 0, 0, policy, jitter=lambda a, b: 0.0)
    assert limited.retry and limited.countdown == 7.0
    assert decide(errors.LoopUnavailable("down"), 3, 10, policy).retry
    assert not decide(errors.DossierAccessDenied("403"), 0, 0, policy).retry


def test_journal_read_reports_an_empty_array_and_sorts_refusals() -> None:
    def journals(request: httpx.Request) -> httpx.Response:
        assert dict(request.url.params) == {"codeDossier": "D1", "take": "1", "skip": "0"}
        return httpx.Response(200, json=[])

    assert _mock(journals).journals("D1") == []
    with pytest.raises(errors.AuthenticationFailed) as wrong:
        _mock(_answer(401, message="Access denied due to invalid subscription key.")).journals("D1")
    assert "wrong key or secret" in wrong.value.message
    with pytest.raises(errors.UnknownDossier) as unknown:
        _mock(_answer(400, message="Le dossier D1 n'existe pas sur le domaine")).journals("D1")
    assert "Le dossier D1 n'existe pas sur le domaine" in unknown.value.message
    with pytest.raises(errors.LoopUnavailable):
        _mock(_answer(500)).journals("D1")  # a read changes nothing: retried
    with pytest.raises(errors.MalformedResponse):
        _mock(lambda request: httpx.Response(200, content=b"<html>")).journals("D1")


def test_secret_and_subscription_key_never_show_in_reprs() -> None:
    creds = _creds(secret="TOPSECRET")
    client = LoopClient(httpx.Client(), creds)
    for shown in (repr(creds), repr(client), repr(client.auth), str(creds)):
        assert "TOPSECRET" not in shown and "sub-k3y" not in shown


# -- the schedule --------------------------------------------------------------------------------


@pytest.fixture
def auckland() -> Iterator[None]:
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "Pacific/Auckland"
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()


def test_next_export_is_at_20_utc_even_when_the_machine_runs_in_auckland(auckland: None) -> None:
    assert time.localtime(0).tm_hour != time.gmtime(0).tm_hour  # the zone really changed
    morning = datetime(2026, 11, 19, 9, 12, tzinfo=UTC)
    assert next_export_at(morning) == datetime(2026, 11, 19, 20, 0, tzinfo=UTC)
    evening = datetime(2026, 11, 19, 20, 0, tzinfo=UTC)
    assert next_export_at(evening) == datetime(2026, 11, 20, 20, 0, tzinfo=UTC)
    now_run = next_export_at()
    assert (now_run.tzinfo, now_run.hour, now_run.minute) == (UTC, 20, 0)
    assert 0 < (now_run - datetime.now(UTC)).total_seconds() <= 24 * 3600
    with pytest.raises(ValueError):
        next_export_at(datetime(2026, 11, 19, 9, 12))


def test_beat_runs_the_export_daily_at_20_00_utc() -> None:
    # A private copy of the settings module: importing `celeryconfig` (or `tasks`) here would pin the broker
    # URL of this test process before the integration fixtures set theirs.
    spec = importlib.util.spec_from_file_location("celeryconfig_copy", ROOT / "celeryconfig.py")
    assert spec is not None and spec.loader is not None
    config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(config)
    entry = config.beat_schedule["cegid-loop-daily-export"]
    assert entry["task"] == "hubsync.cegid_loop.export"
    assert entry["schedule"].hour == {20} and entry["schedule"].minute == {0}
    assert config.timezone == "UTC" and config.enable_utc is True


# -- the sandbox over loopback -------------------------------------------------------------------


@pytest.fixture(scope="module")
def loop() -> Iterator[tuple[SandboxServer, CegidLoopSandbox]]:
    sandbox = CegidLoopSandbox()
    server = SandboxServer(host="127.0.0.1", port=0)
    server.mount("cegid", sandbox)
    server.start()
    yield server, sandbox
    server.stop()


def _client(server: SandboxServer, secret: str = DEMO_API_SECRET, sub: str = DEMO_SUBSCRIPTION_KEY) -> LoopClient:
    creds = LoopCredentials(
        url=server.app_url("cegid"), subscription_key=Secret(sub), api_key=DEMO_API_KEY, api_secret=Secret(secret)
    )
    return LoopClient(httpx.Client(timeout=30), creds)


def test_sandbox_journal_tells_a_real_dossier_from_an_unknown_code_and_a_dossier_the_key_does_not_reach(
    loop: tuple[SandboxServer, CegidLoopSandbox],
) -> None:
    server, _sandbox = loop
    (journal,) = _client(server).journals("DUPONT01", take=1)
    assert set(journal) == {"objectId", "revisionId", "code", "libelle", "type"}
    assert len(_client(server).journals("DUPONT01", take=100)) == 4
    assert _client(server).journals("NOPE") == []
    raw = httpx.get(
        f"{server.app_url('cegid')}/journal",
        params={"codeDossier": "DUPONT02"},
        headers={"Ocp-Apim-Subscription-Key": DEMO_SUBSCRIPTION_KEY, "x-apikey": f"{DEMO_API_KEY}:{DEMO_API_SECRET}"},
    )
    assert raw.status_code == 403 and set(raw.json()) == {"statusCode", "message"}
    headers = {"Ocp-Apim-Subscription-Key": DEMO_SUBSCRIPTION_KEY, "x-apikey": f"{DEMO_API_KEY}:{DEMO_API_SECRET}"}
    accounts = httpx.get(f"{server.app_url('cegid')}/compte", params={"codeDossier": "DUPONT01"}, headers=headers)
    assert accounts.status_code == 200 and "401000" in {a["numero"] for a in accounts.json()}
    assert httpx.get(f"{server.app_url('cegid')}/compte", params={"codeDossier": "NOPE"}, headers=headers).json() == []
    with pytest.raises(errors.AuthenticationFailed):
        _client(server, secret="wrong").journals("DUPONT01")
    with pytest.raises(errors.AuthenticationFailed) as no_sub:
        _client(server, sub="wrong").journals("DUPONT01")
    assert "subscription key" in no_sub.value.message


def test_sandbox_accepts_any_content_into_any_context_and_keeps_only_what_it_received(
    loop: tuple[SandboxServer, CegidLoopSandbox],
) -> None:
    # given an XML invoice and a text file named .pdf, deposited into a code Loop does not know
    server, sandbox = loop
    client = _client(server)
    xml = SHARED_DOCUMENTS / "facturx-minimum.xml"
    fake = SHARED_DOCUMENTS / "not-really-a.pdf"
    # when they are deposited
    first = client.store_document("UNKNOWN42", "facture.xml", xml, "application/xml")
    second = client.store_document("UNKNOWN42", "fake.pdf", fake, "application/pdf", transaction="SALE")
    # then Loop answers success with a document id, as the real one does, and swallows them
    assert first.status == second.status == 200 and first.document_id and second.document_id
    assert json.loads(first.answer)["status"] == "Received"
    received = sandbox.deposits("UNKNOWN42")
    assert [(d["filename"], d["known_context"], d["sniffed_type"]) for d in received] == [
        ("facture.xml", False, None),
        ("fake.pdf", False, None),
    ]
    assert received[1]["transaction"] == "SALE" and received[1]["size"] == fake.stat().st_size
    assert "bytes" not in json.dumps(received)  # what it received, never the file
    state = httpx.get(f"{server.url}/_sandbox/cegid/state").json()
    assert "UNKNOWN42" in state["unknown_contexts"] and len(state["deposits"]["UNKNOWN42"]) == 2


def test_sandbox_refuses_a_deposit_without_context_or_filename_with_400(
    loop: tuple[SandboxServer, CegidLoopSandbox], tmp_path: Path
) -> None:
    server, sandbox = loop
    client = _client(server)
    before = len(sandbox.deposits())
    for params in ({"filename": "x.pdf"}, {"context": "DUPONT01"}):
        response = client.http.post(
            f"{client.base}/storeDocument", params=params, content=tiny_pdf("x"), auth=client.auth
        )
        assert response.status_code == 400 and response.json()["statusCode"] == 400
    assert len(sandbox.deposits()) == before


def test_sandbox_refuses_over_50_000_000_bytes_with_413_and_keeps_nothing(
    loop: tuple[SandboxServer, CegidLoopSandbox], tmp_path: Path
) -> None:
    server, sandbox = loop
    big = tmp_path / "big.pdf"
    with big.open("wb") as fh:
        fh.write(b"%PDF-1.4\n")
        fh.truncate(DEPOSIT_MAX_BYTES + 1)
    with pytest.raises(errors.DocumentTooLarge):
        _client(server).store_document("DUPONT01", "big.pdf", big, "application/pdf")
    assert [d for d in sandbox.deposits() if d["filename"] == "big.pdf"] == []


def test_sandbox_plays_a_429_storm_and_commit_then_drop(
    loop: tuple[SandboxServer, CegidLoopSandbox], tmp_path: Path
) -> None:
    server, sandbox = loop
    client = _client(server)
    png = tmp_path / "a.png"
    png.write_bytes(tiny_png())
    response = httpx.post(
        f"{server.url}/_sandbox/cegid/faults",
        json=[{"mode": "rate_limit", "retry_after": 3, "count": 2, "route": "storeDocument"}],
    )
    assert response.status_code == 200
    try:
        for _ in range(2):
            with pytest.raises(errors.RateLimited) as limited:
                client.store_document("DUPONT01", "storm.png", png, "image/png")
            assert limited.value.retry_after == 3.0
        assert client.store_document("DUPONT01", "storm.png", png, "image/png").status == 200
        sandbox.set_fault(Fault(mode="drop_after_commit", route="storeDocument", count=1))
        with pytest.raises(errors.DepositOutcomeUnknown):
            client.store_document("DUPONT01", "dropped.png", png, "image/png")
    finally:
        httpx.delete(f"{server.url}/_sandbox/cegid/faults")
    # the storm stored nothing; the dropped one was stored before the connection was cut
    assert [d["filename"] for d in sandbox.deposits("DUPONT01") if d["filename"] in ("storm.png", "dropped.png")] == [
        "storm.png",
        "dropped.png",
    ]
    assert sandbox.faults() == []
