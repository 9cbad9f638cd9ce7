"""The ACD i-Suite sandbox serves the contract, faults included: a real server on loopback, spoken to with httpx."""

from __future__ import annotations

import json
import socket
import threading
import time
from decimal import Decimal

import httpx
import pytest

from pipeline.acd.sandbox import AcdDossier, AcdFirm, AcdSandbox, demo_acd_firms
from pipeline.sandbox import Fault, SandboxServer
from pipeline.sandbox.docstore import DocStore

PASSWORDS = {"dupont": "dupont-secret", "martin": "martin-secret", "leroy": "leroy-secret"}
CNX = {"dupont": "CNX", "martin": "CNX123", "leroy": "CNX7"}
ACK = "(#K7QZ#)"
# Building an SSL context costs ~50 ms per client; these clients only speak plain HTTP on loopback.
TLS = httpx.create_ssl_context()


class FakeClock:
    """A clock the tests move by hand."""

    def __init__(self, now: float = 1_795_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def server():
    srv = SandboxServer(acd=AcdSandbox(demo_acd_firms()), docs=DocStore(), host="127.0.0.1", port=0)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def acd(server):
    """The shared sandbox, back to its seed state, indexing at once and on the real clock."""
    server.acd.reset()
    server.acd.index_lag_seconds = 0.0
    server.acd.clock = time.time
    yield server.acd
    server.acd.reset()
    server.acd.clock = time.time


def client_for(server, firm: str = "dupont", cnx: str | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=f"{server.acd_url(firm)}/api/v1", headers={"CNX": cnx or CNX[firm]}, timeout=10.0, verify=TLS
    )


def login(client: httpx.Client, firm: str = "dupont", password: str | None = None) -> httpx.Response:
    return client.post(
        "/authentification",
        json={"Identifiant": "QONTO", "MotDePasse": password or PASSWORDS[firm], "CNX": CNX[firm]},
    )


@pytest.fixture
def api(server, acd):
    """A logged-in client of the dupont firm."""
    with client_for(server) as client:
        response = login(client)
        assert response.status_code == 200
        client.headers["UUID"] = response.json()["UUID"]
        yield client


def line(compte: str, debit: float = 0, credit: float = 0, libelle: str = f"Orange novembre {ACK}", **extra):
    return {
        "Jour": 19,
        "NumeroPiece": "F-2026-1142",
        "NumeroFacture": "F-2026-1142",
        "Compte": compte,
        "Libelle": libelle,
        "Debit": debit,
        "Credit": credit,
        **extra,
    }


def entry(**overrides) -> dict:
    body = {
        "CodeDossier": "DUPONT01",
        "Journal": "AC",
        "Mois": 11,
        "Annee": 2026,
        "LignesEcriture": [line("606400", debit=100.0), line("FORANGE", credit=100.0)],
    }
    body.update(overrides)
    return body


def error_code(response: httpx.Response) -> str:
    return response.json()["listeErreurs"][0]["erreur"]


def is_isuite_envelope(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "codeRetour" in body


# -- authentication ------------------------------------------------------------------------------


def test_login_with_right_credentials_returns_a_30_alphanumeric_token(server, acd):
    with client_for(server) as client:
        response = login(client)

    assert response.status_code == 200
    token = response.json()["UUID"]
    assert len(token) == 30 and token.isalnum() and token.isascii()
    assert acd.state("dupont")["logins"] == 1


def test_login_with_wrong_password_is_401_authentification_invalide(server, acd):
    with client_for(server) as client:
        response = login(client, password="wrong")

    assert response.status_code == 401
    assert response.json() == {
        "codeRetour": 0,
        "description": "KO",
        "listeErreurs": [
            {"erreur": "authentificationInvalide", "description": response.json()["listeErreurs"][0]["description"]}
        ],
    }


def test_sixth_login_after_five_failures_is_locked_even_with_right_password(server, acd):
    acd.clock = clock = FakeClock()
    with client_for(server) as client:
        failures = [login(client, password="wrong").status_code for _ in range(5)]

        locked = login(client)
        clock.advance(9 * 60)
        still_locked = login(client)
        clock.advance(61)
        after_ten_minutes = login(client)

    assert failures == [401] * 5
    assert locked.status_code == 423 and error_code(locked) == "compteVerrouille"
    assert still_locked.status_code == 423
    assert after_ten_minutes.status_code == 200


def test_a_successful_login_resets_the_failure_count(server, acd):
    with client_for(server) as client:
        for _ in range(4):
            login(client, password="wrong")
        assert login(client).status_code == 200
        for _ in range(4):
            login(client, password="wrong")

        response = login(client)

    assert response.status_code == 200


def test_lockout_is_per_api_code_and_per_firm(server, acd):
    with client_for(server) as dupont, client_for(server, "martin") as martin:
        for _ in range(5):
            login(dupont, password="wrong")

        assert login(dupont).status_code == 423
        assert login(martin, "martin").status_code == 200


def test_call_without_token_is_401_jeton_non_recu(server, acd):
    with client_for(server) as client:
        response = client.get("/dossiers")

    assert response.status_code == 401 and error_code(response) == "jetonNonRecu"


def test_token_expires_after_15_minutes_without_a_call(server, acd, api):
    acd.clock = clock = FakeClock()
    acd.expire_tokens("dupont")
    api.headers["UUID"] = login(api).json()["UUID"]

    clock.advance(14 * 60)
    assert api.get("/dossiers").status_code == 200
    clock.advance(15 * 60)
    response = api.get("/dossiers")

    assert response.status_code == 401 and error_code(response) == "jetonExpire"


def test_token_expires_60_minutes_after_issue_even_when_used(server, acd, api):
    acd.clock = clock = FakeClock()
    api.headers["UUID"] = login(api).json()["UUID"]
    statuses = []
    for _ in range(5):
        clock.advance(12 * 60)
        statuses.append(api.get("/dossiers").status_code)

    assert statuses == [200, 200, 200, 200, 401]
    assert error_code(api.get("/dossiers")) == "jetonExpire"


def test_expire_tokens_makes_the_next_call_answer_jeton_expire_and_a_new_login_works(server, acd, api):
    acd.expire_tokens("dupont")

    expired = api.get("/dossiers")
    api.headers["UUID"] = login(api).json()["UUID"]
    again = api.get("/dossiers")

    assert expired.status_code == 401 and error_code(expired) == "jetonExpire"
    assert again.status_code == 200


def test_a_token_of_one_firm_is_not_accepted_by_another(server, acd, api):
    with client_for(server, "martin") as martin:
        martin.headers["UUID"] = api.headers["UUID"]
        response = martin.get("/dossiers")

    assert response.status_code == 401


def test_wrong_cnx_header_is_404_without_an_isuite_envelope(server, acd, api):
    response = api.get("/dossiers", headers={"CNX": "CNX999"})

    assert response.status_code == 404
    assert not is_isuite_envelope(response)


def test_wrong_cnx_in_the_login_body_is_404_without_an_isuite_envelope(server, acd):
    with client_for(server) as client:
        response = client.post(
            "/authentification", json={"Identifiant": "QONTO", "MotDePasse": "dupont-secret", "CNX": "CNX123"}
        )

    assert response.status_code == 404
    assert not is_isuite_envelope(response)


def test_unknown_firm_and_wrong_base_path_are_plain_404(server, acd):
    with httpx.Client(timeout=5, verify=TLS) as client:
        unknown_firm = client.get(f"{server.url}/acd/nobody/iSuiteExpert/api/v1/dossiers", headers={"CNX": "CNX"})
        wrong_base = client.get(f"{server.url}/acd/dupont/api/v1/dossiers", headers={"CNX": "CNX"})

    assert unknown_firm.status_code == 404 and not is_isuite_envelope(unknown_firm)
    assert wrong_base.status_code == 404 and not is_isuite_envelope(wrong_base)


# -- routes, dossiers and reference data ---------------------------------------------------------


def test_unknown_route_is_404_and_wrong_method_is_405(api):
    unknown = api.get("/compta/nothing", params={"CodeDossier": "DUPONT01"})
    wrong_method = api.get("/compta/ecriture")

    assert unknown.status_code == 404
    assert wrong_method.status_code == 405 and "POST" in wrong_method.headers["Allow"]


def test_dossiers_lists_every_dossier_of_the_firm_with_its_sharing_flag(api):
    response = api.get("/dossiers")

    assert response.status_code == 200
    dossiers = {d["Id"]: d for d in response.json()}
    assert set(dossiers) == {"DUPONT01", "DUPONT02", "DUPONT03"}
    assert dossiers["DUPONT01"]["PartageISuite"] is True
    assert dossiers["DUPONT02"]["PartageISuite"] is False
    assert set(dossiers["DUPONT01"]) == {"Id", "Titre", "Societe", "DateCreation", "DateModification", "PartageISuite"}


UNSHARED_CALLS = [
    ("GET", "/compta/journal", {"params": {"CodeDossier": "DUPONT02"}}),
    ("GET", "/compta/comptes/generaux", {"params": {"CodeDossier": "DUPONT02"}}),
    ("GET", "/compta/comptes/clients", {"params": {"CodeDossier": "DUPONT02"}}),
    ("GET", "/compta/comptes/fournisseurs", {"params": {"CodeDossier": "DUPONT02"}}),
    ("GET", "/ged/arborescence", {"params": {"CodeDossier": "DUPONT02"}}),
    ("POST", "/compta/comptes/client", {"json": {"CodeDossier": "DUPONT02", "Code": "CNEW", "Lib": "New"}}),
    ("POST", "/compta/comptes/fournisseur", {"json": {"CodeDossier": "DUPONT02", "Code": "FNEW", "Lib": "New"}}),
    ("POST", "/compta/ecriture", {"json": entry(CodeDossier="DUPONT02")}),
    ("POST", "/compta/ecritures/filtrer", {"json": {"CodeDossier": "DUPONT02"}}),
    ("POST", "/compta/fec", {"json": {"CodeDossier": "DUPONT02", "Annee": 2026}}),
    ("POST", "/ged/documents/filtrer", {"json": {"CodeDossier": "DUPONT02"}}),
    (
        "POST",
        "/ged/documents",
        {"params": {"CodeDossier": "DUPONT02"}, "data": {"idArboGed": "1"}, "files": {"file": ("a.pdf", b"%PDF")}},
    ),
]


@pytest.mark.parametrize(("method", "path", "kwargs"), UNSHARED_CALLS, ids=[c[1] for c in UNSHARED_CALLS])
def test_unshared_dossier_is_403_droits_insuffisants_on_every_route_naming_it(api, acd, method, path, kwargs):
    response = api.request(method, path, **kwargs)

    assert response.status_code == 403
    assert error_code(response) == "droitsInsuffisants"
    assert acd.entries("dupont", "DUPONT02") == [] and acd.documents("dupont", "DUPONT02") == []


def test_unknown_dossier_is_404_dossier_introuvable(api):
    read = api.get("/compta/journal", params={"CodeDossier": "NOPE"})
    write = api.post("/compta/ecriture", json=entry(CodeDossier="NOPE"))

    assert read.status_code == 404 and error_code(read) == "dossierIntrouvable"
    assert write.status_code == 404 and error_code(write) == "dossierIntrouvable"


def test_reference_routes_answer_whole_arrays(api):
    params = {"CodeDossier": "DUPONT01"}

    journals = api.get("/compta/journal", params=params).json()
    generaux = api.get("/compta/comptes/generaux", params=params).json()
    clients = api.get("/compta/comptes/clients", params=params).json()
    fournisseurs = api.get("/compta/comptes/fournisseurs", params=params).json()
    tree = api.get("/ged/arborescence", params=params).json()

    assert {j["Code"]: (j["Nature"], j["NumeroFacture"]) for j in journals} == {
        "AC": ("Achat", True),
        "VT": ("Vente", True),
        "BQ": ("Tresorerie", False),
        "OD": ("OperationDiverse", False),
        "NF": ("OperationDiverse", False),
    }
    assert len(generaux) == 18 and {"Code": "606400", "Lib": "Fournitures administratives"} in generaux
    assert clients == [{"Code": "CDURAND", "Lib": "Durand SARL"}]
    assert {f["Code"] for f in fournisseurs} == {"FORANGE", "FEDF"}
    assert {node["Id"] for node in tree} >= {1, 2, 3, 9}
    assert all("Arborescences" in node for node in tree)


def test_an_unfinished_chart_of_accounts_is_an_empty_array(api):
    response = api.get("/compta/comptes/generaux", params={"CodeDossier": "DUPONT03"})

    assert response.status_code == 200 and response.json() == []


def test_reads_without_code_dossier_are_refused(api):
    response = api.get("/compta/journal")

    assert response.status_code == 400 and error_code(response) == "donneesInvalides"


# -- subsidiary accounts -------------------------------------------------------------------------


def test_created_supplier_account_appears_in_the_supplier_list(api, acd):
    response = api.post(
        "/compta/comptes/fournisseur", json={"CodeDossier": "DUPONT01", "Code": "FBOULANGER", "Lib": "Boulanger"}
    )

    assert response.status_code == 200
    assert response.json() == {"codeRetour": 1, "description": "OK", "listeErreurs": []}
    listed = api.get("/compta/comptes/fournisseurs", params={"CodeDossier": "DUPONT01"}).json()
    assert {"Code": "FBOULANGER", "Lib": "Boulanger"} in listed


@pytest.mark.parametrize(
    ("route", "code", "expected"),
    [
        ("client", "DURAND2", "codeTiersInvalide"),
        ("fournisseur", "CORANGE", "codeTiersInvalide"),
        ("client", "C" + "X" * 13, "codeTiersTropLong"),
        ("fournisseur", "FORANGE", "compteExisteDeja"),
        ("client", "CDURAND", "compteExisteDeja"),
    ],
)
def test_subsidiary_creation_business_errors(api, acd, route, code, expected):
    before = acd.accounts("dupont", "DUPONT01", "clients" if route == "client" else "fournisseurs")

    response = api.post(f"/compta/comptes/{route}", json={"CodeDossier": "DUPONT01", "Code": code, "Lib": "X"})

    assert response.status_code == 200
    assert response.json()["codeRetour"] == 0 and error_code(response) == expected
    assert acd.accounts("dupont", "DUPONT01", "clients" if route == "client" else "fournisseurs") == before


def test_a_13_character_code_is_accepted(api):
    response = api.post("/compta/comptes/client", json={"CodeDossier": "DUPONT01", "Code": "C" + "X" * 12, "Lib": "X"})

    assert response.json()["codeRetour"] == 1


def test_accounts_cannot_be_updated_put_is_405(api):
    response = api.put("/compta/comptes/client", json={"CodeDossier": "DUPONT01", "Code": "CDURAND", "Lib": "X"})

    assert response.status_code == 405


def test_eight_concurrent_creations_of_one_code_create_it_once(server, acd, api):
    barrier = threading.Barrier(8)
    results: list[dict] = []
    lock = threading.Lock()

    def create() -> None:
        with client_for(server) as client:
            client.headers["UUID"] = api.headers["UUID"]
            barrier.wait()
            body = client.post(
                "/compta/comptes/fournisseur", json={"CodeDossier": "DUPONT01", "Code": "FSAMETIME", "Lib": "Same"}
            ).json()
        with lock:
            results.append(body)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert sum(r["codeRetour"] == 1 for r in results) == 1
    assert sorted(r["listeErreurs"][0]["erreur"] for r in results if r["codeRetour"] == 0) == ["compteExisteDeja"] * 7
    codes = [a["Code"] for a in acd.accounts("dupont", "DUPONT01", "fournisseurs")]
    assert codes.count("FSAMETIME") == 1


def test_an_account_added_in_acd_shows_on_the_next_read(api, acd):
    acd.add_account("dupont", "DUPONT01", "generaux", "628000", "Divers")

    generaux = api.get("/compta/comptes/generaux", params={"CodeDossier": "DUPONT01"}).json()

    assert {"Code": "628000", "Lib": "Divers"} in generaux


# -- posting entries -----------------------------------------------------------------------------


def test_posting_an_entry_stores_it_as_posted_with_an_id(api, acd):
    response = api.post("/compta/ecriture", json=entry())

    assert response.status_code == 200
    body = response.json()
    assert body["codeRetour"] == 1 and body["listeErreurs"] == [] and isinstance(body["IdEcriture"], int)
    [stored] = acd.entries("dupont", "DUPONT01")
    assert stored["IdEcriture"] == body["IdEcriture"]
    assert (stored["Journal"], stored["Mois"], stored["Annee"]) == ("AC", 11, 2026)
    assert stored["LignesEcriture"][0]["Libelle"] == f"Orange novembre {ACK}"
    assert stored["LignesEcriture"][1]["Credit"] == Decimal("100.0")
    assert isinstance(stored["committed_at"], float)


def test_amounts_keep_their_exact_digits_from_request_to_lookup(api, acd):
    raw = (
        json.dumps(entry()).replace('"Debit": 100.0', '"Debit": 100.10').replace('"Credit": 100.0', '"Credit": 100.10')
    )

    api.post("/compta/ecriture", content=raw, headers={"Content-Type": "application/json"})
    found = api.post("/compta/ecritures/filtrer", json={"CodeDossier": "DUPONT01", "Libelle": ACK})

    assert acd.entries("dupont", "DUPONT01")[0]["LignesEcriture"][0]["Debit"] == Decimal("100.10")
    assert '"Debit": 100.10' in found.text


def test_posting_the_same_body_twice_creates_two_entries(api, acd):
    first = api.post("/compta/ecriture", json=entry()).json()["IdEcriture"]
    second = api.post("/compta/ecriture", json=entry()).json()["IdEcriture"]

    assert second == first + 1
    assert len(acd.entries("dupont", "DUPONT01")) == 2


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (entry(Journal="ZZ"), "journalInexistant"),
        (entry(LignesEcriture=[line("606400", debit=100.0), line("FORANGE", credit=90.0)]), "ecritureDesequilibree"),
        (entry(LignesEcriture=[line("999999", debit=100.0), line("FORANGE", credit=100.0)]), "compteInexistant"),
        (entry(LignesEcriture=[line("606400", debit=100.0), line("FNOBODY", credit=100.0)]), "compteInexistant"),
        (
            entry(LignesEcriture=[line("606400", debit=100.0, libelle="x" * 43 + ACK), line("FORANGE", credit=100.0)]),
            "libelleTropLong",
        ),
        (entry(Journal="BQ"), "numeroFactureNonActive"),
        (entry(Annee=2023), "exerciceCloture"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_each_business_error_answers_200_ko_and_stores_nothing(api, acd, body, expected):
    response = api.post("/compta/ecriture", json=body)

    assert response.status_code == 200
    assert response.json()["codeRetour"] == 0 and response.json()["description"] == "KO"
    assert error_code(response) == expected
    assert acd.entries("dupont", "DUPONT01") == []


def test_a_libelle_of_exactly_50_characters_is_accepted(api):
    body = entry(LignesEcriture=[line("606400", debit=1, libelle="x" * 42 + ACK), line("FORANGE", credit=1)])

    assert api.post("/compta/ecriture", json=body).json()["codeRetour"] == 1


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            entry(Journal="ZZ", Annee=2023, LignesEcriture=[line("999999", debit=1), line("FORANGE", credit=2)]),
            "journalInexistant",
        ),
        (
            entry(Annee=2023, LignesEcriture=[line("999999", debit=1), line("FORANGE", credit=2)]),
            "ecritureDesequilibree",
        ),
        (
            entry(Annee=2023, LignesEcriture=[line("999999", debit=1, libelle="y" * 60), line("FORANGE", credit=1)]),
            "compteInexistant",
        ),
        (
            entry(
                Journal="BQ",
                Annee=2023,
                LignesEcriture=[line("606400", debit=1, libelle="y" * 60), line("FORANGE", credit=1)],
            ),
            "libelleTropLong",
        ),
        (entry(Journal="BQ", Annee=2023), "numeroFactureNonActive"),
    ],
)
def test_business_errors_are_checked_in_the_contract_order(api, body, expected):
    response = api.post("/compta/ecriture", json=body)

    assert error_code(response) == expected


def test_a_bank_journal_line_without_invoice_number_is_accepted(api):
    lines = [line("512000", credit=50, NumeroFacture=""), line("FORANGE", debit=50, NumeroFacture="")]

    response = api.post("/compta/ecriture", json=entry(Journal="BQ", LignesEcriture=lines))

    assert response.json()["codeRetour"] == 1


@pytest.mark.parametrize(
    "body",
    [
        {k: v for k, v in entry().items() if k != "Journal"},
        entry(LignesEcriture=[line("606400", debit="100.00"), line("FORANGE", credit="100.00")]),
        entry(LignesEcriture=[line("606400", debit=100.123), line("FORANGE", credit=100.123)]),
        entry(LignesEcriture=[line("606400", debit=100, credit=100), line("FORANGE", credit=0, debit=0)]),
        entry(LignesEcriture=[line("606400", debit=-100), line("FORANGE", credit=-100)]),
        entry(LignesEcriture=[line("606400", debit=100, Montant=1), line("FORANGE", credit=100)]),
        entry(LignesEcriture=[line("606400", debit=100, Jour=31), line("FORANGE", credit=100, Jour=31)]),
        entry(Mois=13),
        entry(LignesEcriture=[]),
        entry(ExternalId="abc"),
    ],
    ids=[
        "missing-journal",
        "string-amounts",
        "three-decimals",
        "both-sides",
        "negative",
        "unknown-line-field",
        "no-31-november",
        "month-13",
        "no-lines",
        "unknown-field",
    ],
)
def test_a_malformed_entry_is_a_donnees_invalides_business_error(api, acd, body):
    response = api.post("/compta/ecriture", json=body)

    assert response.status_code == 200
    assert response.json()["codeRetour"] == 0 and error_code(response) == "donneesInvalides"
    assert acd.entries("dupont", "DUPONT01") == []


def test_a_body_that_is_not_json_is_400(api):
    invalid = api.post("/compta/ecriture", content=b"{not json", headers={"Content-Type": "application/json"})
    no_type = api.post("/compta/ecriture", content=json.dumps(entry()).encode())

    assert invalid.status_code == 400 and error_code(invalid) == "donneesInvalides"
    assert no_type.status_code == 415


# -- finding entries again -----------------------------------------------------------------------


def test_a_fresh_entry_is_invisible_until_the_index_lag_has_passed(api, acd):
    acd.index_lag_seconds = 0.3
    api.post("/compta/ecriture", json=entry())

    at_once = api.post("/compta/ecritures/filtrer", json={"CodeDossier": "DUPONT01", "Libelle": ACK}).json()
    time.sleep(0.35)
    later = api.post("/compta/ecritures/filtrer", json={"CodeDossier": "DUPONT01", "Libelle": ACK}).json()

    assert at_once == []
    assert [e["IdEcriture"] for e in later] == [acd.entries("dupont", "DUPONT01")[0]["IdEcriture"]]
    assert set(later[0]) == {"IdEcriture", "Journal", "Mois", "Annee", "LignesEcriture"}


def test_the_default_index_lag_is_two_seconds():
    assert AcdSandbox(demo_acd_firms()).index_lag_seconds == 2.0


def test_filtrer_matches_a_libelle_substring_and_the_optional_journal_year_month(api):
    api.post("/compta/ecriture", json=entry())
    other = [line("606400", debit=5, libelle="EDF octobre (#AAAA#)"), line("FEDF", credit=5, libelle="EDF (#AAAA#)")]
    api.post("/compta/ecriture", json=entry(Mois=10, LignesEcriture=other))

    def ids(**query) -> list[int]:
        response = api.post("/compta/ecritures/filtrer", json={"CodeDossier": "DUPONT01", **query})
        return [e["IdEcriture"] for e in response.json()]

    assert ids(Libelle="K7QZ") == [1]
    assert ids(Libelle="#AAAA#") == [2]
    assert ids() == [1, 2]
    assert ids(Mois=10) == [2]
    assert ids(Journal="VT") == []
    assert ids(Annee=2025) == []
    assert ids(Libelle="k7qz") == []


def test_fec_lists_the_years_visible_entries_with_the_18_columns_and_comma_decimals(api, acd):
    acd.clock = clock = FakeClock()
    acd.index_lag_seconds = 2.0
    api.headers["UUID"] = login(api).json()["UUID"]
    api.post("/compta/ecriture", json=entry())
    clock.advance(5)
    api.post("/compta/ecriture", json=entry())

    response = api.post("/compta/fec", json={"CodeDossier": "DUPONT01", "Annee": 2026})

    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    rows = [row.split("\t") for row in response.text.splitlines()]
    header = "JournalCode JournalLib EcritureNum EcritureDate CompteNum CompteLib CompAuxNum CompAuxLib PieceRef "
    header += "PieceDate EcritureLib Debit Credit EcritureLet DateLet ValidDate Montantdevise Idevise"
    assert rows[0] == header.split(" ")
    assert len(rows) == 3 and all(len(row) == 18 for row in rows)
    assert rows[1][:5] == ["AC", "Achats", "1", "20261119", "606400"] and rows[1][11:13] == ["100,00", "0,00"]
    assert rows[2][4] == "401000" and rows[2][6:8] == ["FORANGE", "Orange SA"] and rows[2][12] == "100,00"


# -- GED -----------------------------------------------------------------------------------------


def upload(
    api, name: str = "facture-K7QZ.pdf", folder: str = "1", data: bytes = b"%PDF-1.4 facture", dossier="DUPONT01"
):
    return api.post(
        "/ged/documents",
        params={"CodeDossier": dossier},
        data={"idArboGed": folder},
        files={"file": (name, data, "application/pdf")},
    )


def test_an_uploaded_document_is_201_listed_and_only_its_size_and_sha256_are_kept(api, acd):
    data = b"%PDF-1.4\n" + bytes(range(256)) * 100

    response = upload(api, data=data)
    listed = api.post("/ged/documents/filtrer", json={"CodeDossier": "DUPONT01", "Nom": "facture-K7QZ.pdf"}).json()

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"Id", "Nom", "DateHeureDepot"} and body["Nom"] == "facture-K7QZ.pdf"
    [stored] = acd.documents("dupont", "DUPONT01")
    import hashlib

    assert stored["sha256"] == hashlib.sha256(data).hexdigest() and stored["Taille"] == len(data)
    assert stored["idArboGed"] == 1 and stored["Id"] == body["Id"]
    assert listed == [
        {"Id": body["Id"], "Nom": "facture-K7QZ.pdf", "Taille": len(data), "DateHeureDepot": body["DateHeureDepot"]}
    ]


def test_a_document_can_go_to_the_root_folder(api):
    assert upload(api, folder="0").status_code == 201


def test_a_same_name_file_in_the_same_folder_is_409_but_another_folder_is_fine(api, acd):
    upload(api)

    same_folder = upload(api, name="FACTURE-k7qz.pdf")
    other_folder = upload(api, folder="2")

    assert same_folder.status_code == 409 and error_code(same_folder) == "documentExisteDeja"
    assert other_folder.status_code == 201
    assert len(acd.documents("dupont", "DUPONT01")) == 2


@pytest.mark.parametrize("folder", ["9", "91"])
def test_a_denied_ged_section_and_its_subfolders_are_403(api, acd, folder):
    response = upload(api, folder=folder)

    assert response.status_code == 403 and error_code(response) == "droitsInsuffisants"
    assert acd.documents("dupont", "DUPONT01") == []


def test_a_dossier_without_ged_rights_refuses_uploads_with_403():
    firm = AcdFirm(
        "solo", "CNX", {"QONTO": "pw"}, {"SOLO01": AcdDossier("SOLO01", "Solo", "Solo SAS", ged_rights=False)}
    )
    with (
        SandboxServer(acd=AcdSandbox([firm])) as srv,
        httpx.Client(base_url=f"{srv.acd_url('solo')}/api/v1", headers={"CNX": "CNX"}, timeout=5, verify=TLS) as client,
    ):
        token = client.post("/authentification", json={"Identifiant": "QONTO", "MotDePasse": "pw", "CNX": "CNX"}).json()
        client.headers["UUID"] = token["UUID"]

        response = upload(client, folder="0", dossier="SOLO01")

        assert response.status_code == 403 and error_code(response) == "droitsInsuffisants"
        assert srv.acd.documents("solo", "SOLO01") == []


def test_an_unknown_ged_folder_is_refused(api):
    assert upload(api, folder="4242").status_code == 404


def test_an_upload_over_25_mib_is_413_and_nothing_is_stored(api, acd):
    response = upload(api, data=b"\0" * (25 * 1024 * 1024 + 1))

    assert response.status_code == 413
    assert acd.documents("dupont", "DUPONT01") == []
    assert api.get("/dossiers").status_code == 200


def test_an_upload_over_25_mib_is_refused_from_its_headers_before_the_body_is_sent(server, api):
    request = (
        f"POST /acd/dupont/iSuiteExpert/api/v1/ged/documents?CodeDossier=DUPONT01 HTTP/1.1\r\n"
        f"Host: {server.host}\r\nCNX: CNX\r\nUUID: {api.headers['UUID']}\r\n"
        f"Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: {30 * 1024 * 1024}\r\n\r\n"
    ).encode()
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(request)
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]

    assert status_line == b"HTTP/1.1 413 Request Entity Too Large"


def test_a_multipart_upload_without_the_file_field_is_refused(api, acd):
    response = api.post(
        "/ged/documents", params={"CodeDossier": "DUPONT01"}, data={"idArboGed": "1"}, files={"other": ("a.pdf", b"x")}
    )

    assert response.status_code == 400
    assert acd.documents("dupont", "DUPONT01") == []


# -- faults --------------------------------------------------------------------------------------


def test_off_resets_every_call_of_that_firm_only(server, acd, api):
    acd.set_fault("dupont", Fault(mode="off"))

    with pytest.raises(httpx.TransportError):
        api.get("/dossiers")
    with pytest.raises(httpx.TransportError):
        login(api)
    with client_for(server, "martin") as martin:
        assert login(martin, "martin").status_code == 200

    assert acd.calls("dupont")[-2:] == [("GET", "/api/v1/dossiers", 0), ("POST", "/api/v1/authentification", 0)]
    acd.clear_faults("dupont")
    assert api.get("/dossiers").status_code == 200


def test_a_fault_for_no_firm_applies_to_every_firm(server, acd):
    acd.set_fault(None, Fault(mode="off"))

    with client_for(server) as dupont, client_for(server, "leroy") as leroy:
        with pytest.raises(httpx.TransportError):
            login(dupont)
        with pytest.raises(httpx.TransportError):
            login(leroy, "leroy")
        acd.clear_faults()
        assert login(leroy, "leroy").status_code == 200


def test_status_fault_answers_the_status_without_doing_the_work(api, acd):
    acd.set_fault("dupont", Fault(mode="status", status=503, route="compta/ecriture"))

    response = api.post("/compta/ecriture", json=entry())

    assert response.status_code == 503
    assert not is_isuite_envelope(response)
    assert acd.entries("dupont", "DUPONT01") == []
    assert api.get("/dossiers").status_code == 200


def test_rate_limit_fault_answers_429_with_retry_after(api, acd):
    acd.set_fault("dupont", Fault(mode="rate_limit", retry_after=7))
    default = Fault(mode="rate_limit")

    limited = api.get("/dossiers")
    acd.clear_faults()
    acd.set_fault("dupont", default)
    limited_default = api.get("/dossiers")

    assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"
    assert limited_default.headers["Retry-After"] == "1"


def test_slow_fault_delays_then_answers_normally(api, acd):
    acd.set_fault("dupont", Fault(mode="slow", delay_seconds=0.3))

    started = time.monotonic()
    response = api.get("/dossiers")

    assert time.monotonic() - started >= 0.3
    assert response.status_code == 200 and len(response.json()) == 3


def test_drop_after_commit_stores_the_entry_then_resets_the_connection(api, acd):
    acd.set_fault("dupont", Fault(mode="drop_after_commit", route="compta/ecriture", count=1))

    with pytest.raises(httpx.TransportError):
        api.post("/compta/ecriture", json=entry())
    found = api.post("/compta/ecritures/filtrer", json={"CodeDossier": "DUPONT01", "Libelle": ACK}).json()

    assert len(acd.entries("dupont", "DUPONT01")) == 1
    assert [e["IdEcriture"] for e in found] == [1]
    assert ("POST", "/api/v1/compta/ecriture", 0) in acd.calls("dupont")


def test_drop_after_commit_on_upload_keeps_the_document(api, acd):
    acd.set_fault("dupont", Fault(mode="drop_after_commit", route="ged/documents", count=1))

    with pytest.raises(httpx.TransportError):
        upload(api)

    assert [d["Nom"] for d in acd.documents("dupont", "DUPONT01")] == ["facture-K7QZ.pdf"]


def test_garbage_fault_rotates_among_invalid_json_unenveloped_json_and_html(api, acd):
    acd.set_fault("dupont", Fault(mode="garbage", route="compta/ecriture"))

    responses = [api.post("/compta/ecriture", json=entry()) for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 200]
    with pytest.raises(ValueError):
        responses[0].json()
    assert isinstance(responses[1].json(), dict) and "codeRetour" not in responses[1].json()
    assert responses[2].headers["Content-Type"].startswith("text/html")
    assert acd.entries("dupont", "DUPONT01") == []


def test_a_counted_fault_applies_that_many_times_then_clears_itself(api, acd):
    acd.set_fault("dupont", Fault(mode="status", status=502, count=2))

    statuses = [api.get("/dossiers").status_code for _ in range(3)]

    assert statuses == [502, 502, 200]
    assert acd.faults("dupont") == []


def test_a_route_fault_matches_whole_path_segments_only(api, acd):
    acd.set_fault("dupont", Fault(mode="status", status=500, route="compta/ecriture"))

    lookup = api.post("/compta/ecritures/filtrer", json={"CodeDossier": "DUPONT01"})
    post = api.post("/compta/ecriture", json=entry())

    assert lookup.status_code == 200
    assert post.status_code == 500


def test_the_first_matching_fault_applies_when_several_are_active(api, acd):
    acd.set_fault("dupont", Fault(mode="status", status=502, route="dossiers", count=1))
    acd.set_fault("dupont", Fault(mode="status", status=503))

    first = api.get("/dossiers").status_code
    second = api.get("/dossiers").status_code

    assert (first, second) == (502, 503)


def test_a_probabilistic_fault_is_reproducible_after_a_reset(server, acd):
    def pattern() -> list[int]:
        with client_for(server) as client:
            client.headers["UUID"] = login(client).json()["UUID"]
            acd.set_fault("dupont", Fault(mode="status", status=503, route="dossiers", probability=0.5))
            return [client.get("/dossiers").status_code for _ in range(16)]

    first = pattern()
    acd.reset()
    second = pattern()

    assert first == second
    assert set(first) == {200, 503}


def test_fault_round_trips_through_json():
    fault = Fault(mode="rate_limit", count=3, route="compta/ecriture", retry_after=5, probability=0.25)

    assert Fault.from_dict(json.loads(json.dumps(fault.to_dict()))) == fault
    with pytest.raises(ValueError):
        Fault.from_dict({"mode": "explode"})
    with pytest.raises(ValueError):
        Fault.from_dict({"mode": "off", "when": "now"})


# -- admin API, reset, seed loading --------------------------------------------------------------


def test_admin_api_flips_faults_and_reads_state_from_another_process(server, acd, api):
    admin = f"{server.url}/_sandbox"
    with httpx.Client(timeout=5, verify=TLS) as client:
        assert client.get(f"{admin}/health").json() == {"ok": True}

        added = client.post(f"{admin}/acd/dupont/faults", json={"mode": "off", "route": "compta/fec"})
        with pytest.raises(httpx.TransportError):
            api.post("/compta/fec", json={"CodeDossier": "DUPONT01", "Annee": 2026})
        client.delete(f"{admin}/acd/dupont/faults")
        api.post("/compta/ecriture", json=entry())
        state = client.get(f"{admin}/acd/dupont/state").json()
        bad = client.post(f"{admin}/acd/dupont/faults", json={"mode": "nope"})
        unknown_firm = client.get(f"{admin}/acd/nobody/state")

    assert added.status_code == 200
    assert state["logins"] == 1
    assert [e["IdEcriture"] for e in state["dossiers"]["DUPONT01"]["entries"]] == [1]
    assert state["dossiers"]["DUPONT01"]["entries"][0]["LignesEcriture"][0]["Debit"] == 100.0
    assert {"Code": "FORANGE", "Lib": "Orange SA"} in state["dossiers"]["DUPONT01"]["accounts"]["fournisseurs"]
    assert state["dossiers"]["DUPONT01"]["documents"] == []
    assert bad.status_code == 400 and unknown_firm.status_code == 404


def test_admin_reset_brings_back_the_seed_state(server, acd, api):
    api.post("/compta/ecriture", json=entry())
    api.post("/compta/comptes/client", json={"CodeDossier": "DUPONT01", "Code": "CNEW", "Lib": "New"})
    acd.set_fault("dupont", Fault(mode="status", status=500, route="nothing"))

    response = httpx.post(f"{server.url}/_sandbox/reset", timeout=5, verify=TLS)

    assert response.json() == {"ok": True}
    assert acd.entries("dupont", "DUPONT01") == []
    assert "CNEW" not in [a["Code"] for a in acd.accounts("dupont", "DUPONT01", "clients")]
    assert acd.faults("dupont") == []
    assert api.get("/dossiers").status_code == 401


def test_firms_load_from_a_json_file_of_the_same_shape(tmp_path):
    path = tmp_path / "firms.json"
    path.write_text(json.dumps({"firms": [firm.to_dict() for firm in demo_acd_firms()]}), encoding="utf-8")

    sandbox = AcdSandbox.from_json(path)

    assert sandbox.firm_names() == ["dupont", "martin", "leroy"]
    assert sandbox.firms["martin"].cnx == "CNX123" and set(sandbox.firms["dupont"].dossiers) == {
        "DUPONT01",
        "DUPONT02",
        "DUPONT03",
    }
    assert sandbox.accounts("dupont", "DUPONT01", "generaux") == AcdSandbox(demo_acd_firms()).accounts(
        "dupont", "DUPONT01", "generaux"
    )
    assert repr(demo_acd_firms()[0]).count("secret") == 0
