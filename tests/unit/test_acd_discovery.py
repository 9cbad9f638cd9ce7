"""Finding a firm's API from what the accountant typed: the candidates (a pure function) and the probe
(``httpx.MockTransport``): the first JSON answer to the login wins, and a refused password stops everything."""

from __future__ import annotations

import json

import httpx
import pytest

from pipeline.acd.discovery import candidates, discover, normalise_url
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
    """Answers the login differently per API base; counts the logins."""

    def __init__(self, answers: dict[str, httpx.Response]) -> None:
        self.answers = answers
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        for base, response in self.answers.items():
            if request.url.path.casefold() == f"{base}/v1/authentification".casefold():
                return response
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
