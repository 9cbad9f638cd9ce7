"""Connecting a client file to an ACD dossier: find the firm's API from the address typed, check every step
of the firm's setup (login, dossier, sharing, chart of accounts), then keep the connection (password sealed,
API base found) and the dossier's reference data (``pipeline.acd.reference``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from pipeline import runtime
from pipeline.acd import reference
from pipeline.acd.answers import ci_get
from pipeline.acd.client import AcdClient, AcdCredentials
from pipeline.acd.context import PROVIDER, api_base_of, dossier_scope, scope_of, tokens
from pipeline.acd.discovery import Found, discover
from pipeline.acd.errors import SHARING_CHECKLIST, DossierNotFound, DossierNotShared
from pipeline.acd.fec import FiscalYear
from pipeline.acd.login_gate import forget_refusal, login_gate
from pipeline.acd.reference import Reference
from pipeline.errors import HubsyncError
from pipeline.secrets import Secret, SecretKeyError, seal, unseal
from pipeline.store import Connection, Store, now

EMPTY_CHART = "the chart of accounts is empty: finish it in ACD before syncing entries (see the ACD checklist)"
INVOICE_NUMBERS_HINT = (
    "turn on File > Settings > Entry > Invoice Number Management if entries on them carry invoice numbers"
)
NOT_SHARED_HINT = SHARING_CHECKLIST + " Then run `hubsync connect acd` again."


@dataclass
class ConnectReport:
    """What connect found, for the operator."""

    client_file_id: str
    dossier: str
    title: str = ""
    url: str = ""
    api_base: str = ""
    journals: list[dict[str, Any]] = field(default_factory=list)
    general_accounts: int = 0
    client_accounts: int = 0
    supplier_accounts: int = 0
    inactive_accounts: list[str] = field(default_factory=list)
    analytic_accounts: list[str] = field(default_factory=list)
    fiscal_years: list[FiscalYear] | None = None
    filing_plans: dict[str, dict[str, Any]] | None = None
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    ready: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON form for ``--json``."""
        return {
            "client_file_id": self.client_file_id,
            "dossier": self.dossier,
            "title": self.title,
            "url": self.url,
            "api_base": self.api_base,
            "journals": [j.get("Code") for j in self.journals],
            "journal_natures": {str(j.get("Code")): j.get("Nature") for j in self.journals},
            "general_accounts": self.general_accounts,
            "client_accounts": self.client_accounts,
            "supplier_accounts": self.supplier_accounts,
            "inactive_accounts": self.inactive_accounts,
            "analytic_accounts": self.analytic_accounts,
            "fiscal_years": None if self.fiscal_years is None else [y.to_dict() for y in self.fiscal_years],
            "filing_plans": self.filing_plans,
            "warnings": self.warnings,
            "problems": self.problems,
            "ready": self.ready,
        }


@dataclass
class _Firm:
    creds: AcdCredentials
    found: Found
    lister: AcdClient


def _open(store: Store, url: str, cnx: str, api_code: str, password: Secret) -> _Firm:
    """Find the API (one login: a wrong password is one failed login, never retried) and keep its token for
    the calls that need no dossier."""
    http = runtime.http(PROVIDER)
    found = discover(http, url, cnx, api_code, password)
    creds = AcdCredentials(api_base=found.api_base, cnx=cnx, api_code=api_code, password=password)
    forget_refusal(store, creds)
    lister = AcdClient(http, creds, None, tokens(store), gate=login_gate(store, creds))
    lister.publish_unbound(found.token)
    return _Firm(creds, found, lister)


def _dossier_client(store: Store, firm: _Firm, dossier: str) -> AcdClient:
    return AcdClient(runtime.http(PROVIDER), firm.creds, dossier, tokens(store), gate=login_gate(store, firm.creds))


def _scope(store: Store, api_base: str, dossier: str, client_file_id: str) -> str:
    """The dossier's scope: the one any connection to this dossier already uses (so ACK codes stay unique in
    it across client files and reconnections), else a new one."""
    existing = store.connections.get(client_file_id, PROVIDER)
    same = [existing] if existing is not None else []
    same += [c for c in store.connections.all() if c.provider == PROVIDER and c.client_file_id != client_file_id]
    for conn in same:
        if conn.params.get("dossier") == dossier and api_base_of(conn.params).casefold() == api_base.casefold():
            return scope_of(conn.params)
    return dossier_scope(api_base.casefold(), dossier)


def _refresh(store: Store, client: AcdClient, scope: str) -> Reference:
    """Read the dossier's reference data: the first dossier call also tells whether the dossier is shared."""
    try:
        return reference.refresh(store, client, scope)
    except DossierNotShared as exc:
        raise DossierNotShared(
            f"dossier {client.dossier} is not shared in i-Suite: ACD opened its session, then refused its first call "
            f"({exc.message})",
            status=exc.status,
            code=exc.code,
            hint=NOT_SHARED_HINT,
        ) from exc


def _report(
    client_file_id: str, info: dict[str, Any], ref: Reference, creds: AcdCredentials, url: str
) -> ConnectReport:
    report = ConnectReport(
        client_file_id=client_file_id,
        dossier=ref.dossier,
        title=str(ci_get(info, "Titre") or ""),
        url=url,
        api_base=creds.api_base,
    )
    report.journals = list(ref.journals.values())
    report.general_accounts = len(ref.general)
    report.client_accounts, report.supplier_accounts = len(ref.clients), len(ref.suppliers)
    report.inactive_accounts = sorted(ref.inactive)
    report.analytic_accounts = sorted(ref.analytic)
    report.fiscal_years = ref.fiscal_years
    report.filing_plans = ref.filing_plans
    if not ref.general:
        report.warnings.append(EMPTY_CHART)
        report.problems.append(EMPTY_CHART)
        report.ready = False
    off = ref.journals_without_invoice_numbers()
    if off:
        report.warnings.append(f"journals without invoice-number management ({', '.join(off)}): {INVOICE_NUMBERS_HINT}")
    if ref.fiscal_years is not None:
        day = date.fromtimestamp(now())
        if not any(y.holds(day) and not y.closed for y in ref.fiscal_years):
            report.warnings.append(
                "no open fiscal year holds today's date: entries dated today would be refused (create the fiscal "
                "year in ACD)"
            )
    if ref.analytic:
        report.warnings.append(
            f"accounts with analytics on ({', '.join(sorted(ref.analytic))}): entries on them need an analytic split "
            "in the hub unless ACD has an automatic split key for the account"
        )
    if ref.filing_plans is not None:
        without = sorted(set(ref.journals) - set(ref.filing_plans))
        if without:
            report.warnings.append(
                f"journals without a GED filing plan ({', '.join(without)}): their documents go to the GED root"
            )
    return report


def _connection(
    client_file_id: str,
    url: str,
    creds: AcdCredentials,
    dossier: str,
    scope: str,
    ged_folder: int,
    report: ConnectReport,
) -> Connection:
    return Connection(
        provider=PROVIDER,
        client_file_id=client_file_id,
        params={
            "url": url,
            "api_base": creds.api_base,
            "cnx": creds.cnx,
            "api_code": creds.api_code,
            "dossier": dossier,
            "scope": scope,
            "ged_folder": ged_folder,
        },
        sealed_secret=seal(creds.password),
        status="ready" if report.ready else "incomplete",
        status_message="; ".join(report.problems),
    )


def _listed(firm: _Firm) -> list[dict[str, Any]]:
    return [d for d in firm.lister.dossiers() if str(ci_get(d, "Id") or "")]


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
    """Find the API, log in, check the dossier (listed, shared, with a chart) and its reference data, and store
    both. Raises the ACD error tree."""
    firm = _open(store, url, cnx, api_code, password)
    listed = _listed(firm)
    info = next((d for d in listed if str(ci_get(d, "Id")).casefold() == dossier.casefold()), None)
    if info is None:
        codes = ", ".join(sorted(str(ci_get(d, "Id")) for d in listed)) or "none"
        raise DossierNotFound(
            f"dossier {dossier} is not among the firm's dossiers ({codes})",
            hint="Check the dossier code in ACD's dossier list, then run `hubsync connect acd` again with it.",
        )
    code = str(ci_get(info, "Id"))
    scope = _scope(store, firm.creds.api_base, code, client_file_id)
    ref = _refresh(store, _dossier_client(store, firm, code), scope)
    report = _report(client_file_id, info, ref, firm.creds, url)
    store.connections.save(_connection(client_file_id, url, firm.creds, code, scope, ged_folder, report))
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
    """One client file (``<prefix><dossier lower>``) per shared dossier of the firm, idempotently; each dossier
    gets its own token (a token is never opened on two dossiers)."""
    firm = _open(store, url, cnx, api_code, password)
    out: list[DossierOutcome] = []
    for info in sorted(_listed(firm), key=lambda d: str(ci_get(d, "Id"))):
        dossier = str(ci_get(info, "Id"))
        title = str(ci_get(info, "Titre") or "")
        cf = f"{prefix}{dossier.lower()}"
        scope = _scope(store, firm.creds.api_base, dossier, cf)
        try:
            ref = _refresh(store, _dossier_client(store, firm, dossier), scope)
        except DossierNotShared as exc:
            out.append(DossierOutcome(dossier, title, None, "not_shared", False, exc.message, exc.hint))
            continue
        except HubsyncError as exc:
            out.append(
                DossierOutcome(dossier, title, cf, "error", False, f"{exc.error_class}: {exc.message}", exc.hint)
            )
            continue
        report = _report(cf, info, ref, firm.creds, url)
        new = _connection(cf, url, firm.creds, dossier, scope, ged_folder, report)
        existing = store.connections.get(cf, PROVIDER)
        if _same(existing, new):
            outcome, message = "unchanged", "already connected, unchanged"
        else:
            store.connections.save(new)
            outcome = "connected" if existing is None else "updated"
            message = "connected" if existing is None else f"updated (was {existing.status})"
        if not report.ready:
            message += "; not ready: " + "; ".join(report.problems)
        out.append(DossierOutcome(dossier, title, cf, outcome, report.ready, message, report=report))
    return out


def found_base(firm_url: str, report: ConnectReport) -> str:
    """One line saying where the API was found, for the command line."""
    if report.api_base.casefold() == firm_url.rstrip("/").casefold():
        return f"ACD API at {report.api_base}"
    return f"ACD API found at {report.api_base} (from {firm_url})"


@dataclass
class Disconnected:
    """What ``disconnect`` removed and what it kept."""

    client_file_id: str
    dossier: str
    records: int

    def lines(self) -> list[str]:
        """What the operator reads."""
        return [
            f"Disconnected {self.client_file_id} from ACD dossier {self.dossier}.",
            "  removed: the connection (server, CNX, API code, dossier) with its sealed password",
            f"  kept: {self.records} record(s) and their history; connect again with `hubsync connect acd`",
        ]


def disconnect(store: Store, client_file_id: str) -> Disconnected | None:
    """Remove a client file's ACD connection, keeping its records; None when there was none."""
    conn = store.connections.delete(client_file_id, PROVIDER)
    if conn is None:
        return None
    records = len(store.records.ids(PROVIDER, client_file_id))
    return Disconnected(client_file_id, str(conn.params.get("dossier", "")), records)
