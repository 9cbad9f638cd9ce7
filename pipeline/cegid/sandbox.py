"""The Cegid Loop sandbox: the Cegid Loop contract served in full, for tests and ``hubsync sandbox``.

Mounted by ``SandboxServer`` under ``/cegid`` (``SandboxServer.mount("cegid", sandbox)``). It checks the
subscription key, ``x-apikey: key:secret`` and ``x-loop-domain``; answers 403 for a dossier the key is not
linked to; keeps partner folders and PIA documents per dossier; refuses a deposit with 415 from the bytes
(not the name or declared type), 413 over 20 MiB and 409 for a file name already in the folder; lists
documents with paging (``take`` at most 100); and plays 429/503 (and every other fault mode) on demand.
Only the size, SHA-256 and first bytes of deposited files are kept, never the files.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pipeline.documents import sniff_type
from pipeline.sandbox.faults import Fault, FaultSwitch, parse_faults
from pipeline.sandbox.http import BadBody, ConnectionAbort, HttpError, Request, Response, Router, json_response
from pipeline.sandbox.multipart import StreamedUpload

try:
    from python_multipart.multipart import MultipartParser, parse_options_header
except ImportError:  # pragma: no cover - python-multipart before 0.0.13 only ships the old name
    from multipart.multipart import MultipartParser, parse_options_header  # type: ignore[no-redef]

logger = logging.getLogger(__name__)

DEPOSIT_MAX_BYTES = 20 * 1024 * 1024
TAKE_MAX = 100
TAKE_DEFAULT = 20
CALLS_KEPT = 10_000
DOCUMENT_TYPES = ("recu", "facture_fournisseur", "facture_client")
PAYMENT_STATUSES = ("paye", "non_paye")
_METADATA_FIELDS = {
    "dossierPartenaireId",
    "typeDocument",
    "statutPaiement",
    "date",
    "montantTTC",
    "devise",
    "tiers",
    "reference",
}
_AMOUNT = re.compile(r"^-?\d+(\.\d{1,2})?$")


@dataclass
class LoopDossier:
    """One client's accounting file in a firm's Loop domain."""

    code: str
    nom: str
    domaine: str
    api_keys: set[str] = field(default_factory=set)


@dataclass
class LoopSeed:
    """What a sandbox starts with: subscription keys, API keys (key → secret) and dossiers."""

    subscription_keys: set[str]
    api_keys: dict[str, str]
    dossiers: list[LoopDossier]

    def __repr__(self) -> str:
        return f"LoopSeed(dossiers={[d.code for d in self.dossiers]}, [secure])"


DEMO_SUBSCRIPTION_KEY = "sub-hubsync-demo"
DEMO_DOMAIN = "cabinet-dupont"
DEMO_API_KEY = "loop-dupont"
DEMO_API_SECRET = "loop-dupont-secret"


def demo_loop_seed() -> LoopSeed:
    """The demo firm: domain cabinet-dupont, key loop-dupont / loop-dupont-secret; DUPONT01 linked, DUPONT02 not."""
    return LoopSeed(
        subscription_keys={DEMO_SUBSCRIPTION_KEY},
        api_keys={DEMO_API_KEY: DEMO_API_SECRET},
        dossiers=[
            LoopDossier("DUPONT01", "Boulangerie Dupont", DEMO_DOMAIN, {DEMO_API_KEY}),
            LoopDossier("DUPONT02", "Garage Dupont", DEMO_DOMAIN, set()),
        ],
    )


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"statusCode": status, "message": message}, status, headers)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _State:
    def __init__(self, seed: LoopSeed) -> None:
        self.seed = copy.deepcopy(seed)
        self.dossiers = {(d.domaine, d.code): d for d in self.seed.dossiers}
        self.folders: dict[str, list[dict[str, Any]]] = {d.code: [] for d in self.seed.dossiers}
        self.documents: dict[str, list[dict[str, Any]]] = {d.code: [] for d in self.seed.dossiers}
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

    def add_dossier(self, code: str, nom: str, domaine: str = DEMO_DOMAIN, api_keys: Iterable[str] = ()) -> None:
        """Add a dossier (linked to ``api_keys``), as a firm creates one in Loop."""
        with self._lock:
            dossier = LoopDossier(code, nom, domaine, set(api_keys))
            self._state.dossiers[(domaine, code)] = dossier
            self._state.folders.setdefault(code, [])
            self._state.documents.setdefault(code, [])

    def documents(self, dossier: str) -> list[dict[str, Any]]:
        """Every deposited document of a dossier: ``id``, ``nom``, ``taille``, ``typeDocument``, ``deposeLe``,
        ``dossierPartenaireId``, ``sha256``, ``metadonnees``."""
        with self._lock:
            return copy.deepcopy(self._state.documents.get(dossier, []))

    def folders(self, dossier: str) -> list[dict[str, Any]]:
        """The dossier's partner folders."""
        with self._lock:
            return copy.deepcopy(self._state.folders.get(dossier, []))

    def remove_folder(self, dossier: str, name: str = "Qonto") -> int:
        """Delete a partner folder and its documents, as a user could in Loop; returns how many folders went."""
        with self._lock:
            gone = {f["id"] for f in self._state.folders.get(dossier, []) if f["nom"] == name}
            self._state.folders[dossier] = [f for f in self._state.folders.get(dossier, []) if f["id"] not in gone]
            self._state.documents[dossier] = [
                d for d in self._state.documents.get(dossier, []) if d["dossierPartenaireId"] not in gone
            ]
            return len(gone)

    def set_fault(self, fault: Fault) -> None:
        """Activate a fault (route relative to ``/cegid``, e.g. ``pia/dossiers``)."""
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
        """Back to the seed: no folders, no documents, no faults, no calls."""
        with self._lock:
            self._state = _State(self._seed)
        self._faults.clear()

    def state(self) -> dict[str, Any]:
        """Folders, documents, faults and calls as JSON-ready data."""
        with self._lock:
            return {
                "folders": copy.deepcopy(self._state.folders),
                "documents": copy.deepcopy(self._state.documents),
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
            return _error(401, "Access denied due to missing or invalid subscription key.")
        key, sep, secret = (request.header("x-apikey") or "").partition(":")
        if not sep or self._state.seed.api_keys.get(key) != secret:
            return _error(401, "Clé d'API invalide")
        request.context["api_key"] = key
        try:
            return self._router.handle(request)
        except BadBody as exc:
            if exc.too_large:
                return _error(413, "Le fichier dépasse 20 Mio")
            return _error(400, str(exc))

    def _build_router(self) -> Router:
        router = Router(not_found=lambda request: _error(404, "Ressource inconnue"))
        router.add("GET", "/dossiers/{code}", self._dossier_route)
        router.add("GET", "/pia/dossiers/{code}/dossiers-partenaires", self._list_folders)
        router.add("POST", "/pia/dossiers/{code}/dossiers-partenaires", self._create_folder)
        router.add("POST", "/pia/dossiers/{code}/documents", self._deposit)
        router.add("GET", "/pia/dossiers/{code}/documents", self._list_documents)
        return router

    def _dossier(self, request: Request) -> LoopDossier:
        domain = request.header("x-loop-domain") or ""
        dossier = self._state.dossiers.get((domain, request.params["code"]))
        if dossier is None:
            raise HttpError(_error(404, "Dossier inconnu"))
        if request.context["api_key"] not in dossier.api_keys:
            raise HttpError(_error(403, "Le collaborateur n'a pas accès au dossier"))
        return dossier

    def _dossier_route(self, request: Request) -> Response:
        dossier = self._dossier(request)
        return json_response({"codeDossier": dossier.code, "nom": dossier.nom, "domaine": dossier.domaine})

    def _list_folders(self, request: Request) -> Response:
        dossier = self._dossier(request)
        with self._lock:
            return json_response(copy.deepcopy(self._state.folders[dossier.code]))

    def _create_folder(self, request: Request) -> Response:
        dossier = self._dossier(request)
        body = request.json()
        name = body.get("nom") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name.strip() or set(body) != {"nom"}:
            return _error(400, "Le champ nom est attendu")
        with self._lock:
            folders = self._state.folders[dossier.code]
            if any(f["nom"] == name for f in folders):
                return _error(409, f"Un dossier partenaire {name} existe déjà")
            folder = {"id": str(uuid.uuid4()), "nom": name, "creeLe": _iso(self.clock())}
            folders.append(folder)
        return json_response(folder, 201)

    def _list_documents(self, request: Request) -> Response:
        dossier = self._dossier(request)
        try:
            skip = int(request.query_value("skip") or 0)
            take = int(request.query_value("take") or TAKE_DEFAULT)
        except ValueError:
            return _error(400, "skip et take sont des entiers")
        if skip < 0 or take < 1 or take > TAKE_MAX:
            return _error(400, f"take doit être entre 1 et {TAKE_MAX}")
        folder = request.query_value("dossierPartenaireId")
        name = request.query_value("nom")
        with self._lock:
            items = [
                {k: d[k] for k in ("id", "nom", "taille", "typeDocument", "deposeLe")}
                for d in self._state.documents[dossier.code]
                if (not folder or d["dossierPartenaireId"] == folder) and (not name or d["nom"] == name)
            ]
        return json_response({"data": items[skip : skip + take], "total": len(items)})

    def _deposit(self, request: Request) -> Response:
        dossier = self._dossier(request)
        if request.content_length is not None and request.content_length > DEPOSIT_MAX_BYTES + 64 * 1024:
            return _error(413, "Le fichier dépasse 20 Mio")
        content_type, options = parse_options_header(request.header("Content-Type") or "")
        boundary = options.get(b"boundary")
        if content_type != b"multipart/form-data" or not boundary:
            return _error(400, "Un envoi multipart/form-data est attendu")
        upload = StreamedUpload(field_max_bytes=16 * 1024, head_bytes=1024)
        try:
            parser = MultipartParser(boundary, upload.callbacks())
            for chunk in request.iter_body():
                parser.write(chunk)
                if upload.size > DEPOSIT_MAX_BYTES:
                    return _error(413, "Le fichier dépasse 20 Mio")
            parser.finalize()
        except ValueError as exc:
            return _error(400, f"Envoi multipart illisible : {exc}")
        if not upload.ended or upload.file_parts != 1 or not upload.filename or "metadonnees" not in upload.fields:
            return _error(400, "Les parties file et metadonnees sont attendues")
        if sniff_type(bytes(upload.head)) is None:
            return _error(415, "Seuls les fichiers JPEG, PNG et PDF sont acceptés")
        try:
            meta = json.loads(upload.fields["metadonnees"].decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return _error(400, "metadonnees n'est pas un JSON valide")
        problem = _metadata_problem(meta)
        if problem:
            return _error(400, problem)
        with self._lock:
            folders = {f["id"] for f in self._state.folders[dossier.code]}
            if meta["dossierPartenaireId"] not in folders:
                return _error(404, "Dossier partenaire inconnu")
            documents = self._state.documents[dossier.code]
            if any(
                d["dossierPartenaireId"] == meta["dossierPartenaireId"] and d["nom"] == upload.filename
                for d in documents
            ):
                return _error(409, f"Le document {upload.filename} existe déjà dans ce dossier partenaire")
            document = {
                "id": str(uuid.uuid4()),
                "nom": upload.filename,
                "taille": upload.size,
                "typeDocument": meta["typeDocument"],
                "deposeLe": _iso(self.clock()),
                "dossierPartenaireId": meta["dossierPartenaireId"],
                "sha256": upload.hasher.hexdigest(),
                "metadonnees": meta,
            }
            documents.append(document)
        logger.info("Cegid Loop sandbox: %s deposited in %s", upload.filename, dossier.code)
        return json_response({"id": document["id"], "nom": document["nom"], "statut": "depose"}, 201)

    # -- admin -----------------------------------------------------------------------------------

    def admin_router(self) -> Router:
        """Admin routes, mounted by the server under ``/_sandbox/cegid``."""
        router = Router()
        router.add("POST", "/faults", self._admin_add_faults)
        router.add("DELETE", "/faults", self._admin_clear_faults)
        router.add("GET", "/faults", self._admin_list_faults)
        router.add("GET", "/state", lambda request: json_response(self.state()))
        router.add("POST", "/remove-folder", self._admin_remove_folder)
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

    def _admin_remove_folder(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("dossier"), str):
            return json_response({"error": 'expected {"dossier": CODE, "nom": NAME}'}, 400)
        return json_response({"removed": self.remove_folder(body["dossier"], str(body.get("nom") or "Qonto"))})


def _metadata_problem(meta: Any) -> str | None:
    """Why a ``metadonnees`` part breaks the contract, or None."""
    if not isinstance(meta, dict):
        return "metadonnees doit être un objet JSON"
    unknown = set(meta) - _METADATA_FIELDS
    if unknown:
        return f"champs inconnus : {', '.join(sorted(unknown))}"
    if not isinstance(meta.get("dossierPartenaireId"), str):
        return "dossierPartenaireId est attendu"
    if meta.get("typeDocument") not in DOCUMENT_TYPES:
        return f"typeDocument doit être l'un de {', '.join(DOCUMENT_TYPES)}"
    if meta.get("statutPaiement") not in PAYMENT_STATUSES:
        return f"statutPaiement doit être l'un de {', '.join(PAYMENT_STATUSES)}"
    try:
        date.fromisoformat(str(meta.get("date")))
    except ValueError:
        return "date doit être une date ISO (AAAA-MM-JJ)"
    amount = meta.get("montantTTC")
    if not isinstance(amount, str) or not _AMOUNT.match(amount):
        return 'montantTTC doit être une chaîne décimale comme "120.00"'
    try:
        Decimal(amount)
    except InvalidOperation:
        return "montantTTC invalide"
    if not isinstance(meta.get("devise"), str) or not re.fullmatch(r"[A-Z]{3}", meta["devise"]):
        return "devise doit être un code ISO 4217"
    for name in ("tiers", "reference"):
        if name in meta and not isinstance(meta[name], str):
            return f"{name} doit être une chaîne"
    return None
