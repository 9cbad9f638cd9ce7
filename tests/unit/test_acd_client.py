"""The ACD client against canned answers (``httpx.MockTransport``): login, token renewal, and the error table."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from pipeline.acd.client import AcdClient, AcdCredentials, _TokenCache
from pipeline.acd.errors import (
    AccountLocked,
    AcdTimeout,
    AuthenticationFailed,
    DossierNotFound,
    DossierNotShared,
    FiscalYearClosed,
    GedAccessDenied,
    InvalidEntryData,
    InvoiceNumberManagementOff,
    LabelTooLong,
    MalformedResponse,
    PostOutcomeUnknown,
    RateLimited,
    ServerUnavailable,
    SubsidiaryCodeInvalid,
    SubsidiaryCodeTooLong,
    UnbalancedEntry,
    UnknownAccount,
    UnknownJournal,
)
from pipeline.errors import ErrorKind, HubsyncError
from pipeline.secrets import Secret

URL = "https://cabinet-dupont.fr/iSuiteExpert"
PREFIX = "/iSuiteExpert/api/v1"
CNX = "CNX123"
API_CODE = "QONTO"
PASSWORD = "pw-Zq8!unique-s3cret"
ENTRY = {"CodeDossier": "DUPONT01", "Journal": "AC", "Mois": 11, "Annee": 2026, "LignesEcriture": []}

Answer = Callable[[httpx.Request], httpx.Response]


def answer(status: int = 200, body=None, *, text: str | None = None, headers: dict | None = None) -> Answer:
    """A canned answer: JSON ``body``, or raw ``text``."""

    def respond(request: httpx.Request) -> httpx.Response:
        if text is not None:
            return httpx.Response(status, text=text, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return respond


def ko(code: str, status: int = 200, description: str = "refusé") -> Answer:
    """ACD's error envelope."""
    return answer(
        status, {"codeRetour": 0, "description": "KO", "listeErreurs": [{"erreur": code, "description": description}]}
    )


def fails(exc_type: type[httpx.TransportError]) -> Answer:
    """A transport failure instead of an answer."""

    def respond(request: httpx.Request) -> httpx.Response:
        raise exc_type("simulated", request=request)

    return respond


OK = {"codeRetour": 1, "description": "OK", "listeErreurs": []}


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    url: httpx.URL
    headers: httpx.Headers
    content: bytes


class FakeAcd:
    """Answers logins with fresh tokens (or canned login answers), every other route from a queue per route."""

    def __init__(self, routes: dict[str, list[Answer]] | None = None, logins: list[Answer] | None = None) -> None:
        self.routes = {route: list(answers) for route, answers in (routes or {}).items()}
        self.login_answers = list(logins or [])
        self.requests: list[Seen] = []
        self.tokens: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        # httpx resends the same Request object after a re-login, so keep what it looked like now
        self.requests.append(Seen(request.method, request.url, request.headers.copy(), request.read()))
        route = request.url.path.removeprefix(PREFIX)
        if route == "/authentification":
            if self.login_answers:
                return self.login_answers.pop(0)(request)
            token = f"TOKEN{len(self.tokens) + 1:025d}"
            self.tokens.append(token)
            return httpx.Response(200, json={"UUID": token})
        queue = self.routes[route]
        respond = queue.pop(0) if len(queue) > 1 else queue[0]
        return respond(request)

    def on(self, route: str) -> list[Seen]:
        """The requests received on ``route``."""
        return [r for r in self.requests if r.url.path == PREFIX + route]

    @property
    def logins(self) -> int:
        return len(self.on("/authentification"))


def client_for(server: FakeAcd) -> AcdClient:
    http = httpx.Client(transport=httpx.MockTransport(server))
    creds = AcdCredentials(url=URL, cnx=CNX, api_code=API_CODE, password=Secret(PASSWORD))
    return AcdClient(http, creds, cache=_TokenCache())


# -- login and token --------------------------------------------------------------------------------


def test_login_sends_code_password_and_cnx_then_uuid_and_cnx_headers():
    # given a server that knows one journal
    server = FakeAcd({"/compta/journal": [answer(200, [{"Code": "AC", "NumeroFacture": True}])]})
    client = client_for(server)

    # when the journals are read
    journals = client.journals("DUPONT01")

    # then the client logged in with its code, password and CNX, then called with the token and CNX
    assert journals == [{"Code": "AC", "NumeroFacture": True}]
    [login] = server.on("/authentification")
    assert login.method == "POST"
    assert json.loads(login.content) == {"Identifiant": API_CODE, "MotDePasse": PASSWORD, "CNX": CNX}
    assert login.headers["CNX"] == CNX
    [call] = server.on("/compta/journal")
    assert call.headers["UUID"] == server.tokens[0]
    assert call.headers["CNX"] == CNX
    assert call.url.params["CodeDossier"] == "DUPONT01"


def test_token_is_reused_for_later_calls():
    # given a client that already made a call
    server = FakeAcd({"/compta/journal": [answer(200, [])], "/dossiers": [answer(200, [])]})
    client = client_for(server)
    client.journals("DUPONT01")

    # when it makes two more calls
    client.dossiers()
    client.journals("DUPONT01")

    # then it logged in once and sent the same token every time
    assert server.logins == 1
    calls = server.on("/compta/journal") + server.on("/dossiers")
    assert [c.headers["UUID"] for c in calls] == [server.tokens[0]] * 3


def test_expired_token_triggers_one_relogin_and_one_resend():
    # given a server whose first answer says the token expired
    server = FakeAcd(
        {"/compta/journal": [ko("jetonExpire", status=401), answer(200, [{"Code": "AC"}])]},
    )
    client = client_for(server)

    # when the journals are read
    journals = client.journals("DUPONT01")

    # then the client logged in again and sent the call once more, with the new token
    assert journals == [{"Code": "AC"}]
    assert server.logins == 2
    first, second = server.on("/compta/journal")
    assert first.headers["UUID"] == server.tokens[0]
    assert second.headers["UUID"] == server.tokens[1]
    assert second.headers["CNX"] == CNX


def test_missing_token_answer_also_triggers_one_relogin():
    # given a server that says it received no token
    server = FakeAcd({"/dossiers": [ko("jetonNonRecu", status=401), answer(200, [])]})
    client = client_for(server)

    # when the dossiers are read
    dossiers = client.dossiers()

    # then one more login and one resend made it work
    assert dossiers == []
    assert server.logins == 2
    assert len(server.on("/dossiers")) == 2


def test_token_refused_again_after_relogin_does_not_loop():
    # given a server that says the token expired on every call
    server = FakeAcd({"/compta/journal": [ko("jetonExpire", status=401)]})
    client = client_for(server)

    # when the journals are read
    with pytest.raises(ServerUnavailable) as info:
        client.journals("DUPONT01")

    # then the client gave up after one re-login and one resend, with a transient error
    assert server.logins == 2
    assert len(server.on("/compta/journal")) == 2
    assert info.value.status == 401
    assert info.value.kind is ErrorKind.TRANSIENT


@pytest.mark.parametrize(
    "login_answer",
    [ko("authentificationInvalide", status=401), answer(401, text=""), answer(401, {"message": "no"})],
    ids=["envelope", "empty-body", "other-json"],
)
def test_wrong_password_raises_authentication_failed_without_looping(login_answer):
    # given a server refusing the password
    server = FakeAcd({"/compta/journal": [answer(200, [])]}, logins=[login_answer] * 10)
    client = client_for(server)

    # when a call is made
    with pytest.raises(AuthenticationFailed) as info:
        client.journals("DUPONT01")

    # then it fails once, with the customer kind and a hint for the operator, and nothing else is sent
    assert server.logins == 1
    assert server.on("/compta/journal") == []
    assert info.value.status == 401
    assert info.value.kind is ErrorKind.CUSTOMER
    assert "hubsync connect acd" in info.value.hint


def test_wrong_password_on_relogin_after_expiry_does_not_loop():
    # given a token that expires, and a password changed in ACD meanwhile
    server = FakeAcd(
        {"/compta/journal": [ko("jetonExpire", status=401), answer(200, [])]},
        logins=[answer(200, {"UUID": "A" * 30}), ko("authentificationInvalide", status=401)],
    )
    client = client_for(server)

    # when the journals are read
    with pytest.raises(AuthenticationFailed):
        client.journals("DUPONT01")

    # then there were exactly two logins and one call
    assert server.logins == 2
    assert len(server.on("/compta/journal")) == 1


def test_explicit_login_with_wrong_password_raises_authentication_failed():
    # given a server refusing the password
    server = FakeAcd(logins=[ko("authentificationInvalide", status=401)] * 5)
    client = client_for(server)

    # when the client logs in explicitly (as `hubsync connect` does)
    with pytest.raises(AuthenticationFailed):
        client.login()

    # then it tried once
    assert server.logins == 1


@pytest.mark.parametrize(
    "login_answer",
    [ko("compteVerrouille", status=423), answer(423, text="Locked")],
    ids=["envelope", "bare"],
)
def test_locked_api_code_raises_account_locked(login_answer):
    # given a server that locked the API code after five wrong passwords
    server = FakeAcd({"/dossiers": [answer(200, [])]}, logins=[login_answer] * 5)
    client = client_for(server)

    # when a call is made
    with pytest.raises(AccountLocked) as info:
        client.dossiers()

    # then it fails at once with the lock explained, after a single attempt
    assert server.logins == 1
    assert info.value.status == 423
    assert "ten minutes" in info.value.hint


def test_login_answer_without_token_is_malformed():
    # given a server that answers the login 200 without UUID
    server = FakeAcd({"/dossiers": [answer(200, [])]}, logins=[answer(200, {"Token": "x"})])
    client = client_for(server)

    # when a call is made, then it is a transient malformed answer
    with pytest.raises(MalformedResponse):
        client.dossiers()


# -- the envelope ------------------------------------------------------------------------------------


def test_successful_post_returns_the_entry_id():
    # given a server that accepts the entry
    server = FakeAcd({"/compta/ecriture": [answer(200, {**OK, "IdEcriture": 8841})]})
    client = client_for(server)

    # when the entry is posted
    entry_id = client.post_entry(ENTRY)

    # then its id comes back and the body went out as JSON with the token
    assert entry_id == 8841
    [post] = server.on("/compta/ecriture")
    assert json.loads(post.content) == ENTRY
    assert post.headers["UUID"] == server.tokens[0]


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        ("journalInexistant", UnknownJournal),
        ("ecritureDesequilibree", UnbalancedEntry),
        ("compteInexistant", UnknownAccount),
        ("libelleTropLong", LabelTooLong),
        ("numeroFactureNonActive", InvoiceNumberManagementOff),
        ("exerciceCloture", FiscalYearClosed),
        ("donneesInvalides", InvalidEntryData),
    ],
)
def test_business_error_on_post_maps_to_its_class(code, error_class):
    # given a server that answers HTTP 200 with codeRetour 0 and one ACD business code
    server = FakeAcd({"/compta/ecriture": [ko(code, description="Le journal AC n'existe pas")]})
    client = client_for(server)

    # when the entry is posted
    with pytest.raises(HubsyncError) as info:
        client.post_entry(ENTRY)

    # then it raises exactly that code's class, permanent, naming the code and ACD's words
    assert type(info.value) is error_class
    assert info.value.kind is ErrorKind.PERMANENT
    assert info.value.code == code
    assert info.value.status == 200
    assert code in info.value.message
    assert "Le journal AC n'existe pas" in info.value.message


def test_invoice_number_management_off_hints_at_the_acd_setting():
    # given a journal without invoice-number management
    server = FakeAcd({"/compta/ecriture": [ko("numeroFactureNonActive")]})
    client = client_for(server)

    # when the entry is posted
    with pytest.raises(InvoiceNumberManagementOff) as info:
        client.post_entry(ENTRY)

    # then the hint says which ACD setting to turn on
    assert "Invoice Number Management" in info.value.hint


@pytest.mark.parametrize(
    ("code", "error_class"),
    [("codeTiersInvalide", SubsidiaryCodeInvalid), ("codeTiersTropLong", SubsidiaryCodeTooLong)],
)
def test_business_error_on_account_creation_maps_to_its_class(code, error_class):
    # given a server refusing a subsidiary account
    server = FakeAcd({"/compta/comptes/fournisseur": [ko(code)]})
    client = client_for(server)

    # when the supplier account is created
    with pytest.raises(error_class) as info:
        client.create_account("DUPONT01", "supplier", "FORANGE", "Orange SA")

    # then the error names ACD's code
    assert info.value.code == code


@pytest.mark.parametrize(
    "body",
    [
        {"codeRetour": 0, "description": "KO", "listeErreurs": [{"erreur": "journalInexistant"}]},
        {"codeRetour": 0, "description": "KO", "listeErreurs": [{"erreur": "codeInconnuDeLaDoc"}]},
        {"codeRetour": 0, "description": "KO", "listeErreurs": []},
        {"codeRetour": 0, "IdEcriture": 12},
    ],
    ids=["known-code", "unknown-code", "no-code", "with-an-id"],
)
def test_http_200_with_code_retour_0_is_not_success(body):
    # given a server answering HTTP 200 with codeRetour 0
    server = FakeAcd({"/compta/ecriture": [answer(200, body)], "/compta/comptes/client": [answer(200, body)]})
    client = client_for(server)

    # when an entry is posted or an account created, then neither counts as done
    with pytest.raises(HubsyncError):
        client.post_entry(ENTRY)
    with pytest.raises(HubsyncError):
        client.create_account("DUPONT01", "client", "CDURAND", "Durand SARL")


def test_create_account_that_exists_already_is_not_an_error():
    # given a server where the client account already exists
    server = FakeAcd({"/compta/comptes/client": [ko("compteExisteDeja")]})
    client = client_for(server)

    # when it is created
    created = client.create_account("DUPONT01", "client", "CDURAND", "Durand SARL")

    # then the client reports it was not created, without raising
    assert created is False


def test_create_account_posts_to_the_route_of_its_kind():
    # given a server accepting both kinds of subsidiary accounts
    server = FakeAcd({"/compta/comptes/client": [answer(200, OK)], "/compta/comptes/fournisseur": [answer(200, OK)]})
    client = client_for(server)

    # when a client and a supplier account are created
    created = [
        client.create_account("DUPONT01", "client", "CDURAND", "Durand SARL"),
        client.create_account("DUPONT01", "supplier", "FORANGE", "Orange SA"),
    ]

    # then each went to its own route with the contract's body
    assert created == [True, True]
    [c] = server.on("/compta/comptes/client")
    [f] = server.on("/compta/comptes/fournisseur")
    assert json.loads(c.content) == {"CodeDossier": "DUPONT01", "Code": "CDURAND", "Lib": "Durand SARL"}
    assert json.loads(f.content) == {"CodeDossier": "DUPONT01", "Code": "FORANGE", "Lib": "Orange SA"}


# -- transport-level answers ----------------------------------------------------------------------


@pytest.mark.parametrize("call", ["read", "post"])
def test_429_is_rate_limited_with_retry_after(call):
    # given a server shedding load, asking to wait 30 seconds
    limited = answer(429, text="", headers={"Retry-After": "30"})
    server = FakeAcd({"/compta/journal": [limited], "/compta/ecriture": [limited]})
    client = client_for(server)

    # when a read or a post is made
    with pytest.raises(RateLimited) as info:
        client.journals("DUPONT01") if call == "read" else client.post_entry(ENTRY)

    # then it is rate limited, transient, carrying the server's delay
    assert info.value.retry_after == 30.0
    assert info.value.status == 429
    assert info.value.kind is ErrorKind.TRANSIENT


@pytest.mark.parametrize("status", [502, 503])
@pytest.mark.parametrize("call", ["read", "post"])
def test_server_off_is_server_unavailable(status, call):
    # given a firm's server that is off behind its proxy
    down = answer(status, text="<html><body>Service Unavailable</body></html>")
    server = FakeAcd({"/compta/journal": [down], "/compta/ecriture": [down]})
    client = client_for(server)

    # when a read or a post is made
    with pytest.raises(ServerUnavailable) as info:
        client.journals("DUPONT01") if call == "read" else client.post_entry(ENTRY)

    # then it is a transient outage naming the status
    assert info.value.status == status
    assert str(status) in info.value.message


def test_login_on_a_server_that_is_off_is_server_unavailable():
    # given a firm's server that is off
    server = FakeAcd(logins=[answer(503, text="down")])
    client = client_for(server)

    # when a call is made, then the outage is reported as transient
    with pytest.raises(ServerUnavailable):
        client.dossiers()


def test_gateway_timeout_on_post_is_outcome_unknown():
    # given a reverse proxy that gave up waiting for the firm's server while it was posting
    server = FakeAcd({"/compta/ecriture": [answer(504, text="<html>Gateway Time-out</html>")]})
    client = client_for(server)

    # when the entry is posted, then the client does not know whether it landed
    with pytest.raises(PostOutcomeUnknown):
        client.post_entry(ENTRY)


@pytest.mark.parametrize(
    ("route", "call"),
    [
        ("/compta/journal", lambda c: c.journals("DUPONT01")),
        ("/compta/comptes/generaux", lambda c: c.accounts("DUPONT01", "generaux")),
        ("/compta/ecriture", lambda c: c.post_entry(ENTRY)),
        ("/compta/ecritures/filtrer", lambda c: c.find_entries("DUPONT01", "(#K7QZ#)")),
    ],
    ids=["journals", "accounts", "post", "find"],
)
def test_403_on_a_dossier_route_is_dossier_not_shared(route, call):
    # given a dossier not shared in i-Suite
    server = FakeAcd({route: [ko("droitsInsuffisants", status=403)]})
    client = client_for(server)

    # when a route naming it is called
    with pytest.raises(DossierNotShared) as info:
        call(client)

    # then the customer is told to share the dossier
    assert info.value.status == 403
    assert info.value.code == "droitsInsuffisants"
    assert "Sharing Management" in info.value.hint


def test_403_on_ged_upload_is_ged_access_denied(tmp_path):
    # given a GED section the API user may not write to
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(b"%PDF-1.4 scan")
    server = FakeAcd({"/ged/documents": [ko("droitsInsuffisants", status=403)]})
    client = client_for(server)

    # when a document is uploaded
    with pytest.raises(GedAccessDenied) as info:
        client.upload_document("DUPONT01", 0, "K7QZ-scan.pdf", scan, "application/pdf")

    # then the customer is told about GED rights, not dossier sharing
    assert info.value.status == 403
    assert "GED" in info.value.hint


def test_ged_upload_sends_folder_and_file_and_returns_the_id(tmp_path):
    # given a GED accepting the document
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(b"%PDF-1.4 scan")
    server = FakeAcd({"/ged/documents": [answer(201, {"Id": 8812, "Nom": "K7QZ-scan.pdf"})]})
    client = client_for(server)

    # when a document is uploaded to folder 7
    ged_id = client.upload_document("DUPONT01", 7, "K7QZ-scan.pdf", scan, "application/pdf")

    # then its id comes back, and the multipart body carried the folder, the name and the bytes
    assert ged_id == 8812
    [upload] = server.on("/ged/documents")
    assert upload.url.params["CodeDossier"] == "DUPONT01"
    body = upload.content
    assert b'name="idArboGed"\r\n\r\n7\r\n' in body
    assert b'filename="K7QZ-scan.pdf"' in body
    assert b"%PDF-1.4 scan" in body


def test_404_dossier_introuvable_is_dossier_not_found():
    # given a dossier code the server does not know
    server = FakeAcd({"/compta/journal": [ko("dossierIntrouvable", status=404)]})
    client = client_for(server)

    # when its journals are read, then the customer is told to check the code
    with pytest.raises(DossierNotFound):
        client.journals("NOPE01")


@pytest.mark.parametrize("failure", [httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError, httpx.ReadError])
def test_transport_error_after_sending_a_post_is_outcome_unknown(failure):
    # given a connection that breaks once the entry was sent
    server = FakeAcd({"/compta/ecriture": [fails(failure)]})
    client = client_for(server)

    # when the entry is posted
    with pytest.raises(PostOutcomeUnknown) as info:
        client.post_entry(ENTRY)

    # then the outcome is unknown (to be looked up, never blindly resent), chained to the transport error
    assert isinstance(info.value.__cause__, failure)
    assert "/compta/ecriture" in info.value.message


@pytest.mark.parametrize("failure", [httpx.ConnectError, httpx.ConnectTimeout])
def test_refused_connection_on_a_post_is_a_plain_outage(failure):
    # given a server that cannot be reached at all: the entry never left
    server = FakeAcd({"/compta/ecriture": [fails(failure)]})
    client = client_for(server)

    # when the entry is posted, then it is a plain outage, safe to retry
    with pytest.raises(ServerUnavailable):
        client.post_entry(ENTRY)


@pytest.mark.parametrize(
    ("failure", "error_class"),
    [
        (httpx.ConnectError, ServerUnavailable),
        (httpx.ConnectTimeout, ServerUnavailable),
        (httpx.ReadTimeout, AcdTimeout),
        (httpx.RemoteProtocolError, ServerUnavailable),
        (httpx.ReadError, ServerUnavailable),
    ],
)
def test_transport_error_on_a_read_is_transient(failure, error_class):
    # given a connection failing during a read
    server = FakeAcd({"/compta/journal": [fails(failure)]})
    client = client_for(server)

    # when the journals are read
    with pytest.raises(HubsyncError) as info:
        client.journals("DUPONT01")

    # then it is the transient class for that failure
    assert type(info.value) is error_class
    assert info.value.kind is ErrorKind.TRANSIENT


@pytest.mark.parametrize(
    "garbage",
    [
        answer(200, text="<html><body>Bienvenue sur IIS</body></html>", headers={"Content-Type": "text/html"}),
        answer(200, text='[{"Code": "AC"'),
        answer(200, {"Code": "AC"}),
    ],
    ids=["html", "broken-json", "object-not-array"],
)
def test_garbage_on_a_read_is_malformed_response(garbage):
    # given a server answering 200 with something that is not the contract's array
    server = FakeAcd({"/compta/journal": [garbage]})
    client = client_for(server)

    # when the journals are read, then the answer is refused as malformed (transient)
    with pytest.raises(MalformedResponse):
        client.journals("DUPONT01")


@pytest.mark.parametrize(
    "garbage",
    [
        answer(200, text="<html><body>Bienvenue sur IIS</body></html>", headers={"Content-Type": "text/html"}),
        answer(200, text='{"codeRetour": 1, "IdEc'),
        answer(200, {"IdEcriture": 12}),
    ],
    ids=["html", "broken-json", "no-envelope"],
)
def test_garbage_on_a_post_is_outcome_unknown(garbage):
    # given a server answering the post with something that is not the envelope
    server = FakeAcd({"/compta/ecriture": [garbage]})
    client = client_for(server)

    # when the entry is posted, then the client cannot tell whether it landed
    with pytest.raises(PostOutcomeUnknown):
        client.post_entry(ENTRY)


@pytest.mark.parametrize("body", [OK, {**OK, "IdEcriture": "8841"}], ids=["missing", "string"])
def test_post_accepted_without_an_entry_id_is_outcome_unknown(body):
    # given a server that accepted the entry (codeRetour 1) but gave no usable IdEcriture
    server = FakeAcd({"/compta/ecriture": [answer(200, body)]})
    client = client_for(server)

    # when the entry is posted, then the client must look it up rather than post it again
    with pytest.raises(PostOutcomeUnknown):
        client.post_entry(ENTRY)


# -- secrets ---------------------------------------------------------------------------------------


def test_password_never_appears_in_reprs():
    # given a client with its credentials
    client = client_for(FakeAcd())

    # when it and its parts are shown
    shown = [repr(client), repr(client.auth), repr(client.creds), str(client.creds)]

    # then the password is not in any of them
    assert all(PASSWORD not in text for text in shown)
    assert "[secure]" in repr(client.auth)


FAILURES = [
    pytest.param({}, [ko("authentificationInvalide", status=401, description="mauvais mot de passe")], id="wrong"),
    pytest.param({}, [answer(423, text="Locked")], id="locked"),
    pytest.param({}, [answer(200, {"Token": "x"})], id="no-token"),
    pytest.param({}, [fails(httpx.ReadTimeout)], id="login-timeout"),
    pytest.param({"/compta/ecriture": [ko("journalInexistant")]}, [], id="business"),
    pytest.param({"/compta/ecriture": [fails(httpx.ReadTimeout)]}, [], id="post-timeout"),
    pytest.param({"/compta/ecriture": [answer(200, text="<html>")]}, [], id="post-garbage"),
    pytest.param({"/compta/ecriture": [answer(503, text="down")]}, [], id="down"),
]


@pytest.mark.parametrize(("routes", "logins"), FAILURES)
def test_password_never_appears_in_raised_errors(routes, logins):
    # given a server failing in one of many ways
    server = FakeAcd(routes, logins=logins)
    client = client_for(server)

    # when a post fails
    with pytest.raises(HubsyncError) as info:
        client.post_entry(ENTRY)

    # then neither the error, its record form nor its cause shows the password
    error = info.value
    shown = [str(error), repr(error), json.dumps(error.to_dict()), str(error.__cause__), repr(error.__cause__)]
    assert all(PASSWORD not in text for text in shown)
