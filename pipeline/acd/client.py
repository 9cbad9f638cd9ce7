"""The ACD i-Suite Expert client: the routes and shapes of the ACD contract (version 2), nothing more.

A client is bound to ONE dossier (or to none, for the calls that need no session): its token is the
dossier's own (``pipeline.acd.tokens``), opened on that dossier right after its login and never on another,
so no call can land in a dossier another thread opened. One ``httpx.Client`` per worker process serves every
firm (connections are pooled per host); every route is relative to the API base found by discovery, and every
call goes through the shared send loop (``pipeline.http``) with ACD's auth and error table.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from pipeline.acd.answers import as_int, ci_get, envelope, items
from pipeline.acd.discovery import API_VERSION, login_request, refusal, token_of
from pipeline.acd.errors import (
    AUTHENTICATION_HINT,
    ENTRY,
    GED,
    PLAIN,
    AccountLocked,
    AcdErrors,
    AcdRefused,
    EntryRefused,
    FecUnavailable,
    NotAnISuiteServer,
    OutsideFiscalYears,
    is_session_lost,
)
from pipeline.acd.tokens import Token, TokenKey, TokenStore, count
from pipeline.errors import AuthenticationFailed, HubsyncError, MalformedResponse, UnexpectedAnswer
from pipeline.http import Answer, Failure, Sender, Status
from pipeline.secrets import Secret

LoginGate = Callable[[], AbstractContextManager[None]]
"""Wraps every login: the pipeline passes one that lets a single worker log in at a time per server and API
code, and refuses a password ACD already refused (ACD locks an API code after five failed logins)."""


@dataclass(frozen=True)
class AcdCredentials:
    """What reaches a firm's API: the API base found at connect, CNX, API code; the password stays a ``Secret``."""

    api_base: str
    cnx: str
    api_code: str
    password: Secret

    @property
    def key(self) -> tuple[str, str, str]:
        """Identifies one API access at one server (the login gate's key). Case-folded throughout: ACD counts
        failed logins per API code whatever case the CNX or the code was typed in, so connections that differ
        only by case must share one gate and one refused-password record, or each would spend a failed login."""
        return (self.api_base.rstrip("/").casefold(), self.cnx.strip().casefold(), self.api_code.strip().casefold())

    def token_key(self, dossier: str | None) -> TokenKey:
        """The key of the token for ``dossier`` (None: a token no dossier is ever opened with)."""
        return TokenKey(self.api_base.rstrip("/"), self.cnx, self.api_code, dossier)


def _timeout_extension(timeout: httpx.Timeout) -> dict[str, Any]:
    return {"timeout": timeout.as_dict()}


class AcdAuth(httpx.Auth):
    """Sends the dossier's token (``UUID``) and ``CNX``. No token, or an idle one: log in (gated), open the
    session on this dossier, publish the token. A 401: log in again the same way and repeat once. ACD's
    "pas initialisée" 500: open the session again on the same token and repeat once."""

    requires_response_body = True

    def __init__(
        self,
        creds: AcdCredentials,
        dossier: str | None,
        tokens: TokenStore,
        gate: LoginGate | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> None:
        self.creds = creds
        self.dossier = dossier
        self.tokens = tokens
        self.gate = gate
        self.timeout = timeout or httpx.Timeout(30.0)
        self.key = creds.token_key(dossier)
        self.base = creds.api_base.rstrip("/")

    def __repr__(self) -> str:
        return f"AcdAuth(api_base={self.base!r}, api_code={self.creds.api_code!r}, dossier={self.dossier!r})"

    # -- the pieces ------------------------------------------------------------------------------

    def session_request(self, token: str) -> httpx.Request:
        """``POST {base}/v1/sessions/dossier/{code}``: make ``token`` work on this client's dossier."""
        assert self.dossier is not None, "a token without a dossier never opens a session"
        return httpx.Request(
            "POST",
            f"{self.base}{API_VERSION}/sessions/dossier/{quote(self.dossier, safe='')}",
            headers={"UUID": token, "CNX": self.creds.cnx},
            content=b"",
            extensions=_timeout_extension(self.timeout),
        )

    def _session_body_request(self, token: str) -> httpx.Request:
        # The other form some servers serve: the dossier code as a bare JSON string.
        return httpx.Request(
            "POST",
            f"{self.base}{API_VERSION}/sessions/dossier",
            headers={"UUID": token, "CNX": self.creds.cnx},
            json=self.dossier,
            extensions=_timeout_extension(self.timeout),
        )

    def _open_session(self, token: str) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield self.session_request(token)
        if response.status_code in (404, 405) and not _says_dossier_unknown(response):
            response = yield self._session_body_request(token)
        if response.status_code not in (200, 204):
            raise PLAIN(Failure.of(response))
        count(self.tokens.store, "sessions", self.key.label)

    def _login(self) -> Generator[httpx.Request, httpx.Response, str]:
        response = yield login_request(
            self.base, self.creds.cnx, self.creds.api_code, self.creds.password, self.timeout
        )
        token = token_of(response)
        if token is not None:
            count(self.tokens.store, "logins", self.key.label)
            return token
        refused = refusal(response, self.base, self.creds.api_code)
        if refused is not None:
            raise refused
        if response.status_code == 423:
            raise AccountLocked(
                f"ACD at {self.base} has locked API code {self.creds.api_code!r}", status=423, code="compteBloque"
            )
        if response.status_code == 401:
            raise AuthenticationFailed(
                f"ACD at {self.base} refused the login of API code {self.creds.api_code!r}; it is not tried again",
                status=401,
                code="authentificationInvalide",
                hint=AUTHENTICATION_HINT,
            )
        raise PLAIN(Failure.of(response))

    def _gated_login(self, stale: Token | None) -> Generator[httpx.Request, httpx.Response, Token]:
        with self.gate() if self.gate is not None else contextlib.nullcontext():
            current = self.tokens.get(self.key)
            if current is not None and not current.idle and (stale is None or current.fp != stale.fp):
                return current  # another worker replaced the stale token while this one waited
            value = yield from self._login()
            if self.dossier is not None:
                yield from self._open_session(value)
            return self.tokens.put(self.key, value)

    def _with(self, request: httpx.Request, token: Token) -> httpx.Request:
        request.headers["UUID"] = token.value
        request.headers["CNX"] = self.creds.cnx
        return request

    # -- the flow --------------------------------------------------------------------------------

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.tokens.get(self.key)
        if token is None or token.idle:
            token = yield from self._gated_login(token)
        response = yield self._with(request, token)
        if response.status_code == 401:
            # expired, idle on the server, killed by a restart, or never received: the same remedy
            self.tokens.drop(self.key, token)
            token = yield from self._gated_login(token)
            response = yield self._with(request, token)
        elif self.dossier is not None and is_session_lost(response.status_code, response.content):
            yield from self._open_session(token.value)
            count(self.tokens.store, "session_reopens", self.key.label)
            response = yield self._with(request, token)
        if response.status_code != 401:
            self.tokens.touch(self.key, token)


def _says_dossier_unknown(response: httpx.Response) -> bool:
    text = response.content.decode("utf-8", "replace").casefold()
    return "introuvable" in text


def amount(value: Decimal) -> float:
    """A 2-decimal amount as the JSON number ACD wants; refuses a value a float would change."""
    number = float(value)
    if Decimal(repr(number)).quantize(Decimal("0.01")) != value.quantize(Decimal("0.01")):
        raise ValueError(f"amount {value} cannot be sent exactly as a JSON number")
    return number


class AcdClient:
    """The routes of the ACD contract for one dossier (or none), raising the error tree of ``pipeline.acd.errors``."""

    def __init__(
        self,
        http: httpx.Client,
        creds: AcdCredentials,
        dossier: str | None,
        tokens: TokenStore,
        gate: LoginGate | None = None,
    ) -> None:
        self.http = http
        self.creds = creds
        self.dossier = dossier
        self.tokens = tokens
        self.auth = AcdAuth(creds, dossier, tokens, gate, http.timeout)
        self.base = creds.api_base.rstrip("/") + API_VERSION
        self.api = Sender(http, name="ACD", errors=PLAIN, base=self.base, auth=self.auth)

    def __repr__(self) -> str:
        return (
            f"AcdClient(api_base={self.creds.api_base!r}, api_code={self.creds.api_code!r}, dossier={self.dossier!r})"
        )

    # -- plumbing --------------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        route: str,
        *,
        write: bool = False,
        errors: AcdErrors = PLAIN,
        ok: Status = (200,),
        timeout: httpx.Timeout | None = None,
        **kwargs: Any,
    ) -> Answer:
        if self.dossier is None and route != "/dossiers":
            raise RuntimeError(f"{route} needs a dossier session; this client has none")
        return self.api.call(method, route, write=write, errors=errors, ok=ok, timeout=timeout, **kwargs)

    def _array(self, route: str, *wrappers: str) -> list[dict[str, Any]]:
        answer = self._send("GET", route)
        body = answer.json()
        found = items(body, *wrappers)
        if found is None:
            code, errors = envelope(body)
            if errors or code == 0:
                raise PLAIN(answer.failure())
            raise MalformedResponse(f"ACD answered {route} with something other than a list")
        return found

    def _write(self, route: str, payload: Any, *, entry: bool = False) -> None:
        table = ENTRY if entry else PLAIN
        answer = self._send("POST", route, write=True, errors=table, ok=(200, 201), json=payload)
        code, errors = envelope(answer.data())
        if code == 1 and not errors:
            return
        if code is None:
            raise table(answer.failure())
        if not errors:
            refused = EntryRefused if entry else AcdRefused
            raise refused(f"ACD answered KO without any reason on {route}", status=answer.status_code)
        raise table(answer.failure(write=False))

    # -- session ---------------------------------------------------------------------------------

    def publish_unbound(self, token: str) -> None:
        """Keep a token no session was opened with, for the calls that need none (``/v1/dossiers``)."""
        if self.dossier is not None:
            raise RuntimeError("only a client without a dossier keeps a token without a session")
        self.tokens.put(self.auth.key, token)

    # -- routes ----------------------------------------------------------------------------------

    def dossiers(self) -> list[dict[str, Any]]:
        """Every dossier of the firm (``Id``, ``Titre``…): nothing says which are shared."""
        return self._array("/dossiers")

    def journals(self) -> list[dict[str, Any]]:
        """The dossier's journals (``Code``, ``Libelle``, ``Nature``, ``NumeroFacture``…)."""
        return self._array("/compta/journal")

    def accounts(self, kind: str) -> list[dict[str, Any]]:
        """``generaux``, ``clients`` or ``fournisseurs`` accounts (``Code``, ``Lib``, ``CptInactif``…)."""
        return self._array(f"/compta/comptes/{kind}")

    def fiscal_years(self) -> list[dict[str, Any]]:
        """The dossier's fiscal years (``DateDebut``, ``DateFin``, ``Courant``, ``Cloture``)."""
        return self._array("/compta/exercices")

    def ged_tree(self) -> list[dict[str, Any]]:
        """The GED folders, nested (the answer is an object ``{"Arborescences": […]}``; an array is tolerated)."""
        return self._array("/ged/arborescence", "Arborescences")

    def filing_plan(self, journal: str) -> dict[str, Any] | None:
        """The GED folder where ``journal``'s documents are filed (``Id``, ``Libelle``), or None when it has none."""
        route = f"/compta/planClassementEcriture/{quote(journal, safe='')}"
        try:
            answer = self._send("GET", route)
        except (AcdRefused, UnexpectedAnswer, NotAnISuiteServer) as exc:
            if "planclassementintrouvable" in (exc.code or "").casefold() or "introuvable" in exc.message.casefold():
                return None
            raise
        body = answer.data()
        code, errors = envelope(body)
        if errors or code == 0:
            if any("introuvable" in (k + t).casefold() for k, t in errors):
                return None
            raise PLAIN(answer.failure())
        folder = as_int(ci_get(body, "Id"))
        if folder is None:
            raise MalformedResponse(f"ACD answered {route} without a folder Id")
        return {"Id": folder, "Libelle": str(ci_get(body, "Libelle") or "")}

    def create_account(self, kind: str, code: str, label: str) -> bool:
        """Create a client (``C…``) or supplier (``F…``) account; False when it existed already."""
        route = "/compta/comptes/client" if kind == "client" else "/compta/comptes/fournisseur"
        try:
            self._write(route, {"Code": code, "Lib": label})
        except HubsyncError as exc:
            if (exc.code or "").casefold() == "compteexistedeja":
                return False
            raise
        return True

    def post_entry(self, payload: dict[str, Any]) -> None:
        """Post an entry. ACD gives no id back; a failure whose outcome is unknown is ``PostOutcomeUnknown``."""
        self._write("/compta/ecriture", payload, entry=True)

    def fec(self, year: int, timeout_seconds: float) -> str:
        """The FEC of the fiscal year ending in ``year`` (tab-separated text); may take long on a busy dossier."""
        timeout = httpx.Timeout(timeout_seconds, connect=self.http.timeout.connect)
        answer = self._send("POST", "/compta/fec", json={"Annee": year}, timeout=timeout, ok=(200, 400, 404))
        code, errors = envelope(answer.data())
        if errors or code == 0:
            error = PLAIN(answer.failure())
            if isinstance(error, OutsideFiscalYears):
                raise FecUnavailable(
                    f"ACD has no FEC for {year}: {error.message}", status=answer.status_code, code=error.code
                )
            raise error
        if answer.status_code != 200:
            raise PLAIN(answer.failure())
        return answer.content.decode("utf-8-sig", "replace")

    def upload_document(self, folder_id: int, name: str, path: Path, content_type: str) -> int:
        """Stream a file into a GED folder (0: the root); returns the document's id."""
        with path.open("rb") as fh:
            answer = self._send(
                "POST",
                "/ged/documents",
                write=True,
                errors=GED,
                ok=(200, 201),
                data={"idArboGed": str(folder_id)},
                files={"file": (name, fh, content_type)},
            )
        body = answer.data()
        doc_id = as_int(ci_get(body, "Id"))
        if doc_id is None:
            code, errors = envelope(body)
            if errors or code == 0:
                raise GED(answer.failure(write=False))  # refused: nothing was stored
            raise GED(answer.failure())
        return doc_id

    def find_documents(self, name: str) -> list[dict[str, Any]] | None:
        """GED documents named ``name`` (``Id``, ``NomFichier``…); None when this server has no such route."""
        try:
            answer = self._send("POST", "/ged/documents/filtrer", errors=GED, json={"NomFichier": name})
        except (NotAnISuiteServer, UnexpectedAnswer) as exc:
            if exc.status in (404, 405):
                return None
            raise
        found = items(answer.data())
        if found is None:
            raise MalformedResponse("ACD answered ged/documents/filtrer with something other than a list")
        return [d for d in found if str(ci_get(d, "NomFichier") or ci_get(d, "Nom") or "") == name]
