"""Connecting a client file to an ACD dossier: check every step of the firm's setup, then keep the
connection (password sealed) and the dossier's reference data (``pipeline.acd.reference``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline import runtime
from pipeline.acd import reference
from pipeline.acd.client import TOKENS, AcdClient, AcdCredentials
from pipeline.acd.errors import DossierNotFound, DossierNotShared
from pipeline.acd.login_gate import forget_refusal
from pipeline.acd.reference import Reference, dossier_scope
from pipeline.errors import HubsyncError
from pipeline.secrets import Secret, SecretKeyError, seal, unseal
from pipeline.store import Connection, Store

PROVIDER = "acd"
__all__ = ["ConnectReport", "DossierOutcome", "connect", "connect_all", "dossier_scope"]

EMPTY_CHART = "the chart of accounts is empty: finish it in ACD before syncing entries (see the ACD checklist)"
INVOICE_NUMBERS_HINT = (
    "turn on File > Settings > Entry > Invoice Number Management if entries on them carry invoice numbers"
)


@dataclass
class ConnectReport:
    """What connect found, for the operator."""

    client_file_id: str
    dossier: str
    title: str = ""
    journals: list[dict[str, Any]] = field(default_factory=list)
    general_accounts: int = 0
    client_accounts: int = 0
    supplier_accounts: int = 0
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    ready: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON form for ``--json``."""
        return {
            "client_file_id": self.client_file_id,
            "dossier": self.dossier,
            "title": self.title,
            "journals": [j.get("Code") for j in self.journals],
            "general_accounts": self.general_accounts,
            "client_accounts": self.client_accounts,
            "supplier_accounts": self.supplier_accounts,
            "warnings": self.warnings,
            "problems": self.problems,
            "ready": self.ready,
        }


def _login(store: Store, url: str, cnx: str, api_code: str, password: Secret) -> tuple[AcdCredentials, AcdClient]:
    creds = AcdCredentials(url=url.rstrip("/"), cnx=cnx, api_code=api_code, password=password)
    client = AcdClient(runtime.http(PROVIDER), creds, TOKENS)
    client.login()
    forget_refusal(store, creds)
    return creds, client


def _report(client_file_id: str, info: dict[str, Any], ref: Reference) -> ConnectReport:
    report = ConnectReport(client_file_id=client_file_id, dossier=ref.dossier, title=str(info.get("Titre") or ""))
    report.journals = list(ref.journals.values())
    report.general_accounts = len(ref.general)
    report.client_accounts, report.supplier_accounts = len(ref.clients), len(ref.suppliers)
    if not ref.general:
        report.warnings.append(EMPTY_CHART)
        report.problems.append(EMPTY_CHART)
        report.ready = False
    off = ref.journals_without_invoice_numbers()
    if off:
        report.warnings.append(f"journals without invoice-number management ({', '.join(off)}): {INVOICE_NUMBERS_HINT}")
    return report


def _connection(
    client_file_id: str, creds: AcdCredentials, dossier: str, ged_folder: int, report: ConnectReport
) -> Connection:
    return Connection(
        provider=PROVIDER,
        client_file_id=client_file_id,
        params={
            "url": creds.url,
            "cnx": creds.cnx,
            "api_code": creds.api_code,
            "dossier": dossier,
            "ged_folder": ged_folder,
        },
        sealed_secret=seal(creds.password),
        status="ready" if report.ready else "incomplete",
        status_message="; ".join(report.problems),
    )


def _not_shared(dossier: str) -> DossierNotShared:
    return DossierNotShared(
        f"dossier {dossier} is not shared in i-Suite",
        status=403,
        code="droitsInsuffisants",
        hint=DossierNotShared.default_hint.replace("then replay", "then run `hubsync connect acd` again"),
    )


def connect(
    store: Store,
    client_file_id: str,
    url: str,
    cnx: str,
    api_code: str,
    dossier: str,
    password: Secret,
    ged_folder: int = 0,
) -> ConnectReport:
    """Log in, check the dossier and its reference data, and store both. Raises the ACD error tree."""
    creds, client = _login(store, url, cnx, api_code, password)
    listed = {d.get("Id"): d for d in client.dossiers()}
    info = listed.get(dossier)
    if info is None:
        raise DossierNotFound(
            f"dossier {dossier} is not among the firm's dossiers ({', '.join(sorted(map(str, listed))) or 'none'})"
        )
    if info.get("PartageISuite") is False:
        raise _not_shared(dossier)
    ref = reference.refresh(store, client, creds.url, dossier)
    report = _report(client_file_id, info, ref)
    store.save_connection(_connection(client_file_id, creds, dossier, ged_folder, report))
    return report


@dataclass
class DossierOutcome:
    """What ``connect_all`` did with one of the firm's dossiers."""

    dossier: str
    title: str
    client_file_id: str | None
    outcome: str  # connected, updated, unchanged, not_shared, error
    ready: bool
    message: str
    hint: str = ""
    report: ConnectReport | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form for ``--json``."""
        return {
            "dossier": self.dossier,
            "title": self.title,
            "client_file_id": self.client_file_id,
            "outcome": self.outcome,
            "ready": self.ready,
            "message": self.message,
            "hint": self.hint,
            "report": self.report.to_dict() if self.report else None,
        }


def _same(existing: Connection | None, new: Connection) -> bool:
    if existing is None:
        return False
    if (existing.params, existing.status, existing.status_message) != (new.params, new.status, new.status_message):
        return False
    try:
        return unseal(existing.sealed_secret) == unseal(new.sealed_secret)
    except SecretKeyError:
        return False


def connect_all(
    store: Store,
    url: str,
    cnx: str,
    api_code: str,
    password: Secret,
    prefix: str = "cf_",
    ged_folder: int = 0,
) -> list[DossierOutcome]:
    """One client file (``<prefix><dossier lower>``) per shared dossier of the firm, idempotently."""
    creds, client = _login(store, url, cnx, api_code, password)
    out: list[DossierOutcome] = []
    for info in sorted(client.dossiers(), key=lambda d: str(d.get("Id"))):
        dossier = str(info.get("Id") or "")
        if not dossier:
            continue
        title = str(info.get("Titre") or "")
        if info.get("PartageISuite") is False:
            error = _not_shared(dossier)
            out.append(DossierOutcome(dossier, title, None, "not_shared", False, error.message, error.hint))
            continue
        cf = f"{prefix}{dossier.lower()}"
        try:
            ref = reference.refresh(store, client, creds.url, dossier)
        except HubsyncError as exc:
            out.append(
                DossierOutcome(dossier, title, cf, "error", False, f"{exc.error_class}: {exc.message}", exc.hint)
            )
            continue
        report = _report(cf, info, ref)
        new = _connection(cf, creds, dossier, ged_folder, report)
        existing = store.connection(cf, PROVIDER)
        if _same(existing, new):
            outcome, message = "unchanged", "already connected, unchanged"
        else:
            store.save_connection(new)
            outcome = "connected" if existing is None else "updated"
            message = "connected" if existing is None else f"updated (was {existing.status})"
        if not report.ready:
            message += "; not ready: " + "; ".join(report.problems)
        out.append(DossierOutcome(dossier, title, cf, outcome, report.ready, message, report=report))
    return out
