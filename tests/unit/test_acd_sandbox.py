"""The ACD i-Suite sandbox serves version 2 of the contract, faults included: a real server on loopback,
spoken to with httpx."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from hubsync_sandbox import Fault, SandboxServer
from hubsync_sandbox.acd import AcdDossier, AcdFirm, AcdSandbox, demo_acd_firms, demo_dossier
from hubsync_sandbox.docstore import DocStore

PASSWORDS = {"dupont": "dupont-secret", "martin": "martin-secret", "leroy": "leroy-secret"}
CNX = {"dupont": "CNX", "martin": "CNX123", "leroy": "CNX7"}
ACK = "(#K7QZ#)"
NOT_INITIALISED = "La connexion à la base du dossier n'est pas initialisée !"
DENIED = "Vous n'avez pas les droits d'accès à cette ressource"
FEC_HEADER = (
    "JournalCode\tJournalLib\tEcritureNum\tEcritureDate\tCompteNum\tCompteLib\tCompAuxNum\tCompAuxLib\tPieceRef\t"
    "PieceDate\tEcritureLib\tDebit\tCredit\tEcritureLet\tDateLet\tValidDate\tMontantdevise\tIdevise"
)
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
    """The shared sandbox, back to its seed state, indexing at once, FEC at no cost, on the real clock."""
    server.acd.reset()
    server.acd.index_lag_seconds = 0.0
    server.acd.fec_seconds_per_line = 0.0
    server.acd.clock = time.time
    yield server.acd
    server.acd.reset()
    server.acd.clock = time.time
    server.acd.token_lifetime_seconds, server.acd.token_idle_seconds = 3600, 900


def client_for(server, firm: str = "dupont", base: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=base or f"{server.acd_api_url(firm)}/v1", timeout=10.0, verify=TLS)


def login(client: httpx.Client, firm: str = "dupont", password: str | None = None, **extra) -> httpx.Response:
    body = {"Identifiant": "QONTO", "MotDePasse": password or PASSWORDS[firm], "CNX": CNX[firm], **extra}
    return client.post("/authentification", json=body)


@contextlib.contextmanager
def logged_in(server, firm: str = "dupont", dossier: str | None = None) -> Iterator[httpx.Client]:
    with client_for(server, firm) as client:
        response = login(client, firm)
        assert response.status_code == 200, response.text
        client.headers["UUID"] = response.json()["UUID"]
        if dossier is not None:
            assert client.post(f"/sessions/dossier/{dossier}").status_code == 200
        yield client


@pytest.fixture
def api(server, acd):
    """A client of the dupont firm, logged in, its session open on DUPONT01."""
    with logged_in(server, "dupont", "DUPONT01") as client:
        yield client


def line(compte: str, debit=0, credit=0, libelle: str = f"Orange novembre {ACK}", **extra) -> dict:
    return {
        "Jour": 19,
        "NumeroPiece": "F-2026-1142",
        "NumeroFacture": "F-2026-1142",
        "Compte": compte,
        "Libelle": libelle,
        "Debit": debit,
        "Credit": credit,
        "ReferenceGed": "",
        **extra,
    }


def entry(**overrides) -> dict:
    body = {
        "Journal": "AC",
        "Mois": 11,
        "Annee": 2026,
        "ReferenceGed": "",
        "LignesEcriture": [line("606400", debit=100.0), line("FORANGE", credit=100.0)],
    }
    body.update(overrides)
    return body


def errors(response: httpx.Response) -> list[str]:
    return [item["erreur"] for item in response.json()["listeErreurs"]]


def is_json(response: httpx.Response) -> bool:
    try:
        response.json()
    except ValueError:
        return False
    return True


def post_in_flight(acd, api: httpx.Client) -> tuple[threading.Thread, list[httpx.Response]]:
    """Start posting an entry that the dupont server holds for 2 s before it commits; return once the server
    has it (its one-shot slow fault is used up), with the thread and the list its answer will go to."""
    acd.set_fault("dupont", Fault(mode="slow", route="compta/ecriture", delay_seconds=2.0, count=1))
    answers: list[httpx.Response] = []
    posting = threading.Thread(target=lambda: answers.append(api.post("/compta/ecriture", json=entry())))
    posting.start()
    deadline = time.monotonic() + 30
    while acd.faults("dupont") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert acd.faults("dupont") == [], "the post never reached the server"
    return posting, answers


def fec_rows(response: httpx.Response) -> list[list[str]]:
    return [row.split("\t") for row in response.text.split("\r\n")[1:] if row]


# -- where the API is ----------------------------------------------------------------------------


def test_browser_address_answers_an_html_login_page(server, acd):
    response = httpx.get(server.acd_url("dupont"), verify=TLS)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html") and "<form" in response.text
    assert server.acd_url("dupont") == f"{server.url}/acd/dupont/iSuiteExpert"


@pytest.mark.parametrize("firm", ["dupont", "martin", "leroy"])
def test_nothing_under_the_browser_address_answers_json(server, acd, firm):
    base = f"{server.acd_url(firm)}/api/v1"
    with client_for(server, firm, base=base) as client:
        response = login(client, firm)
        followed = client.post("/authentification", json={}, follow_redirects=True)
        read = client.get("/dossiers")

    assert response.status_code == 302
    assert response.headers["Location"].startswith(f"/acd/{firm}/iSuiteExpert/")
    assert followed.status_code == 200 and followed.headers["Content-Type"].startswith("text/html")
    assert not any(is_json(r) for r in (response, followed, read))
    assert acd.logins(firm) == 0


def test_each_demo_firm_serves_its_api_under_its_own_root(server, acd):
    assert acd.api_base("dupont") == "/acd/dupont/CNX/api"
    assert acd.api_base("martin") == "/acd/martin/CNX123/api"
    assert acd.api_base("leroy") == "/acd/leroy/api"
    assert acd.browser_path("leroy") == "/acd/leroy/iSuiteExpert"
    for firm in ("dupont", "martin", "leroy"):
        with client_for(server, firm) as client:
            assert login(client, firm).status_code == 200


@pytest.mark.parametrize(
    "path", ["/acd/leroy/CNX7/api/v1/authentification", "/acd/dupont/api/v1/authentification", "/acd/x/api/v1/a"]
)
def test_a_root_a_firm_does_not_use_is_an_html_404(server, acd, path):
    response = httpx.post(f"{server.url}{path}", json={"Identifiant": "QONTO"}, verify=TLS)

    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("text/html") and not is_json(response)


def test_api_paths_and_route_names_are_case_insensitive(server, acd):
    with client_for(server, base=f"{server.url}/acd/dupont/cnx/API/V1") as client:
        token = login(client).json()["UUID"]
        client.headers["UUID"] = token
        opened = client.post("/Sessions/Dossier/DUPONT01")
        journals = client.get("/COMPTA/Journal")
        plan = client.get("/compta/PLANCLASSEMENTECRITURE/AC")

    assert opened.status_code == 200
    assert journals.status_code == 200 and journals.json()[0]["Code"] == "AC"
    assert plan.json()["Id"] == 11


@pytest.mark.parametrize(
    ("api_root", "base"),
    [("iSuiteExpert", "/acd/solo/iSuiteExpert/api"), ("api", "/acd/solo/api"), ("cnx", "/acd/solo/CNX9/api")],
)
def test_the_api_root_of_a_firm_is_set_by_its_seed(api_root, base):
    firm = AcdFirm("solo", "CNX9", {"QONTO": "pw"}, {"SOLO01": demo_dossier("SOLO01", "Solo", "Solo SAS")}, api_root)
    with SandboxServer(acd=AcdSandbox([firm])) as srv:
        response = httpx.post(
            f"{srv.url}{base}/v1/authentification", json={"Identifiant": "QONTO", "MotDePasse": "pw"}, verify=TLS
        )

        assert srv.acd.api_base("solo") == base == srv.acd_api_url("solo").removeprefix(srv.url)
    assert response.status_code == 200 and len(response.json()["UUID"]) == 30


def test_an_unknown_route_is_a_json_404_and_a_wrong_method_a_json_405(api):
    missing = api.get("/compta/ecritures/filtrer")
    wrong = api.put("/compta/comptes/client", json={"Code": "CNEW", "Lib": "New"})

    assert missing.status_code == 404 and "Message" in missing.json()
    assert wrong.status_code == 405 and "POST" in wrong.headers["Allow"] and "Message" in wrong.json()


# -- login and lockout ---------------------------------------------------------------------------


def test_login_answers_a_token_of_30_upper_case_alphanumerics(server, acd):
    with client_for(server) as client:
        response = login(client)

    token = response.json()["UUID"]
    assert response.status_code == 200
    assert len(token) == 30 and token.isascii() and token.isalnum() and token == token.upper()
    assert acd.logins("dupont") == 1


def test_login_property_names_are_case_insensitive_and_cnx_may_be_left_out(server, acd):
    with client_for(server) as client:
        lower = client.post("/authentification", json={"identifiant": "QONTO", "motdepasse": "dupont-secret"})
        upper = client.post(
            "/authentification", json={"IDENTIFIANT": "QONTO", "MOTDEPASSE": "dupont-secret", "cnx": "cnx"}
        )

    assert lower.status_code == 200 and upper.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"Identifiant": "QONTO", "MotDePasse": "wrong", "CNX": "CNX"},
        {"Identifiant": "QONTO", "MotDePasse": "dupont-secret", "CNX": "CNX123"},
        {"Identifiant": "NOBODY", "MotDePasse": "dupont-secret", "CNX": "CNX"},
    ],
    ids=["password", "cnx", "api-code"],
)
def test_a_wrong_password_cnx_or_api_code_is_401_authentification_invalide(server, acd, body):
    with client_for(server) as client:
        response = client.post("/authentification", json=body)

    assert response.status_code == 401
    assert response.json()["codeRetour"] == 0 and errors(response) == ["authentificationInvalide"]


def test_five_failures_block_every_login_for_ten_minutes_even_with_the_right_password(server, acd):
    acd.clock = clock = FakeClock()
    with client_for(server) as client:
        failures = [login(client, password="wrong").status_code for _ in range(5)]
        blocked = login(client)
        clock.advance(9 * 60)
        still_blocked = login(client)
        clock.advance(61)
        after_ten_minutes = login(client)

    assert failures == [401] * 5
    assert blocked.status_code == 401 and errors(blocked) == ["compteBloque"]
    assert "bloqué" in blocked.json()["listeErreurs"][0]["description"]
    assert still_blocked.status_code == 401 and errors(still_blocked) == ["compteBloque"]
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


def test_a_blocked_api_code_blocks_only_that_code_on_that_firm(server, acd):
    acd.set_password("dupont", "AUTRE", "autre-secret")
    with client_for(server) as dupont, client_for(server, "martin") as martin:
        for _ in range(5):
            login(dupont, password="wrong")

        other_code = dupont.post(
            "/authentification", json={"Identifiant": "AUTRE", "MotDePasse": "autre-secret", "CNX": "CNX"}
        )
        assert errors(login(dupont)) == ["compteBloque"]
        assert other_code.status_code == 200
        assert login(martin, "martin").status_code == 200


# -- tokens --------------------------------------------------------------------------------------


def test_a_call_without_the_uuid_header_is_401_jeton_non_recu(server, acd):
    with client_for(server) as client:
        response = client.get("/dossiers")

    assert response.status_code == 401 and errors(response) == ["jetonNonRecu"]


def test_a_token_dies_after_15_minutes_without_a_call_with_a_plain_text_401(server, acd):
    acd.clock = clock = FakeClock()
    with logged_in(server) as client:
        clock.advance(14 * 60)
        alive = client.get("/dossiers")
        clock.advance(15 * 60)
        dead = client.get("/dossiers")

    assert alive.status_code == 200
    assert dead.status_code == 401 and dead.headers["Content-Type"].startswith("text/plain") and dead.text


def test_a_token_dies_60_minutes_after_issue_even_when_used(server, acd):
    acd.clock = clock = FakeClock()
    with logged_in(server) as client:
        statuses = []
        for _ in range(5):
            clock.advance(12 * 60)
            statuses.append(client.get("/dossiers").status_code)

    assert statuses == [200, 200, 200, 200, 401]


def test_token_lifetimes_are_settings_for_tests_with_real_workers(server, acd):
    acd.clock = clock = FakeClock()
    acd.token_lifetime_seconds, acd.token_idle_seconds = 5.0, 2.0
    with logged_in(server) as client:
        clock.advance(1.5)
        alive = client.get("/dossiers").status_code
        clock.advance(2.0)
        idle = client.get("/dossiers").status_code
        client.headers["UUID"] = login(client).json()["UUID"]
        used = []
        for _ in range(3):
            clock.advance(1.5)
            used.append(client.get("/dossiers").status_code)
        clock.advance(1.0)
        old = client.get("/dossiers").status_code

    assert (alive, idle, used, old) == (200, 401, [200, 200, 200], 401)


def test_an_unknown_token_or_another_firms_token_is_a_plain_text_401(server, acd, api):
    with client_for(server, "martin") as martin:
        martin.headers["UUID"] = api.headers["UUID"]
        foreign = martin.get("/dossiers")
    api.headers["UUID"] = "A" * 30
    unknown = api.get("/compta/journal")

    for response in (foreign, unknown):
        assert response.status_code == 401 and not is_json(response)


def test_a_cnx_header_is_harmless(api):
    assert api.get("/compta/journal", headers={"CNX": "CNX"}).status_code == 200
    assert api.get("/compta/journal", headers={"CNX": "NIMPORTEQUOI"}).status_code == 200


def test_expire_tokens_makes_the_next_call_401_and_a_new_login_works(server, acd, api):
    acd.expire_tokens("dupont")

    expired = api.get("/dossiers")
    api.headers["UUID"] = login(api).json()["UUID"]

    assert expired.status_code == 401
    assert api.get("/dossiers").status_code == 200


# -- the dossier session -------------------------------------------------------------------------


def test_the_dossier_list_needs_no_session_and_does_not_say_which_are_shared(server, acd):
    with logged_in(server) as client:
        response = client.get("/dossiers")

    assert response.status_code == 200
    assert [d["Id"] for d in response.json()] == ["DUPONT01", "DUPONT02", "DUPONT03", "DUPONT04"]
    assert all(
        set(d) == {"Id", "Titre", "Genre", "Societe", "DateCreation", "DateModification"} for d in response.json()
    )


@pytest.mark.parametrize(
    ("method", "route", "kwargs"),
    [
        ("GET", "/compta/journal", {}),
        ("GET", "/compta/comptes/generaux", {}),
        ("GET", "/compta/exercices", {}),
        ("GET", "/ged/arborescence", {}),
        ("POST", "/compta/ecriture", {"json": entry()}),
        ("POST", "/compta/fec", {"json": {"Annee": 2026}}),
        ("POST", "/ged/documents/filtrer", {"json": {}}),
    ],
)
def test_a_dossier_call_before_any_session_is_500_pas_initialisee(server, acd, method, route, kwargs):
    with logged_in(server) as client:
        response = client.request(method, route, params={"CodeDossier": "DUPONT01"}, **kwargs)

    assert response.status_code == 500 and response.text == NOT_INITIALISED
    assert acd.entries("dupont", "DUPONT01") == []


def test_a_session_opens_with_the_code_in_the_path_or_as_a_bare_json_string(server, acd):
    with logged_in(server) as client:
        by_path = client.post("/sessions/dossier/DUPONT04")
        by_body = client.post("/sessions/dossier", json="DUPONT01")
        client.post("/compta/ecriture", json=entry())

    assert by_path.status_code == 200 and by_path.content == b""
    assert by_body.status_code == 200 and by_body.content == b""
    assert len(acd.entries("dupont", "DUPONT01")) == 1 and acd.entries("dupont", "DUPONT04") == []
    assert acd.session_opens("dupont") == 2 and acd.session_opens("dupont", "DUPONT04") == 1


def test_an_unknown_dossier_is_404_and_the_token_keeps_its_dossier(api, acd):
    response = api.post("/sessions/dossier/NOPE99")
    api.post("/compta/ecriture", json=entry())

    assert response.status_code == 404 and response.text == "Dossier introuvable en comptabilité"
    assert len(acd.entries("dupont", "DUPONT01")) == 1


def test_an_unshared_dossier_opens_and_its_first_dossier_call_is_403(server, acd):
    with logged_in(server) as client:
        opened = client.post("/sessions/dossier/DUPONT02")
        journals = client.get("/compta/journal")
        posted = client.post("/compta/ecriture", json=entry())

    assert opened.status_code == 200
    assert journals.status_code == 403 and journals.text == DENIED
    assert posted.status_code == 403
    assert acd.entries("dupont", "DUPONT02") == []


def test_two_tokens_on_two_dossiers_each_write_into_their_own(server, acd):
    with logged_in(server, dossier="DUPONT01") as one, logged_in(server, dossier="DUPONT04") as four:
        one.post("/compta/ecriture", json=entry(Journal="AC"))
        four.post("/compta/ecriture", json=entry(Journal="VT"))
        od_lines = [line("606400", 5, NumeroFacture=""), line("471000", 0, 5, NumeroFacture="")]
        one.post("/compta/ecriture", json=entry(Journal="OD", LignesEcriture=od_lines))

    assert [e["Journal"] for e in acd.entries("dupont", "DUPONT01")] == ["AC", "OD"]
    assert [e["Journal"] for e in acd.entries("dupont", "DUPONT04")] == ["VT"]


def test_a_token_switched_to_another_dossier_posts_into_the_last_opened_one(api, acd):
    api.post("/sessions/dossier/DUPONT04")

    response = api.post("/compta/ecriture", json=entry())

    assert response.json()["codeRetour"] == 1
    assert acd.entries("dupont", "DUPONT01") == [] and len(acd.entries("dupont", "DUPONT04")) == 1


def test_a_post_in_flight_when_its_token_switches_lands_in_the_new_dossier(server, acd, api):
    posting, answers = post_in_flight(acd, api)
    with client_for(server) as other:
        other.headers["UUID"] = api.headers["UUID"]
        other.post("/sessions/dossier/DUPONT04")
    posting.join()

    assert answers[0].json()["codeRetour"] == 1
    assert acd.entries("dupont", "DUPONT01") == []
    assert len(acd.entries("dupont", "DUPONT04")) == 1


def test_a_code_dossier_in_the_body_or_the_query_is_ignored(api, acd):
    api.post("/compta/ecriture", json={**entry(), "CodeDossier": "DUPONT04"}, params={"CodeDossier": "DUPONT04"})
    api.post("/compta/comptes/fournisseur", json={"CodeDossier": "DUPONT04", "Code": "FNEW", "Lib": "New"})

    assert len(acd.entries("dupont", "DUPONT01")) == 1 and acd.entries("dupont", "DUPONT04") == []
    assert "CodeDossier" not in acd.entries("dupont", "DUPONT01")[0]
    assert "FNEW" in {a["Code"] for a in acd.accounts("dupont", "DUPONT01", "fournisseurs")}
    assert "FNEW" not in {a["Code"] for a in acd.accounts("dupont", "DUPONT04", "fournisseurs")}


# -- reference data ------------------------------------------------------------------------------


def test_journals_have_the_contract_fields_every_nature_and_more(api):
    journals = {j["Code"]: j for j in api.get("/compta/journal").json()}

    assert {j["Nature"] for j in journals.values()} == {
        "Achat", "Vente", "Tresorerie", "OperationDiverse", "ANouveau", "SituationInventaire"
    }  # fmt: skip
    assert journals["AC"]["NumeroFacture"] is True and journals["BQ"]["NumeroFacture"] is False
    assert journals["BQ"]["CompteDeTresorerie"] == "512000" and "TypeDeSaisie" in journals["AC"]
    assert set(journals["AC"]) > {"Code", "Libelle", "Nature", "TypeDeSaisie", "CompteDeTresorerie", "NumeroFacture"}


def test_accounts_have_the_contract_fields_with_inactive_and_analytic_flags(api):
    generaux = {a["Code"]: a for a in api.get("/compta/comptes/generaux").json()}
    suppliers = api.get("/compta/comptes/fournisseurs").json()
    clients = api.get("/compta/comptes/clients").json()

    fields = {"Code", "Categ", "Lib", "Let", "Coll", "CptCptCol", "CodeTVA", "CptInactif", "ActivationAnalytique"}
    assert all(set(a) > fields for a in [*generaux.values(), *suppliers, *clients])
    assert generaux["623400"]["CptInactif"] is True and generaux["606400"]["CptInactif"] is False
    assert generaux["613200"]["ActivationAnalytique"] is True and generaux["622600"]["ActivationAnalytique"] is True
    assert {a["Categ"] for a in suppliers} == {"F"} and {a["Categ"] for a in clients} == {"C"}
    assert all(a["CptCptCol"] == "401000" for a in suppliers)


def test_an_unfinished_chart_of_accounts_is_an_empty_array(api):
    api.post("/sessions/dossier/DUPONT03")

    assert api.get("/compta/comptes/generaux").json() == []


def test_fiscal_years_are_iso_date_times_and_dupont04_runs_april_to_march(api, acd):
    acd.clock = FakeClock(1_795_000_000.0)  # 2026-11-18
    calendar = api.get("/compta/exercices").json()
    api.post("/sessions/dossier/DUPONT04")
    shifted = api.get("/compta/exercices").json()

    assert calendar[0] == {
        "DateDebut": "2023-01-01T00:00:00",
        "DateFin": "2023-12-31T00:00:00",
        "Courant": False,
        "Cloture": True,
    }
    assert [y["DateFin"][:4] for y in calendar] == ["2023", "2024", "2025", "2026", "2027"]
    assert [y["DateDebut"] for y in calendar if y["Courant"]] == ["2026-01-01T00:00:00"]
    current = next(y for y in shifted if y["Courant"])
    assert (current["DateDebut"], current["DateFin"]) == ("2026-04-01T00:00:00", "2027-03-31T00:00:00")
    assert [y["DateFin"][:10] for y in shifted if y["Cloture"]] == ["2023-03-31", "2024-03-31"]


def test_the_ged_tree_is_an_object_holding_arborescences(api):
    tree = api.get("/ged/arborescence").json()

    assert set(tree) == {"Arborescences"}
    achats = tree["Arborescences"][0]
    assert set(achats) >= {"Id", "Libelle", "LibelleComplet", "Diffusable", "VisibleEnComptabilite", "Arborescences"}
    assert achats["Arborescences"][0]["Id"] == 11 and "Achats" in achats["Arborescences"][0]["LibelleComplet"]


def test_a_journals_filing_plan_is_a_folder_or_the_plan_classement_introuvable_envelope(api):
    purchases = api.get("/compta/planClassementEcriture/AC")
    sales = api.get("/compta/planClassementEcriture/VT")
    bank = api.get("/compta/planClassementEcriture/BQ")

    assert purchases.json() == {"Id": 11, "Libelle": "Factures fournisseurs"}
    assert sales.json()["Id"] == 21
    assert bank.status_code == 200 and errors(bank) == ["planClassementIntrouvable"]
    assert bank.json()["listeErreurs"][0]["description"] == "Plan de classement introuvable"


# -- subsidiary accounts -------------------------------------------------------------------------


def test_a_created_supplier_shows_in_the_supplier_list(api, acd):
    response = api.post("/compta/comptes/fournisseur", json={"code": "FBURO", "lib": "Bureau Vallée"})

    assert response.json() == {"codeRetour": 1, "description": "OK", "listeErreurs": []}
    listed = {a["Code"]: a for a in api.get("/compta/comptes/fournisseurs").json()}
    assert listed["FBURO"]["Lib"] == "Bureau Vallée" and listed["FBURO"]["Categ"] == "F"


def test_creating_an_existing_code_is_compte_existe_deja_on_http_200(api):
    response = api.post("/compta/comptes/fournisseur", json={"Code": "FORANGE", "Lib": "Orange"})

    assert response.status_code == 200 and errors(response) == ["compteExisteDeja"]


@pytest.mark.parametrize(
    ("route", "code"),
    [("client", "FDURAND"), ("fournisseur", "CORANGE"), ("fournisseur", "FSUPPLIERTOOLONG"), ("client", "DURAND")],
)
def test_a_code_breaking_the_prefix_or_length_rule_is_refused_with_a_key_clients_do_not_know(api, acd, route, code):
    response = api.post(f"/compta/comptes/{route}", json={"Code": code, "Lib": "X"})

    assert response.json()["codeRetour"] == 0
    assert errors(response)[0] not in {"compteExisteDeja", "compteInexistant", "donneesInvalides"}
    assert response.json()["listeErreurs"][0]["description"]
    assert code not in {
        a["Code"] for kind in ("clients", "fournisseurs") for a in acd.accounts("dupont", "DUPONT01", kind)
    }


def test_a_13_character_code_is_accepted(api):
    assert api.post("/compta/comptes/client", json={"Code": "C123456789012", "Lib": "X"}).json()["codeRetour"] == 1


# -- posting entries -----------------------------------------------------------------------------


def test_a_posted_entry_answers_the_bare_ok_envelope_without_any_id(api, acd):
    response = api.post("/compta/ecriture", json=entry(ReferenceGed="8812"))

    assert response.status_code == 200
    assert response.json() == {"codeRetour": 1, "description": "OK", "listeErreurs": []}
    [stored] = acd.entries("dupont", "DUPONT01")
    assert stored["EcritureNum"] == 1 and stored["ReferenceGed"] == "8812"
    assert abs(stored["committed_at"] - time.time()) < 60


def test_the_same_body_posted_twice_makes_two_entries_with_their_own_numbers(api, acd):
    api.post("/compta/ecriture", json=entry())
    api.post("/compta/ecriture", json=entry())

    assert [e["EcritureNum"] for e in acd.entries("dupont", "DUPONT01")] == [1, 2]


def test_a_label_over_50_characters_is_cut_silently_to_its_first_50(api, acd):
    long = "Orange Business Services novembre ligne fixe et mobile " + ACK
    body = entry(LignesEcriture=[line("606400", 100, libelle=long), line("FORANGE", 0, 100, libelle="")])

    response = api.post("/compta/ecriture", json=body)

    assert response.json()["codeRetour"] == 1
    labels = [ln["Libelle"] for ln in acd.entries("dupont", "DUPONT01")[0]["LignesEcriture"]]
    assert labels == [long[:50], ""] and ACK not in labels[0]


def test_a_label_is_cut_in_utf16_units_as_dotnet_counts_them(api, acd):
    # 47 characters (4 emoji, 34 letters, a space, the ACK tag) but 51 UTF-16 units: each emoji counts two
    label = "🍕🎉🍕🎉" + "a" * 34 + " " + ACK
    body = entry(LignesEcriture=[line("606400", 100, libelle=label), line("FORANGE", 0, 100, libelle="")])

    api.post("/compta/ecriture", json=body)

    stored = acd.entries("dupont", "DUPONT01")[0]["LignesEcriture"][0]["Libelle"]
    assert len(label) == 47 and stored == label[:-1] and ACK not in stored


def test_amounts_keep_their_exact_digits(api, acd):
    api.post("/compta/ecriture", json=entry(LignesEcriture=[line("606400", 100.10), line("FORANGE", 0, 100.10)]))

    assert acd.entries("dupont", "DUPONT01")[0]["LignesEcriture"][0]["Debit"] == Decimal("100.10")


def test_optional_line_fields_are_stored(api, acd):
    lines = [line("606400", 100, CodeTVA="D20", ModeReglement="V"), line("FORANGE", 0, 100)]

    api.post("/compta/ecriture", json=entry(LignesEcriture=lines))

    stored = acd.entries("dupont", "DUPONT01")[0]["LignesEcriture"][0]
    assert (stored["CodeTVA"], stored["ModeReglement"]) == ("D20", "V")


BUSINESS_REFUSALS = [
    ("journal", entry(Journal="ZZ"), "journalInexistant", 200),
    ("unbalanced", entry(LignesEcriture=[line("606400", 100), line("FORANGE", 0, 90)]), "ecritureDesequilibree", 400),
    ("unknown account", entry(LignesEcriture=[line("699999", 100), line("FORANGE", 0, 100)]), "compteInexistant", 400),
    ("inactive account", entry(LignesEcriture=[line("623400", 100), line("FORANGE", 0, 100)]), "compteInexistant", 400),
    ("closed year", entry(Annee=2023), "exerciceCloture", 200),
    (
        "analytics missing",
        entry(LignesEcriture=[line("622600", 100), line("FORANGE", 0, 100)]),
        "analytiqueCleRepartitionInexistante",
        400,
    ),
]


@pytest.mark.parametrize(
    ("body", "key", "status"), [r[1:] for r in BUSINESS_REFUSALS], ids=[r[0] for r in BUSINESS_REFUSALS]
)
def test_a_business_refusal_comes_in_the_envelope_on_the_status_of_its_key(api, acd, body, key, status):
    response = api.post("/compta/ecriture", json=body)

    assert response.status_code == status
    assert response.json()["codeRetour"] == 0 and response.json()["description"] == "KO"
    assert errors(response) == [key] and response.json()["listeErreurs"][0]["description"]
    assert acd.entries("dupont", "DUPONT01") == []


@pytest.mark.parametrize(
    "body",
    [
        entry(Journal="BQ", LignesEcriture=[line("627000", 5), line("512000", 0, 5)]),  # invoice number on BQ
        entry(Annee=2028),  # outside every fiscal year
        entry(LignesEcriture=[line("606400", 100.005), line("FORANGE", 0, 100.005)]),
        entry(LignesEcriture=[line("606400", 100, 100), line("FORANGE", 0, 100)]),
        entry(LignesEcriture=[line("606400", 100)]),
        entry(LignesEcriture=[line("606400", 100, ModeReglement="VIR"), line("FORANGE", 0, 100)]),
    ],
    ids=["invoice-number", "no-fiscal-year", "three-decimals", "both-sides", "one-line", "payment-mode"],
)
def test_other_refusals_carry_a_key_clients_do_not_know_with_a_french_text_on_400(api, acd, body):
    response = api.post("/compta/ecriture", json=body)

    known = {"compteExisteDeja", "compteInexistant", "analytiqueCleRepartitionInexistante", "jetonNonRecu",
             "periodeMultiExercice", "journalInexistant", "ecritureDesequilibree", "exerciceCloture"}  # fmt: skip
    assert response.status_code == 400 and response.json()["codeRetour"] == 0
    assert errors(response)[0] not in known
    assert any(ch in response.json()["listeErreurs"][0]["description"] for ch in "éèàç ")
    assert acd.entries("dupont", "DUPONT01") == []


def test_a_bank_journal_line_without_invoice_number_is_accepted(api, acd):
    lines = [line("627000", 5, NumeroFacture=""), line("512000", 0, 5, NumeroFacture="")]

    assert api.post("/compta/ecriture", json=entry(Journal="BQ", LignesEcriture=lines)).json()["codeRetour"] == 1


def test_an_analytic_split_is_stored_with_its_line(api, acd):
    split = [{"Section1": "PARIS", "Debit": 60.0, "Credit": 0}, {"Section1": "LYON", "Debit": 40.0, "Credit": 0}]
    body = entry(LignesEcriture=[line("622600", 100, Analytiques=split), line("FORANGE", 0, 100)])

    response = api.post("/compta/ecriture", json=body)

    assert response.json()["codeRetour"] == 1
    assert acd.entries("dupont", "DUPONT01")[0]["LignesEcriture"][0]["Analytiques"] == [
        {"Section1": "PARIS", "Debit": Decimal("60.0"), "Credit": 0},
        {"Section1": "LYON", "Debit": Decimal("40.0"), "Credit": 0},
    ]


def test_an_analytic_account_with_an_automatic_key_is_split_by_the_server(api, acd):
    body = entry(LignesEcriture=[line("613200", 1000.01), line("FORANGE", 0, 1000.01)])

    response = api.post("/compta/ecriture", json=body)

    assert response.json()["codeRetour"] == 1
    splits = acd.entries("dupont", "DUPONT01")[0]["LignesEcriture"][0]["Analytiques"]
    assert [(s["Section1"], s["Debit"]) for s in splits] == [("PARIS", Decimal("600.01")), ("LYON", Decimal("400.00"))]


@pytest.mark.parametrize(
    "split",
    [
        [{"Section1": "PARIS", "Debit": 60.0, "Credit": 0}],
        [{"Section1": "MARS", "Debit": 100.0, "Credit": 0}],
    ],
    ids=["not-adding-up", "unknown-section"],
)
def test_an_analytic_split_that_does_not_fit_is_refused(api, acd, split):
    body = entry(LignesEcriture=[line("622600", 100, Analytiques=split), line("FORANGE", 0, 100)])

    response = api.post("/compta/ecriture", json=body)

    assert response.status_code == 400 and response.json()["codeRetour"] == 0
    assert acd.entries("dupont", "DUPONT01") == []


def test_closed_and_open_months_follow_each_dossiers_fiscal_years(api, acd):
    march_2024 = {"Mois": 3, "Annee": 2024}
    april_2024 = {"Mois": 4, "Annee": 2024}

    calendar = api.post("/compta/ecriture", json=entry(**march_2024))
    api.post("/sessions/dossier/DUPONT04")
    closed = api.post("/compta/ecriture", json=entry(**march_2024))
    opened = api.post("/compta/ecriture", json=entry(**april_2024))

    assert calendar.json()["codeRetour"] == 1
    assert errors(closed) == ["exerciceCloture"]
    assert opened.json()["codeRetour"] == 1
    assert [(e["Annee"], e["Mois"]) for e in acd.entries("dupont", "DUPONT04")] == [(2024, 4)]


@pytest.mark.parametrize(
    ("content", "text"),
    [
        (b'{"Journal": "AC", "Mois": 11,', "Le format de la chaîne d'entrée est incorrect."),
        (json.dumps(entry(Mois="onze")).encode(), "Le format de la chaîne d'entrée est incorrect."),
        (json.dumps(entry(ReferenceGed=8812)).encode(), "Le format de la chaîne d'entrée est incorrect."),
        (json.dumps({"Journal": "AC", "Mois": 11, "Annee": 2026}).encode(), "La référence d'objet n'est pas définie"),
        (json.dumps(entry(Mois=2, Annee=2026, LignesEcriture=[line("606400", 1, Jour=30)])).encode(), "DateTime"),
    ],
    ids=["not-json", "month-as-word", "reference-ged-as-number", "no-lines", "february-30"],
)
def test_a_malformed_body_is_a_500_with_a_french_dotnet_sentence(api, acd, content, text):
    response = api.post("/compta/ecriture", content=content, headers={"Content-Type": "application/json"})

    assert response.status_code == 500 and text in response.text and not is_json(response)
    assert acd.entries("dupont", "DUPONT01") == []


def test_entry_property_names_are_case_insensitive(api, acd):
    body = {
        "journal": "AC",
        "mois": 11,
        "annee": 2026,
        "lignesEcriture": [
            {"jour": 19, "compte": "606400", "libelle": f"a {ACK}", "debit": 10, "credit": 0},
            {"JOUR": 19, "COMPTE": "FORANGE", "LIBELLE": f"a {ACK}", "DEBIT": 0, "CREDIT": 10},
        ],
    }

    assert api.post("/compta/ecriture", json=body).json()["codeRetour"] == 1
    assert acd.entries("dupont", "DUPONT01")[0]["LignesEcriture"][1]["Compte"] == "FORANGE"


# -- the FEC -------------------------------------------------------------------------------------


def test_the_fec_has_the_18_columns_crlf_decimal_commas_and_collective_accounts(api, acd):
    api.post("/compta/ecriture", json=entry(LignesEcriture=[line("606400", 100.5), line("FORANGE", 0, 100.5)]))
    acd.add_account("dupont", "DUPONT01", "clients", "CMARTIN", "Martin", CptCptCol="411100")
    acd.add_account("dupont", "DUPONT01", "generaux", "411100", "Clients France")
    sale = entry(Journal="VT", Mois=12, LignesEcriture=[line("CMARTIN", 12, Jour=2), line("706000", 0, 12, Jour=2)])
    api.post("/compta/ecriture", json=sale)

    response = api.post("/compta/fec", json={"Annee": 2026})

    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    assert response.content.startswith(b"\xef\xbb\xbf" + FEC_HEADER.encode() + b"\r\n")
    assert response.text.endswith("\r\n")
    assert "\n" not in response.text.replace("\r\n", "")
    rows = fec_rows(response)
    assert len(rows) == 4 and all(len(row) == 18 for row in rows)
    assert rows[0][:5] == ["AC", "Achats", "1", "20261119", "606400"] and rows[0][11:13] == ["100,50", "0,00"]
    assert rows[0][8] == "F-2026-1142" and rows[0][10] == f"Orange novembre {ACK}"
    assert rows[1][4:8] == ["401000", "Fournisseurs", "FORANGE", "Orange SA"] and rows[1][12] == "100,50"
    assert rows[2][2:8] == ["2", "20261202", "411100", "Clients France", "CMARTIN", "Martin"]


def test_the_fec_line_label_is_the_stored_cut_label(api):
    long = "x" * 45 + " " + ACK
    api.post("/compta/ecriture", json=entry(LignesEcriture=[line("606400", 1, libelle=long), line("FORANGE", 0, 1)]))

    rows = fec_rows(api.post("/compta/fec", json={"Annee": 2026}))

    assert rows[0][10] == long[:50]


def test_the_fec_of_a_year_is_the_fiscal_year_ending_that_year(api):
    api.post("/sessions/dossier/DUPONT04")
    api.post("/compta/ecriture", json=entry(Mois=11, Annee=2026))
    api.post("/compta/ecriture", json=entry(Mois=2, Annee=2027))
    api.post("/compta/ecriture", json=entry(Mois=3, Annee=2026))

    ending_2027 = fec_rows(api.post("/compta/fec", json={"Annee": 2027}))
    ending_2026 = fec_rows(api.post("/compta/fec", json={"Annee": 2026}))

    assert sorted({row[3][:6] for row in ending_2027}) == ["202611", "202702"]
    assert {row[3][:6] for row in ending_2026} == {"202603"}


def test_a_year_in_which_no_fiscal_year_ends_is_periode_multi_exercice(api):
    response = api.post("/compta/fec", json={"Annee": 2031})

    assert response.status_code == 200 and errors(response) == ["periodeMultiExercice"]


def test_a_fresh_entry_shows_in_the_fec_only_after_the_index_lag(api, acd):
    acd.clock = clock = FakeClock()
    acd.index_lag_seconds = 2.0
    api.post("/compta/ecriture", json=entry())

    before = fec_rows(api.post("/compta/fec", json={"Annee": 2026}))
    clock.advance(2.0)
    after = fec_rows(api.post("/compta/fec", json={"Annee": 2026}))

    assert before == [] and len(after) == 2
    assert len(acd.entries("dupont", "DUPONT01")) == 1


def test_the_default_index_lag_is_two_seconds_and_fec_lines_cost_time():
    sandbox = AcdSandbox(demo_acd_firms())

    assert sandbox.index_lag_seconds == 2.0 and 0 < sandbox.fec_seconds_per_line < 0.01


def test_fec_requests_are_counted_per_dossier(api, acd):
    api.post("/compta/fec", json={"Annee": 2026})
    api.post("/compta/fec", json={"Annee": 2031})
    api.post("/sessions/dossier/DUPONT04")
    api.post("/compta/fec", json={"Annee": 2027})

    assert acd.fec_requests("dupont", "DUPONT01") == 2 and acd.fec_requests("dupont", "DUPONT04") == 1
    assert acd.fec_requests("dupont") == 3 and acd.fec_requests("martin") == 0


def test_producing_a_fec_takes_time_in_proportion_to_its_lines(api, acd):
    for _ in range(5):
        api.post("/compta/ecriture", json=entry())
    acd.fec_seconds_per_line = 0.05

    started = time.monotonic()
    rows = fec_rows(api.post("/compta/fec", json={"Annee": 2026}))
    elapsed = time.monotonic() - started

    assert len(rows) == 10 and elapsed >= 0.5
    print(f"FEC of {len(rows)} lines at 0.05 s a line: {elapsed:.2f} s")


# -- GED -----------------------------------------------------------------------------------------


def upload(client, name: str = "K7QZ-ent_1-doc_1-0123456789.pdf", folder: str = "11", data: bytes = b"%PDF-1.4 x"):
    return client.post("/ged/documents", data={"idArboGed": folder}, files={"file": (name, data, "application/pdf")})


def document_id(response: httpx.Response) -> int:
    body = {key.casefold(): value for key, value in response.json().items()}
    return int(body["id"])


def test_an_upload_keeps_only_size_and_sha256_and_answers_an_id(api, acd):
    data = b"%PDF-1.4\n" + bytes(range(256)) * 100

    first = upload(api, data=data)
    second = upload(api, name="other.pdf", folder="0")

    assert first.status_code == 201 and first.json()["Id"] == 8801
    assert second.status_code == 200 and second.json()["id"] == 8802
    stored = acd.documents("dupont", "DUPONT01")
    assert stored[0]["sha256"] == hashlib.sha256(data).hexdigest() and stored[0]["Taille"] == len(data)
    assert (stored[0]["idArboGed"], stored[0]["NomFichier"]) == (11, "K7QZ-ent_1-doc_1-0123456789.pdf")
    assert stored[1]["idArboGed"] == 0


def test_the_same_name_in_the_same_folder_is_stored_again_silently(api, acd):
    first, second = upload(api), upload(api)

    assert first.status_code in (200, 201) and second.status_code in (200, 201)
    assert document_id(first) != document_id(second)
    assert len(acd.documents("dupont", "DUPONT01")) == 2


@pytest.mark.parametrize("folder", ["9", "91"])
def test_a_folder_the_rights_do_not_reach_is_403(api, acd, folder):
    response = upload(api, folder=folder)

    assert response.status_code == 403 and response.text == DENIED
    assert acd.documents("dupont", "DUPONT01") == []


def test_an_unknown_folder_is_403_plan_de_classement_introuvable(api, acd):
    response = upload(api, folder="4242")

    assert response.status_code == 403 and response.text == "Plan de classement introuvable/inaccessible"
    assert acd.documents("dupont", "DUPONT01") == []


def test_a_dossier_without_ged_rights_refuses_even_the_root():
    firm = AcdFirm(
        "solo", "CNX", {"QONTO": "pw"}, {"SOLO01": AcdDossier("SOLO01", "Solo", "Solo SAS", ged_rights=False)}
    )
    with SandboxServer(acd=AcdSandbox([firm])) as srv, client_for(srv, "solo") as client:
        client.headers["UUID"] = client.post(
            "/authentification", json={"Identifiant": "QONTO", "MotDePasse": "pw"}
        ).json()["UUID"]
        client.post("/sessions/dossier/SOLO01")

        response = upload(client, folder="0")

        assert response.status_code == 403 and srv.acd.documents("solo", "SOLO01") == []


def test_an_upload_over_20_mib_is_413_and_nothing_is_stored(api, acd):
    response = upload(api, data=b"\0" * (20 * 1024 * 1024 + 1))

    assert response.status_code == 413
    assert acd.documents("dupont", "DUPONT01") == []
    assert upload(api, data=b"\0" * (20 * 1024 * 1024)).status_code in (200, 201)


def test_an_upload_far_over_20_mib_is_refused_from_its_headers_before_the_body_is_sent(server, api):
    request = (
        f"POST /acd/dupont/CNX/api/v1/ged/documents HTTP/1.1\r\n"
        f"Host: {server.host}\r\nUUID: {api.headers['UUID']}\r\n"
        f"Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: {30 * 1024 * 1024}\r\n\r\n"
    ).encode()
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(request)
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]

    assert status_line == b"HTTP/1.1 413 Request Entity Too Large"


def test_filtrer_lists_documents_whose_name_contains_the_text_with_their_folder(api):
    upload(api, name="K7QZ-a.pdf")
    upload(api, name="ABCD-b.pdf", folder="0")

    found = api.post("/ged/documents/filtrer", json={"NomFichier": "k7qz"}).json()
    everything = api.post("/ged/documents/filtrer", json={}).json()

    assert [(d["NomFichier"], d["Arborescence"]) for d in found] == [
        ("K7QZ-a.pdf", {"Id": 11, "Libelle": "Factures fournisseurs"})
    ]
    assert set(found[0]) >= {"Id", "NomFichier", "DateCreation", "Arborescence"}
    assert len(everything) == 2


def test_an_upload_lands_in_the_dossier_of_the_session_and_needs_one(server, acd, api):
    api.post("/sessions/dossier/DUPONT04")
    upload(api)
    with logged_in(server) as fresh:
        no_session = upload(fresh)

    assert len(acd.documents("dupont", "DUPONT04")) == 1 and acd.documents("dupont", "DUPONT01") == []
    assert no_session.status_code == 500 and no_session.text == NOT_INITIALISED


# -- faults --------------------------------------------------------------------------------------


def test_off_resets_every_call_of_that_firm_only(server, acd, api):
    acd.set_fault("dupont", Fault(mode="off"))

    with pytest.raises(httpx.TransportError):
        api.get("/compta/journal")
    with pytest.raises(httpx.TransportError):
        login(api)
    with pytest.raises(httpx.TransportError):
        httpx.get(server.acd_url("dupont"), verify=TLS)
    with client_for(server, "martin") as martin:
        assert login(martin, "martin").status_code == 200

    assert acd.calls("dupont")[-3:] == [
        ("GET", "/CNX/api/v1/compta/journal", 0),
        ("POST", "/CNX/api/v1/authentification", 0),
        ("GET", "/iSuiteExpert", 0),
    ]
    acd.clear_faults("dupont")
    assert api.get("/compta/journal").status_code == 200


def test_a_fault_for_no_firm_applies_to_every_firm(server, acd):
    acd.set_fault(None, Fault(mode="off"))

    with client_for(server) as dupont, client_for(server, "leroy") as leroy:
        with pytest.raises(httpx.TransportError):
            login(dupont)
        with pytest.raises(httpx.TransportError):
            login(leroy, "leroy")
        acd.clear_faults()
        assert login(leroy, "leroy").status_code == 200


def test_the_gateway_fault_answers_502_passerelle_incorrecte_without_doing_the_work(api, acd):
    acd.set_fault("dupont", Fault(mode="gateway", route="compta/ecriture"))

    response = api.post("/compta/ecriture", json=entry())

    assert response.status_code == 502
    assert "Passerelle incorrecte : Le serveur distant a retourné une erreur" in response.text
    assert not is_json(response) and acd.entries("dupont", "DUPONT01") == []


def test_the_status_fault_answers_503_without_doing_the_work(api, acd):
    acd.set_fault("dupont", Fault(mode="status", status=503, route="compta/ecriture"))

    response = api.post("/compta/ecriture", json=entry())

    assert response.status_code == 503 and not is_json(response)
    assert acd.entries("dupont", "DUPONT01") == []
    assert api.get("/compta/journal").status_code == 200


def test_the_backup_fault_answers_500_mysql_injoignable_without_doing_the_work(api, acd):
    acd.set_fault("dupont", Fault(mode="backup", count=1))

    response = api.post("/compta/ecriture", json=entry())

    assert response.status_code == 500 and response.text == "Le serveur MySQL est momentanément injoignable"
    assert acd.entries("dupont", "DUPONT01") == []
    assert api.post("/compta/ecriture", json=entry()).json()["codeRetour"] == 1


def test_a_429_storm_answers_retry_after_then_ends(api, acd):
    acd.set_fault("dupont", Fault(mode="rate_limit", retry_after=7, count=3))

    statuses = [api.get("/compta/journal") for _ in range(4)]

    assert [r.status_code for r in statuses] == [429, 429, 429, 200]
    assert statuses[0].headers["Retry-After"] == "7"


def test_the_slow_fault_delays_then_answers_normally(api, acd):
    acd.set_fault("dupont", Fault(mode="slow", delay_seconds=0.3))

    started = time.monotonic()
    response = api.get("/compta/journal")

    assert time.monotonic() - started >= 0.3 and response.status_code == 200


def test_a_slow_fec_fault_slows_the_fec_only(api, acd):
    acd.set_fault("dupont", Fault(mode="slow", route="compta/fec", delay_seconds=0.4))

    started = time.monotonic()
    api.get("/compta/journal")
    journal_seconds = time.monotonic() - started
    started = time.monotonic()
    fec = api.post("/compta/fec", json={"Annee": 2026})
    fec_seconds = time.monotonic() - started

    assert fec.status_code == 200 and fec_seconds >= 0.4
    print(f"journal {journal_seconds:.3f} s, FEC under a slow fault {fec_seconds:.3f} s")


def test_drop_after_commit_stores_the_entry_then_resets_the_connection(api, acd):
    acd.set_fault("dupont", Fault(mode="drop_after_commit", route="compta/ecriture", count=1))

    with pytest.raises(httpx.TransportError):
        api.post("/compta/ecriture", json=entry())
    rows = fec_rows(api.post("/compta/fec", json={"Annee": 2026}))

    assert len(acd.entries("dupont", "DUPONT01")) == 1
    assert [row[10] for row in rows] == [f"Orange novembre {ACK}"] * 2
    assert ("POST", "/CNX/api/v1/compta/ecriture", 0) in acd.calls("dupont")


def test_error_after_commit_stores_the_entry_then_answers_a_french_500(api, acd):
    acd.set_fault("dupont", Fault(mode="error_after_commit", route="compta/ecriture", count=1))

    response = api.post("/compta/ecriture", json=entry())

    assert response.status_code == 500
    assert response.text == "La référence d'objet n'est pas définie à une instance d'un objet."
    assert len(acd.entries("dupont", "DUPONT01")) == 1


def test_drop_after_commit_on_upload_keeps_the_document_and_spares_the_lookup(api, acd):
    acd.set_fault("dupont", Fault(mode="drop_after_commit", route="ged/documents"))

    with pytest.raises(httpx.TransportError):
        upload(api)
    found = api.post("/ged/documents/filtrer", json={"NomFichier": "K7QZ"})

    assert [d["NomFichier"] for d in acd.documents("dupont", "DUPONT01")] == ["K7QZ-ent_1-doc_1-0123456789.pdf"]
    assert found.status_code == 200 and len(found.json()) == 1


def test_session_lost_makes_the_next_dossier_call_answer_pas_initialisee(api, acd):
    acd.set_fault("dupont", Fault(mode="session_lost", route="compta/ecriture", count=1))

    lost = api.post("/compta/ecriture", json=entry())
    still_lost = api.get("/compta/journal")
    api.post("/sessions/dossier/DUPONT01")
    again = api.post("/compta/ecriture", json=entry())

    assert lost.status_code == 500 and lost.text == NOT_INITIALISED
    assert still_lost.status_code == 500
    assert again.json()["codeRetour"] == 1 and len(acd.entries("dupont", "DUPONT01")) == 1


def test_a_restart_drops_every_token_and_session_of_that_firm_only(server, acd, api):
    with logged_in(server, "martin", "MARTIN01") as martin:
        acd.restart("dupont")

        dupont_after = api.get("/compta/journal")
        martin_after = martin.get("/compta/journal")
    api.headers["UUID"] = login(api).json()["UUID"]
    no_session = api.get("/compta/journal")

    assert dupont_after.status_code == 401 and martin_after.status_code == 200
    assert no_session.status_code == 500 and no_session.text == NOT_INITIALISED
    assert acd.state("dupont")["restarts"] == 1


def test_a_post_in_flight_during_a_restart_is_not_stored(server, acd, api):
    posting, answers = post_in_flight(acd, api)
    acd.restart("dupont")
    posting.join()

    assert answers[0].status_code == 401
    assert acd.entries("dupont", "DUPONT01") == []


def test_the_garbage_fault_rotates_among_invalid_json_unenveloped_json_and_html(api, acd):
    acd.set_fault("dupont", Fault(mode="garbage", route="compta/ecriture"))

    responses = [api.post("/compta/ecriture", json=entry()) for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert not is_json(responses[0])
    assert "codeRetour" not in responses[1].json()
    assert responses[2].headers["Content-Type"].startswith("text/html")
    assert acd.entries("dupont", "DUPONT01") == []


def test_the_truncate_fault_commits_then_cuts_the_answer(api, acd):
    acd.set_fault("dupont", Fault(mode="truncate", route="compta/fec", count=1))
    api.post("/compta/ecriture", json=entry())

    with pytest.raises(httpx.TransportError):
        api.post("/compta/fec", json={"Annee": 2026})

    assert acd.fec_requests("dupont", "DUPONT01") == 1


def test_a_fault_matches_its_route_after_api_v1_whatever_the_case_and_only_that_route(api, acd):
    acd.set_fault("dupont", Fault(mode="status", status=503, route="GED/Documents"))

    lookup = api.post("/ged/documents/filtrer", json={})
    posted = upload(api)
    upper_case_path = api.post("/GED/DOCUMENTS", files={"file": ("a.pdf", b"x")}, data={"idArboGed": "0"})

    assert lookup.status_code == 200 and posted.status_code == 503 and upper_case_path.status_code == 503
    acd.clear_faults()
    acd.set_fault("dupont", Fault(mode="status", status=503, route="ged/"))
    assert api.post("/ged/documents/filtrer", json={}).status_code == 503
    assert api.get("/ged/arborescence").status_code == 503
    assert api.get("/compta/journal").status_code == 200


def test_a_counted_fault_applies_that_many_times_then_clears_itself(api, acd):
    acd.set_fault("dupont", Fault(mode="gateway", count=2))

    statuses = [api.get("/dossiers").status_code for _ in range(3)]

    assert statuses == [502, 502, 200]
    assert acd.faults("dupont") == []


def test_the_first_matching_fault_applies_when_several_are_active(api, acd):
    acd.set_fault("dupont", Fault(mode="status", status=502, route="dossiers", count=1))
    acd.set_fault("dupont", Fault(mode="status", status=503))

    assert (api.get("/dossiers").status_code, api.get("/dossiers").status_code) == (502, 503)


def test_a_probabilistic_fault_is_reproducible_after_a_reset(server, acd):
    def pattern() -> list[int]:
        with logged_in(server) as client:
            acd.set_fault("dupont", Fault(mode="status", status=503, route="dossiers", probability=0.5))
            return [client.get("/dossiers").status_code for _ in range(16)]

    first = pattern()
    acd.reset()
    second = pattern()

    assert first == second and set(first) == {200, 503}


def test_a_fault_round_trips_through_json():
    fault = Fault(mode="error_after_commit", count=3, route="compta/ecriture", probability=0.25, text="Erreur")

    assert Fault.from_dict(json.loads(json.dumps(fault.to_dict()))) == fault
    with pytest.raises(ValueError):
        Fault.from_dict({"mode": "explode"})
    with pytest.raises(ValueError):
        Fault.from_dict({"mode": "off", "when": "now"})


# -- admin API, reset, seeds ---------------------------------------------------------------------


def test_the_admin_api_flips_faults_restarts_and_reads_state_from_another_process(server, acd, api):
    admin = f"{server.url}/_sandbox/acd"
    with httpx.Client(timeout=5, verify=TLS) as client:
        added = client.post(f"{admin}/dupont/faults", json={"mode": "off", "route": "compta/fec"})
        with pytest.raises(httpx.TransportError):
            api.post("/compta/fec", json={"Annee": 2026})
        client.delete(f"{admin}/dupont/faults")
        api.post("/compta/ecriture", json=entry())
        api.post("/compta/fec", json={"Annee": 2026})
        state = client.get(f"{admin}/dupont/state").json()
        restarted = client.post(f"{admin}/dupont/restart")
        after_restart = api.get("/dossiers")
        settings = client.post(f"{admin}/settings", json={"index_lag_seconds": 0.5, "fec_seconds_per_line": 0.001})
        account = client.post(
            f"{admin}/dupont/accounts",
            json={"dossier": "DUPONT01", "kind": "generaux", "code": "628000", "lib": "Divers", "CptInactif": True},
        )
        bad = client.post(f"{admin}/dupont/faults", json={"mode": "nope"})
        unknown_firm = client.get(f"{admin}/nobody/state")

    assert added.status_code == 200
    assert state["api_base"] == "/acd/dupont/CNX/api" and state["browser_path"] == "/acd/dupont/iSuiteExpert"
    assert state["logins"] == 1 and state["dossiers"]["DUPONT01"]["session_opens"] == 1
    assert state["dossiers"]["DUPONT01"]["fec_requests"] == 1
    assert [e["EcritureNum"] for e in state["dossiers"]["DUPONT01"]["entries"]] == [1]
    assert restarted.status_code == 200 and after_restart.status_code == 401
    assert settings.json() == {
        "index_lag_seconds": 0.5,
        "fec_seconds_per_line": 0.001,
        "token_lifetime_seconds": 3600,
        "token_idle_seconds": 900,
    }
    assert acd.index_lag_seconds == 0.5
    assert account.status_code == 201
    assert {"Code": "628000", "Lib": "Divers", "CptInactif": True} in acd.accounts("dupont", "DUPONT01", "generaux")
    assert bad.status_code == 400 and unknown_firm.status_code == 404


def test_admin_reset_brings_back_the_seed_state(server, acd, api):
    api.post("/compta/ecriture", json=entry())
    api.post("/compta/comptes/client", json={"Code": "CNEW", "Lib": "New"})
    acd.set_fault("dupont", Fault(mode="status", status=500, route="nothing"))

    response = httpx.post(f"{server.url}/_sandbox/reset", timeout=5, verify=TLS)

    assert response.json() == {"ok": True}
    assert acd.entries("dupont", "DUPONT01") == [] and acd.session_opens("dupont") == 0
    assert "CNEW" not in [a["Code"] for a in acd.accounts("dupont", "DUPONT01", "clients")]
    assert acd.faults("dupont") == []
    assert api.get("/dossiers").status_code == 401


def test_the_demo_firms_have_what_the_tests_and_the_fault_suite_need():
    firms = {firm.name: firm for firm in demo_acd_firms()}
    dupont = firms["dupont"].dossiers

    assert sorted(dupont) == ["DUPONT01", "DUPONT02", "DUPONT03", "DUPONT04"]
    assert [code for code, d in dupont.items() if not d.partage] == ["DUPONT02"]
    assert dupont["DUPONT01"].generaux == dupont["DUPONT04"].generaux != [] and dupont["DUPONT03"].generaux == []
    assert {firm.api_root for firm in firms.values()} == {"cnx", "api"}
    assert repr(firms["dupont"]).count("secret") == 0


def test_firms_load_from_a_json_file_of_the_same_shape(tmp_path):
    path = tmp_path / "firms.json"
    path.write_text(json.dumps({"firms": [firm.to_dict() for firm in demo_acd_firms()]}), encoding="utf-8")

    sandbox = AcdSandbox.from_json(path)

    assert sandbox.firm_names() == ["dupont", "martin", "leroy"]
    assert sandbox.firms == {firm.name: firm for firm in demo_acd_firms()}
    assert sandbox.api_base("leroy") == "/acd/leroy/api"
    with pytest.raises(ValueError):
        AcdSandbox.from_json(
            {
                "firms": [
                    {
                        "name": "x",
                        "cnx": "C",
                        "dossiers": [{"code": "X", "titre": "", "societe": "", "closed_years": [2023]}],
                    }
                ]
            }
        )
