"""The ACD i-Suite Expert client: exactly the routes and shapes of the ACD contract, nothing more.

One ``httpx.Client`` per worker process serves every firm (connections are pooled per host); the login
token lives in process memory only, never in Redis, a message or a log.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from pipeline.acd.errors import (
    AccountLocked,
    AuthenticationFailed,
    MalformedResponse,
    PostOutcomeUnknown,
    envelope_errors,
    error_from_exception,
    error_from_response,
)
from pipeline.errors import HubsyncError
from pipeline.secrets import Secret

API = "/api/v1"
TOKEN_ERRORS = ("jetonExpire", "jetonNonRecu")


@dataclass(frozen=True)
class AcdCredentials:
    """What an accountant types in to connect a firm; the password stays a ``Secret``."""

    url: str
    cnx: str
    api_code: str
    password: Secret

    @property
    def key(self) -> tuple[str, str, str]:
        """Identifies one login at one server (the token cache key)."""
        return (self.url.rstrip("/"), self.cnx, self.api_code)


class _TokenCache:
    """Tokens per (server, CNX, API code), shared by the threads of one process."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str, str], str] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, str]) -> str | None:
        with self._lock:
            return self._tokens.get(key)

    def put(self, key: tuple[str, str, str], token: str) -> None:
        with self._lock:
            self._tokens[key] = token

    def drop(self, key: tuple[str, str, str], token: str | None = None) -> None:
        with self._lock:
            if token is None or self._tokens.get(key) == token:
                self._tokens.pop(key, None)


TOKENS = _TokenCache()


LoginGate = Callable[[], AbstractContextManager[None]]
"""Wraps every login: the pipeline passes one that lets a single worker log in at a time per API code and
refuses a password ACD already refused (ACD locks an API code after five failed logins)."""


class AcdAuth(httpx.Auth):
    """Sends ``UUID`` and ``CNX``; logs in when there is no token and once more when the token expired."""

    requires_response_body = True

    def __init__(self, creds: AcdCredentials, cache: _TokenCache = TOKENS, gate: LoginGate | None = None) -> None:
        self.creds = creds
        self.cache = cache
        self.gate = gate

    def _gated_login(self, stale: str | None) -> Generator[httpx.Request, httpx.Response, str]:
        with self.gate() if self.gate is not None else contextlib.nullcontext():
            token = self.cache.get(self.creds.key)
            if token is not None and token != stale:
                return token  # another thread of this process logged in while we waited
            return (yield from self._login())

    def __repr__(self) -> str:
        return f"AcdAuth(url={self.creds.url!r}, api_code={self.creds.api_code!r}, password=[secure])"

    def _login(self) -> Generator[httpx.Request, httpx.Response, str]:
        request = httpx.Request(
            "POST",
            f"{self.creds.url.rstrip('/')}{API}/authentification",
            headers={"CNX": self.creds.cnx},
            json={
                "Identifiant": self.creds.api_code,
                "MotDePasse": self.creds.password.reveal(),
                "CNX": self.creds.cnx,
            },
        )
        response = yield request
        if response.status_code == 200:
            try:
                token = json.loads(response.content)["UUID"]
            except (ValueError, KeyError, TypeError) as exc:
                raise MalformedResponse("ACD answered the login without a UUID token") from exc
            if not isinstance(token, str) or not token:
                raise MalformedResponse("ACD answered the login without a UUID token")
            self.cache.put(self.creds.key, token)
            return token
        error = error_from_response(response)
        if response.status_code == 401 and not isinstance(error, AuthenticationFailed):
            error = AuthenticationFailed(
                f"ACD refused the login of API code {self.creds.api_code!r}",
                status=401,
                code="authentificationInvalide",
            )
        if response.status_code == 423 and not isinstance(error, AccountLocked):
            error = AccountLocked("ACD locked the API code", status=423, code="compteVerrouille")
        raise error

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.cache.get(self.creds.key)
        if token is None:
            token = yield from self._gated_login(None)
        request.headers["UUID"] = token
        request.headers["CNX"] = self.creds.cnx
        response = yield request
        if response.status_code == 401 and _error_code(response) in TOKEN_ERRORS:
            self.cache.drop(self.creds.key, token)
            token = yield from self._gated_login(token)
            request.headers["UUID"] = token
            yield request


def _error_code(response: httpx.Response) -> str | None:
    try:
        errors = envelope_errors(json.loads(response.content))
    except (ValueError, UnicodeDecodeError):
        return None
    return errors[0].get("erreur") if errors else None


def amount(value: Decimal) -> float:
    """A 2-decimal amount as the JSON number ACD wants; refuses a value a float would change."""
    number = float(value)
    if Decimal(repr(number)).quantize(Decimal("0.01")) != value.quantize(Decimal("0.01")):
        raise ValueError(f"amount {value} cannot be sent exactly as a JSON number")
    return number


class AcdClient:
    """The routes of the ACD contract, raising the error tree of ``pipeline.acd.errors``."""

    def __init__(
        self, http: httpx.Client, creds: AcdCredentials, cache: _TokenCache = TOKENS, gate: LoginGate | None = None
    ) -> None:
        self.http = http
        self.creds = creds
        self.auth = AcdAuth(creds, cache, gate)
        self.base = creds.url.rstrip("/") + API

    def __repr__(self) -> str:
        return f"AcdClient(url={self.creds.url!r}, api_code={self.creds.api_code!r})"

    # -- plumbing --------------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        route: str,
        *,
        write: bool = False,
        ged: bool = False,
        ok: tuple[int, ...] = (200,),
        **kwargs: Any,
    ) -> httpx.Response:
        try:
            response = self.http.request(method, f"{self.base}{route}", auth=self.auth, **kwargs)
        except HubsyncError:
            raise
        except httpx.HTTPError as exc:
            raise error_from_exception(exc, write=write) from exc
        if response.status_code not in ok:
            raise error_from_response(response, write=write, ged=ged)
        return response

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return json.loads(response.content)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedResponse(
                f"ACD answered {response.status_code} with a body that is not JSON on {response.request.url.path}"
            ) from exc

    def _array(self, route: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
        body = self._json(self._send("GET", route, params=params))
        if not isinstance(body, list):
            raise MalformedResponse(f"ACD answered {route} with something other than an array")
        return [item for item in body if isinstance(item, dict)]

    def _write(self, route: str, payload: dict[str, Any], *, unknown_on_failure: bool) -> dict[str, Any]:
        response = self._send("POST", route, write=unknown_on_failure, json=payload)
        body = self._json(response) if not unknown_on_failure else _json_or_none(response)
        if not isinstance(body, dict) or "codeRetour" not in body:
            raise error_from_response(response, write=unknown_on_failure)
        if body.get("codeRetour") != 1:
            raise error_from_response(response, write=False)
        return body

    # -- routes ----------------------------------------------------------------------------------

    def login(self) -> None:
        """Log in now (connect checks the credentials this way)."""
        self.auth.cache.drop(self.creds.key)
        flow = self.auth._login()
        request = next(flow)
        try:
            response = self.http.send(request)
        except httpx.HTTPError as exc:
            raise error_from_exception(exc) from exc
        try:
            flow.send(response)
        except StopIteration:
            return

    def dossiers(self) -> list[dict[str, Any]]:
        """Every dossier of the firm, with ``PartageISuite``."""
        return self._array("/dossiers")

    def journals(self, dossier: str) -> list[dict[str, Any]]:
        """The dossier's journals (``Code``, ``Libelle``, ``Nature``, ``NumeroFacture``)."""
        return self._array("/compta/journal", {"CodeDossier": dossier})

    def accounts(self, dossier: str, kind: str) -> list[dict[str, Any]]:
        """``generaux``, ``clients`` or ``fournisseurs`` accounts (``Code``, ``Lib``)."""
        return self._array(f"/compta/comptes/{kind}", {"CodeDossier": dossier})

    def ged_tree(self, dossier: str) -> list[dict[str, Any]]:
        """The GED folders, nested."""
        return self._array("/ged/arborescence", {"CodeDossier": dossier})

    def create_account(self, dossier: str, kind: str, code: str, label: str) -> bool:
        """Create a client (``C…``) or supplier (``F…``) account; False when it existed already."""
        route = "/compta/comptes/client" if kind == "client" else "/compta/comptes/fournisseur"
        try:
            self._write(route, {"CodeDossier": dossier, "Code": code, "Lib": label}, unknown_on_failure=False)
        except HubsyncError as exc:
            if exc.code == "compteExisteDeja":
                return False
            raise
        return True

    def post_entry(self, payload: dict[str, Any]) -> int:
        """Post an entry; its outcome is unknown (``PostOutcomeUnknown``) unless ACD answered clearly."""
        body = self._write("/compta/ecriture", payload, unknown_on_failure=True)
        entry_id = body.get("IdEcriture")
        if not isinstance(entry_id, int):
            raise PostOutcomeUnknown("ACD accepted the entry but gave no IdEcriture")
        return entry_id

    def find_entries(
        self, dossier: str, libelle: str, journal: str | None = None, year: int | None = None, month: int | None = None
    ) -> list[dict[str, Any]]:
        """Entries whose line labels contain ``libelle`` (new entries show up after ACD indexed them)."""
        query: dict[str, Any] = {"CodeDossier": dossier, "Libelle": libelle}
        if journal:
            query["Journal"] = journal
        if year:
            query["Annee"] = year
        if month:
            query["Mois"] = month
        body = self._json(self._send("POST", "/compta/ecritures/filtrer", json=query))
        if not isinstance(body, list):
            raise MalformedResponse("ACD answered ecritures/filtrer with something other than an array")
        return [item for item in body if isinstance(item, dict)]

    def fec(self, dossier: str, year: int) -> str:
        """The year's entries as a FEC file (tab-separated)."""
        return self._send("POST", "/compta/fec", json={"CodeDossier": dossier, "Annee": year}).text

    def upload_document(self, dossier: str, folder_id: int, name: str, path: Path, content_type: str) -> int:
        """Upload a file to the GED; ``DocumentExists`` is raised as a ``HubsyncError`` with code documentExisteDeja."""
        with path.open("rb") as fh:
            response = self._send(
                "POST",
                "/ged/documents",
                write=True,
                ged=True,
                ok=(200, 201),
                params={"CodeDossier": dossier},
                data={"idArboGed": str(folder_id)},
                files={"file": (name, fh, content_type)},
            )
        body = _json_or_none(response)
        if not isinstance(body, dict) or not isinstance(body.get("Id"), int):
            raise MalformedResponse("ACD stored the document but gave no Id")
        doc_id: int = body["Id"]
        return doc_id

    def find_documents(self, dossier: str, name: str | None = None) -> list[dict[str, Any]]:
        """GED documents, optionally by name."""
        query: dict[str, Any] = {"CodeDossier": dossier}
        if name:
            query["Nom"] = name
        body = self._json(self._send("POST", "/ged/documents/filtrer", json=query))
        if not isinstance(body, list):
            raise MalformedResponse("ACD answered ged/documents/filtrer with something other than an array")
        return [item for item in body if isinstance(item, dict)]


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None
