"""The ACD client against an in-process i-Suite (``httpx.MockTransport``) and the suite's private Redis: one
token per dossier, the session and re-login rules, and the error table (the envelope whatever the status)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pipeline.acd.client import AcdClient, AcdCredentials
from pipeline.acd.errors import (
    AccountLocked,
    AcdRefused,
    AcdTimeout,
    AnalyticSplitMissing,
    AuthenticationFailed,
    DocumentTooLarge,
    DossierNotFound,
    DossierNotShared,
    EntryRefused,
    FiscalYearClosed,
    GedAccessDenied,
    MalformedResponse,
    OutsideFiscalYears,
    PostOutcomeUnknown,
    RateLimited,
    ServerUnavailable,
    SessionNotOpen,
    UnbalancedEntry,
    UnknownAccount,
    UnknownJournal,
    UploadOutcomeUnknown,
)
from pipeline.acd.login_gate import login_gate
from pipeline.acd.tokens import TokenKey, TokenStore, stats
from pipeline.errors import ErrorKind, HubsyncError
from pipeline.secrets import Secret
from pipeline.store import Store
from tests.conftest import flushed_store
from tests.unit.acd_fake import API_CODE, BASE, CNX, NOT_OPEN, OK, PASSWORD, FakeIsuite, answer, fails, ko

ENTRY = {"Journal": "AC", "Mois": 11, "Annee": 2026, "ReferenceGed": "", "LignesEcriture": []}


@pytest.fixture
def store(redis_server: Any) -> Iterator[Store]:
    with flushed_store(redis_server, 9) as s:
        yield s


def creds(password: str = PASSWORD) -> AcdCredentials:
    return AcdCredentials(api_base=BASE, cnx=CNX, api_code=API_CODE, password=Secret(password))


def client_for(
    server: FakeIsuite, store: Store, dossier: str | None = "DUPONT01", tokens: TokenStore | None = None, **kw: Any
) -> AcdClient:
    http = httpx.Client(transport=httpx.MockTransport(server), timeout=httpx.Timeout(5.0))
    c = creds(**kw)
    return AcdClient(http, c, dossier, tokens or TokenStore(store), gate=login_gate(store, c))


# -- one token per dossier ------------------------------------------------------------------------------


def test_first_call_logs_in_opens_its_dossier_then_calls_with_that_token(store):
    server = FakeIsuite()
    client = client_for(server, store)
    # when the journals are read
    journals = client.journals()
    # then: login, the session opened on DUPONT01 with the new token, then the call with that token and CNX
    assert [j["Code"] for j in journals] == ["AC"]
    assert [c.route for c in server.calls] == ["/authentification", "/sessions/dossier/DUPONT01", "/compta/journal"]
    login = json.loads(server.calls[0].body)
    assert login == {"Identifiant": API_CODE, "MotDePasse": PASSWORD, "CNX": CNX}
    call = server.on("/compta/journal")[0]
    assert call.token == server.sessions[0][0] and call.dossier == "DUPONT01"
    assert "CodeDossier" not in call.query


def test_token_is_kept_sealed_in_redis_and_reused_by_another_process(store):
    server = FakeIsuite()
    client_for(server, store).journals()
    (token,) = server.tokens
    # the token is in Redis only sealed
    dump = json.dumps({k: store.r.hgetall(k) for k in store.r.keys("hubsync:acd:token:*")})
    assert token not in dump and "sealed" in dump
    # when another worker process (its own memory) calls the same dossier
    other = client_for(server, store, tokens=TokenStore(store))
    other.journals()
    # then it used the shared token: no second login, no second session
    assert server.logins == 1 and len(server.sessions) == 1
    assert server.on("/compta/journal")[1].token == token


def test_a_copy_trusted_for_a_second_that_another_process_replaced_costs_one_401_not_a_login(store):
    # given two worker processes that used the dossier's token
    server = FakeIsuite()
    first = client_for(server, store)
    first.journals()
    second = client_for(server, store, tokens=TokenStore(store))
    second.journals()
    # when the server restarts and the second process logs in again (its call met the 401 first)
    server.restart()
    second.journals()
    assert server.logins == 2
    # then the first, whose copy it trusted without asking Redis, meets one 401 and takes the shared new token
    renewed = server.on("/compta/journal")[-1].token
    first.journals()
    assert server.logins == 2
    calls = server.on("/compta/journal")
    assert calls[-1].token == renewed and calls[-2].token != renewed


def test_two_dossiers_of_one_api_code_get_two_tokens_each_opened_once(store):
    server = FakeIsuite()
    tokens = TokenStore(store)
    one, four = client_for(server, store, "DUPONT01", tokens), client_for(server, store, "DUPONT04", tokens)
    # when both dossiers are worked on, interleaved
    for _ in range(3):
        one.post_entry({**ENTRY, "Journal": "AC1"})
        four.post_entry({**ENTRY, "Journal": "AC4"})
    # then each dossier has its own token, each token was opened on one dossier only, ever
    assert server.logins == 2
    assert all(len(d) == 1 for d in server.dossiers_opened_by_token().values())
    assert {p["Journal"] for p in server.posted["DUPONT01"]} == {"AC1"}
    assert {p["Journal"] for p in server.posted["DUPONT04"]} == {"AC4"}


def test_threads_on_two_dossiers_never_post_into_the_other(store):
    # given 16 threads, half on each dossier, with tokens that die now and then (a restart, a lost session)
    server = FakeIsuite()
    tokens = TokenStore(store)
    clients = {d: client_for(server, store, d, tokens) for d in ("DUPONT01", "DUPONT04")}
    errors: list[BaseException] = []

    def work(dossier: str, n: int) -> None:
        for i in range(15):
            if (dossier, n, i) == ("DUPONT01", 0, 5):
                server.restart()
            if (dossier, n, i) == ("DUPONT04", 1, 9):
                for token in list(server.tokens):
                    server.forget_session(token)
            try:
                clients[dossier].post_entry({**ENTRY, "Journal": dossier})
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(d, n)) for n in range(8) for d in ("DUPONT01", "DUPONT04")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # then every entry is in its own dossier (a call that met two faults in a row failed, transiently), and no
    # token was ever opened on two dossiers
    assert all(isinstance(e, HubsyncError) and e.kind is ErrorKind.TRANSIENT for e in errors), errors
    assert {p["Journal"] for p in server.posted["DUPONT01"]} == {"DUPONT01"}
    assert {p["Journal"] for p in server.posted["DUPONT04"]} == {"DUPONT04"}
    assert len(server.posted["DUPONT01"]) + len(server.posted["DUPONT04"]) + len(errors) == 240
    assert all(len(d) == 1 for d in server.dossiers_opened_by_token().values())


def test_dossier_list_uses_a_token_that_never_opens_a_session(store):
    server = FakeIsuite()
    listed = client_for(server, store, dossier=None).dossiers()
    assert [d["Id"] for d in listed] == ["DUPONT01", "DUPONT04"]
    assert server.sessions == []


def test_a_client_without_dossier_refuses_dossier_calls(store):
    with pytest.raises(RuntimeError):
        client_for(FakeIsuite(), store, dossier=None).journals()


# -- session and re-login rules -------------------------------------------------------------------------


def test_session_not_initialised_reopens_on_the_same_token_and_repeats_once(store):
    server = FakeIsuite()
    client = client_for(server, store)
    client.journals()
    (token,) = server.tokens
    server.forget_session(token)
    # when the next call meets the French 500
    client.journals()
    # then the session was opened again on the same token (no login) and the call repeated once
    assert server.logins == 1
    assert server.sessions == [(token, "DUPONT01"), (token, "DUPONT01")]
    assert [c.dossier for c in server.on("/compta/journal")] == ["DUPONT01", None, "DUPONT01"]


def test_session_lost_twice_in_a_row_is_transient_and_does_not_loop(store):
    server = FakeIsuite()
    client = client_for(server, store)
    client.journals()
    server.override("/compta/journal", answer(500, text=NOT_OPEN), answer(500, text=NOT_OPEN))
    with pytest.raises(SessionNotOpen) as info:
        client.journals()
    assert info.value.kind is ErrorKind.TRANSIENT
    assert "pas initialisée" in info.value.message
    assert len(server.on("/compta/journal")) == 3


def test_a_401_logs_in_again_opens_the_session_and_repeats_once(store):
    server = FakeIsuite()
    client = client_for(server, store)
    client.journals()
    server.restart()
    client.post_entry(ENTRY)
    # the post went once with the dead token (401), then once on a new token opened on DUPONT01
    posts = server.on("/compta/ecriture")
    assert [p.dossier for p in posts] == [None, "DUPONT01"]
    assert server.logins == 2
    assert len(server.posted["DUPONT01"]) == 1


def test_a_401_again_after_the_relogin_does_not_loop(store):
    server = FakeIsuite()
    client = client_for(server, store)
    server.override("/compta/journal", answer(401, text="expiré"), answer(401, text="expiré"))
    with pytest.raises(ServerUnavailable) as info:
        client.journals()
    assert info.value.status == 401 and info.value.kind is ErrorKind.TRANSIENT
    assert server.logins == 2 and len(server.on("/compta/journal")) == 2


def test_a_restart_costs_one_login_per_dossier_however_many_workers(store):
    # given four worker processes (each its own memory) that all hold DUPONT01's token
    server = FakeIsuite()
    workers = [client_for(server, store, "DUPONT01", TokenStore(store)) for _ in range(4)]
    for w in workers:
        w.journals()
    assert server.logins == 1
    # when the server restarts and every worker calls at once (3 threads each)
    server.restart()
    barrier = threading.Barrier(12)

    def call(w: AcdClient) -> None:
        barrier.wait()
        w.journals()

    threads = [threading.Thread(target=call, args=(w,)) for w in workers for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # then exactly one more login happened
    assert server.logins == 2
    assert stats(store)["logins"] == 2


def test_an_idle_token_is_replaced_before_the_call_instead_of_after_a_401(store):
    server = FakeIsuite()
    tokens = TokenStore(store, idle_seconds=0.0)
    client = client_for(server, store, tokens=tokens)
    client.journals()
    client.journals()
    assert server.logins == 2
    assert all(c.dossier == "DUPONT01" for c in server.on("/compta/journal"))


def test_a_token_in_constant_use_never_counts_as_idle(store):
    import time

    server = FakeIsuite()
    client = client_for(server, store, tokens=TokenStore(store, idle_seconds=0.6))
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        client.journals()
        time.sleep(0.05)
    assert server.logins == 1


def test_tokens_expire_in_redis_before_acds_sixty_minutes(store):
    server = FakeIsuite()
    client_for(server, store).journals()
    (key,) = store.r.keys("hubsync:acd:token:*")
    assert 0 < store.r.ttl(key) <= 50 * 60


def test_wrong_password_costs_one_failed_login_and_is_never_tried_again(store):
    server = FakeIsuite()
    client = client_for(server, store, password="wrong")
    with pytest.raises(AuthenticationFailed) as info:
        client.journals()
    assert info.value.kind is ErrorKind.CUSTOMER and "hubsync connect acd" in info.value.hint
    # another worker with the same wrong password does not even try
    with pytest.raises(AuthenticationFailed):
        client_for(server, store, password="wrong").journals()
    assert len(server.on("/authentification")) == 1
    assert server.on("/compta/journal") == []


def test_a_cnx_typed_in_another_case_shares_the_refused_password_and_spends_no_second_login(store):
    # given a password changed in ACD, and two client files of one firm typed `cnx` and `CNX`
    server = FakeIsuite()
    http = httpx.Client(transport=httpx.MockTransport(server), timeout=httpx.Timeout(5.0))

    def client(cnx: str, dossier: str) -> AcdClient:
        c = AcdCredentials(api_base=BASE, cnx=cnx, api_code=API_CODE, password=Secret("the-old-one"))
        return AcdClient(http, c, dossier, TokenStore(store), gate=login_gate(store, c))

    # when a worker of each needs a token
    with pytest.raises(AuthenticationFailed):
        client(CNX.lower(), "DUPONT01").journals()
    with pytest.raises(AuthenticationFailed) as info:
        client(CNX.upper(), "DUPONT04").journals()
    # then ACD saw one failed login, not two (five lock the API code)
    assert len(server.on("/authentification")) == 1
    assert "no new login is tried" in info.value.message


def test_a_cnx_or_dossier_typed_in_another_case_uses_the_same_token(store):
    # given a worker that logged in for DUPONT01 with the CNX as ACD shows it
    server = FakeIsuite()
    client_for(server, store).journals()
    # when another connection of that dossier, typed in lower case, reads
    http = httpx.Client(transport=httpx.MockTransport(server), timeout=httpx.Timeout(5.0))
    c = AcdCredentials(api_base=BASE.lower(), cnx=CNX.lower(), api_code=API_CODE, password=Secret(PASSWORD))
    AcdClient(http, c, "dupont01", TokenStore(store), gate=login_gate(store, c)).journals()
    # then it used the dossier's one token: one login, and every call worked on DUPONT01
    assert server.logins == 1
    assert {call.dossier for call in server.on("/compta/journal")} == {"DUPONT01"}


def test_two_api_codes_differing_by_case_never_share_a_token():
    assert TokenKey(BASE, CNX, "QONTO", "DUPONT01").id != TokenKey(BASE, CNX, "qonto", "DUPONT01").id
    assert TokenKey(BASE, "cnx", "QONTO", "dupont01").id == TokenKey(BASE.upper(), "CNX", "QONTO", "DUPONT01").id


@pytest.mark.parametrize(
    "locked",
    [ko("compteBloque", status=401, description="Compte bloqué pendant 10 minutes"), answer(423, text="Locked")],
    ids=["envelope", "legacy-423"],
)
def test_a_blocked_api_code_is_account_locked(store, locked):
    server = FakeIsuite()
    server.override("/authentification", locked)
    with pytest.raises(AccountLocked) as info:
        client_for(server, store).journals()
    assert "ten minutes" in info.value.hint


def test_a_429_on_login_is_rate_limited_and_no_refused_password_is_remembered(store):
    # given a login shed with 429 and a KO envelope (the password was never judged)
    server = FakeIsuite()
    server.override("/authentification", ko("tropDeRequetes", status=429, description="Réessayez plus tard"))
    # when a worker needs a token, it is told to come back later
    with pytest.raises(RateLimited) as info:
        client_for(server, store).journals()
    assert info.value.kind is ErrorKind.TRANSIENT
    # then the next worker logs in with the same password: nothing recorded it as refused
    assert [j["Code"] for j in client_for(server, store).journals()] == ["AC"]
    assert len(server.on("/authentification")) == 2


def test_unknown_dossier_on_session_open_is_dossier_not_found(store):
    server = FakeIsuite()
    with pytest.raises(DossierNotFound) as info:
        client_for(server, store, "NOPE01").journals()
    assert "Dossier introuvable en comptabilité" in info.value.message
    assert store.r.keys("hubsync:acd:token:*") == []  # a token whose session failed is never published


def test_session_opens_with_the_bare_string_form_when_the_path_form_is_missing(store):
    server = FakeIsuite()
    server.override("/sessions/dossier/DUPONT01", answer(404, text="<html>404</html>"))
    client_for(server, store).journals()
    assert json.loads(server.on("/sessions/dossier")[0].body) == "DUPONT01"
    assert server.on("/compta/journal")[0].dossier == "DUPONT01"


def test_unshared_dossier_answers_403_on_its_first_dossier_call(store):
    server = FakeIsuite()
    server.override("/compta/journal", answer(403, text="Vous n'avez pas les droits d'accès à cette ressource"))
    with pytest.raises(DossierNotShared) as info:
        client_for(server, store).journals()
    assert "Sharing Management" in info.value.hint and "droits" in info.value.message


def test_403_on_a_ged_upload_is_about_ged_rights(store, tmp_path):
    server = FakeIsuite()
    server.override("/ged/documents", answer(403, text="Vous n'avez pas les droits d'accès à cette ressource"))
    path = tmp_path / "a.pdf"
    path.write_bytes(b"%PDF-1.4 x")
    with pytest.raises(GedAccessDenied):
        client_for(server, store).upload_document(0, "a.pdf", path, "application/pdf")


def test_413_on_a_ged_upload_is_too_large_with_the_geds_own_hint(store, tmp_path):
    server = FakeIsuite()
    server.override("/ged/documents", answer(413, text="Request Entity Too Large"))
    path = tmp_path / "a.pdf"
    path.write_bytes(b"%PDF-1.4 x")
    with pytest.raises(DocumentTooLarge) as info:
        client_for(server, store).upload_document(0, "a.pdf", path, "application/pdf")
    assert info.value.kind is ErrorKind.PERMANENT and "The ACD GED refuses files this large" in info.value.hint


# -- the envelope, whatever the status ------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 400])
@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        ("journalInexistant", UnknownJournal),
        ("ecritureDesequilibree", UnbalancedEntry),
        ("compteInexistant", UnknownAccount),
        ("analytiqueCleRepartitionInexistante", AnalyticSplitMissing),
        ("exerciceCloture", FiscalYearClosed),
        ("periodeMultiExercice", OutsideFiscalYears),
    ],
)
def test_business_error_on_post_maps_to_its_class_on_200_and_400(store, status, code, error_class):
    server = FakeIsuite()
    server.override("/compta/ecriture", ko(code, status=status, description="Le journal AC n'existe pas"))
    with pytest.raises(HubsyncError) as info:
        client_for(server, store).post_entry(ENTRY)
    assert type(info.value) is error_class and info.value.kind is ErrorKind.PERMANENT
    assert info.value.code == code and info.value.status == status
    assert "Le journal AC n'existe pas" in info.value.message


def test_an_unknown_key_on_post_is_a_refusal_keeping_key_and_french_text_word_for_word(store):
    text = "Le numéro de facture n'est pas géré sur ce journal (paramètre dossier)."
    server = FakeIsuite()
    server.override("/compta/ecriture", ko("numFactNonGere", status=400, description=text))
    with pytest.raises(EntryRefused) as info:
        client_for(server, store).post_entry(ENTRY)
    assert type(info.value) is EntryRefused and info.value.code == "numFactNonGere"
    assert f"numFactNonGere: {text}" in info.value.message
    assert "numFactNonGere" in info.value.hint and "read ACD's own words" in info.value.hint


def test_an_unknown_key_elsewhere_is_an_acd_refusal(store):
    server = FakeIsuite()
    server.override("/compta/comptes/fournisseur", ko("codeTiersNonConforme", description="Code tiers non conforme"))
    with pytest.raises(AcdRefused) as info:
        client_for(server, store).create_account("supplier", "FORANGE", "Orange")
    assert "codeTiersNonConforme: Code tiers non conforme" in info.value.message


def test_envelope_property_names_in_any_case_are_read(store):
    server = FakeIsuite()
    server.override(
        "/compta/ecriture",
        answer(200, {"CodeRetour": 0, "ListeErreurs": [{"Erreur": "journalInexistant", "Description": "non"}]}),
        answer(200, {"CODERETOUR": 1, "listeerreurs": []}),
    )
    client = client_for(server, store)
    with pytest.raises(UnknownJournal):
        client.post_entry(ENTRY)
    client.post_entry(ENTRY)


def test_a_post_gives_no_id_and_needs_none(store):
    server = FakeIsuite()
    assert client_for(server, store).post_entry(ENTRY) is None
    assert len(server.posted["DUPONT01"]) == 1


@pytest.mark.parametrize(
    "reply",
    [answer(200, {"Message": "OK"}), answer(200, text="<html>Erreur</html>"), answer(200, text="{")],
    ids=["no-envelope", "html", "broken-json"],
)
def test_a_200_without_the_envelope_after_a_post_is_an_unknown_outcome(store, reply):
    server = FakeIsuite()
    server.override("/compta/ecriture", reply)
    with pytest.raises(PostOutcomeUnknown):
        client_for(server, store).post_entry(ENTRY)


def test_ko_without_any_reason_is_a_refusal(store):
    server = FakeIsuite()
    server.override("/compta/ecriture", answer(200, {"codeRetour": 0, "description": "KO", "listeErreurs": []}))
    with pytest.raises(EntryRefused):
        client_for(server, store).post_entry(ENTRY)


@pytest.mark.parametrize(
    "text",
    [
        "Le format de la chaîne d'entrée est incorrect.",
        "La référence d'objet n'est pas définie à une instance d'un objet.",
        "Le serveur MySQL est momentanément injoignable",
    ],
)
def test_a_french_dotnet_500_after_a_post_is_an_unknown_outcome_keeping_the_text(store, text):
    server = FakeIsuite()
    server.override("/compta/ecriture", answer(500, text=text))
    with pytest.raises(PostOutcomeUnknown) as info:
        client_for(server, store).post_entry(ENTRY)
    assert text in info.value.message


def test_a_french_dotnet_500_on_a_read_is_transient_keeping_the_text(store):
    server = FakeIsuite()
    server.override("/compta/journal", answer(500, text="Le serveur MySQL est momentanément injoignable"))
    with pytest.raises(ServerUnavailable) as info:
        client_for(server, store).journals()
    assert "Le serveur MySQL est momentanément injoignable" in info.value.message


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (answer(503, text="Service Unavailable"), ServerUnavailable),
        (answer(502, text="Passerelle incorrecte : Le serveur distant a retourné une erreur"), PostOutcomeUnknown),
        (fails(httpx.ConnectError), ServerUnavailable),
        (fails(httpx.ReadTimeout), PostOutcomeUnknown),
        (fails(httpx.RemoteProtocolError), PostOutcomeUnknown),
    ],
    ids=["503", "502", "refused", "read-timeout", "dropped"],
)
def test_post_failures_are_unknown_unless_the_request_surely_never_ran(store, reply, expected):
    server = FakeIsuite()
    client = client_for(server, store)
    client.journals()
    server.override("/compta/ecriture", reply)
    with pytest.raises(expected):
        client.post_entry(ENTRY)


def test_read_timeout_on_a_read_is_a_timeout(store):
    server = FakeIsuite()
    client = client_for(server, store)
    client.journals()
    server.override("/compta/journal", fails(httpx.ReadTimeout))
    with pytest.raises(AcdTimeout):
        client.journals()


def test_429_is_rate_limited_with_retry_after(store):
    server = FakeIsuite()
    server.override("/compta/journal", answer(429, text="", headers={"Retry-After": "30"}))
    with pytest.raises(RateLimited) as info:
        client_for(server, store).journals()
    assert info.value.retry_after == 30.0


def test_a_429_whose_retry_after_is_a_date_waits_until_that_date(store):
    server = FakeIsuite()
    headers = {"Retry-After": "Thu, 19 Nov 2026 20:01:30 GMT", "Date": "Thu, 19 Nov 2026 20:00:00 GMT"}
    server.override("/compta/journal", answer(429, text="", headers=headers))
    with pytest.raises(RateLimited) as info:
        client_for(server, store).journals()
    assert info.value.retry_after == 90.0


def test_an_html_page_where_json_is_expected_is_malformed(store):
    server = FakeIsuite()
    server.override("/compta/journal", answer(200, text="<!DOCTYPE html><html><title>Connexion</title></html>"))
    with pytest.raises(MalformedResponse):
        client_for(server, store).journals()


def test_create_account_that_exists_already_is_not_an_error(store):
    server = FakeIsuite()
    server.override("/compta/comptes/client", ko("compteExisteDeja", status=400), answer(200, OK))
    client = client_for(server, store)
    assert client.create_account("client", "CDURAND", "Durand SARL") is False
    assert client.create_account("client", "CDUPUIS", "Dupuis") is True
    bodies = [json.loads(c.body) for c in server.on("/compta/comptes/client")]
    assert bodies == [{"Code": "CDURAND", "Lib": "Durand SARL"}, {"Code": "CDUPUIS", "Lib": "Dupuis"}]


# -- tolerant reading of answers ------------------------------------------------------------------------


def test_ged_tree_is_read_from_the_object_form_and_the_array_form(store):
    tree = [{"Id": 1, "Libelle": "Achats", "Arborescences": []}]
    server = FakeIsuite()
    server.override("/ged/arborescence", answer(200, {"Arborescences": tree, "Total": 1}), answer(200, tree))
    client = client_for(server, store)
    assert client.ged_tree() == tree
    assert client.ged_tree() == tree


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (answer(200, {"Id": 12, "Libelle": "Factures fournisseurs", "Chemin": "x"}), 12),
        (answer(200, {"id": "12", "libelle": "Factures"}), 12),
        (ko("planClassementIntrouvable", description="Plan de classement introuvable"), None),
        (ko("planClassementIntrouvable", status=400, description="Plan de classement introuvable"), None),
        (ko("planClassementIntrouvable", status=404, description="Plan de classement introuvable"), None),
    ],
    ids=["object", "lower-case", "none-200", "none-400", "none-404"],
)
def test_a_journals_filing_plan_is_its_folder_or_none(store, reply, expected):
    server = FakeIsuite()
    server.override("/compta/planClassementEcriture/AC", reply)
    plan = client_for(server, store).filing_plan("AC")
    assert (plan["Id"] if plan else None) == expected


@pytest.mark.parametrize("reply", [answer(201, {"Id": 8812}), answer(200, {"id": "8812", "extra": True})])
def test_upload_reads_the_document_id_in_any_case(store, tmp_path, reply):
    server = FakeIsuite()
    server.override("/ged/documents", reply)
    path = tmp_path / "a.pdf"
    path.write_bytes(b"%PDF-1.4 x")
    assert client_for(server, store).upload_document(11, "a.pdf", path, "application/pdf") == 8812
    (upload,) = server.on("/ged/documents")
    assert b'name="idArboGed"\r\n\r\n11' in upload.body and b'filename="a.pdf"' in upload.body


def test_an_upload_whose_answer_is_lost_is_unknown(store, tmp_path):
    server = FakeIsuite()
    client = client_for(server, store)
    client.journals()
    server.override("/ged/documents", fails(httpx.ReadError))
    path = tmp_path / "a.pdf"
    path.write_bytes(b"%PDF-1.4 x")
    with pytest.raises(UploadOutcomeUnknown):
        client.upload_document(0, "a.pdf", path, "application/pdf")


def test_documents_are_looked_up_by_name_or_none_when_the_route_is_missing(store):
    server = FakeIsuite()
    server.override(
        "/ged/documents/filtrer",
        answer(200, [{"Id": 5, "NomFichier": "K7QZ-a.pdf", "Arborescence": {"Id": 11}}, {"Id": 6, "NomFichier": "b"}]),
        answer(405, text="Method Not Allowed"),
    )
    client = client_for(server, store)
    assert [d["Id"] for d in client.find_documents("K7QZ-a.pdf")] == [5]
    assert json.loads(server.on("/ged/documents/filtrer")[0].body) == {"NomFichier": "K7QZ-a.pdf"}
    assert client.find_documents("K7QZ-a.pdf") is None


def test_fec_is_asked_by_year_only_and_its_envelope_refusal_is_unavailable(store):
    from pipeline.acd.errors import FecUnavailable

    server = FakeIsuite()
    client = client_for(server, store)
    assert client.fec(2027, 60.0).startswith("JournalCode")
    assert json.loads(server.on("/compta/fec")[0].body) == {"Annee": 2027}
    server.override("/compta/fec", ko("periodeMultiExercice", description="Aucun exercice"))
    with pytest.raises(FecUnavailable):
        client.fec(2031, 60.0)


def test_the_password_never_shows_in_reprs():
    c = creds()
    assert PASSWORD not in repr(c) and PASSWORD not in repr(AcdClient(httpx.Client(), c, "D", None))  # type: ignore[arg-type]
