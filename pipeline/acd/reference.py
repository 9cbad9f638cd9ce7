"""Reference data of each ACD dossier, kept in Redis: journals (with their filing-plan folder), chart of
accounts, client and supplier accounts (inactive and analytic ones noted), fiscal years and GED tree, with
the time of the last refresh. An entry is checked against it before any call to ACD, so that what ACD would
refuse is refused here with a precise message, and nothing is posted in vain.

Keys, per dossier scope (``pipeline.acd.context.dossier_scope(server, dossier)``)::

    hubsync:ref:acd:{scope}            hash: dossier, journals, fiscal_years, filing_plans, ged_tree, inactive,
                                       analytic (JSON), refreshed_at
    hubsync:ref:acd:{scope}:generaux   set of general account codes
    hubsync:ref:acd:{scope}:tiers      set of client (C…) and supplier (F…) account codes
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pipeline.acd.answers import as_bool, ci_get
from pipeline.acd.client import AcdClient
from pipeline.acd.context import PROVIDER, AcdContext, context
from pipeline.acd.errors import (
    AccountLocked,
    AuthenticationFailed,
    EntryRefused,
    FiscalYearClosed,
    InactiveAccount,
    InvoiceNumberManagementOff,
    NotAnISuiteServer,
    OutsideFiscalYears,
    UnexpectedAnswer,
    UnknownAccount,
    UnknownJournal,
)
from pipeline.acd.fec import FiscalYear, fec_year, fiscal_year_of, parse_fiscal_years
from pipeline.errors import HubsyncError
from pipeline.model import Entry
from pipeline.store import LockBusy, Store, now

T = TypeVar("T")
ROUTE_MISSING = (NotAnISuiteServer, UnexpectedAnswer)
"""What a route this server does not serve answers (404 page, 405): optional reference data is then unknown."""


@dataclass
class Reference:
    """What ACD holds for one dossier, as of ``refreshed_at``. ``fiscal_years`` and ``filing_plans`` are None
    when this server does not serve them (then nothing is checked against them)."""

    scope: str
    dossier: str
    journals: dict[str, dict[str, Any]] = field(default_factory=dict)
    general: set[str] = field(default_factory=set)
    subsidiaries: set[str] = field(default_factory=set)
    inactive: set[str] = field(default_factory=set)
    analytic: set[str] = field(default_factory=set)
    fiscal_years: list[FiscalYear] | None = None
    filing_plans: dict[str, dict[str, Any]] | None = None
    ged_tree: list[dict[str, Any]] = field(default_factory=list)
    refreshed_at: float = 0.0

    @property
    def clients(self) -> set[str]:
        """Client account codes (``C…``)."""
        return {c for c in self.subsidiaries if c.startswith("C")}

    @property
    def suppliers(self) -> set[str]:
        """Supplier account codes (``F…``)."""
        return {c for c in self.subsidiaries if c.startswith("F")}

    def journals_without_invoice_numbers(self) -> list[str]:
        """Codes of the journals whose invoice-number management is off."""
        return sorted(code for code, j in self.journals.items() if j.get("NumeroFacture") is not True)

    def folder_for(self, journal: str) -> int | None:
        """The GED folder of ``journal``'s filing plan, or None when it has none (or none is known)."""
        plan = (self.filing_plans or {}).get(journal)
        return int(plan["Id"]) if plan else None

    def fec_year(self, entry: Entry) -> int:
        """The FEC year holding ``entry`` (the year its fiscal year ends)."""
        return fec_year(entry.date, self.fiscal_years or [])


def _codes(items: list[dict[str, Any]]) -> set[str]:
    return {str(code) for item in items if (code := ci_get(item, "Code"))}


def _flagged(items: list[dict[str, Any]], flag: str) -> set[str]:
    return {str(code) for item in items if (code := ci_get(item, "Code")) and as_bool(ci_get(item, flag))}


def _journal(item: dict[str, Any]) -> dict[str, Any]:
    """A journal with the contract's property names, whatever case the server used; any ``Nature`` is kept."""
    return {
        "Code": str(ci_get(item, "Code")),
        "Libelle": str(ci_get(item, "Libelle") or ""),
        "Nature": str(ci_get(item, "Nature") or ""),
        "TypeDeSaisie": ci_get(item, "TypeDeSaisie"),
        "CompteDeTresorerie": ci_get(item, "CompteDeTresorerie"),
        "NumeroFacture": as_bool(ci_get(item, "NumeroFacture")),
    }


def fetch(client: AcdClient, scope: str, call: Callable[..., Any] | None = None) -> Reference:
    """Read every piece of a dossier's reference data from ACD; stores nothing."""

    def plain(fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)

    run = call or plain
    journals = [_journal(j) for j in run(client.journals) if ci_get(j, "Code")]
    general = run(client.accounts, "generaux")
    clients = run(client.accounts, "clients")
    suppliers = run(client.accounts, "fournisseurs")
    try:
        fiscal_years: list[FiscalYear] | None = parse_fiscal_years(run(client.fiscal_years))
    except ROUTE_MISSING:
        fiscal_years = None
    plans: dict[str, dict[str, Any]] | None = {}
    for journal in journals:
        try:
            plan = run(client.filing_plan, journal["Code"])
        except ROUTE_MISSING:
            plans = None
            break
        if plan is not None and plans is not None:
            plans[journal["Code"]] = plan
    ged_tree = run(client.ged_tree)
    everything = general + clients + suppliers
    return Reference(
        scope=scope,
        dossier=client.dossier or "",
        journals={j["Code"]: j for j in journals},
        general=_codes(general),
        subsidiaries=_codes(clients) | _codes(suppliers),
        inactive=_flagged(everything, "CptInactif"),
        analytic=_flagged(everything, "ActivationAnalytique"),
        fiscal_years=fiscal_years,
        filing_plans=plans,
        ged_tree=ged_tree,
        refreshed_at=now(),
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def save(store: Store, ref: Reference) -> None:
    """Replace the stored reference data of a dossier, all at once (and this process's copy)."""
    _LOADED[ref.scope] = (ref, time.monotonic())
    years = None if ref.fiscal_years is None else [y.to_dict() for y in ref.fiscal_years]
    store.reference.save(
        ref.scope,
        {
            "dossier": ref.dossier,
            "journals": _dumps(ref.journals),
            "ged_tree": _dumps(ref.ged_tree),
            "fiscal_years": _dumps(years),
            "filing_plans": _dumps(ref.filing_plans),
            "inactive": _dumps(sorted(ref.inactive)),
            "analytic": _dumps(sorted(ref.analytic)),
            "refreshed_at": ref.refreshed_at,
        },
        ref.general,
        ref.subsidiaries,
    )


def load(store: Store, scope: str) -> Reference | None:
    """The stored reference data of a dossier, or None if it was never fetched."""
    meta, general, tiers = store.reference.load(scope)
    if not meta or not meta.get("refreshed_at"):
        return None
    years = json.loads(meta.get("fiscal_years") or "null")
    return Reference(
        scope=scope,
        dossier=meta.get("dossier", ""),
        journals=json.loads(meta.get("journals") or "{}"),
        general=general,
        subsidiaries=tiers,
        inactive=set(json.loads(meta.get("inactive") or "[]")),
        analytic=set(json.loads(meta.get("analytic") or "[]")),
        fiscal_years=None if years is None else [FiscalYear.from_dict(y) for y in years],
        filing_plans=json.loads(meta.get("filing_plans") or "null"),
        ged_tree=json.loads(meta.get("ged_tree") or "[]"),
        refreshed_at=float(meta["refreshed_at"]),
    )


def refreshed_at(store: Store, scope: str) -> float | None:
    """When a dossier's reference data was last fetched, or None."""
    return store.reference.refreshed_at(scope)


def has_subsidiary(store: Store, scope: str, code: str) -> bool:
    """Whether a subsidiary account is known to exist in the dossier."""
    return store.reference.has_subsidiary(scope, code)


def add_subsidiary(store: Store, scope: str, code: str) -> None:
    """Record at once a subsidiary account created in (or found in) the dossier."""
    store.reference.add_subsidiary(scope, code)


def refresh(store: Store, client: AcdClient, scope: str, call: Callable[..., Any] | None = None) -> Reference:
    """Fetch a dossier's reference data from ACD (through ``call``, e.g. the firm's breaker) and store it."""
    ref = fetch(client, scope, call)
    save(store, ref)
    return ref


def refresh_context(store: Store, ctx: AcdContext) -> Reference:
    """Refresh the reference data of a step context's dossier."""
    return refresh(store, ctx.client, ctx.scope, ctx.call)


def _unknown_accounts(entry: Entry, ref: Reference) -> None:
    accounts = [line.account for line in entry.lines if line.counterparty is None]
    unknown = list(dict.fromkeys(a for a in accounts if a not in ref.general))
    if not unknown:
        return
    if not ref.general:
        message = (
            f"account {', '.join(unknown)} cannot be used: the chart of accounts of ACD dossier {ref.dossier} is empty"
        )
    elif len(unknown) == 1:
        message = f"account {unknown[0]} is not in the chart of accounts of ACD dossier {ref.dossier}"
    else:
        message = f"accounts {', '.join(unknown)} are not in the chart of accounts of ACD dossier {ref.dossier}"
    raise UnknownAccount(message, code="compteInexistant")


def check_entry(entry: Entry, ref: Reference) -> None:
    """Refuse what ACD would refuse (journal, accounts, inactive accounts, invoice number, fiscal year), naming
    what is wrong. Analytic accounts are not checked: ACD may hold an automatic split key no route shows."""
    journal = ref.journals.get(entry.journal_code)
    if journal is None:
        known = ", ".join(sorted(ref.journals)) or "none"
        raise UnknownJournal(
            f"journal {entry.journal_code!r} does not exist in ACD dossier {ref.dossier} (its journals: {known})",
            code="journalInexistant",
        )
    _unknown_accounts(entry, ref)
    used = [line.counterparty.code if line.counterparty is not None else line.account for line in entry.lines]
    inactive = list(dict.fromkeys(code for code in used if code in ref.inactive))
    if inactive:
        raise InactiveAccount(
            f"account {', '.join(inactive)} is inactive in ACD dossier {ref.dossier} (CptInactif): no entry may use it",
            code="compteInexistant",
        )
    if entry.invoice_number and journal.get("NumeroFacture") is not True:
        raise InvoiceNumberManagementOff(
            f"the entry carries invoice number {entry.invoice_number!r} but invoice-number management is off on "
            f"journal {entry.journal_code} of ACD dossier {ref.dossier}",
            code="numeroFactureNonActive",
        )
    if ref.fiscal_years is not None:
        held = fiscal_year_of(entry.date, ref.fiscal_years)
        if held is None:
            spans = ", ".join(f"{y.start:%d/%m/%Y}-{y.end:%d/%m/%Y}" for y in ref.fiscal_years) or "none"
            raise OutsideFiscalYears(
                f"the entry's date {entry.date:%d/%m/%Y} is in no fiscal year of ACD dossier {ref.dossier} "
                f"(its fiscal years: {spans})",
                code="periodeMultiExercice",
            )
        if held.closed:
            raise FiscalYearClosed(
                f"the entry's date {entry.date:%d/%m/%Y} is in the fiscal year {held.start:%d/%m/%Y}-"
                f"{held.end:%d/%m/%Y} of ACD dossier {ref.dossier}, which is closed",
                code="exerciceCloture",
            )


# Per process: the last reference data loaded for each dossier, reused while its refreshed_at is unchanged, so
# checking an entry reads one field instead of the whole chart of accounts (thousands of members on a real
# dossier), and not even that within RECHECK_SECONDS of the last look: a refresh elsewhere is seen a second later
# at most (a refresh in this process at once), and an entry refused against a stale copy refreshes it anyway
# (check_with_refresh). Subsidiary accounts added since are not in it; the check does not use them (see
# ensure_subsidiary).
RECHECK_SECONDS = 1.0
_LOADED: dict[str, tuple[Reference, float]] = {}


def load_for_check(store: Store, scope: str) -> Reference | None:
    """The dossier's reference data for ``check_entry``: this process's copy while it is still the latest."""
    cached = _LOADED.get(scope)
    if cached is not None and time.monotonic() - cached[1] < RECHECK_SECONDS:
        return cached[0]
    stamp = refreshed_at(store, scope)
    if stamp is None:
        return None
    if cached is not None and cached[0].refreshed_at == stamp:
        _LOADED[scope] = (cached[0], time.monotonic())
        return cached[0]
    ref = load(store, scope)
    if ref is not None:
        _LOADED[scope] = (ref, time.monotonic())
    return ref


def current(store: Store, ctx: AcdContext) -> Reference:
    """The stored reference data of a context's dossier, fetched first if there is none yet."""
    return load_for_check(store, ctx.scope) or _refresh_once(store, ctx, since=0.0)


def _refresh_once(store: Store, ctx: AcdContext, since: float) -> Reference:
    """Refresh unless another worker already did after ``since`` (many entries failing at once refresh once)."""
    try:
        with store.locks.hold(f"ref:{ctx.scope}", ttl_seconds=120, wait_seconds=30):
            ref = load(store, ctx.scope)
            if ref is not None and ref.refreshed_at > since:
                return ref
            return refresh_context(store, ctx)
    except LockBusy:
        return refresh_context(store, ctx)


def check_with_refresh(store: Store, ctx: AcdContext, entry: Entry) -> Reference:
    """Check an entry; when a check fails, refresh the (maybe stale) reference data once and check again."""
    started = now()
    ref = current(store, ctx)
    try:
        check_entry(entry, ref)
    except EntryRefused:
        if ref.refreshed_at >= started:
            raise
        ref = _refresh_once(store, ctx, since=started)
        check_entry(entry, ref)
    return ref


@dataclass
class RefreshOutcome:
    """What refreshing one client file's reference data gave."""

    client_file_id: str
    dossier: str
    ok: bool
    message: str
    journals: int = 0
    general_accounts: int = 0
    subsidiary_accounts: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON form for ``--json``."""
        return dict(self.__dict__)


def refresh_connections(store: Store, client_file_id: str | None = None) -> list[RefreshOutcome]:
    """Refresh the reference data of every ACD connection (or one client file's), each dossier once."""
    done: dict[str, Reference] = {}
    out: list[RefreshOutcome] = []
    for conn in store.connections.all(client_file_id):
        if conn.provider != PROVIDER:
            continue
        dossier = str(conn.params.get("dossier", ""))
        try:
            ctx = context(store, conn.client_file_id)
            ref = done.get(ctx.scope) or refresh_context(store, ctx)
        except HubsyncError as exc:
            if isinstance(exc, AuthenticationFailed | AccountLocked) and exc.status in (401, 423):
                store.connections.set_status(conn.client_file_id, PROVIDER, "auth_failed", exc.error_class)
            out.append(RefreshOutcome(conn.client_file_id, dossier, False, f"{exc.error_class}: {exc.message}"))
            continue
        done[ctx.scope] = ref
        if conn.status == "incomplete" and ref.general:
            store.connections.set_status(conn.client_file_id, PROVIDER, "ready")
        out.append(
            RefreshOutcome(
                conn.client_file_id,
                dossier,
                True,
                "refreshed" if ref.general else "refreshed; the chart of accounts is empty",
                journals=len(ref.journals),
                general_accounts=len(ref.general),
                subsidiary_accounts=len(ref.subsidiaries),
            )
        )
    return out
