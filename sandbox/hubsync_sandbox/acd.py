"""The ACD i-Suite Expert sandbox: several firms' servers, each serving version 2 of the ACD contract.

Layout. ``SandboxServer`` mounts the sandbox under ``/acd``; a firm ``dupont`` lives under ``/acd/dupont``
(its *prefix*), with its own CNX code, API accesses, dossiers, tokens, lockouts, fault switch and call log, so
that one firm's server being off affects that firm only.

- ``<prefix>/iSuiteExpert`` is the address an accountant sees in the browser (``browser_path(firm)``): GET
  answers an HTML login page; anything under ``<prefix>/iSuiteExpert/api/…`` answers a 302 to that page, never
  JSON (unless a seed puts the API there on purpose, with ``api_root: "iSuiteExpert"``).
- The API lives under ``api_base(firm)``, set by the firm's ``api_root``: ``"cnx"`` (the default) serves it
  under ``<prefix>/<CNX>/api``, ``"api"`` under ``<prefix>/api``, any other value under
  ``<prefix>/<api_root>/api``. Demo firms: dupont ``/acd/dupont/CNX/api``, martin ``/acd/martin/CNX123/api``,
  leroy ``/acd/leroy/api``. Paths are case-insensitive, as on IIS (``/cnx/API/v1/Compta/Journal`` works).
  Unknown routes under the API answer a JSON 404 (``Message``), a known route with the wrong method a JSON 405.

The rules, with the contract's [assumed] choices taken the hard way:

- Login ``POST v1/authentification`` with ``Identifiant``, ``MotDePasse`` and ``CNX`` (property names in any
  case; a missing CNX is accepted, a wrong one is a failed login) → ``{"UUID": 30 upper-case alphanumerics}``.
  After 5 failures in a row every login of that API code answers ``compteBloque`` for 10 minutes, even with the
  right password; a success resets the count. Tokens die 60 minutes after issue, after 15 minutes without a
  call, and on ``restart``. An unknown or expired token: 401 with a plain-text body; no ``UUID`` header: 401
  envelope ``jetonNonRecu``. A ``CNX`` header is accepted and ignored.
- A token works on the dossier last opened with it (``POST v1/sessions/dossier/{code}``, or ``POST
  v1/sessions/dossier`` with the bare JSON string ``"CODE"``; 200, empty body). Every dossier-scoped call uses
  that dossier when it *commits* (a call in flight when the token is switched lands in the new dossier) and
  ignores any ``CodeDossier``. No open dossier: 500 ``La connexion à la base du dossier n'est pas initialisée
  !``. Unknown dossier: 404 ``Dossier introuvable en comptabilité`` (the token keeps its previous dossier). A
  dossier not shared in i-Suite opens, and every dossier-scoped call on it answers 403 ``Vous n'avez pas les
  droits d'accès à cette ressource``. French texts outside the envelope are ``text/plain``.
- Business errors come in the envelope ``{"codeRetour": 0, "description": "KO", "listeErreurs": [...]}``
  with HTTP 200 for ``compteExisteDeja``, ``journalInexistant``, ``exerciceCloture``,
  ``planClassementIntrouvable`` and ``periodeMultiExercice``, and HTTP 400 for ``compteInexistant``,
  ``ecritureDesequilibree``, ``analytiqueCleRepartitionInexistante`` and every key a client has never seen:
  ``dateHorsExercice`` (a date in no fiscal year), ``numeroFactureNonGere`` (an invoice number on a journal
  whose ``NumeroFacture`` is false), ``codeCompteTiersInvalide`` (a subsidiary code breaking "F/C prefix, at
  most 13 characters"), ``montantIncorrect``, ``ecritureIncomplete``, ``ventilationAnalytiqueIncorrecte``,
  ``sectionAnalytiqueInexistante``, ``modeReglementInconnu``. ``authentificationInvalide``, ``compteBloque``
  and ``jetonNonRecu`` come with 401. Raw .NET failures are 500 with a French sentence: a body that does not
  parse, or a value of the wrong type, ``Le format de la chaîne d'entrée est incorrect.``; a missing object,
  ``La référence d'objet n'est pas définie à une instance d'un objet.``; an impossible date, ``Les paramètres
  année, mois et jour décrivent un DateTime non représentable.``
- Answers carry more fields than the contract lists (journals, accounts, GED nodes), and the GED upload
  answers ``201 {"Id", ...}`` for odd ids and ``200 {"id", ...}`` (lower-case names) for even ones.
- ``POST v1/compta/ecriture`` answers the bare OK envelope, with no entry id; the same body twice makes two
  entries; a ``Libelle`` over 50 characters (UTF-16 units, as .NET counts) is silently cut to its first 50;
  ``ReferenceGed`` (entry and line) must be a string. A line on an ``ActivationAnalytique`` account without
  ``Analytiques`` is refused (``analytiqueCleRepartitionInexistante``) unless the dossier's seed gives that
  account an automatic split key, which is then applied to the stored line. Each entry gets an
  ``EcritureNum`` (per dossier, from 1).
- ``POST v1/compta/fec`` ``{"Annee": N}``: the FEC (``text/plain``, UTF-8 with a byte-order mark,
  tab-separated, CRLF, header + one line per entry line, the 18 standard columns) of the fiscal year that
  ends in year N, or the envelope ``periodeMultiExercice`` when none does. Entries show only
  ``index_lag_seconds`` after their commit, and the answer takes ``fec_seconds_per_line`` per line to
  produce. Subsidiary lines carry the collective account (the subsidiary account's ``CptCptCol``, else
  401000/411000) in ``CompteNum`` and the code in ``CompAuxNum``.
- GED: ``POST v1/ged/documents`` (multipart ``idArboGed`` + ``file``, streamed: only the size and SHA-256 are
  kept); the same name twice is stored twice; a folder the rights do not reach answers 403 ``Vous n'avez pas
  les droits d'accès à cette ressource``, an unknown folder 403 ``Plan de classement introuvable/inaccessible``;
  over 20 MiB, 413. ``POST v1/ged/documents/filtrer`` ``{"NomFichier"?}`` lists the documents whose name
  contains it (any case).

Seeds (``AcdFirm``, ``AcdDossier``; JSON with ``from_json``): a firm has ``name``, ``cnx``, ``api_users``
(API code → password), ``api_root`` and ``dossiers``. A dossier has ``code``, ``titre``, ``societe``,
``genre``, ``partage`` (shared in i-Suite), ``journals``, ``generaux``/``clients``/``fournisseurs`` (account
objects: ``Code``, ``Lib`` and any contract field, e.g. ``"CptInactif": true``, ``"ActivationAnalytique":
true``), ``fiscal_years`` (``[{"start": "2026-04-01", "end": "2027-03-31", "closed": false}]``),
``filing_plans`` (journal code → GED folder id), ``split_keys`` (account → ``{section: percent}``, the
automatic split keys no route shows), ``analytic_sections`` (the sections ``Analytiques`` may name; empty:
any), ``ged_tree``, ``ged_denied_folders`` (folder ids whose subtree the API access may not reach) and
``ged_rights`` (false: no GED right at all).

Python interface: ``entries``, ``documents``, ``accounts``, ``add_account``, ``calls``, ``logins``,
``session_opens``, ``fec_requests``, ``set_password``, ``expire_tokens``, ``restart`` (every token and
session of a firm dropped, as a server restart does), ``set_fault``/``clear_faults``/``faults``, ``state``,
``snapshot``/``restore`` (what the servers hold for good, as JSON, and back), ``reset``, ``api_base``,
``browser_path``. Admin routes under ``/_sandbox/acd``: ``faults`` (GET, POST,
DELETE; per firm under ``/{firm}/faults``), ``settings`` (``index_lag_seconds``, ``fec_seconds_per_line``,
``token_lifetime_seconds``, ``token_idle_seconds``: attributes of the sandbox too),
``restart``, and per firm ``state``, ``expire-tokens``, ``restart``, ``accounts``. Faults match the route
after ``/api/v1/`` whatever its case (``ged/documents`` is not ``ged/documents/filtrer``; ``ged/`` is both);
``session_lost`` forgets the caller's open dossier.
"""

from __future__ import annotations

import copy
import hmac
import json
import logging
import os
import random
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from hubsync_sandbox.faults import Fault, FaultSwitch, parse_faults
from hubsync_sandbox.http import (
    BadBody,
    ConnectionAbort,
    HttpError,
    Request,
    Response,
    Router,
    html_response,
    json_response,
    text_response,
)
from hubsync_sandbox.multipart import StreamedUpload

try:
    from python_multipart.multipart import MultipartParser, parse_options_header
except ImportError:  # pragma: no cover - python-multipart before 0.0.13 only ships the old name
    from multipart.multipart import MultipartParser, parse_options_header  # type: ignore[no-redef]

logger = logging.getLogger(__name__)

BROWSER_ROOT = "iSuiteExpert"
TOKEN_CHARS = 30
TOKEN_ALPHABET = string.ascii_uppercase + string.digits
TOKEN_LIFETIME_SECONDS = 60 * 60
TOKEN_IDLE_SECONDS = 15 * 60
LOCKOUT_FAILURES = 5
LOCKOUT_SECONDS = 10 * 60
GED_MAX_BYTES = 20 * 1024 * 1024
# What multipart framing may add to a file at most before the headers alone can refuse an upload.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
LIBELLE_MAX_CHARS = 50
TIERS_CODE_MAX_CHARS = 13
DEFAULT_INDEX_LAG_SECONDS = 2.0
DEFAULT_FEC_SECONDS_PER_LINE = 0.0001
FIRST_DOCUMENT_ID = 8801
CALLS_KEPT = 10_000
ACCOUNT_KINDS = ("generaux", "clients", "fournisseurs")
COLLECTIVE_ACCOUNTS = {"clients": "411000", "fournisseurs": "401000"}
FEC_COLUMNS = (
    "JournalCode", "JournalLib", "EcritureNum", "EcritureDate", "CompteNum", "CompteLib", "CompAuxNum",
    "CompAuxLib", "PieceRef", "PieceDate", "EcritureLib", "Debit", "Credit", "EcritureLet", "DateLet",
    "ValidDate", "Montantdevise", "Idevise",
)  # fmt: skip

NOT_INITIALISED = "La connexion à la base du dossier n'est pas initialisée !"
DOSSIER_NOT_FOUND = "Dossier introuvable en comptabilité"
DENIED = "Vous n'avez pas les droits d'accès à cette ressource"
FOLDER_NOT_FOUND = "Plan de classement introuvable/inaccessible"
FILING_PLAN_NOT_FOUND = "Plan de classement introuvable"
BAD_FORMAT = "Le format de la chaîne d'entrée est incorrect."
NULL_REFERENCE = "La référence d'objet n'est pas définie à une instance d'un objet."
BAD_DATE = "Les paramètres année, mois et jour décrivent un DateTime non représentable."
TOKEN_INVALID = "Le jeton d'authentification est invalide ou a expiré."
GATEWAY = "Passerelle incorrecte : Le serveur distant a retourné une erreur"
MYSQL_AWAY = "Le serveur MySQL est momentanément injoignable"
UNSUPPORTED_MEDIA = "Le type de média de l'entité de demande n'est pas pris en charge pour cette ressource."

# The HTTP status each business key comes with; any key not listed here comes with 400.
KEY_STATUS = {
    "compteExisteDeja": 200,
    "journalInexistant": 200,
    "exerciceCloture": 200,
    "planClassementIntrouvable": 200,
    "periodeMultiExercice": 200,
    "compteInexistant": 400,
    "ecritureDesequilibree": 400,
    "analytiqueCleRepartitionInexistante": 400,
    "authentificationInvalide": 401,
    "compteBloque": 401,
    "jetonNonRecu": 401,
}
UNKNOWN_KEY_STATUS = 400
# What POST /_sandbox/acd/settings may change (attributes of the sandbox, in seconds).
_SETTINGS = ("index_lag_seconds", "fec_seconds_per_line", "token_lifetime_seconds", "token_idle_seconds")


# -- seed data -----------------------------------------------------------------------------------


@dataclass
class AcdDossier:
    """One ACD dossier (an accounting file) as its firm's server holds it."""

    code: str
    titre: str
    societe: str
    genre: str = "BIC"
    partage: bool = True
    journals: list[dict[str, Any]] = field(default_factory=list)
    generaux: list[dict[str, Any]] = field(default_factory=list)
    clients: list[dict[str, Any]] = field(default_factory=list)
    fournisseurs: list[dict[str, Any]] = field(default_factory=list)
    fiscal_years: list[dict[str, Any]] = field(default_factory=list)
    filing_plans: dict[str, int] = field(default_factory=dict)
    split_keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    analytic_sections: list[str] = field(default_factory=list)
    ged_tree: list[dict[str, Any]] = field(default_factory=list)
    ged_denied_folders: set[int] = field(default_factory=set)
    ged_rights: bool = True
    date_creation: str = "2021-01-04T09:00:00"
    date_modification: str = "2026-11-02T17:45:00"

    def __post_init__(self) -> None:
        for year in self.fiscal_years:
            start, end = _day(year["start"]), _day(year["end"])
            if end < start:
                raise ValueError(f"dossier {self.code}: fiscal year {start} → {end} ends before it starts")
        for account, key in self.split_keys.items():
            if sum(Decimal(str(share)) for share in key.values()) != 100:
                raise ValueError(f"dossier {self.code}: the split key of {account} does not add up to 100")

    def to_dict(self) -> dict[str, Any]:
        """The dossier as JSON-ready data (sets as sorted lists)."""
        data = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}
        data["ged_denied_folders"] = sorted(self.ged_denied_folders)
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
        values["filing_plans"] = {str(k): int(v) for k, v in dict(values.get("filing_plans", {})).items()}
        return cls(**values)


@dataclass
class AcdFirm:
    """One accounting firm's i-Suite server: its CNX code, API accesses, API root and dossiers."""

    name: str
    cnx: str
    api_users: dict[str, str]
    dossiers: dict[str, AcdDossier]
    api_root: str = "cnx"

    def __post_init__(self) -> None:
        if not self.api_root.strip("/"):
            raise ValueError(f"firm {self.name}: api_root must name a path ('cnx', 'api', 'iSuiteExpert', ...)")

    def __repr__(self) -> str:
        return (
            f"AcdFirm(name={self.name!r}, cnx={self.cnx!r}, api_root={self.api_root!r}, api_users=[secure], "
            f"dossiers={list(self.dossiers)})"
        )

    @property
    def api_path(self) -> str:
        """Where the API lives under the firm's prefix, e.g. ``/CNX/api`` or ``/api``."""
        root = self.api_root.strip("/")
        if root.casefold() == "cnx":
            return f"/{quote(self.cnx, safe='')}/api"
        if root.casefold() == "api":
            return "/api"
        return f"/{root}/api"

    def to_dict(self) -> dict[str, Any]:
        """The firm as JSON-ready data (passwords included: this is test seed data)."""
        return {
            "name": self.name,
            "cnx": self.cnx,
            "api_root": self.api_root,
            "api_users": dict(self.api_users),
            "dossiers": [dossier.to_dict() for dossier in self.dossiers.values()],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AcdFirm:
        """A firm from ``to_dict``-shaped data; ``dossiers`` may be a list or a dict keyed by code."""
        unknown = set(data) - {"name", "cnx", "api_root", "api_users", "dossiers"}
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
            api_root=str(data.get("api_root", "cnx")),
        )


def _chart() -> list[dict[str, Any]]:
    return [
        {"Code": "401000", "Lib": "Fournisseurs", "Coll": True, "Let": "O"},
        {"Code": "411000", "Lib": "Clients", "Coll": True, "Let": "O"},
        {"Code": "421000", "Lib": "Personnel - rémunérations dues"},
        {"Code": "445660", "Lib": "TVA déductible sur autres biens et services"},
        {"Code": "445710", "Lib": "TVA collectée"},
        {"Code": "467000", "Lib": "Autres comptes débiteurs ou créditeurs"},
        {"Code": "471000", "Lib": "Compte d'attente"},
        {"Code": "512000", "Lib": "Banque"},
        {"Code": "606100", "Lib": "Fournitures non stockables (eau, énergie)"},
        {"Code": "606400", "Lib": "Fournitures administratives"},
        {"Code": "607000", "Lib": "Achats de marchandises"},
        {"Code": "613200", "Lib": "Locations immobilières", "ActivationAnalytique": True},
        {"Code": "622600", "Lib": "Honoraires", "ActivationAnalytique": True},
        {"Code": "623400", "Lib": "Cadeaux à la clientèle (ancien)", "CptInactif": True},
        {"Code": "625100", "Lib": "Voyages et déplacements"},
        {"Code": "625600", "Lib": "Missions"},
        {"Code": "626000", "Lib": "Frais postaux et de télécommunications"},
        {"Code": "627000", "Lib": "Services bancaires et assimilés"},
        {"Code": "706000", "Lib": "Prestations de services"},
        {"Code": "707000", "Lib": "Ventes de marchandises"},
    ]


def _journals() -> list[dict[str, Any]]:
    return [
        {"Code": "AC", "Libelle": "Achats", "Nature": "Achat", "TypeDeSaisie": "Facture", "NumeroFacture": True},
        {"Code": "VT", "Libelle": "Ventes", "Nature": "Vente", "TypeDeSaisie": "Facture", "NumeroFacture": True},
        {
            "Code": "BQ",
            "Libelle": "Banque",
            "Nature": "Tresorerie",
            "TypeDeSaisie": "Tresorerie",
            "CompteDeTresorerie": "512000",
            "NumeroFacture": False,
        },
        {"Code": "OD", "Libelle": "Opérations diverses", "Nature": "OperationDiverse", "NumeroFacture": False},
        {"Code": "NF", "Libelle": "Notes de frais", "Nature": "OperationDiverse", "NumeroFacture": False},
        {"Code": "AN", "Libelle": "À nouveaux", "Nature": "ANouveau", "NumeroFacture": False},
        {"Code": "SI", "Libelle": "Situation d'inventaire", "Nature": "SituationInventaire", "NumeroFacture": False},
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
            "VisibleEnComptabilite": False,
            "Arborescences": [{"Id": 91, "Libelle": "Lettres de mission", "Arborescences": []}],
        },
    ]


def calendar_years(first: int, last: int, closed: Iterable[int] = ()) -> list[dict[str, Any]]:
    """Calendar fiscal years ``first``..``last`` as seed data, those in ``closed`` closed."""
    shut = set(closed)
    return [{"start": f"{y}-01-01", "end": f"{y}-12-31", "closed": y in shut} for y in range(first, last + 1)]


def shifted_years(
    first_end: int, last_end: int, start_month: int, closed_ends: Iterable[int] = ()
) -> list[dict[str, Any]]:
    """Fiscal years starting on the 1st of ``start_month`` and ending in ``first_end``..``last_end``."""
    shut = set(closed_ends)
    years = []
    for end_year in range(first_end, last_end + 1):
        end_month = start_month - 1
        end_day = (date(end_year, end_month % 12 + 1, 1) - date.resolution).day
        years.append(
            {
                "start": f"{end_year - 1}-{start_month:02d}-01",
                "end": f"{end_year}-{end_month:02d}-{end_day:02d}",
                "closed": end_year in shut,
            }
        )
    return years


def demo_dossier(code: str, titre: str, societe: str, **overrides: Any) -> AcdDossier:
    """A realistic small dossier: French chart (two analytic accounts, one inactive), journals with filing
    plans for AC and VT, suppliers, a client, a GED tree, calendar fiscal years 2023-2027 (2023 closed)."""
    values: dict[str, Any] = {
        "journals": _journals(),
        "generaux": _chart(),
        "clients": [{"Code": "CDURAND", "Lib": "Durand SARL"}],
        "fournisseurs": [{"Code": "FORANGE", "Lib": "Orange SA"}, {"Code": "FEDF", "Lib": "EDF"}],
        "fiscal_years": calendar_years(2023, 2027, closed=[2023]),
        "filing_plans": {"AC": 11, "VT": 21},
        "split_keys": {"613200": {"PARIS": 60, "LYON": 40}},
        "analytic_sections": ["PARIS", "LYON", "SIEGE"],
        "ged_tree": _ged_tree(),
        "ged_denied_folders": {9},
    }
    values.update(overrides)
    return AcdDossier(code=code, titre=titre, societe=societe, **values)


def demo_acd_firms() -> list[AcdFirm]:
    """The demo firms, API code QONTO each: dupont (CNX ``CNX``, four dossiers), martin (``CNX123``), leroy
    (``CNX7``, API under ``<prefix>/api``)."""
    dupont = [
        demo_dossier("DUPONT01", "Boulangerie Dupont", "Boulangerie Dupont SARL"),
        demo_dossier("DUPONT02", "Garage Dupont", "Garage Dupont SAS", partage=False),
        demo_dossier("DUPONT03", "Dupont Immobilier", "SCI Dupont Immobilier", genre="SCI", generaux=[]),
        demo_dossier(
            "DUPONT04",
            "Dupont Traiteur",
            "Dupont Traiteur SAS",
            fiscal_years=shifted_years(2023, 2028, start_month=4, closed_ends=[2023, 2024]),
        ),
    ]
    return [
        AcdFirm("dupont", "CNX", {"QONTO": "dupont-secret"}, {d.code: d for d in dupont}, api_root="cnx"),
        AcdFirm(
            "martin",
            "CNX123",
            {"QONTO": "martin-secret"},
            {"MARTIN01": demo_dossier("MARTIN01", "Pharmacie Martin", "Pharmacie Martin SELARL", genre="BNC")},
            api_root="cnx",
        ),
        AcdFirm(
            "leroy",
            "CNX7",
            {"QONTO": "leroy-secret"},
            {"LEROY01": demo_dossier("LEROY01", "Leroy Conseil", "Leroy Conseil EURL")},
            api_root="api",
        ),
    ]


# -- runtime state -------------------------------------------------------------------------------


@dataclass
class _Token:
    api_code: str
    issued_at: float
    last_used: float
    dossier: str | None = None

    def expired(self, now: float, lifetime: float, idle: float) -> bool:
        return now >= self.issued_at + lifetime or now >= self.last_used + idle


@dataclass
class _Failures:
    count: int = 0
    locked_until: float | None = None


@dataclass
class _DossierState:
    dossier: AcdDossier
    entries: list[dict[str, Any]] = field(default_factory=list)
    documents: list[dict[str, Any]] = field(default_factory=list)
    next_ecriture_num: int = 1
    session_opens: int = 0
    fec_requests: int = 0


class _FirmState:
    def __init__(self, firm: AcdFirm, rng: random.Random) -> None:
        self.firm = copy.deepcopy(firm)
        self.name = firm.name
        self.lock = threading.RLock()
        self.dossiers = {code: _DossierState(dossier) for code, dossier in self.firm.dossiers.items()}
        self.codes = {code.casefold(): code for code in self.dossiers}
        self.tokens: dict[str, _Token] = {}
        self.failures: dict[str, _Failures] = {}
        self.logins = 0
        self.restarts = 0
        self.next_document_id = FIRST_DOCUMENT_ID
        self.calls: deque[tuple[str, str, int]] = deque(maxlen=CALLS_KEPT)
        self.faults = _acd_switch(rng)


def _acd_switch(rng: random.Random) -> FaultSwitch:
    texts = {"gateway": GATEWAY, "backup": MYSQL_AWAY, "error_after_commit": NULL_REFERENCE}
    return FaultSwitch(rng, texts=texts, ignore_case=True, exact_routes=True)


# -- responses -----------------------------------------------------------------------------------


def _envelope(errors: Iterable[tuple[str, str]]) -> dict[str, Any]:
    return {
        "codeRetour": 0,
        "description": "KO",
        "listeErreurs": [{"erreur": key, "description": text} for key, text in errors],
    }


def _ko(key: str, text: str, more: Iterable[tuple[str, str]] = ()) -> Response:
    """A business refusal in the envelope, with the HTTP status its key comes with."""
    return json_response(_envelope([(key, text), *more]), KEY_STATUS.get(key, UNKNOWN_KEY_STATUS))


def _ok() -> Response:
    return json_response({"codeRetour": 1, "description": "OK", "listeErreurs": []})


def _text(status: int, text: str) -> Response:
    return text_response(text, status)


def _net_failure(text: str) -> HttpError:
    return HttpError(_text(500, text))


def _api_not_found(request: Request) -> Response:
    uri = f"{request.mount_path}{request.path}"
    return json_response(
        {"Message": f"Aucune ressource HTTP correspondant à l'URI de demande '{uri}' n'a été trouvée."}, 404
    )


def _api_method_not_allowed(request: Request, allowed: list[str]) -> Response:
    return json_response(
        {"Message": f"La ressource demandée ne prend pas en charge la méthode http '{request.method}'."},
        405,
        {"Allow": ", ".join(allowed)},
    )


_LOGIN_PAGE = """<!DOCTYPE html>
<html lang="fr"><head><meta charset="utf-8"><title>i-Suite Expert - Connexion</title></head>
<body><h1>i-Suite Expert</h1>
<form method="post" action="{action}">
<label>Code CNX <input name="cnx"></label>
<label>Identifiant <input name="login"></label>
<label>Mot de passe <input name="password" type="password"></label>
<button type="submit">Se connecter</button>
</form></body></html>
"""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, Decimal)


class _Props:
    """A JSON object read as ASP.NET binds it: property names in any case."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._values = {str(key).casefold(): value for key, value in data.items()}

    def get(self, name: str, default: Any = None) -> Any:
        value = self._values.get(name.casefold(), default)
        return default if value is None else value

    def has(self, name: str) -> bool:
        return self._values.get(name.casefold()) is not None


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
        fec_seconds_per_line: float = DEFAULT_FEC_SECONDS_PER_LINE,
    ) -> None:
        items = list(firms.values()) if isinstance(firms, Mapping) else list(firms)
        self._seed_firms = {firm.name: copy.deepcopy(firm) for firm in items}
        self._seed = seed
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.index_lag_seconds = index_lag_seconds
        self.fec_seconds_per_line = fec_seconds_per_line
        # Settings, so that tests with real workers can make tokens die within seconds.
        self.token_lifetime_seconds: float = TOKEN_LIFETIME_SECONDS
        self.token_idle_seconds: float = TOKEN_IDLE_SECONDS
        self.clock = clock
        self._mount_path = "/acd"
        self._global_faults = _acd_switch(self._rng)
        self._firms = {name: _FirmState(firm, self._rng) for name, firm in self._seed_firms.items()}
        self._by_prefix = {name.casefold(): name for name in self._firms}
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

    def bind_url(self, base_url: str) -> None:
        """Learn where the server mounted the sandbox (``api_base`` and ``browser_path`` start there)."""
        self._mount_path = urlsplit(base_url).path.rstrip("/")

    # -- Python API ------------------------------------------------------------------------------

    def firm_names(self) -> list[str]:
        """The names of the sandboxed firms."""
        return list(self._firms)

    @property
    def firms(self) -> dict[str, AcdFirm]:
        """The sandboxed firms by name, as seeded (copies: changing them changes nothing)."""
        return {name: copy.deepcopy(firm) for name, firm in self._seed_firms.items()}

    def api_base(self, firm: str) -> str:
        """The firm's API base as a path on the server, e.g. ``/acd/dupont/CNX/api`` (routes add ``/v1/...``)."""
        return f"{self._mount_path}/{quote(self._firm(firm).name, safe='')}{self._firm(firm).firm.api_path}"

    def browser_path(self, firm: str) -> str:
        """The i-Suite address an accountant sees in the browser, as a path, e.g. ``/acd/dupont/iSuiteExpert``."""
        return f"{self._mount_path}/{quote(self._firm(firm).name, safe='')}/{BROWSER_ROOT}"

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
        """The stored entries (visible in the FEC or not yet): the posted body as stored (labels cut to 50,
        automatic analytic splits applied, ``CodeDossier`` and unknown fields dropped), plus ``EcritureNum``
        and ``committed_at`` (the sandbox clock's time of the commit)."""
        state, dossier_state = self._dossier_state(firm, dossier)
        with state.lock:
            return copy.deepcopy(dossier_state.entries)

    def documents(self, firm: str, dossier: str) -> list[dict[str, Any]]:
        """The GED documents: ``Id``, ``NomFichier`` (also as ``Nom``), ``idArboGed``, ``Taille``, ``sha256``,
        ``DateCreation``."""
        state, dossier_state = self._dossier_state(firm, dossier)
        with state.lock:
            return copy.deepcopy(dossier_state.documents)

    def accounts(self, firm: str, dossier: str, kind: str) -> list[dict[str, Any]]:
        """The ``generaux``, ``clients`` or ``fournisseurs`` accounts of a dossier, as seeded or created."""
        if kind not in ACCOUNT_KINDS:
            raise ValueError(f"kind must be one of {ACCOUNT_KINDS}")
        state, dossier_state = self._dossier_state(firm, dossier)
        with state.lock:
            return copy.deepcopy(getattr(dossier_state.dossier, kind))

    def add_account(self, firm: str, dossier: str, kind: str, code: str, lib: str, **extra: Any) -> None:
        """Add an account as if someone created it in ACD (no checks, no duplicates); ``extra`` sets contract
        fields such as ``CptInactif=True`` or ``ActivationAnalytique=True``."""
        if kind not in ACCOUNT_KINDS:
            raise ValueError(f"kind must be one of {ACCOUNT_KINDS}")
        state, dossier_state = self._dossier_state(firm, dossier)
        with state.lock:
            accounts: list[dict[str, Any]] = getattr(dossier_state.dossier, kind)
            if all(account["Code"] != code for account in accounts):
                accounts.append({"Code": code, "Lib": lib, **extra})

    def calls(self, firm: str) -> list[tuple[str, str, int]]:
        """``(method, path after the firm's prefix as sent, status or 0 if dropped)`` of every call, in order."""
        state = self._firm(firm)
        with state.lock:
            return list(state.calls)

    def logins(self, firm: str) -> int:
        """How many successful logins the firm's server answered."""
        return self._firm(firm).logins

    def session_opens(self, firm: str, dossier: str | None = None) -> int:
        """How many dossier sessions were opened on the firm's server (on one dossier, or on any)."""
        return self._count(firm, dossier, lambda ds: ds.session_opens)

    def fec_requests(self, firm: str, dossier: str | None = None) -> int:
        """How many FEC requests reached a dossier of the firm (one dossier, or any), refused ones included."""
        return self._count(firm, dossier, lambda ds: ds.fec_requests)

    def _count(self, firm: str, dossier: str | None, counter: Callable[[_DossierState], int]) -> int:
        state = self._firm(firm)
        with state.lock:
            if dossier is not None:
                return counter(self._dossier_state(firm, dossier)[1])
            return sum(counter(ds) for ds in state.dossiers.values())

    def set_password(self, firm: str, api_code: str, password: str) -> None:
        """Change (or create) an API access's password, as a firm does in ACD; live tokens stay valid."""
        state = self._firm(firm)
        with state.lock:
            state.firm.api_users[api_code] = password

    def expire_tokens(self, firm: str | None = None) -> None:
        """Expire every token of one firm (or of all firms): the next call answers 401 (plain text)."""
        for state in [self._firm(firm)] if firm is not None else list(self._firms.values()):
            with state.lock:
                state.tokens.clear()

    def restart(self, firm: str | None = None) -> None:
        """Restart one firm's server (or all): every token and every open dossier session is lost."""
        for state in [self._firm(firm)] if firm is not None else list(self._firms.values()):
            with state.lock:
                # Calls still in flight hold their token: without a session they cannot commit anywhere.
                for token in state.tokens.values():
                    token.dossier = None
                state.tokens.clear()
                state.restarts += 1
            logger.info("ACD sandbox %s: restarted, every token and session dropped", state.name)

    def state(self, firm: str) -> dict[str, Any]:
        """A firm's whole state as JSON-ready data (what ``GET /_sandbox/acd/{firm}/state`` answers)."""
        state = self._firm(firm)
        with state.lock:
            return {
                "api_base": self.api_base(firm),
                "browser_path": self.browser_path(firm),
                "dossiers": {
                    code: {
                        "entries": copy.deepcopy(ds.entries),
                        "documents": copy.deepcopy(ds.documents),
                        "accounts": {kind: copy.deepcopy(getattr(ds.dossier, kind)) for kind in ACCOUNT_KINDS},
                        "session_opens": ds.session_opens,
                        "fec_requests": ds.fec_requests,
                    }
                    for code, ds in state.dossiers.items()
                },
                "logins": state.logins,
                "live_tokens": len(state.tokens),
                "restarts": state.restarts,
                "calls": [list(call) for call in state.calls],
                "faults": [f.to_dict() for f in state.faults.active()],
            }

    def snapshot(self) -> dict[str, Any]:
        """What the firms' servers keep on disk, as JSON-ready data for ``restore``: each firm as it stands (API
        passwords, dossiers with the accounts created since), each dossier's entries and GED documents, and the
        numbers the next entry and document get. Amounts are strings with their exact digits."""
        with self._lock:
            states = list(self._firms.values())
        firms = []
        for state in states:
            with state.lock:
                firms.append(
                    {
                        "firm": state.firm.to_dict(),
                        "next_document_id": state.next_document_id,
                        "dossiers": {
                            code: {
                                "entries": _plain(ds.entries),
                                "documents": copy.deepcopy(ds.documents),
                                "next_ecriture_num": ds.next_ecriture_num,
                            }
                            for code, ds in state.dossiers.items()
                        },
                    }
                )
        return {"firms": firms}

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Hold what ``snapshot`` saw, as servers restarted on the same databases: its firms, their accounts,
        entries and documents, numbered on from there; no token, session, lockout, fault or call survives.
        ``reset`` still goes back to the seed the sandbox was built with."""
        firms: dict[str, _FirmState] = {}
        for item in snapshot["firms"]:
            state = _FirmState(AcdFirm.from_dict(item["firm"]), self._rng)
            state.next_document_id = int(item["next_document_id"])
            for code, saved in dict(item["dossiers"]).items():
                ds = state.dossiers[code]
                ds.entries = [_stored_entry(entry) for entry in saved["entries"]]
                ds.documents = copy.deepcopy(list(saved["documents"]))
                ds.next_ecriture_num = int(saved["next_ecriture_num"])
            firms[state.name] = state
        with self._lock:
            self._firms = firms
            self._by_prefix = {name.casefold(): name for name in firms}

    def reset(self) -> None:
        """Back to the seed state: entries, documents, accounts, faults, tokens, lockouts, counters, call logs."""
        with self._lock:
            self._rng.seed(self._seed)
            self._global_faults = _acd_switch(self._rng)
            self._firms = {name: _FirmState(firm, self._rng) for name, firm in self._seed_firms.items()}
            self._by_prefix = {name.casefold(): name for name in self._firms}

    # -- HTTP: dispatch and faults ---------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Answer a request under ``/acd``: ``/{firm}/...`` (browser page or API)."""
        segment, _, tail = request.path.lstrip("/").partition("/")
        name = self._by_prefix.get(unquote(segment).casefold())
        if name is None:
            return html_response(404)
        state = self._firms[name]
        rest = f"/{tail}"
        api_rest = self._api_rest(state, rest)
        sub = request.sub(rest, f"/{segment}", {"firm": state.name})
        sub.context["firm"] = state
        # Faults select API calls by their route after /api/v1/, whatever the firm's root and the path's case.
        fault_path = api_rest if api_rest is not None else rest
        switch = state.faults
        fault = switch.take(request.method, fault_path)
        if fault is None:
            switch = self._global_faults
            fault = switch.take(request.method, fault_path)
        if fault is not None and fault.mode == "session_lost":
            self._forget_session(state, request.header("UUID"))
        try:
            response = switch.respond(fault, lambda: self._serve(state, sub, api_rest))
        except ConnectionAbort:
            self._record(state, request.method, rest, 0)
            logger.debug("ACD sandbox %s: dropped %s %s", state.name, request.method, rest)
            raise
        self._record(state, request.method, rest, 0 if response.abort_after_bytes is not None else response.status)
        return response

    @staticmethod
    def _api_rest(state: _FirmState, rest: str) -> str | None:
        """The path after the firm's API root (``/v1/...``), or None when ``rest`` is not under it."""
        root = unquote(state.firm.api_path).casefold()
        folded = unquote(rest).casefold()
        if folded == root:
            return "/"
        if folded.startswith(f"{root}/"):
            return unquote(rest)[len(root) :]
        return None

    def _forget_session(self, state: _FirmState, token: str | None) -> None:
        with state.lock:
            issued = state.tokens.get(token or "")
            if issued is not None:
                issued.dossier = None

    @staticmethod
    def _record(state: _FirmState, method: str, path: str, status: int) -> None:
        with state.lock:
            state.calls.append((method, path, status))

    def _serve(self, state: _FirmState, request: Request, api_rest: str | None) -> Response:
        if api_rest is None:
            return self._browser(state, request)
        try:
            return self._router.handle(request.sub(api_rest, state.firm.api_path))
        except BadBody as exc:
            if exc.too_large:
                return html_response(413)
            return _text(500, BAD_FORMAT)

    def _browser(self, state: _FirmState, request: Request) -> Response:
        """The firm's web front: the login page, and redirects to it for anything under it."""
        folded = request.path.casefold()
        root = f"/{BROWSER_ROOT}".casefold()
        if folded != root and not folded.startswith(f"{root}/"):
            return html_response(404)
        page = f"{request.mount_path}/{BROWSER_ROOT}"
        if folded.startswith(f"{root}/api/") or folded == f"{root}/api":
            back = quote(f"{request.mount_path}{request.path}")
            return Response(302, b"", {"Location": f"{page}/Account/Login?ReturnUrl={back}"})
        if request.method not in ("GET", "HEAD"):
            return html_response(405)
        return text_response(_LOGIN_PAGE.format(action=f"{page}/Account/Login"), 200, "text/html; charset=utf-8")

    def _build_router(self) -> Router:
        router = Router(not_found=_api_not_found, method_not_allowed=_api_method_not_allowed, ignore_case=True)
        router.add("POST", "/v1/authentification", self._login)
        token_routes: list[tuple[str, str, Callable[[_FirmState, Request, _Token], Response]]] = [
            ("GET", "/v1/dossiers", self._list_dossiers),
            ("POST", "/v1/sessions/dossier/{code}", self._open_session_path),
            ("POST", "/v1/sessions/dossier", self._open_session_body),
        ]
        for method, route, handler in token_routes:
            router.add(method, route, self._with_token(handler))
        dossier_routes: list[tuple[str, str, Callable[[_FirmState, Request, _Token], Response]]] = [
            ("GET", "/v1/compta/journal", self._list_journals),
            ("GET", "/v1/compta/comptes/generaux", self._reader("generaux")),
            ("GET", "/v1/compta/comptes/clients", self._reader("clients")),
            ("GET", "/v1/compta/comptes/fournisseurs", self._reader("fournisseurs")),
            ("POST", "/v1/compta/comptes/client", self._creator("clients", "C")),
            ("POST", "/v1/compta/comptes/fournisseur", self._creator("fournisseurs", "F")),
            ("GET", "/v1/compta/exercices", self._fiscal_years),
            ("GET", "/v1/compta/planClassementEcriture/{journal}", self._filing_plan),
            ("POST", "/v1/compta/ecriture", self._post_entry),
            ("POST", "/v1/compta/fec", self._fec),
            ("GET", "/v1/ged/arborescence", self._ged_tree),
            ("POST", "/v1/ged/documents", self._upload),
            ("POST", "/v1/ged/documents/filtrer", self._filter_documents),
        ]
        for method, route, handler in dossier_routes:
            router.add(method, route, self._with_token(self._with_session(handler)))
        return router

    # -- HTTP: tokens and sessions ---------------------------------------------------------------

    def _with_token(self, handler: Callable[[_FirmState, Request, _Token], Response]) -> Callable[[Request], Response]:
        def checked(request: Request) -> Response:
            state: _FirmState = request.context["firm"]
            token = request.header("UUID")
            if not token:
                return _ko("jetonNonRecu", "Le jeton d'authentification n'a pas été reçu (en-tête UUID).")
            now = self.clock()
            with state.lock:
                issued = state.tokens.get(token)
                if issued is None or issued.expired(now, self.token_lifetime_seconds, self.token_idle_seconds):
                    state.tokens.pop(token, None)
                    return _text(401, TOKEN_INVALID)
                issued.last_used = now
            return handler(state, request, issued)

        return checked

    def _with_session(
        self, handler: Callable[[_FirmState, Request, _Token], Response]
    ) -> Callable[[_FirmState, Request, _Token], Response]:
        def scoped(state: _FirmState, request: Request, token: _Token) -> Response:
            self._session(state, token)
            return handler(state, request, token)

        return scoped

    @staticmethod
    def _session(state: _FirmState, token: _Token) -> _DossierState:
        """The dossier the token works on now; raises the French 500 (none open) or 403 (not shared)."""
        with state.lock:
            if token.dossier is None:
                raise _net_failure(NOT_INITIALISED)
            dossier = state.dossiers[token.dossier]
            if not dossier.dossier.partage:
                raise HttpError(_text(403, DENIED))
            return dossier

    def _open_session_path(self, state: _FirmState, request: Request, token: _Token) -> Response:
        return self._open_session(state, token, request.params.get("code", ""))

    def _open_session_body(self, state: _FirmState, request: Request, token: _Token) -> Response:
        code = self._json_body(request)
        if not isinstance(code, str):
            raise _net_failure(NULL_REFERENCE)
        return self._open_session(state, token, code)

    def _open_session(self, state: _FirmState, token: _Token, code: str) -> Response:
        with state.lock:
            found = state.codes.get(code.strip().casefold())
            if found is None:
                return _text(404, DOSSIER_NOT_FOUND)
            token.dossier = found
            state.dossiers[found].session_opens += 1
        logger.debug("ACD sandbox %s: session opened on %s", state.name, found)
        return Response(200, b"", {"Content-Type": "application/json; charset=utf-8"})

    def _login(self, request: Request) -> Response:
        state: _FirmState = request.context["firm"]
        raw = self._json_body(request)
        if not isinstance(raw, dict):
            raise _net_failure(NULL_REFERENCE)
        body = _Props(raw)
        code, password, cnx = body.get("Identifiant"), body.get("MotDePasse"), body.get("CNX")
        if not isinstance(code, str) or not code or not isinstance(password, str):
            return _ko("authentificationInvalide", "Identifiant ou mot de passe invalide.")
        now = self.clock()
        with state.lock:
            failures = state.failures.setdefault(code, _Failures())
            if failures.locked_until is not None:
                if now < failures.locked_until:
                    logger.info("ACD sandbox %s: login of blocked API code %s", state.name, code)
                    return _ko(
                        "compteBloque",
                        f"Le compte {code} est bloqué pendant 10 minutes après {LOCKOUT_FAILURES} tentatives "
                        "de connexion infructueuses.",
                    )
                failures.count, failures.locked_until = 0, None
            expected = state.firm.api_users.get(code)
            right_cnx = cnx is None or (isinstance(cnx, str) and cnx.casefold() == state.firm.cnx.casefold())
            if expected is None or not right_cnx or not hmac.compare_digest(expected.encode(), password.encode()):
                failures.count += 1
                if failures.count >= LOCKOUT_FAILURES:
                    failures.locked_until = now + LOCKOUT_SECONDS
                logger.info("ACD sandbox %s: failed login %d for API code %s", state.name, failures.count, code)
                return _ko("authentificationInvalide", "Identifiant ou mot de passe invalide.")
            failures.count = 0
            token = "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(TOKEN_CHARS))
            state.tokens[token] = _Token(code, now, now)
            state.logins += 1
        logger.info("ACD sandbox %s: API code %s logged in", state.name, code)
        return json_response({"UUID": token})

    # -- HTTP: helpers ---------------------------------------------------------------------------

    @staticmethod
    def _json_body(request: Request) -> Any:
        content_type = (request.header("Content-Type") or "").split(";", 1)[0].strip().lower()
        if content_type not in ("application/json", "text/json"):
            raise HttpError(json_response({"Message": UNSUPPORTED_MEDIA}, 415))
        try:
            return request.json()
        except BadBody as exc:
            if exc.too_large:
                raise HttpError(html_response(413)) from exc
            raise _net_failure(BAD_FORMAT) from exc

    def _object_body(self, request: Request) -> _Props:
        body = self._json_body(request)
        if not isinstance(body, dict):
            raise _net_failure(NULL_REFERENCE)
        return _Props(body)

    # -- HTTP: reference data --------------------------------------------------------------------

    def _list_dossiers(self, state: _FirmState, request: Request, token: _Token) -> Response:
        with state.lock:
            return json_response(
                [
                    {
                        "Id": ds.dossier.code,
                        "Titre": ds.dossier.titre,
                        "Genre": ds.dossier.genre,
                        "Societe": ds.dossier.societe,
                        "DateCreation": ds.dossier.date_creation,
                        "DateModification": ds.dossier.date_modification,
                    }
                    for ds in state.dossiers.values()
                ]
            )

    def _list_journals(self, state: _FirmState, request: Request, token: _Token) -> Response:
        with state.lock:
            journals = self._session(state, token).dossier.journals
            return json_response([_journal_out(journal) for journal in journals])

    def _reader(self, kind: str) -> Callable[[_FirmState, Request, _Token], Response]:
        def read(state: _FirmState, request: Request, token: _Token) -> Response:
            with state.lock:
                accounts = getattr(self._session(state, token).dossier, kind)
                return json_response([_account_out(account, kind) for account in accounts])

        return read

    def _fiscal_years(self, state: _FirmState, request: Request, token: _Token) -> Response:
        today = datetime.fromtimestamp(self.clock(), UTC).date()
        with state.lock:
            years = _years(self._session(state, token).dossier)
        return json_response(
            [
                {
                    "DateDebut": f"{start.isoformat()}T00:00:00",
                    "DateFin": f"{end.isoformat()}T00:00:00",
                    "Courant": start <= today <= end,
                    "Cloture": closed,
                }
                for start, end, closed in years
            ]
        )

    def _filing_plan(self, state: _FirmState, request: Request, token: _Token) -> Response:
        journal = request.params.get("journal", "")
        with state.lock:
            dossier = self._session(state, token).dossier
            folder = dossier.filing_plans.get(journal)
            node = _folder_node(dossier.ged_tree, folder) if folder is not None else None
        if folder is None or node is None:
            return _ko("planClassementIntrouvable", FILING_PLAN_NOT_FOUND)
        return json_response({"Id": folder, "Libelle": node["Libelle"]})

    def _ged_tree(self, state: _FirmState, request: Request, token: _Token) -> Response:
        with state.lock:
            tree = copy.deepcopy(self._session(state, token).dossier.ged_tree)
        return json_response({"Arborescences": [_ged_node_out(node, "") for node in tree]})

    # -- HTTP: subsidiary accounts ---------------------------------------------------------------

    def _creator(self, kind: str, prefix: str) -> Callable[[_FirmState, Request, _Token], Response]:
        def create(state: _FirmState, request: Request, token: _Token) -> Response:
            body = self._object_body(request)
            code, lib = body.get("Code"), body.get("Lib", "")
            if not isinstance(code, str) or not isinstance(lib, str):
                raise _net_failure(NULL_REFERENCE)
            if not code.startswith(prefix) or len(code) > TIERS_CODE_MAX_CHARS or not code[1:].isalnum():
                what = "client" if prefix == "C" else "fournisseur"
                return _ko(
                    "codeCompteTiersInvalide",
                    f"Le code du compte {what} doit commencer par {prefix} et comporter au plus "
                    f"{TIERS_CODE_MAX_CHARS} caractères alphanumériques.",
                )
            with state.lock:
                dossier = self._session(state, token)
                if any(a["Code"] == code for kind_ in ACCOUNT_KINDS for a in getattr(dossier.dossier, kind_)):
                    return _ko("compteExisteDeja", f"Le compte {code} existe déjà")
                getattr(dossier.dossier, kind).append({"Code": code, "Lib": lib})
            logger.info("ACD sandbox %s: created %s account %s in %s", state.name, kind, code, dossier.dossier.code)
            return _ok()

        return create

    # -- HTTP: entries ---------------------------------------------------------------------------

    def _post_entry(self, state: _FirmState, request: Request, token: _Token) -> Response:
        entry = _read_entry(self._object_body(request))
        with state.lock:
            # The dossier is the token's at commit time: a switch while the body was on its way moves the entry.
            dossier = self._session(state, token)
            rejection = _business_errors(dossier.dossier, entry)
            if rejection is not None:
                return rejection
            stored = {**entry, "EcritureNum": dossier.next_ecriture_num, "committed_at": self.clock()}
            dossier.next_ecriture_num += 1
            dossier.entries.append(stored)
        logger.info("ACD sandbox %s: entry %d stored in %s", state.name, stored["EcritureNum"], dossier.dossier.code)
        return _ok()

    def _fec(self, state: _FirmState, request: Request, token: _Token) -> Response:
        body = self._object_body(request)
        year = body.get("Annee")
        if isinstance(year, str) and year.strip().isdigit():
            year = int(year)
        if not _is_int(year):
            raise _net_failure(BAD_FORMAT if body.has("Annee") else NULL_REFERENCE)
        horizon = self.clock() - self.index_lag_seconds
        with state.lock:
            dossier = self._session(state, token)
            dossier.fec_requests += 1
            fiscal = next(((s, e) for s, e, _closed in _years(dossier.dossier) if e.year == year), None)
            if fiscal is None:
                return _ko(
                    "periodeMultiExercice",
                    f"Aucun exercice ne se termine en {year} : la période demandée couvre plusieurs exercices "
                    "ou aucun.",
                )
            # A stored entry never changes, so references are a snapshot; the text is built outside the lock
            # (a busy dossier's FEC has tens of thousands of lines) and so is the time it costs.
            visible = [e for e in dossier.entries if e["committed_at"] <= horizon]
            names = _FecNames.of(dossier.dossier)
        text, lines = _fec_text(names, visible, fiscal)
        time.sleep(lines * self.fec_seconds_per_line)
        return text_response(text)

    # -- HTTP: GED -------------------------------------------------------------------------------

    def _upload(self, state: _FirmState, request: Request, token: _Token) -> Response:
        if request.content_length is not None and request.content_length > GED_MAX_BYTES + MULTIPART_OVERHEAD_BYTES:
            return html_response(413)
        content_type, options = parse_options_header(request.header("Content-Type") or "")
        boundary = options.get(b"boundary")
        if content_type != b"multipart/form-data" or not boundary:
            return json_response({"Message": UNSUPPORTED_MEDIA}, 415)
        upload = StreamedUpload(field_max_bytes=1024)
        try:
            parser = MultipartParser(boundary, upload.callbacks())
            for chunk in request.iter_body():
                parser.write(chunk)
                if upload.size > GED_MAX_BYTES:
                    return html_response(413)
            parser.finalize()
        except ValueError as exc:
            raise _net_failure(BAD_FORMAT) from exc
        if not upload.ended or upload.file_parts != 1 or not upload.filename:
            raise _net_failure(NULL_REFERENCE)
        folder_text = upload.fields.get("idArboGed", b"").decode("utf-8", "replace").strip()
        if not folder_text.lstrip("-").isdigit():
            raise _net_failure(BAD_FORMAT)
        folder = int(folder_text)
        with state.lock:
            dossier = self._session(state, token)
            path = _folder_path(dossier.dossier.ged_tree, folder)
            if not dossier.dossier.ged_rights or (path is not None and set(path) & dossier.dossier.ged_denied_folders):
                return _text(403, DENIED)
            if path is None:
                return _text(403, FOLDER_NOT_FOUND)
            document_id = state.next_document_id
            document: dict[str, Any] = {
                "Id": document_id,
                "NomFichier": upload.filename,
                "Nom": upload.filename,
                "idArboGed": folder,
                "Taille": upload.size,
                "sha256": upload.hasher.hexdigest(),
                "DateCreation": _iso(self.clock()),
            }
            state.next_document_id += 1
            dossier.documents.append(document)
        logger.info("ACD sandbox %s: GED document %d stored in %s", state.name, document_id, dossier.dossier.code)
        # Real answers differ in status and in the case of their property names: odd ids get one, even the other.
        if document_id % 2:
            return json_response(
                {"Id": document_id, "NomFichier": upload.filename, "DateCreation": document["DateCreation"]}, 201
            )
        return json_response(
            {"id": document_id, "nomFichier": upload.filename, "taille": upload.size, "idArboGed": folder}, 200
        )

    def _filter_documents(self, state: _FirmState, request: Request, token: _Token) -> Response:
        body = self._object_body(request)
        name = body.get("NomFichier", "")
        if not isinstance(name, str):
            raise _net_failure(BAD_FORMAT)
        with state.lock:
            dossier = self._session(state, token)
            found = [
                {
                    "Id": doc["Id"],
                    "NomFichier": doc["NomFichier"],
                    "DateCreation": doc["DateCreation"],
                    "Taille": doc["Taille"],
                    "Arborescence": {
                        "Id": doc["idArboGed"],
                        "Libelle": (_folder_node(dossier.dossier.ged_tree, doc["idArboGed"]) or {}).get(
                            "Libelle", "Racine"
                        ),
                    },
                }
                for doc in dossier.documents
                if name.casefold() in doc["NomFichier"].casefold()
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
        router.add("POST", "/restart", self._admin_restart)
        router.add("POST", "/{firm}/faults", self._admin_add_faults)
        router.add("DELETE", "/{firm}/faults", self._admin_clear_faults)
        router.add("GET", "/{firm}/faults", self._admin_list_faults)
        router.add("GET", "/{firm}/state", self._admin_state)
        router.add("POST", "/{firm}/expire-tokens", self._admin_expire_tokens)
        router.add("POST", "/{firm}/restart", self._admin_restart)
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

    def _admin_restart(self, request: Request) -> Response:
        self.restart(self._admin_firm(request))
        return json_response({"ok": True})

    def _admin_add_account(self, request: Request) -> Response:
        firm = self._admin_firm(request)
        assert firm is not None
        body = request.json()
        try:
            extra = {key: body[key] for key in ("CptInactif", "ActivationAnalytique") if key in body}
            self.add_account(firm, body["dossier"], body["kind"], body["code"], body["lib"], **extra)
        except (KeyError, TypeError, ValueError) as exc:
            return json_response({"error": f"expected dossier, kind, code, lib: {exc}"}, 400)
        return json_response({"ok": True}, 201)

    def _admin_settings(self, request: Request) -> Response:
        if request.method == "POST":
            body = request.json()
            if not isinstance(body, dict) or not set(body) <= set(_SETTINGS):
                return json_response({"error": f"settings are {', '.join(_SETTINGS)}"}, 400)
            for key, value in body.items():
                if not isinstance(value, int | Decimal) or isinstance(value, bool) or value < 0:
                    return json_response({"error": f"{key} must be a non-negative number"}, 400)
            for key, value in body.items():
                setattr(self, key, float(value))
        return json_response({name: getattr(self, name) for name in _SETTINGS})


# -- reading and checking an entry ---------------------------------------------------------------

_LINE_STRINGS = ("NumeroPiece", "NumeroFacture", "ReferenceGed", "CodeTVA", "ModeReglement")


def _int_field(props: _Props, name: str) -> int:
    """An integer property as .NET binds it (a JSON integer or a string of digits), else the 500 it raises."""
    value = props.get(name)
    if value is None:
        raise _net_failure(NULL_REFERENCE)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if not _is_int(value):
        raise _net_failure(BAD_FORMAT)
    return int(value)


def _amount(props: _Props, name: str) -> int | Decimal:
    value = props.get(name, 0)
    if not _is_number(value):
        raise _net_failure(BAD_FORMAT)
    return value  # type: ignore[no-any-return]


def _string(props: _Props, name: str) -> str | None:
    value = props.get(name)
    if value is not None and not isinstance(value, str):
        raise _net_failure(BAD_FORMAT)
    return value


def _net_cut(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters as .NET's ``Substring`` counts them: UTF-16 units (an emoji is two,
    and a cut between its halves drops it whole here, where .NET would keep a lone surrogate)."""
    units = text.encode("utf-16-le")
    return units[: 2 * limit].decode("utf-16-le", errors="ignore")


def _read_entry(body: _Props) -> dict[str, Any]:
    """The entry as the server binds and stores it (known properties in their canonical case, labels cut);
    raises the 500 a .NET server answers to a body of the wrong shape."""
    journal = _string(body, "Journal")
    raw_lines = body.get("LignesEcriture")
    if journal is None or not isinstance(raw_lines, list):
        raise _net_failure(NULL_REFERENCE)
    entry: dict[str, Any] = {"Journal": journal, "Mois": _int_field(body, "Mois"), "Annee": _int_field(body, "Annee")}
    reference = _string(body, "ReferenceGed")
    if reference is not None:
        entry["ReferenceGed"] = reference
    lines = []
    for raw in raw_lines:
        if not isinstance(raw, dict):
            raise _net_failure(NULL_REFERENCE)
        props = _Props(raw)
        compte = _string(props, "Compte")
        if compte is None:
            raise _net_failure(NULL_REFERENCE)
        line: dict[str, Any] = {"Jour": _int_field(props, "Jour"), "Compte": compte}
        line["Libelle"] = _net_cut(_string(props, "Libelle") or "", LIBELLE_MAX_CHARS)
        line["Debit"], line["Credit"] = _amount(props, "Debit"), _amount(props, "Credit")
        for name in _LINE_STRINGS:
            value = _string(props, name)
            if value is not None:
                line[name] = value
        analytics = props.get("Analytiques")
        if analytics is not None:
            if not isinstance(analytics, list) or not all(isinstance(a, dict) for a in analytics):
                raise _net_failure(BAD_FORMAT)
            line["Analytiques"] = [_read_split(_Props(a)) for a in analytics]
        lines.append(line)
    entry["LignesEcriture"] = lines
    for line in lines:
        try:
            date(entry["Annee"], entry["Mois"], line["Jour"])
        except ValueError:
            raise _net_failure(BAD_DATE) from None
    return entry


def _read_split(props: _Props) -> dict[str, Any]:
    section = _string(props, "Section1")
    if section is None:
        raise _net_failure(NULL_REFERENCE)
    return {"Section1": section, "Debit": _amount(props, "Debit"), "Credit": _amount(props, "Credit")}


def _business_errors(dossier: AcdDossier, entry: dict[str, Any]) -> Response | None:
    """The first business rule the entry breaks, as a KO envelope; applies automatic split keys on the way."""
    lines: list[dict[str, Any]] = entry["LignesEcriture"]
    journal = next((j for j in dossier.journals if j["Code"] == entry["Journal"]), None)
    if journal is None:
        return _ko("journalInexistant", f"Le journal {entry['Journal']} n'existe pas")
    if len(lines) < 2:
        return _ko("ecritureIncomplete", "Une écriture doit comporter au moins deux lignes.")
    for number, line in enumerate(lines, start=1):
        amounts = [line["Debit"], line["Credit"], *(v for a in line.get("Analytiques", []) for v in a.values())]
        if any(_is_number(v) and (v < 0 or _decimals(v) > 2) for v in amounts) or (
            (line["Debit"] != 0) == (line["Credit"] != 0)
        ):
            return _ko(
                "montantIncorrect",
                f"Ligne {number} : un seul montant (débit ou crédit) positif, à deux décimales au plus, est attendu.",
            )
    debit = sum((Decimal(line["Debit"]) for line in lines), Decimal(0))
    credit = sum((Decimal(line["Credit"]) for line in lines), Decimal(0))
    if debit != credit:
        return _ko("ecritureDesequilibree", f"L'écriture n'est pas équilibrée (débit {debit}, crédit {credit})")
    accounts = {a["Code"]: a for kind in ACCOUNT_KINDS for a in getattr(dossier, kind)}
    unusable = list(
        dict.fromkeys(
            line["Compte"]
            for line in lines
            if line["Compte"] not in accounts or accounts[line["Compte"]].get("CptInactif")
        )
    )
    if unusable:
        errors = [("compteInexistant", f"Le compte {code} n'existe pas ou n'est pas actif") for code in unusable]
        return _ko(*errors[0], more=errors[1:])
    years = [_year_of(dossier, date(entry["Annee"], entry["Mois"], line["Jour"])) for line in lines]
    if any(year is None for year in years):
        return _ko(
            "dateHorsExercice", f"La période {entry['Mois']:02d}/{entry['Annee']} n'appartient à aucun exercice."
        )
    if len(set(years)) > 1:
        return _ko("periodeMultiExercice", "Les lignes de l'écriture appartiennent à plusieurs exercices.")
    if any(year is not None and year[2] for year in years):
        return _ko("exerciceCloture", f"L'exercice de la période {entry['Mois']:02d}/{entry['Annee']} est clôturé")
    if not journal.get("NumeroFacture") and any(line.get("NumeroFacture") for line in lines):
        return _ko(
            "numeroFactureNonGere",
            f"La gestion des numéros de facture n'est pas activée sur le journal {journal['Code']}.",
        )
    if any(len(line.get("ModeReglement") or "") > 1 for line in lines):
        return _ko("modeReglementInconnu", "Le mode de règlement doit être une lettre.")
    return _analytics_errors(dossier, accounts, lines)


def _analytics_errors(
    dossier: AcdDossier, accounts: Mapping[str, Mapping[str, Any]], lines: list[dict[str, Any]]
) -> Response | None:
    for number, line in enumerate(lines, start=1):
        splits = line.get("Analytiques")
        if not splits:
            if not accounts[line["Compte"]].get("ActivationAnalytique"):
                continue
            key = dossier.split_keys.get(line["Compte"])
            if key is None:
                return _ko(
                    "analytiqueCleRepartitionInexistante",
                    f"Ligne {number} : le compte {line['Compte']} exige une ventilation analytique et n'a pas de "
                    "clé de répartition.",
                )
            line["Analytiques"] = _apply_split_key(key, line)
            continue
        known = set(dossier.analytic_sections)
        unknown = [s["Section1"] for s in splits if known and s["Section1"] not in known]
        if unknown:
            return _ko("sectionAnalytiqueInexistante", f"Ligne {number} : la section {unknown[0]} n'existe pas.")
        for side in ("Debit", "Credit"):
            if sum((Decimal(s[side]) for s in splits), Decimal(0)) != Decimal(line[side]):
                return _ko(
                    "ventilationAnalytiqueIncorrecte",
                    f"Ligne {number} : la ventilation analytique ne correspond pas au montant de la ligne.",
                )
    return None


def _apply_split_key(key: Mapping[str, Any], line: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The line's amount split by percentages, to the cent, the last section taking what rounding left."""
    side = "Debit" if line["Debit"] != 0 else "Credit"
    other = "Credit" if side == "Debit" else "Debit"
    total = Decimal(line[side])
    splits: list[dict[str, Any]] = []
    left = total
    for index, (section, share) in enumerate(key.items()):
        if index == len(key) - 1:
            part = left
        else:
            part = (total * Decimal(str(share)) / 100).quantize(Decimal("0.01"), ROUND_HALF_UP)
            left -= part
        splits.append({"Section1": section, side: part, other: 0})
    return splits


def _decimals(value: int | Decimal) -> int:
    if isinstance(value, int):
        return 0
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


# -- fiscal years, GED tree, output shapes -------------------------------------------------------


def _day(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _years(dossier: AcdDossier) -> list[tuple[date, date, bool]]:
    return sorted((_day(y["start"]), _day(y["end"]), bool(y.get("closed"))) for y in dossier.fiscal_years)


def _year_of(dossier: AcdDossier, day: date) -> tuple[date, date, bool] | None:
    return next((year for year in _years(dossier) if year[0] <= day <= year[1]), None)


def _journal_out(journal: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "Code": journal["Code"],
        "Libelle": journal.get("Libelle", journal["Code"]),
        "Nature": journal.get("Nature", "OperationDiverse"),
        "TypeDeSaisie": journal.get("TypeDeSaisie", "Standard"),
        "CompteDeTresorerie": journal.get("CompteDeTresorerie", ""),
        "NumeroFacture": bool(journal.get("NumeroFacture", False)),
        "Actif": True,
        "EcheanceObligatoire": False,
        **{k: v for k, v in journal.items() if k not in ("Code", "Libelle", "Nature")},
    }


def _account_out(account: Mapping[str, Any], kind: str) -> dict[str, Any]:
    categ = {"clients": "C", "fournisseurs": "F"}.get(kind, "")
    return {
        "Code": account["Code"],
        "Categ": categ,
        "Lib": account.get("Lib", ""),
        "Let": "O" if categ else "N",
        "RegEc": "",
        "Qte": "N",
        "Coll": False,
        "CptCptCol": COLLECTIVE_ACCOUNTS.get(kind, ""),
        "CodeTVA": "",
        "CptInactif": False,
        "EcritureId": False,
        "ActivationAnalytique": False,
        **{k: v for k, v in account.items() if k not in ("Code",)},
    }


def _ged_node_out(node: Mapping[str, Any], parent: str) -> dict[str, Any]:
    full = f"{parent}\\{node['Libelle']}" if parent else str(node["Libelle"])
    return {
        "Id": node["Id"],
        "Libelle": node["Libelle"],
        "LibelleComplet": full,
        "Diffusable": node.get("Diffusable", True),
        "VisibleEnComptabilite": node.get("VisibleEnComptabilite", True),
        "Arborescences": [_ged_node_out(child, full) for child in node.get("Arborescences") or []],
    }


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


def _folder_node(tree: list[dict[str, Any]], folder: int) -> dict[str, Any] | None:
    for node in tree:
        if node["Id"] == folder:
            return node
        found = _folder_node(node.get("Arborescences") or [], folder)
        if found is not None:
            return found
    return None


def _plain(value: Any) -> Any:
    """``value`` with every ``Decimal`` written as a string of its exact digits (JSON-ready)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _stored_entry(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A stored entry from its ``snapshot`` form: amounts back to what the server parsed (``Decimal``)."""
    entry = copy.deepcopy(dict(saved))
    entry["committed_at"] = float(entry["committed_at"])
    for line in entry["LignesEcriture"]:
        for split in [line, *line.get("Analytiques", [])]:
            for name in ("Debit", "Credit"):
                if isinstance(split.get(name), str | float):
                    split[name] = Decimal(str(split[name]))
    return entry


# -- the FEC -------------------------------------------------------------------------------------


def _fec_amount(value: Any) -> str:
    return f"{Decimal(value):.2f}".replace(".", ",")


def _fec_field(value: Any) -> str:
    return str(value).replace("\t", " ").replace("\r", " ").replace("\n", " ")


@dataclass(frozen=True)
class _FecNames:
    """What a FEC names besides the entries: journal and account labels, each subsidiary's collective."""

    journals: dict[str, str]
    generaux: dict[str, str]
    subsidiaries: dict[str, tuple[str, str]]

    @classmethod
    def of(cls, dossier: AcdDossier) -> _FecNames:
        return cls(
            journals={j["Code"]: j.get("Libelle", "") for j in dossier.journals},
            generaux={a["Code"]: a.get("Lib", "") for a in dossier.generaux},
            subsidiaries={
                a["Code"]: (a.get("CptCptCol") or COLLECTIVE_ACCOUNTS[kind], a.get("Lib", ""))
                for kind in ("clients", "fournisseurs")
                for a in getattr(dossier, kind)
            },
        )


def _fec_text(names: _FecNames, entries: list[dict[str, Any]], fiscal: tuple[date, date]) -> tuple[str, int]:
    """The FEC of one fiscal year and how many entry lines it has."""
    journals, generaux, subsidiaries = names.journals, names.generaux, names.subsidiaries
    rows = ["\t".join(FEC_COLUMNS)]
    for entry in sorted(entries, key=lambda e: e["EcritureNum"]):
        valid = datetime.fromtimestamp(entry["committed_at"], UTC).strftime("%Y%m%d")
        for line in entry["LignesEcriture"]:
            day = date(entry["Annee"], entry["Mois"], line["Jour"])
            if not fiscal[0] <= day <= fiscal[1]:
                continue
            compte = line["Compte"]
            aux_num = aux_lib = ""
            if compte in subsidiaries:
                aux_num, aux_lib = compte, subsidiaries[compte][1]
                compte = subsidiaries[compte][0]
            stamp = day.strftime("%Y%m%d")
            row = [
                entry["Journal"], journals.get(entry["Journal"], ""), entry["EcritureNum"], stamp, compte,
                generaux.get(compte, ""), aux_num, aux_lib, line.get("NumeroPiece") or "", stamp, line["Libelle"],
                _fec_amount(line["Debit"]), _fec_amount(line["Credit"]), "", "", valid, "", "",
            ]  # fmt: skip
            rows.append("\t".join(_fec_field(value) for value in row))
    # French FEC exports often begin with a byte-order mark: a parser must not take it for part of a column name.
    return "\ufeff" + "\r\n".join(rows) + "\r\n", len(rows) - 1


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S")
