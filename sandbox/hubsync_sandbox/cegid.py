"""The Cegid Loop sandbox: the Cegid Loop contract (version 2) and nothing more, for tests and ``hubsync sandbox``.

Mounted by ``SandboxServer`` under ``/cegid``. It serves the reference-data reads ``GET /journal`` and
``GET /compte`` (an unknown code answers ``[]``, a known dossier the key does not reach answers 403) and the
PIA deposit ``POST /storeDocument?context=&filename=[&transaction][&uploadMode][&uploadAuthor]`` with the raw
file as the body. Like the real one, the deposit validates nothing: any context (known or not) and any
content is accepted with 200 and ``{"documentId", "fileName", "status": "Received", …}``; only a missing
``context`` or ``filename`` (400), a body over 50,000,000 bytes (413, read streamed), a bad key (401) and a
known dossier the key does not reach (403) are refused. Every deposit is kept as what it received — query
parameters, ``Content-Type``, size, SHA-256 and the type its first bytes show — never the bytes, and shown
per dossier (deposits into unknown contexts included) by ``deposits()`` and ``GET /_sandbox/cegid/state``;
``snapshot`` and ``restore`` carry keys, dossiers and deposits through a JSON file.
Faults (``hubsync_sandbox.faults``): ``rate_limit`` (429 with ``Retry-After``), ``drop_after_commit`` (the
deposit is kept, then the connection is cut), ``off`` (down), ``slow``, ``status``, ``garbage``.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hubsync_sandbox.faults import Fault, FaultSwitch, parse_faults
from hubsync_sandbox.http import BadBody, ConnectionAbort, HttpError, Request, Response, Router, json_response
from pipeline.documents import sniff_type

logger = logging.getLogger(__name__)

DEPOSIT_MAX_BYTES = 50_000_000
CALLS_KEPT = 10_000
HEAD_BYTES = 1024
DEFAULT_JOURNALS = (("ACH", "Achats", 1), ("VT", "Ventes", 8), ("BQ", "Banque", 4), ("OD", "Opérations diverses", 2))
DEFAULT_ACCOUNTS = (
    ("401000", "Fournisseurs"),
    ("411000", "Clients"),
    ("512000", "Banque"),
    ("606400", "Fournitures administratives"),
    ("706000", "Prestations de services"),
)

DEMO_SUBSCRIPTION_KEY = "sub-hubsync-demo"
DEMO_DOMAIN = "cabinet-dupont"
DEMO_API_KEY = "loop-dupont"
DEMO_API_SECRET = "loop-dupont-secret"


@dataclass
class LoopDossier:
    """One client's accounting file in the firm's Loop account: its journals, accounts and linked API keys."""

    code: str
    nom: str
    api_keys: set[str] = field(default_factory=set)
    journals: list[dict[str, Any]] = field(default_factory=list)
    comptes: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class LoopSeed:
    """What a sandbox starts with: subscription keys, API keys (key → secret) and dossiers."""

    subscription_keys: set[str]
    api_keys: dict[str, str]
    dossiers: list[LoopDossier]

    def __repr__(self) -> str:
        return f"LoopSeed(dossiers={[d.code for d in self.dossiers]}, [secure])"


def journals_of(specs: Iterable[tuple[str, str, int]]) -> list[dict[str, Any]]:
    """Journals as ``GET /journal`` returns them, from ``(code, libelle, type)``."""
    return [
        {"objectId": str(uuid.uuid4()), "revisionId": str(uuid.uuid4()), "code": code, "libelle": libelle, "type": kind}
        for code, libelle, kind in specs
    ]


def _accounts() -> list[dict[str, Any]]:
    return [
        {"objectId": str(uuid.uuid4()), "revisionId": str(uuid.uuid4()), "numero": number, "libelle": libelle}
        for number, libelle in DEFAULT_ACCOUNTS
    ]


def dossier(
    code: str, nom: str, api_keys: Iterable[str] = (), journals: list[dict[str, Any]] | None = None
) -> LoopDossier:
    """A dossier with the usual journals and accounts (``journals=[]`` for one that has none)."""
    return LoopDossier(
        code, nom, set(api_keys), journals_of(DEFAULT_JOURNALS) if journals is None else journals, _accounts()
    )


def demo_loop_seed() -> LoopSeed:
    """The demo firm: key loop-dupont / loop-dupont-secret; DUPONT01 linked to it, DUPONT02 not (403)."""
    return LoopSeed(
        subscription_keys={DEMO_SUBSCRIPTION_KEY},
        api_keys={DEMO_API_KEY: DEMO_API_SECRET},
        dossiers=[dossier("DUPONT01", "Boulangerie Dupont", {DEMO_API_KEY}), dossier("DUPONT02", "Garage Dupont")],
    )


def _error(status: int, message: str) -> Response:
    return json_response({"statusCode": status, "message": message}, status)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _State:
    def __init__(self, seed: LoopSeed) -> None:
        self.seed = copy.deepcopy(seed)
        self.dossiers = {d.code: d for d in self.seed.dossiers}
        self.deposits: list[dict[str, Any]] = []
        self.calls: deque[tuple[str, str, int]] = deque(maxlen=CALLS_KEPT)


class CegidLoopSandbox:
    """A Cegid Loop API serving the contract, with a Python API and admin routes for tests."""

    def __init__(self, seed: LoopSeed | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self._seed = copy.deepcopy(seed or demo_loop_seed())
        self._lock = threading.RLock()
        self._state = _State(self._seed)
        self._faults = FaultSwitch()
        self.clock = clock
        self._router = self._build_router()

    # -- Python API ------------------------------------------------------------------------------

    def add_dossier(
        self, code: str, nom: str, api_keys: Iterable[str] = (), journals: list[dict[str, Any]] | None = None
    ) -> None:
        """Add a dossier (linked to ``api_keys``), as a firm creates one in Loop."""
        with self._lock:
            self._state.dossiers[code] = dossier(code, nom, api_keys, journals)

    def remove_dossier(self, code: str) -> bool:
        """Delete a dossier, as a firm could in Loop: its code is then unknown (and still accepts deposits)."""
        with self._lock:
            return self._state.dossiers.pop(code, None) is not None

    def deposits(self, context: str | None = None) -> list[dict[str, Any]]:
        """What every deposit received (of one context, known or not): ``documentId``, ``context``,
        ``filename``, ``transaction``, ``uploadMode``, ``uploadAuthor``, ``content_type``, ``sniffed_type``,
        ``size``, ``sha256``, ``known_context``, ``received_at``."""
        with self._lock:
            return [copy.deepcopy(d) for d in self._state.deposits if context is None or d["context"] == context]

    def duplicates(self, context: str | None = None) -> int:
        """Extra copies: deposits of the same bytes into the same context beyond the first."""
        counts = Counter((d["context"], d["sha256"]) for d in self.deposits(context))
        return sum(n - 1 for n in counts.values() if n > 1)

    def set_fault(self, fault: Fault) -> None:
        """Activate a fault (route relative to ``/cegid``, e.g. ``storeDocument``)."""
        self._faults.add(fault)

    def clear_faults(self) -> None:
        """Deactivate every fault."""
        self._faults.clear()

    def faults(self) -> list[Fault]:
        """The active faults."""
        return self._faults.active()

    def calls(self) -> list[tuple[str, str, int]]:
        """``(method, path, status or 0 if dropped)`` of every call, in order."""
        with self._lock:
            return list(self._state.calls)

    def reset(self) -> None:
        """Back to the seed: no deposits, no faults, no calls."""
        with self._lock:
            self._state = _State(self._seed)
        self._faults.clear()

    def snapshot(self) -> dict[str, Any]:
        """What Loop keeps, as JSON-ready data for ``restore``: subscription and API keys, dossiers (journals,
        accounts, linked keys) and every deposit received."""
        with self._lock:
            seed = self._state.seed
            return {
                "subscription_keys": sorted(seed.subscription_keys),
                "api_keys": dict(seed.api_keys),
                "dossiers": [
                    {
                        "code": d.code,
                        "nom": d.nom,
                        "api_keys": sorted(d.api_keys),
                        "journals": copy.deepcopy(d.journals),
                        "comptes": copy.deepcopy(d.comptes),
                    }
                    for d in self._state.dossiers.values()
                ],
                "deposits": copy.deepcopy(self._state.deposits),
            }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Hold what ``snapshot`` saw (keys, dossiers, deposits), with no fault and no call; ``reset`` still goes
        back to the seed the sandbox was built with."""
        seed = LoopSeed(
            subscription_keys=set(snapshot["subscription_keys"]),
            api_keys=dict(snapshot["api_keys"]),
            dossiers=[
                LoopDossier(d["code"], d["nom"], set(d["api_keys"]), list(d["journals"]), list(d["comptes"]))
                for d in snapshot["dossiers"]
            ],
        )
        state = _State(seed)
        state.deposits = copy.deepcopy(list(snapshot["deposits"]))
        with self._lock:
            self._state = state
        self._faults.clear()

    def state(self) -> dict[str, Any]:
        """Dossiers, deposits per context (unknown contexts included), faults and calls, JSON-ready."""
        with self._lock:
            per_context: dict[str, list[dict[str, Any]]] = {}
            for item in self._state.deposits:
                per_context.setdefault(item["context"], []).append(copy.deepcopy(item))
            known = set(self._state.dossiers)
            return {
                "dossiers": {
                    d.code: {"nom": d.nom, "api_keys": sorted(d.api_keys), "journals": len(d.journals)}
                    for d in self._state.dossiers.values()
                },
                "deposits": per_context,
                "unknown_contexts": sorted(c for c in per_context if c not in known),
                "faults": [f.to_dict() for f in self._faults.active()],
                "calls": [list(call) for call in self._state.calls],
            }

    # -- HTTP ------------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Answer a request under ``/cegid``."""
        fault = self._faults.take(request.method, request.path)
        try:
            response = self._faults.respond(fault, lambda: self._serve(request))
        except ConnectionAbort:
            self._record(request.method, request.path, 0)
            raise
        self._record(request.method, request.path, response.status)
        return response

    def _record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self._state.calls.append((method, path, status))

    def _serve(self, request: Request) -> Response:
        if request.header("Ocp-Apim-Subscription-Key") not in self._state.seed.subscription_keys:
            return _error(
                401,
                "Access denied due to missing subscription key. Make sure to include subscription key when making "
                "requests to an API.",
            )
        key, sep, secret = (request.header("x-apikey") or "").partition(":")
        if not sep or self._state.seed.api_keys.get(key) != secret:
            return _error(401, "Clé d'API invalide")
        request.context["api_key"] = key
        try:
            return self._router.handle(request)
        except BadBody as exc:
            return _error(413 if exc.too_large else 400, str(exc))

    def _build_router(self) -> Router:
        router = Router(not_found=lambda request: _error(404, "Resource not found"))
        router.add("GET", "/journal", lambda request: self._list(request, "journals"))
        router.add("GET", "/compte", lambda request: self._list(request, "comptes"))
        router.add("POST", "/storeDocument", self._store_document)
        return router

    def _reachable(self, request: Request, code: str) -> LoopDossier | None:
        """The dossier of that code, None when unknown; 403 when the key does not reach it."""
        found = self._state.dossiers.get(code)
        if found is not None and request.context["api_key"] not in found.api_keys:
            raise HttpError(_error(403, f"La clé d'API n'a pas accès au dossier {code}"))
        return found

    def _list(self, request: Request, what: str) -> Response:
        code = request.query_value("codeDossier")
        if not code:
            return _error(400, "Le paramètre codeDossier est obligatoire")
        try:
            skip = int(request.query_value("skip") or 0)
            take = int(request.query_value("take") or 100)
        except ValueError:
            return _error(400, "skip et take sont des entiers")
        if skip < 0 or take < 0:
            return _error(400, "skip et take sont positifs")
        with self._lock:
            found = self._reachable(request, code)
            items = [] if found is None else copy.deepcopy(getattr(found, what))
        return json_response(items[skip : skip + take])

    def _store_document(self, request: Request) -> Response:
        context = request.query_value("context")
        filename = request.query_value("filename")
        if not context or not filename:
            return _error(400, "Les paramètres context et filename sont obligatoires")
        if request.content_length is not None and request.content_length > DEPOSIT_MAX_BYTES:
            return _error(413, "Le fichier dépasse la taille maximale de 50 Mo")
        with self._lock:
            known = self._reachable(request, context) is not None
        hasher = hashlib.sha256()
        size = 0
        head = bytearray()
        for chunk in request.iter_body():
            size += len(chunk)
            if size > DEPOSIT_MAX_BYTES:
                return _error(413, "Le fichier dépasse la taille maximale de 50 Mo")
            hasher.update(chunk)
            if len(head) < HEAD_BYTES:
                head += chunk[: HEAD_BYTES - len(head)]
        document_id = str(uuid.uuid4())
        received = {
            "documentId": document_id,
            "context": context,
            "filename": filename,
            "transaction": request.query_value("transaction"),
            "uploadMode": request.query_value("uploadMode"),
            "uploadAuthor": request.query_value("uploadAuthor"),
            "content_type": request.header("Content-Type"),
            "sniffed_type": sniff_type(bytes(head)),
            "size": size,
            "sha256": hasher.hexdigest(),
            "known_context": known,
            "api_key": request.context["api_key"],
            "received_at": _iso(self.clock()),
        }
        with self._lock:
            self._state.deposits.append(received)
        logger.info("Cegid Loop sandbox: %s received for %s", filename, context)
        return json_response(
            {
                "documentId": document_id,
                "fileName": filename,
                "status": "Received",
                "context": context,
                "size": size,
                "uploadMode": received["uploadMode"] or "API",
                "receivedAt": received["received_at"],
            }
        )

    # -- admin -----------------------------------------------------------------------------------

    def admin_router(self) -> Router:
        """Admin routes, mounted by the server under ``/_sandbox/cegid``."""
        router = Router()
        router.add("POST", "/faults", self._admin_add_faults)
        router.add("DELETE", "/faults", self._admin_clear_faults)
        router.add("GET", "/faults", self._admin_list_faults)
        router.add("GET", "/state", lambda request: json_response(self.state()))
        router.add(
            "GET", "/deposits", lambda request: json_response(self.deposits(request.query_value("context") or None))
        )
        return router

    def _admin_add_faults(self, request: Request) -> Response:
        for fault in parse_faults(request):
            self.set_fault(fault)
        return json_response({"faults": [f.to_dict() for f in self.faults()]})

    def _admin_clear_faults(self, request: Request) -> Response:
        self.clear_faults()
        return json_response({"faults": []})

    def _admin_list_faults(self, request: Request) -> Response:
        return json_response({"faults": [f.to_dict() for f in self.faults()]})
