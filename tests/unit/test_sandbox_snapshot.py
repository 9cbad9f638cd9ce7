"""The sandboxes' state goes through a JSON file and comes back whole: a test can stand up again the ACD
servers, document store and Cegid Loop another run left behind, and go on from there."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator

import httpx
import pytest

from hubsync_sandbox import SandboxServer
from hubsync_sandbox.acd import AcdSandbox, demo_acd_firms
from hubsync_sandbox.cegid import DEMO_API_KEY, DEMO_API_SECRET, DEMO_SUBSCRIPTION_KEY, CegidLoopSandbox
from hubsync_sandbox.docstore import DocStore
from hubsync_sandbox.samples import tiny_pdf

# Building an SSL context costs ~50 ms per client; these clients only speak plain HTTP on loopback.
TLS = httpx.create_ssl_context()
LOOP_HEADERS = {"Ocp-Apim-Subscription-Key": DEMO_SUBSCRIPTION_KEY, "x-apikey": f"{DEMO_API_KEY}:{DEMO_API_SECRET}"}


def _server() -> SandboxServer:
    server = SandboxServer(acd=AcdSandbox(demo_acd_firms(), index_lag_seconds=0.0), docs=DocStore())
    server.mount("cegid", CegidLoopSandbox())
    server.start()
    return server


@pytest.fixture
def servers() -> Iterator[tuple[SandboxServer, SandboxServer]]:
    first, second = _server(), _server()
    yield first, second
    first.stop()
    second.stop()


@contextlib.contextmanager
def _acd(server: SandboxServer) -> Iterator[httpx.Client]:
    """A client of the dupont firm, logged in, its session open on DUPONT01."""
    with httpx.Client(base_url=f"{server.acd_api_url('dupont')}/v1", timeout=10.0, verify=TLS) as client:
        body = {"Identifiant": "QONTO", "MotDePasse": "dupont-secret", "CNX": "CNX"}
        client.headers["UUID"] = client.post("/authentification", json=body).json()["UUID"]
        assert client.post("/sessions/dossier/DUPONT01").status_code == 200
        yield client


def _post(client: httpx.Client, label: str, amount: str) -> None:
    lines = [
        {"Jour": 19, "Compte": "613200", "Libelle": label, "Debit": float(amount), "Credit": 0},
        {"Jour": 19, "Compte": "FNEWCO", "Libelle": label, "Debit": 0, "Credit": float(amount)},
    ]
    answer = client.post("/compta/ecriture", json={"Journal": "AC", "Mois": 11, "Annee": 2026, "LignesEcriture": lines})
    assert answer.json()["codeRetour"] == 1, answer.text


def test_a_restored_sandbox_serves_what_the_saved_one_held_and_numbers_on_from_there(servers) -> None:
    old, new = servers
    pdf = tiny_pdf("kept across the snapshot")
    # given an ACD dossier with a created account, an entry split by its automatic key and a GED document, a
    # document store with stored and generated documents, and a Loop deposit
    with _acd(old) as acd:
        assert acd.post("/compta/comptes/fournisseur", json={"Code": "FNEWCO", "Lib": "New Co"}).status_code == 200
        _post(acd, "Loyer novembre (#K7QZ#)", "1234.56")
        upload = acd.post("/ged/documents", data={"idArboGed": 11}, files={"file": ("a.pdf", pdf, "application/pdf")})
        assert upload.status_code in (200, 201)
        fec_before = acd.post("/compta/fec", json={"Annee": 2026}).text
    old.docs.put("doc_kept", pdf, filename="kept.pdf")
    old.docs.put_generated("doc_big", 200_000)
    deposit = httpx.post(
        f"{old.app_url('cegid')}/storeDocument",
        params={"context": "DUPONT01", "filename": "kept.pdf", "transaction": "PURCHASE"},
        content=pdf,
        headers={**LOOP_HEADERS, "Content-Type": "application/pdf"},
    )
    assert deposit.status_code == 200

    # when its state goes through a JSON file into another sandbox
    new.restore(json.loads(json.dumps(old.snapshot())))

    # then the other serves the same entries (same FEC), documents, accounts and deposits
    assert new.acd.entries("dupont", "DUPONT01") == old.acd.entries("dupont", "DUPONT01")
    assert new.acd.documents("dupont", "DUPONT01") == old.acd.documents("dupont", "DUPONT01")
    assert "FNEWCO" in {a["Code"] for a in new.acd.accounts("dupont", "DUPONT01", "fournisseurs")}
    with _acd(new) as acd:
        assert acd.post("/compta/fec", json={"Annee": 2026}).text == fec_before
        # and it goes on numbering where the saved one stopped
        _post(acd, "Loyer décembre (#P2RT#)", "99.10")
        upload = acd.post("/ged/documents", data={"idArboGed": 11}, files={"file": ("b.pdf", pdf, "application/pdf")})
    assert [e["EcritureNum"] for e in new.acd.entries("dupont", "DUPONT01")] == [1, 2]
    first_ged = old.acd.documents("dupont", "DUPONT01")[0]["Id"]
    assert [d["Id"] for d in new.acd.documents("dupont", "DUPONT01")] == [first_ged, first_ged + 1]
    for doc_id in ("doc_kept", "doc_big"):
        body = httpx.get(new.docs.url(doc_id)).content
        assert hashlib.sha256(body).hexdigest() == old.docs.info(doc_id)["sha256"]
    assert new.app("cegid").deposits() == old.app("cegid").deposits()  # type: ignore[attr-defined]


def test_a_restored_acd_sandbox_has_no_live_token(servers) -> None:
    old, new = servers
    with _acd(old) as acd:
        token = acd.headers["UUID"]
    new.restore(old.snapshot())
    answer = httpx.post(f"{new.acd_api_url('dupont')}/v1/compta/fec", json={"Annee": 2026}, headers={"UUID": token})
    assert answer.status_code == 401


def test_restoring_an_app_that_is_not_mounted_fails(servers) -> None:
    old, _new = servers
    bare = SandboxServer(acd=AcdSandbox(demo_acd_firms()), docs=DocStore())
    with pytest.raises(KeyError, match="/cegid"):
        bare.restore(old.snapshot())
