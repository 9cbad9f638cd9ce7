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
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from pipeline.acd import fec, reference
from pipeline.acd.errors import FecUnavailable
from pipeline.acd.fec import entries_by_ack, parse_fec
from pipeline.acd.steps import context, scope_of
from pipeline.acd.tokens import count
from pipeline.config import settings
from pipeline.store import P, Record, Store, now

INDEX_MARGIN_SECONDS = 1.0


@dataclass
class Finding:
    """One entry that does not reconcile: the hub's side and the provider's side."""

    ack: str
    entry_id: str = ""
    client_file_id: str = ""
    state: str = ""
    provider_ids: list[int | str] = field(default_factory=list)
    name: str = ""

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
        }


def classify(
    store: Store, client_file_id: str, dossier: str, scope: str, in_acd: dict[str, list[str]]
) -> Reconciliation:
    """Classify a client file's records against the ACK codes found in its ACD dossier (no network)."""
    out = Reconciliation("acd", client_file_id, dossier)
    lag = settings().acd_index_lag_seconds + INDEX_MARGIN_SECONDS
    for rid in store.record_ids("acd", client_file_id):
        rec = store.record(rid)
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
    owners = store.r.hgetall(f"{P}:ack:acd:{scope}")
    for code, ids in sorted(in_acd.items()):
        owner = owners.get(code)
        if owner is None or store.record(owner) is None:
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
    for rid in store.record_ids("acd", client_file_id):
        (raw,) = store.fields(rid, "event")
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


def reconcile_acd(store: Store, client_file_id: str) -> Reconciliation:
    """Compare one client file's ACD records with the ACK-coded entries of its dossier's FEC."""
    conn = store.connection(client_file_id, "acd")
    if conn is None:
        return Reconciliation("acd", client_file_id, "", error=f"client file {client_file_id} has no ACD connection")
    dossier = str(conn.params.get("dossier", ""))
    scope = scope_of(conn.params)
    found: dict[str, list[str]] = {}
    try:
        ctx = context(store, client_file_id)
        ref = reference.current(store, ctx)
        where = _years(store, client_file_id, ref)
        years = []
        for year in where.years:
            try:
                lines = parse_fec(ctx.fetch_fec(year))
            except FecUnavailable:
                if where.guessed:
                    continue  # no fiscal year ends in that year: nothing of the dossier's is there
                raise
            years.append(year)
            count(store, "fec_fetches", f"reconcile:{scope}")
            for ack, numbers in entries_by_ack(lines).items():
                found.setdefault(ack, []).extend(numbers)
    except Exception as exc:  # noqa: BLE001 - any failure is reported, never hidden behind a green line
        return Reconciliation("acd", client_file_id, dossier, error=f"{type(exc).__name__}: {exc}")
    result = classify(store, client_file_id, dossier, scope, found)
    result.years = years
    return result
