"""Cegid Loop without a broker: mapping, the error table (httpx.MockTransport), the client's wire shapes, the
schedule, and the sandbox over loopback."""

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

from pipeline.cegid import errors
from pipeline.cegid.client import LoopClient, LoopCredentials
from pipeline.cegid.export import next_export_at
from pipeline.cegid.mapping import metadonnees
from pipeline.cegid.sandbox import (
    DEMO_API_KEY,
    DEMO_API_SECRET,
    DEMO_DOMAIN,
    DEMO_SUBSCRIPTION_KEY,
    CegidLoopSandbox,
)
from pipeline.samples import sample_entry, tiny_pdf, tiny_png
from pipeline.sandbox import Fault, SandboxServer
from pipeline.secrets import Secret
from schemas.event import load_event
from tests.conftest import ROOT, SHARED_DOCUMENTS

BASE = "https://loop.test/loop-api-publiques"


def _creds(url: str = BASE, secret: str = "s3cr3t-value", key: str = "key-1") -> LoopCredentials:
    return LoopCredentials(
        url=url, subscription_key=Secret("sub-k3y"), api_key=key, api_secret=Secret(secret), domain="cabinet-x"
    )


def _mock(handler: Any) -> LoopClient:
    return LoopClient(httpx.Client(transport=httpx.MockTransport(handler)), _creds())


def _event(kind: str, n: int, doc_kind: str, paid: bool | None = None) -> Any:
    doc: dict[str, Any] = {"id": "doc_1", "url": "https://docs.example/doc_1", "filename": "f.pdf", "kind": doc_kind}
    if paid is not None:
        doc["paid"] = paid
    return load_event(
        {
            "event_id": "evt_1",
            "event_type": "entry.validated",
            "occurred_at": "2026-11-19T09:12:44Z",
            "client_file_id": "cf_x",
            "entry": sample_entry(kind, n),
            "documents": [doc],
        }
    )


# -- mapping -------------------------------------------------------------------------------------


def test_unpaid_supplier_invoice_maps_to_facture_fournisseur_non_paye_with_total_tiers_and_reference() -> None:
    event = _event("purchase", 1, "supplier_invoice", paid=False)
    meta = metadonnees(event.entry, event.documents[0])
    entry = event.entry
    assert meta == {
        "typeDocument": "facture_fournisseur",
        "statutPaiement": "non_paye",
        "date": entry.date.isoformat(),
        "montantTTC": f"{sum(line.credit for line in entry.lines):.2f}",
        "devise": "EUR",
        "tiers": entry.lines[2].counterparty.name,
        "reference": entry.invoice_number,
    }
    assert isinstance(meta["montantTTC"], str) and meta["montantTTC"].count(".") == 1


def test_paid_customer_invoice_is_facture_client_paye() -> None:
    event = _event("sale", 2, "customer_invoice", paid=True)
    meta = metadonnees(event.entry, event.documents[0])
    assert (meta["typeDocument"], meta["statutPaiement"]) == ("facture_client", "paye")
    assert meta["tiers"] == event.entry.lines[0].counterparty.name


def test_receipt_is_recu_paye_without_tiers_or_reference_when_the_entry_has_none() -> None:
    event = _event("expense_report", 3, "receipt")
    meta = metadonnees(event.entry, event.documents[0])
    assert (meta["typeDocument"], meta["statutPaiement"]) == ("recu", "paye")
    assert "tiers" not in meta and "reference" not in meta


def test_invoice_with_paid_unknown_is_non_paye() -> None:
    event = _event("purchase", 4, "supplier_invoice")
    assert metadonnees(event.entry, event.documents[0])["statutPaiement"] == "non_paye"


# -- the error table -----------------------------------------------------------------------------


def _answer(status: int, headers: dict[str, str] | None = None, message: str = "nope") -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"statusCode": status, "message": message}, headers=headers)

    return handler


@pytest.mark.parametrize(
    ("status", "cls", "kind"),
    [
        (401, errors.AuthenticationFailed, "customer"),
        (403, errors.DossierAccessDenied, "customer"),
        (404, errors.DossierNotFound, "customer"),
        (413, errors.DocumentTooLarge, "permanent"),
        (415, errors.UnsupportedFileType, "permanent"),
        (503, errors.LoopUnavailable, "transient"),
        (500, errors.LoopUnavailable, "transient"),
        (400, errors.UnexpectedAnswer, "permanent"),
    ],
)
def test_error_table_sorts_each_read_status(status: int, cls: type[Exception], kind: str) -> None:
    client = _mock(_answer(status))
    with pytest.raises(cls) as caught:
        client.dossier("D1")
    assert str(caught.value.kind) == kind  # type: ignore[attr-defined]


def test_401_says_wrong_key_or_secret() -> None:
    with pytest.raises(errors.AuthenticationFailed) as caught:
        _mock(_answer(401)).dossier("D1")
    assert "wrong key or secret" in caught.value.message


def test_403_names_the_loop_hub_fields_to_fill() -> None:
    with pytest.raises(errors.DossierAccessDenied) as caught:
        _mock(_answer(403, message="Le collaborateur n'a pas accès au dossier")).dossier("D1")
    text = caught.value.message + caught.value.hint
    for name in ("Type: Partenaire", "Application: Qonto", "API Key", "Email prestataire", "Loop Hub"):
        assert name in text


def test_429_honours_retry_after() -> None:
    with pytest.raises(errors.RateLimited) as caught:
        _mock(_answer(429, {"Retry-After": "7"})).dossier("D1")
    assert caught.value.retry_after == 7.0 and caught.value.kind == "transient"


def test_409_on_deposit_means_already_there_and_on_folder_creation_means_folder_exists(tmp_path: Path) -> None:
    path = tmp_path / "x.pdf"
    path.write_bytes(tiny_pdf("x"))
    with pytest.raises(errors.DocumentExists):
        _mock(_answer(409)).deposit("D1", {}, "x.pdf", path, "application/pdf")
    with pytest.raises(errors.FolderExists):
        _mock(_answer(409)).create_partner_folder("D1")


def test_415_on_deposit_is_unsupported_type_and_413_is_too_large(tmp_path: Path) -> None:
    path = tmp_path / "x.pdf"
    path.write_bytes(b"hello")
    with pytest.raises(errors.UnsupportedFileType):
        _mock(_answer(415)).deposit("D1", {}, "x.pdf", path, "application/pdf")
    with pytest.raises(errors.DocumentTooLarge):
        _mock(_answer(413)).deposit("D1", {}, "x.pdf", path, "application/pdf")


def test_deposit_without_an_answer_or_with_a_500_is_outcome_unknown_but_503_is_not(tmp_path: Path) -> None:
    path = tmp_path / "x.pdf"
    path.write_bytes(tiny_pdf("x"))

    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(errors.DepositOutcomeUnknown):
        _mock(timeout).deposit("D1", {}, "x.pdf", path, "application/pdf")
    with pytest.raises(errors.DepositOutcomeUnknown):
        _mock(_answer(500)).deposit("D1", {}, "x.pdf", path, "application/pdf")
    with pytest.raises(errors.LoopUnavailable):
        _mock(_answer(503)).deposit("D1", {}, "x.pdf", path, "application/pdf")
    with pytest.raises(errors.LoopTimeout):
        _mock(timeout).dossier("D1")


def test_refused_connection_is_unavailable_even_for_a_deposit(tmp_path: Path) -> None:
    path = tmp_path / "x.pdf"
    path.write_bytes(tiny_pdf("x"))

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(errors.LoopUnavailable):
        _mock(refused).deposit("D1", {}, "x.pdf", path, "application/pdf")


# -- the client's wire shapes --------------------------------------------------------------------


def test_every_request_carries_subscription_key_apikey_and_domain_and_deposit_is_multipart(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"id": "d-1", "nom": "x.pdf", "statut": "depose"})

    path = tmp_path / "x.pdf"
    path.write_bytes(tiny_pdf("hello"))
    meta = {"dossierPartenaireId": "f-1", "typeDocument": "recu"}
    assert _mock(handler).deposit("D 1", meta, "x.pdf", path, "application/pdf")["id"] == "d-1"
    (request,) = seen
    assert request.url.raw_path == b"/loop-api-publiques/pia/dossiers/D%201/documents"
    assert request.headers["Ocp-Apim-Subscription-Key"] == "sub-k3y"
    assert request.headers["x-apikey"] == "key-1:s3cr3t-value"
    assert request.headers["x-loop-domain"] == "cabinet-x"
    body = request.read()
    assert b'name="file"; filename="x.pdf"' in body and b'name="metadonnees"' in body
    assert json.dumps(meta).encode() in body


def test_find_documents_pages_with_take_at_most_100() -> None:
    names = [f"n{i}" if i % 3 else "wanted" for i in range(250)]
    takes: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        skip, take = int(request.url.params["skip"]), int(request.url.params["take"])
        takes.append(take)
        data = [{"id": str(i), "nom": names[i]} for i in range(skip, min(skip + take, len(names)))]
        return httpx.Response(200, json={"data": data, "total": len(names)})

    found = _mock(handler).find_documents("D1", "f-1", "wanted")
    assert len(found) == len([n for n in names if n == "wanted"])
    assert takes == [100, 100, 100]


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


def _client(server: SandboxServer, secret: str = DEMO_API_SECRET) -> LoopClient:
    creds = LoopCredentials(
        url=server.app_url("cegid"),
        subscription_key=Secret(DEMO_SUBSCRIPTION_KEY),
        api_key=DEMO_API_KEY,
        api_secret=Secret(secret),
        domain=DEMO_DOMAIN,
    )
    return LoopClient(httpx.Client(timeout=10), creds)


def _meta(folder: str) -> dict[str, Any]:
    return {
        "dossierPartenaireId": folder,
        "typeDocument": "recu",
        "statutPaiement": "paye",
        "date": "2026-11-19",
        "montantTTC": "12.40",
        "devise": "EUR",
    }


def test_sandbox_checks_auth_and_dossier_access(loop: tuple[SandboxServer, CegidLoopSandbox]) -> None:
    server, _sandbox = loop
    assert _client(server).dossier("DUPONT01")["nom"] == "Boulangerie Dupont"
    with pytest.raises(errors.AuthenticationFailed):
        _client(server, secret="wrong").dossier("DUPONT01")
    with pytest.raises(errors.DossierAccessDenied):
        _client(server).dossier("DUPONT02")
    with pytest.raises(errors.DossierNotFound):
        _client(server).dossier("NOPE")


def test_sandbox_deposit_judges_the_bytes_refuses_duplicates_and_lists_by_page(
    loop: tuple[SandboxServer, CegidLoopSandbox], tmp_path: Path
) -> None:
    server, sandbox = loop
    client = _client(server)
    sandbox.add_dossier("PAGING", "Paging", api_keys=[DEMO_API_KEY])
    folder = client.create_partner_folder("PAGING")["id"]
    with pytest.raises(errors.FolderExists):
        client.create_partner_folder("PAGING")
    fake = SHARED_DOCUMENTS / "not-really-a.pdf"
    with pytest.raises(errors.UnsupportedFileType):
        client.deposit("PAGING", _meta(folder), "fake.pdf", fake, "application/pdf")
    png = tmp_path / "a.png"
    png.write_bytes(tiny_png())
    for n in range(105):
        client.deposit("PAGING", _meta(folder), f"doc-{n:03}.png", png, "image/png")
    with pytest.raises(errors.DocumentExists):
        client.deposit("PAGING", _meta(folder), "doc-000.png", png, "image/png")
    page, total = client.list_documents("PAGING", folder, skip=100)
    assert total == 105 and [d["nom"] for d in page] == [f"doc-{n:03}.png" for n in range(100, 105)]
    assert len(client.find_documents("PAGING", folder, "doc-104.png")) == 1
    response = client.http.get(f"{client.base}/pia/dossiers/PAGING/documents", params={"take": 101}, auth=client.auth)
    assert response.status_code == 400
    assert len(sandbox.documents("PAGING")) == 105


def test_sandbox_refuses_over_20_mib_with_413(loop: tuple[SandboxServer, CegidLoopSandbox], tmp_path: Path) -> None:
    server, sandbox = loop
    client = _client(server)
    sandbox.add_dossier("BIG", "Big", api_keys=[DEMO_API_KEY])
    folder = client.create_partner_folder("BIG")["id"]
    big = tmp_path / "big.pdf"
    with big.open("wb") as fh:
        fh.write(b"%PDF-1.4\n")
        fh.truncate(20 * 1024 * 1024 + 1)
    with pytest.raises(errors.DocumentTooLarge):
        client.deposit("BIG", _meta(folder), "big.pdf", big, "application/pdf")
    assert sandbox.documents("BIG") == []


def test_sandbox_plays_429_with_retry_after_and_503(loop: tuple[SandboxServer, CegidLoopSandbox]) -> None:
    server, sandbox = loop
    client = _client(server)
    sandbox.set_fault(Fault(mode="rate_limit", retry_after=3, count=1))
    sandbox.set_fault(Fault(mode="status", status=503, count=1))
    try:
        with pytest.raises(errors.RateLimited) as limited:
            client.dossier("DUPONT01")
        assert limited.value.retry_after == 3.0
        with pytest.raises(errors.LoopUnavailable):
            client.dossier("DUPONT01")
        assert client.dossier("DUPONT01")["codeDossier"] == "DUPONT01"
    finally:
        sandbox.clear_faults()


def test_sandbox_unknown_partner_folder_is_404_and_remove_folder_drops_it(
    loop: tuple[SandboxServer, CegidLoopSandbox], tmp_path: Path
) -> None:
    server, sandbox = loop
    client = _client(server)
    sandbox.add_dossier("GONE", "Gone", api_keys=[DEMO_API_KEY])
    folder = client.create_partner_folder("GONE")["id"]
    assert sandbox.remove_folder("GONE") == 1
    assert client.partner_folders("GONE") == []
    pdf = tmp_path / "a.pdf"
    pdf.write_bytes(tiny_pdf("a"))
    with pytest.raises(errors.DossierNotFound):
        client.deposit("GONE", _meta(folder), "a.pdf", pdf, "application/pdf")
