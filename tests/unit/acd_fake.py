"""A small in-process i-Suite API for ``httpx.MockTransport``: tokens bound to the dossier last opened with them,
exactly as the contract says, so that unit tests can see which dossier each call landed in."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

BASE = "https://cabinet-dupont.fr/CNX/api"
CNX = "CNX"
API_CODE = "QONTO"
PASSWORD = "pw-Zq8!unique-s3cret"
NOT_OPEN = "La connexion à la base du dossier n'est pas initialisée !"
OK = {"codeRetour": 1, "description": "OK", "listeErreurs": []}

Answer = Callable[[httpx.Request], httpx.Response]


def answer(status: int = 200, body: Any = None, *, text: str | None = None, headers: dict | None = None) -> Answer:
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


@dataclass
class Call:
    """One request as the server saw it: route, token, the dossier it worked on, body."""

    method: str
    route: str
    token: str | None
    dossier: str | None
    body: bytes
    query: dict[str, str] = field(default_factory=dict)


class FakeIsuite:
    """Tokens, sessions and routes of the contract; ``override(route, answers…)`` answers a route's next calls."""

    def __init__(self, dossiers: tuple[str, ...] = ("DUPONT01", "DUPONT04"), base: str = BASE) -> None:
        self.base_path = httpx.URL(base).path
        self.dossiers = set(dossiers)
        self.password = PASSWORD
        self.tokens: dict[str, str | None] = {}
        self.sessions: list[tuple[str, str]] = []
        self.logins = 0
        self.calls: list[Call] = []
        self.posted: dict[str, list[dict[str, Any]]] = {d: [] for d in dossiers}
        self.overrides: dict[str, list[Answer]] = {}
        self.lock = threading.Lock()
        self._numbers = itertools.count(1)

    # -- control ---------------------------------------------------------------------------------

    def override(self, route: str, *answers: Answer) -> None:
        """Answer the next calls of ``route`` (after the base's ``/v1``) with ``answers``, in order."""
        self.overrides.setdefault(route, []).extend(answers)

    def restart(self) -> None:
        """Every token and session dies."""
        with self.lock:
            self.tokens.clear()

    def forget_session(self, token: str) -> None:
        """The token stays valid but its dossier session is gone."""
        with self.lock:
            self.tokens[token] = None

    def dossiers_opened_by_token(self) -> dict[str, set[str]]:
        """Every dossier each token was ever opened on."""
        out: dict[str, set[str]] = {}
        for token, dossier in self.sessions:
            out.setdefault(token, set()).add(dossier)
        return out

    def on(self, route: str) -> list[Call]:
        """The calls made to ``route``."""
        return [c for c in self.calls if c.route == route]

    # -- serving ---------------------------------------------------------------------------------

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if not path.casefold().startswith((self.base_path + "/v1").casefold()):
            return httpx.Response(404, text="<html><title>404</title></html>", headers={"Content-Type": "text/html"})
        route = path[len(self.base_path) + 3 :]
        token = request.headers.get("UUID")
        body = request.read()
        with self.lock:
            dossier = self.tokens.get(token) if token else None
            self.calls.append(Call(request.method, route, token, dossier, body, dict(request.url.params)))
            queue = self.overrides.get(route)
            canned = queue.pop(0) if queue else None
        if canned is not None:
            return canned(request)
        if route == "/authentification":
            return self._login(body)
        if not token:
            return httpx.Response(401, json={"codeRetour": 0, "listeErreurs": [{"erreur": "jetonNonRecu"}]})
        with self.lock:
            if token not in self.tokens:
                return httpx.Response(401, text="Jeton invalide ou expiré")
        if route.startswith("/sessions/dossier"):
            code = route.rsplit("/", 1)[1] if route.count("/") == 3 else json.loads(body)
            if code not in self.dossiers:
                return httpx.Response(404, text="Dossier introuvable en comptabilité")
            with self.lock:
                self.tokens[token] = code
                self.sessions.append((token, code))
            return httpx.Response(200)
        if route == "/dossiers":
            return httpx.Response(200, json=[{"Id": d, "Titre": d.title()} for d in sorted(self.dossiers)])
        if dossier is None:
            return httpx.Response(500, text=NOT_OPEN)
        return self._dossier_call(request.method, route, dossier, body)

    def _login(self, body: bytes) -> httpx.Response:
        data = json.loads(body)
        if (data.get("Identifiant"), data.get("MotDePasse"), data.get("CNX")) != (API_CODE, self.password, CNX):
            return httpx.Response(
                401,
                json={
                    "codeRetour": 0,
                    "description": "KO",
                    "listeErreurs": [{"erreur": "authentificationInvalide", "description": "Identifiants invalides"}],
                },
            )
        with self.lock:
            self.logins += 1
            token = f"T{self.logins:029d}"
            self.tokens[token] = None
        return httpx.Response(200, json={"UUID": token})

    def _dossier_call(self, method: str, route: str, dossier: str, body: bytes) -> httpx.Response:
        if route == "/compta/journal":
            return httpx.Response(
                200, json=[{"Code": "AC", "Libelle": "Achats", "Nature": "Achat", "NumeroFacture": True}]
            )
        if route == "/compta/ecriture":
            with self.lock:
                self.posted[dossier].append({**json.loads(body), "EcritureNum": next(self._numbers)})
            return httpx.Response(200, json=OK)
        if route == "/compta/fec":
            return httpx.Response(200, text="JournalCode\tEcritureNum\tEcritureLib\tDebit\tCredit\r\n")
        return httpx.Response(404, text="<html><title>Not found</title></html>", headers={"Content-Type": "text/html"})
