"""Reconciliation: compare what the hub recorded with what each ACD dossier really holds, by ACK code.

ACD has no external id, so the ``(#XXXX#)`` ACK code at the end of every line label is the join key. One
``ecritures/filtrer`` call per dossier (``Libelle`` contains ``(#``) lists every ACK-coded entry; each hub
record is then classified:

- ``landed``: posted or confirmed in the hub, exactly one ACD entry carries its code;
- ``missing``: posted or confirmed in the hub, no ACD entry carries its code (lost on the way, or deleted
  in ACD) — except right after the post, while ACD is still indexing (``indexing``);
- ``duplicated``: several ACD entries carry one code (posted twice);
- ``unknown``: an ACD entry carries an ACK code the hub never allocated in that dossier;
- ``pending`` (not posted yet, nothing in ACD), ``dead`` (dead-lettered), ``unrecorded`` (in ACD while the
  hub has not recorded the post yet: a post whose answer is still being looked up).

Cegid Loop cannot be asked what it holds: its documents are reconciled from the hub's deposit ledger
(``pipeline.cegid.reconcile``); this module dispatches each connection to its provider's reconciliation.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.acd.reference import dossier_scope
from pipeline.acd.steps import context
from pipeline.cegid.reconcile import LedgerReconciliation, reconcile_cegid_loop
from pipeline.config import settings
from pipeline.store import P, Record, Store, now

LOOP = "cegid_loop"
ACK_AT_END = re.compile(r"\(#([A-Z0-9]{4})#\)$")
INDEX_MARGIN_SECONDS = 1.0


@dataclass
class Finding:
    """One entry that does not reconcile: the hub's side and ACD's side."""

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
    """The outcome for one client file's ACD dossier."""

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

    @property
    def ok(self) -> bool:
        """Nothing missing, nothing posted twice, nothing unknown, and ACD answered."""
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
        }


def acks_in_entries(entries: list[dict[str, Any]]) -> dict[str, list[int | str]]:
    """ACK code → the ``IdEcriture`` of every ACD entry carrying it (one entry counts once per code)."""
    found: dict[str, list[int | str]] = defaultdict(list)
    for entry in entries:
        codes = set()
        for line in entry.get("LignesEcriture") or []:
            if isinstance(line, dict):
                match = ACK_AT_END.search(str(line.get("Libelle", "")))
                if match:
                    codes.add(match.group(1))
        for code in codes:
            found[code].append(int(entry.get("IdEcriture") or 0))
    return dict(found)


def classify(
    store: Store, client_file_id: str, dossier: str, scope: str, in_acd: dict[str, list[int | str]]
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
        elif rec.provider_id or rec.confirmed_at:
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
            out.unknown.append(Finding(ack=code, provider_ids=list(sorted(ids))))
    return out


def _finding(rec: Record, ids: list[int | str]) -> Finding:
    return Finding(
        ack=rec.ack or "",
        entry_id=rec.entry_id,
        client_file_id=rec.client_file_id,
        state=rec.state,
        provider_ids=sorted(ids, key=str),
    )


def reconcile_acd(store: Store, client_file_id: str) -> Reconciliation:
    """Compare one client file's ACD records with the ACK-coded entries its dossier holds."""
    conn = store.connection(client_file_id, "acd")
    if conn is None:
        return Reconciliation("acd", client_file_id, "", error=f"client file {client_file_id} has no ACD connection")
    dossier = str(conn.params.get("dossier", ""))
    scope = dossier_scope(str(conn.params.get("url", "")), dossier)
    try:
        ctx = context(store, client_file_id)
        entries = ctx.client.find_entries(ctx.dossier, "(#")
    except Exception as exc:  # noqa: BLE001 - any failure is reported, never hidden behind a green line
        return Reconciliation("acd", client_file_id, dossier, error=f"{type(exc).__name__}: {exc}")
    return classify(store, client_file_id, dossier, scope, acks_in_entries(entries))


RECONCILERS: dict[str, Callable[[Store, str], Reconciliation | LedgerReconciliation]] = {
    "acd": reconcile_acd,
    LOOP: reconcile_cegid_loop,
}


def reconcile(store: Store, client_file_id: str | None = None) -> list[Reconciliation | LedgerReconciliation]:
    """Reconcile every ACD and Cegid Loop connection (or one client file's)."""
    return [
        RECONCILERS[conn.provider](store, conn.client_file_id)
        for conn in store.connections(client_file_id)
        if conn.provider in RECONCILERS
    ]
