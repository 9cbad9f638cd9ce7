"""The ACD i-Suite Expert sandbox: several firms' servers, each serving the ACD contract exactly.

Each ``AcdFirm`` is served under ``/acd/{name}/iSuiteExpert`` (the i-Suite URL an accountant types) and has
its own CNX code, API users, dossiers, tokens, lockouts, fault switch and call log, so that one firm's server
being off affects that firm only. Where the contract is silent the sandbox is strict: exact route names,
``application/json`` bodies, no unknown fields, amounts as JSON numbers with at most 2 decimals.

Only the size and SHA-256 of uploaded GED files are kept, never their bytes.
"""

from __future__ import annotations

import calendar
import copy
import hmac
import json
import logging
import os
import random
import re
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pipeline.sandbox.faults import Fault, FaultSwitch, parse_faults
from pipeline.sandbox.http import (
    BadBody,
    ConnectionAbort,
    Handler,
    HttpError,
    Request,
    Response,
    Router,
    html_response,
    json_response,
    text_response,
)
from pipeline.sandbox.multipart import StreamedUpload

try:
    from python_multipart.multipart import MultipartParser, parse_options_header
except ImportError:  # pragma: no cover - python-multipart before 0.0.13 only ships the old name
    from multipart.multipart import MultipartParser, parse_options_header  # type: ignore[no-redef]

logger = logging.getLogger(__name__)

API = "/api/v1"
TOKEN_CHARS = 30
TOKEN_LIFETIME_SECONDS = 60 * 60
TOKEN_IDLE_SECONDS = 15 * 60
LOCKOUT_FAILURES = 5
LOCKOUT_SECONDS = 10 * 60
GED_MAX_BYTES = 25 * 1024 * 1024
LIBELLE_MAX_CHARS = 50
TIERS_CODE_MAX_CHARS = 13
DEFAULT_INDEX_LAG_SECONDS = 2.0
FIRST_ENTRY_ID = 1
FIRST_DOCUMENT_ID = 8801
CALLS_KEPT = 10_000
ACCOUNT_KINDS = ("generaux", "clients", "fournisseurs")
JOURNAL_NATURES = ("Achat", "Vente", "Tresorerie", "OperationDiverse")
FEC_COLUMNS = (
    "JournalCode", "JournalLib", "EcritureNum", "EcritureDate", "CompteNum", "CompteLib", "CompAuxNum",
    "CompAuxLib", "PieceRef", "PieceDate", "EcritureLib", "Debit", "Credit", "EcritureLet", "DateLet",
    "ValidDate", "Montantdevise", "Idevise",
)  # fmt: skip

_ENTRY_FIELDS = {"CodeDossier", "Journal", "Mois", "Annee", "LignesEcriture"}
_LINE_REQUIRED = {"Jour", "Compte", "Libelle", "Debit", "Credit"}
_LINE_OPTIONAL = {"NumeroPiece", "NumeroFacture", "ReferenceGed"}
_DENIED = "Vous n'avez pas les droits d'accès à cette ressource"


# -- seed data -----------------------------------------------------------------------------------


@dataclass
class AcdDossier:
    """One ACD dossier (an accounting file) as its firm's server holds it."""

    code: str
    titre: str
    societe: str
    partage: bool = True
    journals: list[dict[str, Any]] = field(default_factory=list)
    generaux: list[dict[str, str]] = field(default_factory=list)
    clients: list[dict[str, str]] = field(default_factory=list)
    fournisseurs: list[dict[str, str]] = field(default_factory=list)
    ged_tree: list[dict[str, Any]] = field(default_factory=list)
    ged_denied_folders: set[int] = field(default_factory=set)
    ged_rights: bool = True
    closed_years: set[int] = field(default_factory=set)
    date_creation: str = "2021-01-04T09:00:00"
    date_modification: str = "2026-11-02T17:45:00"

    def to_dict(self) -> dict[str, Any]:
        """The dossier as JSON-ready data (sets as sorted lists)."""
        data = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}
        data["ged_denied_folders"] = sorted(self.ged_denied_folders)
        data["closed_years"] = sorted(self.closed_years)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AcdDossier:
        """A dossier from ``to_dict``-shaped data; raises ``ValueError`` on unknown fields."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown dossier fields: {', '.join(sorted(unknown))}")
        values = copy.deepcopy(dict(data))
        values["ged_denied_folders"] = {int(v) for v in values.get("ged_denied_folders", [])}
        values["closed_years"] = {int(v) for v in values.get("closed_years", [])}
        return cls(**values)


@dataclass
class AcdFirm:
    """One accounting firm's i-Suite server: its CNX code, API users and dossiers."""

    name: str
    cnx: str
    api_users: dict[str, str]
    dossiers: dict[str, AcdDossier]

    def __repr__(self) -> str:
        return f"AcdFirm(name={self.name!r}, cnx={self.cnx!r}, api_users=[secure], dossiers={list(self.dossiers)})"

    def to_dict(self) -> dict[str, Any]:
        """The firm as JSON-ready data (passwords included: this is test seed data)."""
        return {
            "name": self.name,
            "cnx": self.cnx,
            "api_users": dict(self.api_users),
            "dossiers": [dossier.to_dict() for dossier in self.dossiers.values()],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AcdFirm:
        """A firm from ``to_dict``-shaped data; ``dossiers`` may be a list or a dict keyed by code."""
        unknown = set(data) - {"name", "cnx", "api_users", "dossiers"}
        if unknown:
            raise ValueError(f"unknown firm fields: {', '.join(sorted(unknown))}")
        raw = data.get("dossiers", [])
        items = [{"code": code, **value} for code, value in raw.items()] if isinstance(raw, Mapping) else raw
        dossiers = [AcdDossier.from_dict(item) for item in items]
        return cls(
            name=str(data["name"]),
            cnx=str(data["cnx"]),
            api_users={str(k): str(v) for k, v in dict(data.get("api_users", {})).items()},
            dossiers={dossier.code: dossier for dossier in dossiers},
        )


def _chart() -> list[dict[str, str]]:
    return [
        {"Code": "401000", "Lib": "Fournisseurs"},
        {"Code": "411000", "Lib": "Clients"},
        {"Code": "421000", "Lib": "Personnel - rémunérations dues"},
        {"Code": "445660", "Lib": "TVA déductible sur autres biens et services"},
        {"Code": "445710", "Lib": "TVA collectée"},
        {"Code": "467000", "Lib": "Autres comptes débiteurs ou créditeurs"},
        {"Code": "471000", "Lib": "Compte d'attente"},
        {"Code": "512000", "Lib": "Banque"},
        {"Code": "606100", "Lib": "Fournitures non stockables (eau, énergie)"},
        {"Code": "606400", "Lib": "Fournitures administratives"},
        {"Code": "607000", "Lib": "Achats de marchandises"},
        {"Code": "613200", "Lib": "Locations immobilières"},
        {"Code": "625100", "Lib": "Voyages et déplacements"},
        {"Code": "625600", "Lib": "Missions"},
        {"Code": "626000", "Lib": "Frais postaux et de télécommunications"},
        {"Code": "627000", "Lib": "Services bancaires et assimilés"},
        {"Code": "706000", "Lib": "Prestations de services"},
        {"Code": "707000", "Lib": "Ventes de marchandises"},
    ]


def _journals() -> list[dict[str, Any]]:
    return [
        {"Code": "AC", "Libelle": "Achats", "Nature": "Achat", "NumeroFacture": True},
        {"Code": "VT", "Libelle": "Ventes", "Nature": "Vente", "NumeroFacture": True},
        {"Code": "BQ", "Libelle": "Banque", "Nature": "Tresorerie", "NumeroFacture": False},
        {"Code": "OD", "Libelle": "Opérations diverses", "Nature": "OperationDiverse", "NumeroFacture": False},
        {"Code": "NF", "Libelle": "Notes de frais", "Nature": "OperationDiverse", "NumeroFacture": False},
    ]


def _ged_tree() -> list[dict[str, Any]]:
    return [
        {
            "Id": 1,
            "Libelle": "Achats",
            "Arborescences": [{"Id": 11, "Libelle": "Factures fournisseurs", "Arborescences": []}],
        },
        {
            "Id": 2,
            "Libelle": "Ventes",
            "Arborescences": [{"Id": 21, "Libelle": "Factures clients", "Arborescences": []}],
        },
        {"Id": 3, "Libelle": "Banque", "Arborescences": []},
        {"Id": 4, "Libelle": "Notes de frais", "Arborescences": []},
        {
            "Id": 9,
            "Libelle": "Cabinet",
            "Arborescences": [{"Id": 91, "Libelle": "Lettres de mission", "Arborescences": []}],
        },
    ]


def demo_dossier(code: str, titre: str, societe: str, **overrides: Any) -> AcdDossier:
    """A realistic small dossier (French chart, journals, suppliers, a client, a GED tree)."""
    values: dict[str, Any] = {
        "journals": _journals(),
        "generaux": _chart(),
        "clients": [{"Code": "CDURAND", "Lib": "Durand SARL"}],
        "fournisseurs": [{"Code": "FORANGE", "Lib": "Orange SA"}, {"Code": "FEDF", "Lib": "EDF"}],
        "ged_tree": _ged_tree(),
        "ged_denied_folders": {9},
        "closed_years": {2023},
    }
    values.update(overrides)
    return AcdDossier(code=code, titre=titre, societe=societe, **values)


def demo_acd_firms() -> list[AcdFirm]:
    """The demo firms: dupont (CNX), martin (CNX123) and leroy (CNX7), API code QONTO each."""
    dupont = [
        demo_dossier("DUPONT01", "Boulangerie Dupont", "Boulangerie Dupont SARL"),
        demo_dossier("DUPONT02", "Garage Dupont", "Garage Dupont SAS", partage=False),
        demo_dossier("DUPONT03", "Dupont Immobilier", "SCI Dupont Immobilier", generaux=[]),
    ]
    return [
        AcdFirm("dupont", "CNX", {"QONTO": "dupont-secret"}, {d.code: d for d in dupont}),
        AcdFirm(
            "martin",
            "CNX123",
            {"QONTO": "martin-secret"},
            {"MARTIN01": demo_dossier("MARTIN01", "Pharmacie Martin", "Pharmacie Martin SELARL")},
        ),
        AcdFirm(
            "leroy",
            "CNX7",
            {"QONTO": "leroy-secret"},
            {"LEROY01": demo_dossier("LEROY01", "Leroy Conseil", "Leroy Conseil EURL")},
        ),
    ]


# -- runtime state -------------------------------------------------------------------------------


@dataclass
class _Token:
    api_code: str
    issued_at: float
    last_used: float

    def expired(self, now: float) -> bool:
        return now >= self.issued_at + TOKEN_LIFETIME_SECONDS or now >= self.last_used + TOKEN_IDLE_SECONDS


@dataclass
class _Failures:
    count: int = 0
    locked_until: float | None = None


@dataclass
class _DossierState:
    dossier: AcdDossier
    entries: list[dict[str, Any]] = field(default_factory=list)
    documents: list[dict[str, Any]] = field(default_factory=list)


class _FirmState:
    def __init__(self, firm: AcdFirm, rng: random.Random) -> None:
        self.firm = copy.deepcopy(firm)
        self.name = firm.name
        self.cnx = firm.cnx
        self.lock = threading.RLock()
        self.dossiers = {code: _DossierState(dossier) for code, dossier in self.firm.dossiers.items()}
        self.tokens: dict[str, _Token] = {}
        self.failures: dict[str, _Failures] = {}
        self.logins = 0
        self.next_entry_id = FIRST_ENTRY_ID
        self.next_document_id = FIRST_DOCUMENT_ID
        self.calls: deque[tuple[str, str, int]] = deque(maxlen=CALLS_KEPT)
        self.faults = FaultSwitch(rng)


# -- responses -----------------------------------------------------------------------------------


def _envelope(code: str, description: str) -> dict[str, Any]:
    return {"codeRetour": 0, "description": "KO", "listeErreurs": [{"erreur": code, "description": description}]}


def _error(status: int, code: str, description: str) -> Response:
    return json_response(_envelope(code, description), status)


def _ko(code: str, description: str, more: Iterable[tuple[str, str]] = ()) -> Response:
    body = _envelope(code, description)
    body["listeErreurs"].extend({"erreur": c, "description": d} for c, d in more)
    return json_response(body)


def _ok(**extra: Any) -> Response:
    return json_response({"codeRetour": 1, "description": "OK", "listeErreurs": [], **extra})


class _Invalid(Exception):
    """A request body that does not have the route's shape (``donneesInvalides``)."""


def _not_isuite(request: Request) -> Response:
    return html_response(404, detail="The resource you are looking for has been removed or is unavailable.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- the sandbox ---------------------------------------------------------------------------------


class AcdSandbox:
    """Every sandboxed ACD firm server, mounted by ``SandboxServer`` under ``/acd``."""

    def __init__(
        self,
        firms: Iterable[AcdFirm] | Mapping[str, AcdFirm],
        *,
        seed: int = 0,
        index_lag_seconds: float = DEFAULT_INDEX_LAG_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        items = list(firms.values()) if isinstance(firms, Mapping) else list(firms)
        self._seed_firms = {firm.name: copy.deepcopy(firm) for firm in items}
        self._seed = seed
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.index_lag_seconds = index_lag_seconds
        self.clock = clock
        self._global_faults = FaultSwitch(self._rng)
        self._firms = {name: _FirmState(firm, self._rng) for name, firm in self._seed_firms.items()}
        self._router = self._build_router()

    @classmethod
    def from_json(cls, source: str | os.PathLike[str] | Mapping[str, Any] | list[Any], **kwargs: Any) -> AcdSandbox:
        """Firms from a JSON file (or already-loaded data): ``{"firms": [AcdFirm.to_dict(), ...]}`` or a list."""
        data: Any = source
        if isinstance(source, str | os.PathLike):
            data = json.loads(Path(source).read_text(encoding="utf-8"))
        if isinstance(data, Mapping):
            data = data.get("firms", [])
        if not isinstance(data, list):
            raise ValueError("expected a list of firms or an object with a 'firms' list")
        return cls([AcdFirm.from_dict(item) for item in data], **kwargs)

    # -- Python API ------------------------------------------------------------------------------

    def firm_names(self) -> list[str]:
        """The names of the sandboxed firms."""
        return list(self._firms)

    @property
    def firms(self) -> dict[str, AcdFirm]:
        """The sandboxed firms by name, as seeded (copies: changing them changes nothing)."""
        return {name: copy.deepcopy(firm) for name, firm in self._seed_firms.items()}

    def _firm(self, name: str) -> _FirmState:
        try:
            return self._firms[name]
        except KeyError:
            raise KeyError(f"no sandboxed ACD firm named {name!r}") from None

    def _dossier_state(self, firm: str, dossier: str) -> tuple[_FirmState, _DossierState]:
        state = self._firm(firm)
        try:
            return state, state.dossiers[dossier]
        except KeyError:
            raise KeyError(f"firm {firm!r} has no dossier {dossier!r}") from None

    def set_fault(self, firm: str | None, fault: Fault) -> None:
        """Activate ``fault`` on one firm's server (after those already active), or on every firm if None.

        A firm's own faults are consulted first; the every-firm faults apply when none of them matched.
        """
        if firm is None:
            self._global_faults.add(fault)
        else:
            self._firm(firm).faults.add(fault)

    def clear_faults(self, firm: str | None = None) -> None:
        """Deactivate one firm's faults, or every fault of every firm when ``firm`` is None."""
        if firm is not None:
            self._firm(firm).faults.clear()
            return
        self._global_faults.clear()
        for state in self._firms.values():
            state.faults.clear()

    def faults(self, firm: str | None = None) -> list[Fault]:
        """The active faults of one firm, or those set for every firm when ``firm`` is None."""
        return self._global_faults.active() if firm is None else self._firm(firm).faults.active()

    def entries(self, firm: str, dossier: str) -> list[dict[str, Any]]:
        """The stored entries as posted, with ``IdEcriture`` and ``committed_at`` (visible or not yet)."""
        state, dossier_state = self._dossier_state(firm, dossier)
        with state.lock:
            return copy.deepcopy(dossier_state.entries)

    def documents(self, firm: str, dossier: str) -> list[dict[str, Any]]:
        """The GED documents: ``Id``, ``Nom``, ``Taille``, ``DateHeureDepot``, ``idArboGed``, ``sha256``."""
        state, dossier_state = self._dossier_state(firm, dossier)
        with state.lock:
            return copy.deepcopy(dossier_state.documents)

    def accounts(self, firm: str, dossier: str, kind: str) -> list[dict[str, Any]]:
        """The ``generaux``, ``clients`` or ``fournisseurs`` accounts of a dossier."""
        if kind not in ACCOUNT_KINDS:
            raise ValueError(f"kind must be one of {ACCOUNT_KINDS}")
        state, dossier_state = self._dossier_state(firm, dossier)
        with state.lock:
            return copy.deepcopy(getattr(dossier_state.dossier, kind))

    def add_account(self, firm: str, dossier: str, kind: str, code: str, lib: str) -> None:
        """Add an account as if someone created it in ACD (no checks, no duplicates)."""
        if kind not in ACCOUNT_KINDS:
            raise ValueError(f"kind must be one of {ACCOUNT_KINDS}")
        state, dossier_state = self._dossier_state(firm, dossier)
        with state.lock:
            accounts: list[dict[str, str]] = getattr(dossier_state.dossier, kind)
            if all(account["Code"] != code for account in accounts):
                accounts.append({"Code": code, "Lib": lib})

    def calls(self, firm: str) -> list[tuple[str, str, int]]:
        """``(method, path after the firm's i-Suite URL, status or 0 if dropped)`` of every call, in order."""
        state = self._firm(firm)
        with state.lock:
            return list(state.calls)

    def logins(self, firm: str) -> int:
        """How many successful logins the firm's server answered."""
        return self._firm(firm).logins

    def set_password(self, firm: str, api_code: str, password: str) -> None:
        """Change (or create) an API access's password, as a firm does in ACD; live tokens stay valid."""
        state = self._firm(firm)
        with state.lock:
            state.firm.api_users[api_code] = password

    def expire_tokens(self, firm: str | None = None) -> None:
        """Expire every token of one firm (or of all firms): the next call answers 401 ``jetonExpire``."""
        for state in [self._firm(firm)] if firm is not None else list(self._firms.values()):
            with state.lock:
                state.tokens.clear()

    def state(self, firm: str) -> dict[str, Any]:
        """A firm's whole state as JSON-ready data (what ``GET /_sandbox/acd/{firm}/state`` answers)."""
        state = self._firm(firm)
        with state.lock:
            return {
                "dossiers": {
                    code: {
                        "entries": copy.deepcopy(ds.entries),
                        "documents": copy.deepcopy(ds.documents),
                        "accounts": {kind: copy.deepcopy(getattr(ds.dossier, kind)) for kind in ACCOUNT_KINDS},
                    }
                    for code, ds in state.dossiers.items()
                },
                "logins": state.logins,
                "calls": [list(call) for call in state.calls],
                "faults": [f.to_dict() for f in state.faults.active()],
            }

    def reset(self) -> None:
        """Back to the seed state: entries, documents, accounts, faults, tokens, lockouts, call logs."""
        with self._lock:
            self._rng.seed(self._seed)
            self._global_faults = FaultSwitch(self._rng)
            self._firms = {name: _FirmState(firm, self._rng) for name, firm in self._seed_firms.items()}

    # -- HTTP: dispatch, faults, CNX, token ------------------------------------------------------

    _FIRM_PATH = re.compile(r"^/(?P<firm>[^/]+)/iSuiteExpert(?P<rest>/.*)?$")

    def handle(self, request: Request) -> Response:
        """Answer a request under ``/acd``: ``/{firm}/iSuiteExpert/api/v1/...``."""
        match = self._FIRM_PATH.match(request.path)
        state = self._firms.get(unquote(match.group("firm"))) if match else None
        if match is None or state is None:
            return _not_isuite(request)
        path = match.group("rest") or "/"
        sub = request.sub(path, f"/{match.group('firm')}/iSuiteExpert", {"firm": state.name})
        sub.context["firm"] = state
        switch = state.faults
        fault = switch.take(request.method, path)
        if fault is None:
            switch = self._global_faults
            fault = switch.take(request.method, path)
        try:
            response = switch.respond(fault, lambda: self._serve(state, sub))
        except ConnectionAbort:
            self._record(state, request.method, path, 0)
            logger.debug("ACD sandbox %s: dropped %s %s", state.name, request.method, path)
            raise
        self._record(state, request.method, path, 0 if response.abort_after_bytes is not None else response.status)
        return response

    @staticmethod
    def _record(state: _FirmState, method: str, path: str, status: int) -> None:
        with state.lock:
            state.calls.append((method, path, status))

    def _serve(self, state: _FirmState, request: Request) -> Response:
        if request.header("CNX") != state.cnx:
            return _not_isuite(request)
        try:
            return self._router.handle(request)
        except BadBody as exc:
            if exc.too_large:
                return _error(413, "fichierTropVolumineux", str(exc))
            return _error(400, "donneesInvalides", str(exc))

    def _build_router(self) -> Router:
        router = Router(not_found=_not_isuite)
        router.add("POST", f"{API}/authentification", self._login)
        routes: list[tuple[str, str, Callable[[_FirmState, Request], Response]]] = [
            ("GET", "/dossiers", self._list_dossiers),
            ("GET", "/compta/journal", self._list_journals),
            ("GET", "/compta/comptes/generaux", self._reader("generaux")),
            ("GET", "/compta/comptes/clients", self._reader("clients")),
            ("GET", "/compta/comptes/fournisseurs", self._reader("fournisseurs")),
            ("POST", "/compta/comptes/client", self._creator("clients", "C")),
            ("POST", "/compta/comptes/fournisseur", self._creator("fournisseurs", "F")),
            ("POST", "/compta/ecriture", self._post_entry),
            ("POST", "/compta/ecritures/filtrer", self._filter_entries),
            ("POST", "/compta/fec", self._fec),
            ("GET", "/ged/arborescence", self._ged_tree),
            ("POST", "/ged/documents", self._upload),
            ("POST", "/ged/documents/filtrer", self._filter_documents),
        ]
        for method, route, handler in routes:
            router.add(method, f"{API}{route}", self._authenticated(handler))
        return router

    def _authenticated(self, handler: Callable[[_FirmState, Request], Response]) -> Handler:
        def checked(request: Request) -> Response:
            state: _FirmState = request.context["firm"]
            token = request.header("UUID")
            if not token:
                return _error(401, "jetonNonRecu", "Aucun jeton d'authentification reçu (en-tête UUID)")
            now = self.clock()
            with state.lock:
                issued = state.tokens.get(token)
                if issued is None or issued.expired(now):
                    state.tokens.pop(token, None)
                    return _error(401, "jetonExpire", "Le jeton d'authentification a expiré")
                issued.last_used = now
            return handler(state, request)

        return checked

    def _login(self, request: Request) -> Response:
        state: _FirmState = request.context["firm"]
        body = self._json_body(request)
        if not isinstance(body, dict) or not all(
            isinstance(body.get(key), str) for key in ("Identifiant", "MotDePasse", "CNX")
        ):
            return _error(400, "donneesInvalides", "Identifiant, MotDePasse et CNX sont attendus")
        if body["CNX"] != state.cnx:
            return _not_isuite(request)
        code: str = body["Identifiant"]
        now = self.clock()
        with state.lock:
            failures = state.failures.setdefault(code, _Failures())
            if failures.locked_until is not None:
                if now < failures.locked_until:
                    logger.info("ACD sandbox %s: login of locked API code %s", state.name, code)
                    return _error(
                        423, "compteVerrouille", "Compte verrouillé après 5 échecs, réessayez dans 10 minutes"
                    )
                failures.count, failures.locked_until = 0, None
            expected = state.firm.api_users.get(code)
            if expected is None or not hmac.compare_digest(expected.encode(), body["MotDePasse"].encode()):
                failures.count += 1
                if failures.count >= LOCKOUT_FAILURES:
                    failures.locked_until = now + LOCKOUT_SECONDS
                logger.info("ACD sandbox %s: failed login %d for API code %s", state.name, failures.count, code)
                return _error(401, "authentificationInvalide", "Identifiant ou mot de passe invalide")
            failures.count = 0
            token = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(TOKEN_CHARS))
            state.tokens[token] = _Token(code, now, now)
            state.logins += 1
        logger.info("ACD sandbox %s: API code %s logged in", state.name, code)
        return json_response({"UUID": token})

    # -- HTTP: helpers ---------------------------------------------------------------------------

    @staticmethod
    def _json_body(request: Request) -> Any:
        content_type = (request.header("Content-Type") or "").split(";", 1)[0].strip().lower()
        if content_type != "application/json":
            raise HttpError(_error(415, "donneesInvalides", "Le corps doit être en application/json"))
        try:
            return request.json()
        except BadBody as exc:
            if exc.too_large:
                raise HttpError(_error(413, "fichierTropVolumineux", str(exc))) from exc
            raise HttpError(_error(400, "donneesInvalides", f"JSON invalide : {exc}")) from exc

    @staticmethod
    def _dossier(state: _FirmState, code: Any, *, business: bool = False) -> _DossierState:
        if not isinstance(code, str) or not code:
            if business:
                raise HttpError(_ko("donneesInvalides", "CodeDossier est obligatoire"))
            raise HttpError(_error(400, "donneesInvalides", "CodeDossier est obligatoire"))
        dossier = state.dossiers.get(code)
        if dossier is None:
            raise HttpError(_error(404, "dossierIntrouvable", f"Le dossier {code} est introuvable"))
        if not dossier.dossier.partage:
            raise HttpError(_error(403, "droitsInsuffisants", _DENIED))
        return dossier

    def _query_dossier(self, state: _FirmState, request: Request) -> _DossierState:
        return self._dossier(state, request.query_value("CodeDossier"))

    # -- HTTP: reference data --------------------------------------------------------------------

    def _list_dossiers(self, state: _FirmState, request: Request) -> Response:
        with state.lock:
            return json_response(
                [
                    {
                        "Id": ds.dossier.code,
                        "Titre": ds.dossier.titre,
                        "Societe": ds.dossier.societe,
                        "DateCreation": ds.dossier.date_creation,
                        "DateModification": ds.dossier.date_modification,
                        "PartageISuite": ds.dossier.partage,
                    }
                    for ds in state.dossiers.values()
                ]
            )

    def _list_journals(self, state: _FirmState, request: Request) -> Response:
        dossier = self._query_dossier(state, request)
        with state.lock:
            return json_response(copy.deepcopy(dossier.dossier.journals))

    def _reader(self, kind: str) -> Callable[[_FirmState, Request], Response]:
        def read(state: _FirmState, request: Request) -> Response:
            dossier = self._query_dossier(state, request)
            with state.lock:
                return json_response(copy.deepcopy(getattr(dossier.dossier, kind)))

        return read

    def _ged_tree(self, state: _FirmState, request: Request) -> Response:
        dossier = self._query_dossier(state, request)
        with state.lock:
            return json_response(copy.deepcopy(dossier.dossier.ged_tree))

    # -- HTTP: subsidiary accounts ---------------------------------------------------------------

    def _creator(self, kind: str, prefix: str) -> Callable[[_FirmState, Request], Response]:
        def create(state: _FirmState, request: Request) -> Response:
            body = self._json_body(request)
            if not isinstance(body, dict):
                return _ko("donneesInvalides", "Un objet JSON est attendu")
            dossier = self._dossier(state, body.get("CodeDossier"), business=True)
            unknown = set(body) - {"CodeDossier", "Code", "Lib"}
            if unknown:
                return _ko("donneesInvalides", f"Champs inconnus : {', '.join(sorted(unknown))}")
            code, lib = body.get("Code"), body.get("Lib")
            if not isinstance(code, str) or not code or not isinstance(lib, str) or not lib.strip():
                return _ko("donneesInvalides", "Code et Lib sont obligatoires")
            if not code.startswith(prefix):
                what = "client" if prefix == "C" else "fournisseur"
                return _ko("codeTiersInvalide", f"Le code d'un compte {what} doit commencer par {prefix}")
            if len(code) > TIERS_CODE_MAX_CHARS:
                return _ko("codeTiersTropLong", f"Le code {code} dépasse {TIERS_CODE_MAX_CHARS} caractères")
            with state.lock:
                if any(
                    account["Code"] == code for kind_ in ACCOUNT_KINDS for account in getattr(dossier.dossier, kind_)
                ):
                    return _ko("compteExisteDeja", f"Le compte {code} existe déjà")
                getattr(dossier.dossier, kind).append({"Code": code, "Lib": lib})
            logger.info("ACD sandbox %s: created %s account %s", state.name, kind, code)
            return _ok()

        return create

    # -- HTTP: entries ---------------------------------------------------------------------------

    def _post_entry(self, state: _FirmState, request: Request) -> Response:
        body = self._json_body(request)
        if not isinstance(body, dict):
            return _ko("donneesInvalides", "Un objet JSON est attendu")
        dossier = self._dossier(state, body.get("CodeDossier"), business=True)
        try:
            lines = _validate_entry_shape(body)
        except _Invalid as exc:
            return _ko("donneesInvalides", str(exc))
        with state.lock:
            rejection = _business_errors(dossier.dossier, body, lines)
            if rejection is not None:
                return rejection
            entry_id = state.next_entry_id
            state.next_entry_id += 1
            entry = {"IdEcriture": entry_id, **copy.deepcopy(body), "committed_at": self.clock()}
            dossier.entries.append(entry)
        logger.info("ACD sandbox %s: entry %d stored in %s", state.name, entry_id, dossier.dossier.code)
        return _ok(IdEcriture=entry_id)

    def _visible_entries(self, state: _FirmState, dossier: _DossierState) -> list[dict[str, Any]]:
        horizon = self.clock() - self.index_lag_seconds
        with state.lock:
            return [copy.deepcopy(e) for e in dossier.entries if e["committed_at"] <= horizon]

    def _filter_entries(self, state: _FirmState, request: Request) -> Response:
        body = self._json_body(request)
        if not isinstance(body, dict):
            return _error(400, "donneesInvalides", "Un objet JSON est attendu")
        dossier = self._dossier(state, body.get("CodeDossier"))
        allowed = {"CodeDossier", "Journal", "Annee", "Mois", "Libelle"}
        journal, year, month, label = (body.get(key) for key in ("Journal", "Annee", "Mois", "Libelle"))
        if (
            set(body) - allowed
            or not (journal is None or isinstance(journal, str))
            or not (year is None or _is_int(year))
            or not (month is None or _is_int(month))
            or not (label is None or isinstance(label, str))
        ):
            return _error(400, "donneesInvalides", "Filtre invalide (Journal, Annee, Mois, Libelle)")
        found = [
            {key: entry[key] for key in ("IdEcriture", "Journal", "Mois", "Annee", "LignesEcriture")}
            for entry in self._visible_entries(state, dossier)
            if (journal is None or entry["Journal"] == journal)
            and (year is None or entry["Annee"] == year)
            and (month is None or entry["Mois"] == month)
            and (not label or any(label in line["Libelle"] for line in entry["LignesEcriture"]))
        ]
        return json_response(found)

    def _fec(self, state: _FirmState, request: Request) -> Response:
        body = self._json_body(request)
        if not isinstance(body, dict):
            return _error(400, "donneesInvalides", "Un objet JSON est attendu")
        dossier = self._dossier(state, body.get("CodeDossier"))
        year = body.get("Annee")
        if not _is_int(year) or set(body) - {"CodeDossier", "Annee"}:
            return _error(400, "donneesInvalides", "CodeDossier et Annee sont attendus")
        entries = [e for e in self._visible_entries(state, dossier) if e["Annee"] == year]
        with state.lock:
            text = _fec_text(dossier.dossier, entries)
        return text_response(text)

    # -- HTTP: GED -------------------------------------------------------------------------------

    def _upload(self, state: _FirmState, request: Request) -> Response:
        dossier = self._query_dossier(state, request)
        if request.content_length is not None and request.content_length > GED_MAX_BYTES:
            return _error(413, "fichierTropVolumineux", "Le fichier dépasse 25 Mio")
        content_type, options = parse_options_header(request.header("Content-Type") or "")
        boundary = options.get(b"boundary")
        if content_type != b"multipart/form-data" or not boundary:
            return _error(400, "donneesInvalides", "Un envoi multipart/form-data est attendu")
        if not dossier.dossier.ged_rights:
            return _error(403, "droitsInsuffisants", _DENIED)
        upload = StreamedUpload(field_max_bytes=1024)
        try:
            parser = MultipartParser(boundary, upload.callbacks())
            received = 0
            for chunk in request.iter_body():
                received += len(chunk)
                if received > GED_MAX_BYTES:
                    return _error(413, "fichierTropVolumineux", "Le fichier dépasse 25 Mio")
                parser.write(chunk)
            parser.finalize()
        except ValueError as exc:
            return _error(400, "donneesInvalides", f"Envoi multipart illisible : {exc}")
        folder_text = upload.fields.get("idArboGed", b"").decode("utf-8", "replace").strip()
        if not upload.ended or upload.file_parts != 1 or not upload.filename or not folder_text.isdigit():
            return _error(400, "donneesInvalides", "Les champs idArboGed et file sont attendus")
        folder = int(folder_text)
        with state.lock:
            path = _folder_path(dossier.dossier.ged_tree, folder)
            if path is None:
                return _error(404, "arborescenceIntrouvable", f"Le dossier GED {folder} est introuvable")
            if set(path) & dossier.dossier.ged_denied_folders:
                return _error(403, "droitsInsuffisants", _DENIED)
            if any(
                doc["idArboGed"] == folder and doc["Nom"].casefold() == upload.filename.casefold()
                for doc in dossier.documents
            ):
                return _error(409, "documentExisteDeja", f"Le document {upload.filename} existe déjà")
            document = {
                "Id": state.next_document_id,
                "Nom": upload.filename,
                "Taille": upload.size,
                "DateHeureDepot": _iso(self.clock()),
                "idArboGed": folder,
                "sha256": upload.hasher.hexdigest(),
            }
            state.next_document_id += 1
            dossier.documents.append(document)
        logger.info("ACD sandbox %s: GED document %d stored in %s", state.name, document["Id"], dossier.dossier.code)
        return json_response({key: document[key] for key in ("Id", "Nom", "DateHeureDepot")}, 201)

    def _filter_documents(self, state: _FirmState, request: Request) -> Response:
        body = self._json_body(request)
        if not isinstance(body, dict):
            return _error(400, "donneesInvalides", "Un objet JSON est attendu")
        dossier = self._dossier(state, body.get("CodeDossier"))
        name = body.get("Nom")
        if set(body) - {"CodeDossier", "Nom"} or not (name is None or isinstance(name, str)):
            return _error(400, "donneesInvalides", "Filtre invalide (Nom)")
        with state.lock:
            found = [
                {key: doc[key] for key in ("Id", "Nom", "Taille", "DateHeureDepot")}
                for doc in dossier.documents
                if not name or doc["Nom"] == name
            ]
        return json_response(found)

    # -- admin -----------------------------------------------------------------------------------

    def admin_router(self) -> Router:
        """Admin routes, mounted by the server under ``/_sandbox/acd``."""
        router = Router()
        router.add("POST", "/faults", self._admin_add_faults)
        router.add("DELETE", "/faults", self._admin_clear_faults)
        router.add("GET", "/faults", self._admin_list_faults)
        router.add("POST", "/settings", self._admin_settings)
        router.add("GET", "/settings", self._admin_settings)
        router.add("POST", "/{firm}/faults", self._admin_add_faults)
        router.add("DELETE", "/{firm}/faults", self._admin_clear_faults)
        router.add("GET", "/{firm}/faults", self._admin_list_faults)
        router.add("GET", "/{firm}/state", self._admin_state)
        router.add("POST", "/{firm}/expire-tokens", self._admin_expire_tokens)
        router.add("POST", "/{firm}/accounts", self._admin_add_account)
        return router

    def _admin_firm(self, request: Request) -> str | None:
        firm = request.params.get("firm")
        if firm is not None and firm not in self._firms:
            raise HttpError(json_response({"error": f"no sandboxed ACD firm named {firm!r}"}, 404))
        return firm

    def _admin_add_faults(self, request: Request) -> Response:
        firm = self._admin_firm(request)
        for fault in parse_faults(request):
            self.set_fault(firm, fault)
        return json_response({"faults": [f.to_dict() for f in self.faults(firm)]})

    def _admin_clear_faults(self, request: Request) -> Response:
        self.clear_faults(self._admin_firm(request))
        return json_response({"faults": []})

    def _admin_list_faults(self, request: Request) -> Response:
        return json_response({"faults": [f.to_dict() for f in self.faults(self._admin_firm(request))]})

    def _admin_state(self, request: Request) -> Response:
        firm = self._admin_firm(request)
        assert firm is not None
        return json_response(self.state(firm))

    def _admin_expire_tokens(self, request: Request) -> Response:
        self.expire_tokens(self._admin_firm(request))
        return json_response({"ok": True})

    def _admin_add_account(self, request: Request) -> Response:
        firm = self._admin_firm(request)
        assert firm is not None
        body = request.json()
        try:
            self.add_account(firm, body["dossier"], body["kind"], body["code"], body["lib"])
        except (KeyError, TypeError, ValueError) as exc:
            return json_response({"error": f"expected dossier, kind, code, lib: {exc}"}, 400)
        return json_response({"ok": True}, 201)

    def _admin_settings(self, request: Request) -> Response:
        if request.method == "POST":
            body = request.json()
            lag = body.get("index_lag_seconds") if isinstance(body, dict) else None
            if not isinstance(lag, int | Decimal) or isinstance(lag, bool) or lag < 0:
                return json_response({"error": "index_lag_seconds must be a non-negative number"}, 400)
            self.index_lag_seconds = float(lag)
        return json_response({"index_lag_seconds": self.index_lag_seconds})


# -- entry validation ----------------------------------------------------------------------------


def _validate_entry_shape(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The lines of a well-formed entry; raises ``_Invalid`` naming what is wrong."""
    missing = _ENTRY_FIELDS - set(body)
    if missing:
        raise _Invalid(f"Champs obligatoires manquants : {', '.join(sorted(missing))}")
    unknown = set(body) - _ENTRY_FIELDS
    if unknown:
        raise _Invalid(f"Champs inconnus : {', '.join(sorted(unknown))}")
    if not isinstance(body["Journal"], str) or not body["Journal"]:
        raise _Invalid("Journal doit être un code de journal")
    month, year = body["Mois"], body["Annee"]
    if not _is_int(month) or not 1 <= month <= 12:
        raise _Invalid("Mois doit être un entier de 1 à 12")
    if not _is_int(year) or not 1900 <= year <= 2999:
        raise _Invalid("Annee doit être une année sur 4 chiffres")
    lines = body["LignesEcriture"]
    if not isinstance(lines, list) or len(lines) < 2:
        raise _Invalid("LignesEcriture doit contenir au moins deux lignes")
    days = calendar.monthrange(year, month)[1]
    for number, line in enumerate(lines, start=1):
        if not isinstance(line, dict):
            raise _Invalid(f"Ligne {number} : un objet est attendu")
        missing = _LINE_REQUIRED - set(line)
        if missing:
            raise _Invalid(f"Ligne {number} : champs manquants : {', '.join(sorted(missing))}")
        unknown = set(line) - _LINE_REQUIRED - _LINE_OPTIONAL
        if unknown:
            raise _Invalid(f"Ligne {number} : champs inconnus : {', '.join(sorted(unknown))}")
        if not _is_int(line["Jour"]) or not 1 <= line["Jour"] <= days:
            raise _Invalid(f"Ligne {number} : Jour n'est pas un jour de {month:02d}/{year}")
        if not isinstance(line["Compte"], str) or not line["Compte"]:
            raise _Invalid(f"Ligne {number} : Compte est obligatoire")
        if not isinstance(line["Libelle"], str) or not line["Libelle"].strip():
            raise _Invalid(f"Ligne {number} : Libelle est obligatoire")
        for key in ("NumeroPiece", "NumeroFacture"):
            if line.get(key) is not None and not isinstance(line[key], str):
                raise _Invalid(f"Ligne {number} : {key} doit être une chaîne")
        if line.get("ReferenceGed") is not None and not _is_int(line["ReferenceGed"]):
            raise _Invalid(f"Ligne {number} : ReferenceGed doit être un entier")
        debit, credit = line["Debit"], line["Credit"]
        for key, value in (("Debit", debit), ("Credit", credit)):
            if not (_is_int(value) or isinstance(value, Decimal)):
                raise _Invalid(f"Ligne {number} : {key} doit être un nombre JSON")
            if value < 0:
                raise _Invalid(f"Ligne {number} : {key} ne peut pas être négatif")
            exponent = value.as_tuple().exponent if isinstance(value, Decimal) else 0
            if isinstance(exponent, int) and exponent < -2:
                raise _Invalid(f"Ligne {number} : {key} a plus de 2 décimales")
        if (debit != 0) == (credit != 0):
            raise _Invalid(f"Ligne {number} : un seul des montants Debit et Credit doit être non nul")
    return lines


def _business_errors(dossier: AcdDossier, body: dict[str, Any], lines: list[dict[str, Any]]) -> Response | None:
    """The first business rule the entry breaks, in the contract's order, as a KO envelope."""
    journal = next((j for j in dossier.journals if j["Code"] == body["Journal"]), None)
    if journal is None:
        return _ko("journalInexistant", f"Le journal {body['Journal']} n'existe pas")
    debit = sum((Decimal(line["Debit"]) for line in lines), Decimal(0))
    credit = sum((Decimal(line["Credit"]) for line in lines), Decimal(0))
    if debit != credit:
        return _ko("ecritureDesequilibree", f"L'écriture n'est pas équilibrée (débit {debit}, crédit {credit})")
    known = {a["Code"] for kind in ACCOUNT_KINDS for a in getattr(dossier, kind)}
    unknown = list(dict.fromkeys(line["Compte"] for line in lines if line["Compte"] not in known))
    if unknown:
        errors = [("compteInexistant", f"Le compte {code} n'existe pas") for code in unknown]
        return _ko(*errors[0], more=errors[1:])
    long_lines = [n for n, line in enumerate(lines, start=1) if len(line["Libelle"]) > LIBELLE_MAX_CHARS]
    if long_lines:
        errors = [
            ("libelleTropLong", f"Ligne {n} : le libellé dépasse {LIBELLE_MAX_CHARS} caractères") for n in long_lines
        ]
        return _ko(*errors[0], more=errors[1:])
    if not journal.get("NumeroFacture") and any(line.get("NumeroFacture") for line in lines):
        return _ko(
            "numeroFactureNonActive",
            f"La gestion des numéros de facture n'est pas active sur le journal {journal['Code']}",
        )
    if body["Annee"] in dossier.closed_years:
        return _ko("exerciceCloture", f"L'exercice {body['Annee']} est clôturé")
    return None


# -- FEC and GED helpers -------------------------------------------------------------------------


def _fec_amount(value: Any) -> str:
    return f"{Decimal(value):.2f}".replace(".", ",")


def _fec_field(value: Any) -> str:
    return str(value).replace("\t", " ").replace("\r", " ").replace("\n", " ")


def _fec_text(dossier: AcdDossier, entries: list[dict[str, Any]]) -> str:
    journals = {j["Code"]: j["Libelle"] for j in dossier.journals}
    generaux = {a["Code"]: a["Lib"] for a in dossier.generaux}
    subsidiaries = {
        **{a["Code"]: (_collective(dossier, "411"), a["Lib"]) for a in dossier.clients},
        **{a["Code"]: (_collective(dossier, "401"), a["Lib"]) for a in dossier.fournisseurs},
    }
    rows = ["\t".join(FEC_COLUMNS)]
    for entry in sorted(entries, key=lambda e: e["IdEcriture"]):
        valid = datetime.fromtimestamp(entry["committed_at"], UTC).strftime("%Y%m%d")
        for line in entry["LignesEcriture"]:
            date = f"{entry['Annee']:04d}{entry['Mois']:02d}{line['Jour']:02d}"
            compte = line["Compte"]
            aux_num = aux_lib = ""
            if compte in subsidiaries:
                aux_num, aux_lib = compte, subsidiaries[compte][1]
                compte = subsidiaries[compte][0]
            row = [
                entry["Journal"], journals.get(entry["Journal"], ""), entry["IdEcriture"], date, compte,
                generaux.get(compte, ""), aux_num, aux_lib, line.get("NumeroPiece") or "", date, line["Libelle"],
                _fec_amount(line["Debit"]), _fec_amount(line["Credit"]), "", "", valid, "", "",
            ]  # fmt: skip
            rows.append("\t".join(_fec_field(value) for value in row))
    return "\r\n".join(rows) + "\r\n"


def _collective(dossier: AcdDossier, prefix: str) -> str:
    return next((a["Code"] for a in dossier.generaux if a["Code"].startswith(prefix)), f"{prefix}000")


def _folder_path(tree: list[dict[str, Any]], folder: int) -> list[int] | None:
    """The ids from the root down to ``folder`` (``[0]`` for the root itself), or None if unknown."""
    if folder == 0:
        return [0]

    def walk(nodes: list[dict[str, Any]], trail: list[int]) -> list[int] | None:
        for node in nodes:
            here = [*trail, int(node["Id"])]
            if node["Id"] == folder:
                return here
            found = walk(node.get("Arborescences") or [], here)
            if found is not None:
                return found
        return None

    return walk(tree, [0])


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S")
