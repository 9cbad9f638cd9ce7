"""Finding a firm's API from what the accountant typed: the candidates (a pure function) and the probe
(``httpx.MockTransport``): the first JSON answer to the login wins, and a refused password stops everything."""

from __future__ import annotations

import json

import httpx
import pytest

from pipeline.acd.discovery import (
    BUSY_BUDGET_SECONDS,
    BUSY_TRIES_PER_BASE,
    BUSY_WAIT_MAX_SECONDS,
    candidates,
    discover,
    normalise_url,
)
from pipeline.acd.errors import AccountLocked, AuthenticationFailed, NotAnISuiteServer, ServerUnavailable
from pipeline.secrets import Secret

PASSWORD = Secret("pw-Zq8!unique-s3cret")


@pytest.mark.parametrize(
    ("typed", "cnx", "expected"),
    [
        (
            "https://cabinet-dupont.fr/iSuiteExpert",
            "CNX",
            ["https://cabinet-dupont.fr/iSuiteExpert/api", "https://cabinet-dupont.fr/CNX/api"],
        ),
        (
            "https://isuite.cabinet.fr/cnx/iSuiteExpert",
            "CNX",
            [
                "https://isuite.cabinet.fr/cnx/iSuiteExpert/api",
                "https://isuite.cabinet.fr/cnx/CNX/api",
                "https://isuite.cabinet.fr/cnx/api",
                "https://isuite.cabinet.fr/iSuiteExpert/api",
            ],
        ),
        ("https://cabinet.fr/CNX", "CNX", ["https://cabinet.fr/CNX/api", "https://cabinet.fr/iSuiteExpert/api"]),
        (
            "https://cabinet.fr/cnx1225/api/v1/",
            "cnx1225",
            [
                "https://cabinet.fr/cnx1225/api",
                "https://cabinet.fr/cnx1225/api/api",
                "https://cabinet.fr/cnx1225/cnx1225/api",
                "https://cabinet.fr/iSuiteExpert/api",
            ],
        ),
        (
            "http://127.0.0.1:8700/acd/leroy/iSuiteExpert",
            "CNX7",
            [
                "http://127.0.0.1:8700/acd/leroy/iSuiteExpert/api",
                "http://127.0.0.1:8700/acd/leroy/CNX7/api",
                "http://127.0.0.1:8700/acd/leroy/api",
                "http://127.0.0.1:8700/CNX7/api",
                "http://127.0.0.1:8700/iSuiteExpert/api",
            ],
        ),
        (
            "cabinet.fr/iSuiteExpert?x=1#top",
            "CNX",
            ["https://cabinet.fr/iSuiteExpert/api", "https://cabinet.fr/CNX/api"],
        ),
    ],
    ids=["browser", "cnx-prefix", "cnx-root", "api-typed", "path-prefix", "no-scheme"],
)
def test_candidates_follow_the_contract_in_order_without_case_duplicates(typed, cnx, expected):
    assert candidates(typed, cnx) == expected


def test_a_typed_api_address_is_tried_first_as_it_is():
    assert normalise_url("https://cabinet.fr/CNX/api/v1/") == "https://cabinet.fr/CNX/api"
    assert candidates("https://cabinet.fr/CNX/API", "CNX")[0] == "https://cabinet.fr/CNX/API"


class Server:
    """Answers the login differently per API base (a list: one answer per call, the last one repeated);
    counts the logins."""

    def __init__(self, answers: dict[str, httpx.Response | list[httpx.Response]]) -> None:
        self.answers = {base: list(a) if isinstance(a, list) else [a] for base, a in answers.items()}
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        for base, responses in self.answers.items():
            if request.url.path.casefold() == f"{base}/v1/authentification".casefold():
                return responses.pop(0) if len(responses) > 1 else responses[0]
        return httpx.Response(404, text="<html><title>404</title></html>", headers={"Content-Type": "text/html"})


def _http(server: Server) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(server), follow_redirects=False)


def test_404_and_redirects_mean_not_here_and_the_first_json_login_wins():
    server = Server(
        {
            "/acd/x/CNX/api": httpx.Response(302, headers={"Location": "/acd/x/iSuiteExpert/Login"}),
            "/acd/x/api": httpx.Response(200, json={"UUID": "A" * 30}),
        }
    )
    found = discover(_http(server), "https://cabinet.fr/acd/x/iSuiteExpert", "CNX", "QONTO", PASSWORD)
    assert (found.api_base, found.token) == ("https://cabinet.fr/acd/x/api", "A" * 30)
    assert found.passed == [
        ("https://cabinet.fr/acd/x/iSuiteExpert/api", "404 text/html"),
        ("https://cabinet.fr/acd/x/CNX/api", "redirect 302 to /acd/x/iSuiteExpert/Login"),
    ]


def test_an_html_page_answering_200_is_not_the_api():
    server = Server(
        {
            "/iSuiteExpert/api": httpx.Response(200, text="<!DOCTYPE html><html>Connexion</html>"),
            "/CNX/api": httpx.Response(200, json={"UUID": "F" * 30}),
        }
    )
    found = discover(_http(server), "https://cabinet.fr/iSuiteExpert", "CNX", "QONTO", PASSWORD)
    assert found.api_base == "https://cabinet.fr/CNX/api"


def test_the_api_is_found_under_the_cnx_root_from_the_browser_address():
    server = Server({"/CNX/api": httpx.Response(200, json={"UUID": "B" * 30})})
    found = discover(_http(server), "https://cabinet.fr/iSuiteExpert", "CNX", "QONTO", PASSWORD)
    assert found.api_base == "https://cabinet.fr/CNX/api"
    assert [base for base, _ in found.passed] == ["https://cabinet.fr/iSuiteExpert/api"]
    login = server.paths[-1]
    assert login == "/CNX/api/v1/authentification"


def test_a_refused_password_stops_the_probe_after_one_login():
    refused = httpx.Response(
        401,
        json={"codeRetour": 0, "listeErreurs": [{"erreur": "authentificationInvalide", "description": "Refusé"}]},
    )
    server = Server({"/iSuiteExpert/api": refused, "/CNX/api": httpx.Response(200, json={"UUID": "C" * 30})})
    with pytest.raises(AuthenticationFailed) as info:
        discover(_http(server), "https://cabinet.fr/iSuiteExpert", "CNX", "QONTO", PASSWORD)
    assert server.paths == ["/iSuiteExpert/api/v1/authentification"]
    assert "https://cabinet.fr/iSuiteExpert/api" in info.value.message and "not tried again" in info.value.message


def test_a_blocked_api_code_stops_the_probe_as_account_locked():
    blocked = httpx.Response(
        401, json={"codeRetour": 0, "listeErreurs": [{"erreur": "compteBloque", "description": "Compte bloqué"}]}
    )
    server = Server({"/CNX/api": blocked})
    with pytest.raises(AccountLocked):
        discover(_http(server), "https://cabinet.fr/CNX", "CNX", "QONTO", PASSWORD)
    assert len(server.paths) == 1


def test_a_plain_401_page_is_not_the_api():
    server = Server(
        {
            "/iSuiteExpert/api": httpx.Response(401, text="<html>401 - Unauthorized</html>"),
            "/CNX/api": httpx.Response(200, json={"uuid": "D" * 30}),
        }
    )
    found = discover(_http(server), "https://cabinet.fr/iSuiteExpert", "CNX", "QONTO", PASSWORD)
    assert found.api_base == "https://cabinet.fr/CNX/api" and found.token == "D" * 30


def test_no_api_anywhere_names_every_base_tried():
    server = Server({})
    with pytest.raises(NotAnISuiteServer) as info:
        discover(_http(server), "https://cabinet.fr/iSuiteExpert", "CNX", "QONTO", PASSWORD)
    assert "https://cabinet.fr/iSuiteExpert/api (404 text/html)" in info.value.message
    assert "https://cabinet.fr/CNX/api (404 text/html)" in info.value.message
    assert "CNX code" in info.value.hint


def test_an_unreachable_host_is_server_unavailable_at_once():
    calls: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ServerUnavailable):
        discover(httpx.Client(transport=httpx.MockTransport(refuse)), "https://x.fr/CNX", "CNX", "QONTO", PASSWORD)
    assert len(calls) == 1


def test_the_probe_sends_the_contracts_login_body():
    bodies: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"UUID": "E" * 30})

    discover(httpx.Client(transport=httpx.MockTransport(handler)), "https://x.fr/CNX", "CNX", "QONTO", PASSWORD)
    assert bodies == [{"Identifiant": "QONTO", "MotDePasse": PASSWORD.reveal(), "CNX": "CNX"}]


def _busy(status: int, retry_after: float | None = None, **kwargs: object) -> httpx.Response:
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
    if kwargs:
        return httpx.Response(status, headers=headers, json=kwargs)
    return httpx.Response(status, headers=headers, text="<html><title>Service Unavailable</title></html>")


def test_a_429_is_asked_again_at_the_same_base_after_its_retry_after_and_wins():
    # given the API base answering 429 twice (Retry-After 2 s), then the login
    server = Server(
        {
            "/CNX/api": [
                _busy(429, 2, Message="Trop de requêtes"),
                _busy(429, 2),
                httpx.Response(200, json={"UUID": "G" * 30}),
            ]
        }
    )
    slept: list[float] = []
    # when connect probes it
    found = discover(_http(server), "https://cabinet.fr/CNX", "CNX", "QONTO", PASSWORD, sleep=slept.append)
    # then it waited as asked and found the API there, without moving on to another base
    assert (found.api_base, found.token) == ("https://cabinet.fr/CNX/api", "G" * 30)
    assert slept == [2.0, 2.0]
    assert server.paths == ["/CNX/api/v1/authentification"] * 3


@pytest.mark.parametrize("status", [429, 502, 503])
def test_a_busy_server_is_unavailable_not_a_wrong_address(status):
    # given the right base busy for good (502/503 pages, or 429 with an envelope that is not a refusal)
    busy = (
        _busy(429, 1, codeRetour=0, listeErreurs=[{"erreur": "tropDeRequetes", "description": "Réessayez"}])
        if status == 429
        else _busy(status)
    )
    server = Server({"/CNX/api": busy})
    slept: list[float] = []
    # when connect probes every candidate
    with pytest.raises(ServerUnavailable) as info:
        discover(_http(server), "https://cabinet.fr/iSuiteExpert", "CNX", "QONTO", PASSWORD, sleep=slept.append)
    # then it says the server is busy or off and to try again, not to check the address, after a bounded wait
    assert "busy or off" in info.value.message and "https://cabinet.fr/CNX/api" in info.value.message
    assert "again in a few minutes" in info.value.hint and "Check the i-Suite URL" not in info.value.hint
    assert info.value.status == status
    assert server.paths.count("/CNX/api/v1/authentification") == BUSY_TRIES_PER_BASE
    assert len(slept) == BUSY_TRIES_PER_BASE - 1 and sum(slept) <= BUSY_BUDGET_SECONDS


def test_a_retry_after_longer_than_connect_waits_is_not_waited_for():
    server = Server({"/CNX/api": _busy(429, 600)})
    slept: list[float] = []
    with pytest.raises(ServerUnavailable) as info:
        discover(_http(server), "https://cabinet.fr/CNX", "CNX", "QONTO", PASSWORD, sleep=slept.append)
    assert slept == [] and server.paths.count("/CNX/api/v1/authentification") == 1
    assert "Retry-After 600s" in info.value.message


def test_waiting_on_busy_bases_stops_at_the_budget():
    # given every one of the five candidates answering 503 with the longest Retry-After connect waits for
    paths: list[str] = []

    def every_base_busy(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return _busy(503, BUSY_WAIT_MAX_SECONDS)

    slept: list[float] = []
    http = httpx.Client(transport=httpx.MockTransport(every_base_busy))
    with pytest.raises(ServerUnavailable):
        discover(http, "https://cabinet.fr/acd/x/iSuiteExpert", "CNX", "QONTO", PASSWORD, sleep=slept.append)
    # then connect waited no longer than its budget, and asked each base once plus once per wait
    assert slept == [BUSY_WAIT_MAX_SECONDS] * int(BUSY_BUDGET_SECONDS // BUSY_WAIT_MAX_SECONDS)
    assert len(paths) == 5 + len(slept)


def test_a_password_refused_after_a_429_is_one_failed_login_and_never_asked_again():
    refused = httpx.Response(
        401,
        json={"codeRetour": 0, "listeErreurs": [{"erreur": "authentificationInvalide", "description": "Refusé"}]},
    )
    server = Server({"/CNX/api": [_busy(429, 1), refused, httpx.Response(200, json={"UUID": "H" * 30})]})
    with pytest.raises(AuthenticationFailed):
        discover(_http(server), "https://cabinet.fr/CNX", "CNX", "QONTO", PASSWORD, sleep=lambda _: None)
    assert server.paths == ["/CNX/api/v1/authentification"] * 2


def test_an_unreachable_host_says_to_try_again_not_to_check_the_address():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ServerUnavailable) as info:
        discover(httpx.Client(transport=httpx.MockTransport(refuse)), "https://x.fr/CNX", "CNX", "QONTO", PASSWORD)
    assert "again in a few minutes" in info.value.hint and "keeps retrying" not in info.value.hint
