"""ACD reconciliation: compare what the hub recorded with what each ACD dossier really holds, by ACK code.

ACD has no external id and no route that searches entries, so the dossier's FEC is read (once per fiscal year
the hub has entries in) and the ``(#XXXX#)`` ACK code at the end of every line label is the join key. Each hub
record is then classified:

- ``landed``: posted or confirmed in the hub, exactly one ACD entry carries its code;
- ``missing``: posted or confirmed in the hub, no ACD entry carries its code (lost on the way, or deleted
  in ACD) — except right after the post, while ACD is still writing it into the FEC (``indexing``);
- ``duplicated``: several ACD entries carry one code (posted twice);
- ``unknown``: an ACD entry carries an ACK code the hub never allocated in that dossier;
- ``pending`` (not posted yet, nothing in ACD), ``dead`` (dead-lettered), ``unrecorded`` (in ACD while the
  hub has not recorded the post yet: a post whose outcome is still being looked up).

A busy or failing server (429, 502/503, a refused connection, a timeout) is asked again a few times with a
short capped backoff that honours ``Retry-After`` before the dossier is reported as unreadable; the result
says how often ACD had to be asked again.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from typing import Any, TypeVar

from pipeline.acd import fec, reference
from pipeline.acd.context import PROVIDER, context, scope_of
from pipeline.acd.errors import FecUnavailable, NotYetConfirmed
from pipeline.acd.fec import entries_by_ack, parse_fec
from pipeline.acd.tokens import count
from pipeline.config import settings
from pipeline.errors import ErrorKind, HubsyncError, OutcomeUnknown
from pipeline.retry import Jitter, RetryPolicy, backoff_seconds
from pipeline.store import Record, Store, now

INDEX_MARGIN_SECONDS = 1.0
READ_TRIES = 4
"""Tries of each read of ACD (reference data, one FEC year) before the dossier is reported as unreadable."""
READ_WAIT_MAX_SECONDS = 15.0
"""A longer ``Retry-After`` is not waited for: the dossier is reported unreadable at once."""
READ_BUDGET_SECONDS = 40.0
"""All the waiting one dossier's reconciliation may do."""
READ_BACKOFF = RetryPolicy(base_seconds=1.0, max_seconds=8.0)
T = TypeVar("T")


@dataclass
class Finding:
    """One entry that does not reconcile: the hub's side and the provider's side."""

    ack: str
    entry_id: str = ""
    client_file_id: str = ""
    state: str = ""
    provider_ids: list[int | str] = field(default_factory=list)
    name: str = ""

    @property
    def key(self) -> str:
        """How the entry is named in a report: its ACK code, else its name."""
        return f"(#{self.ack}#)" if self.ack else self.name

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "ack": self.ack,
            "entry_id": self.entry_id,
            "client_file_id": self.client_file_id,
            "state": self.state,
            "provider_ids": self.provider_ids,
            "name": self.name,
        }


@dataclass
class Reconciliation:
    """The outcome for one client file's provider dossier."""

    provider: str
    client_file_id: str
    dossier: str
    records: int = 0
    landed: list[str] = field(default_factory=list)
    missing: list[Finding] = field(default_factory=list)
    duplicated: list[Finding] = field(default_factory=list)
    unknown: list[Finding] = field(default_factory=list)
    indexing: list[str] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    error: str = ""
    years: list[int] = field(default_factory=list)
    retries: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing missing, nothing posted twice, nothing unknown, and the provider answered."""
        return not (self.missing or self.duplicated or self.unknown or self.error)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for ``hubsync reconcile --json``."""
        return {
            "provider": self.provider,
            "client_file_id": self.client_file_id,
            "dossier": self.dossier,
            "ok": self.ok,
            "error": self.error,
            "records": self.records,
            "landed": len(self.landed),
            "indexing": self.indexing,
            "unrecorded": self.unrecorded,
            "pending": len(self.pending),
            "dead": len(self.dead),
            "missing": [f.to_dict() for f in self.missing],
            "duplicated": [f.to_dict() for f in self.duplicated],
            "unknown": [f.to_dict() for f in self.unknown],
            "fec_years": self.years,
            "retries": self.retries,
        }

    def lines(self) -> list[str]:
        """What ``hubsync reconcile`` prints: the counts, then each entry that needs a look."""
        head = f"{self.provider} {self.client_file_id} ({self.dossier}): "
        retried = [f"  retried    {note}" for note in self.retries]
        if self.error:
            return [head + f"could not read ACD: {self.error}", *retried]
        out = [
            head + f"{self.records} records, {len(self.landed)} landed, {len(self.missing)} missing, "
            f"{len(self.duplicated)} duplicated, {len(self.unknown)} unknown, {len(self.pending)} pending, "
            f"{len(self.dead)} dead, {len(self.indexing) + len(self.unrecorded)} settling"
            + (f" (FEC {', '.join(map(str, self.years))})" if self.years else "")
            + (f"; ACD was busy, asked again {len(self.retries)} time(s)" if self.retries else ""),
            *retried,
        ]
        where = "ACD (EcritureNum)"
        for f in self.missing:
            out.append(f"  missing    {f.entry_id} {f.key} state {f.state}: not in {where}")
        for f in self.duplicated:
            out.append(f"  duplicated {f.entry_id} {f.key}: {where} ids {', '.join(str(i) for i in f.provider_ids)}")
        for f in self.unknown:
            out.append(f"  unknown    {f.key}: {where} ids {', '.join(str(i) for i in f.provider_ids)}, no hub record")
        return out


def classify(
    store: Store, client_file_id: str, dossier: str, scope: str, in_acd: dict[str, list[str]]
) -> Reconciliation:
    """Classify a client file's records against the ACK codes found in its ACD dossier (no network)."""
    out = Reconciliation(PROVIDER, client_file_id, dossier)
    lag = settings().acd_index_lag_seconds + INDEX_MARGIN_SECONDS
    for rid in store.records.ids(PROVIDER, client_file_id):
        rec = store.records.get(rid)
        if rec is None:
            continue
        out.records += 1
        ids = in_acd.get(rec.ack or "", []) if rec.ack else []
        if len(ids) > 1:
            out.duplicated.append(_finding(rec, ids))
        elif rec.posted_at or rec.provider_id or rec.confirmed_at:
            if ids:
                out.landed.append(rec.entry_id)
            elif rec.posted_at and now() - rec.posted_at < lag:
                out.indexing.append(rec.entry_id)
            else:
                out.missing.append(_finding(rec, ids))
        elif ids:
            out.unrecorded.append(rec.entry_id)
        elif rec.state == "dead":
            out.dead.append(rec.entry_id)
        else:
            out.pending.append(rec.entry_id)
    owners = store.acks.owners(f"acd:{scope}")
    for code, ids in sorted(in_acd.items()):
        owner = owners.get(code)
        if owner is None or store.records.get(owner) is None:
            out.unknown.append(Finding(ack=code, provider_ids=list(ids)))
    return out


def _finding(rec: Record, ids: list[str]) -> Finding:
    return Finding(
        ack=rec.ack or "",
        entry_id=rec.entry_id,
        client_file_id=rec.client_file_id,
        state=rec.state,
        provider_ids=list(sorted(ids, key=str)),
    )


def _years(store: Store, client_file_id: str, ref: reference.Reference) -> fec.FecYears:
    """The FEC years to read: the fiscal year of every record of the client file, and the current one. A year
    that is only a guess (fiscal years unknown) may have no FEC; a known one must be read."""
    years: set[int] = set()
    guessed = False
    for rid in store.records.ids(PROVIDER, client_file_id):
        (raw,) = store.records.fields(rid, "event")
        rec_date = _date_of(raw)
        if rec_date is not None:
            where = fec.fec_years(rec_date, ref.fiscal_years)
            years.update(where.years)
            guessed = guessed or where.guessed
    for year in ref.fiscal_years or []:
        if year.current:
            years.add(year.end.year)
    return fec.FecYears(tuple(sorted(years)), guessed)


def _date_of(raw: str | None) -> date | None:
    if not raw:
        return None
    try:
        return date.fromisoformat(str(json.loads(raw)["entry"]["date"]))
    except (ValueError, KeyError, TypeError):
        return None


def read_wait(error: HubsyncError, attempt: int, jitter: Jitter = random.uniform) -> float | None:
    """How long to wait before reading again after ``error`` on the ``attempt``-th try (0-based); None: give up
    (not transient, or a ``Retry-After`` longer than reconcile waits)."""
    if error.kind is not ErrorKind.TRANSIENT or isinstance(error, FecUnavailable | NotYetConfirmed | OutcomeUnknown):
        return None
    wait = backoff_seconds(attempt, READ_BACKOFF, jitter)
    if error.retry_after is not None:
        if error.retry_after > READ_WAIT_MAX_SECONDS:
            return None
        wait = max(wait, error.retry_after)
    return wait


@dataclass
class _Patience:
    """Reads of one dossier asked again after transient failures, within one budget."""

    sleep: Callable[[float], None]
    jitter: Jitter
    waited: float = 0.0
    notes: list[str] = field(default_factory=list)

    def read(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, asked again after a transient failure while tries and budget last."""
        attempt = 0
        while True:
            try:
                return fn()
            except HubsyncError as exc:
                wait = read_wait(exc, attempt, self.jitter)
                if wait is None or attempt + 1 >= READ_TRIES or self.waited + wait > READ_BUDGET_SECONDS:
                    raise
                status = f" {exc.status}" if exc.status else ""
                self.notes.append(f"{what}: {exc.error_class}{status}, asked again after {wait:.1f}s")
                self.sleep(wait)
                self.waited += wait
                attempt += 1

    def gave_up(self) -> str:
        """What to add to the error of a dossier given up on after retries."""
        if not self.notes:
            return ""
        return f" (still failing after {len(self.notes)} retries, {self.waited:.0f}s of waiting)"


def reconcile_acd(
    store: Store,
    client_file_id: str,
    sleep: Callable[[float], None] = time.sleep,
    jitter: Jitter = random.uniform,
) -> Reconciliation:
    """Compare one client file's ACD records with the ACK-coded entries of its dossier's FEC, asking a busy
    server again a few times before reporting the dossier unreadable."""
    conn = store.connections.get(client_file_id, PROVIDER)
    if conn is None:
        return Reconciliation(PROVIDER, client_file_id, "", error=f"client file {client_file_id} has no ACD connection")
    dossier = str(conn.params.get("dossier", ""))
    scope = scope_of(conn.params)
    found: dict[str, list[str]] = {}
    patience = _Patience(sleep, jitter)
    try:
        ctx = context(store, client_file_id)
        ref = patience.read("reference data", lambda: reference.current(store, ctx))
        where = _years(store, client_file_id, ref)
        years = []
        for year in where.years:
            try:
                text = patience.read(f"FEC {year}", partial(ctx.fetch_fec, year))
            except FecUnavailable:
                if where.guessed:
                    continue  # no fiscal year ends in that year: nothing of the dossier's is there
                raise
            lines = parse_fec(text)
            years.append(year)
            count(store, "fec_fetches", f"reconcile:{scope}")
            for ack, numbers in entries_by_ack(lines).items():
                found.setdefault(ack, []).extend(numbers)
    except Exception as exc:  # noqa: BLE001 - any failure is reported, never hidden behind a green line
        failed = Reconciliation(
            PROVIDER, client_file_id, dossier, error=f"{type(exc).__name__}: {exc}{patience.gave_up()}"
        )
        failed.retries = patience.notes
        return failed
    result = classify(store, client_file_id, dossier, scope, found)
    result.years = years
    result.retries = patience.notes
    return result
