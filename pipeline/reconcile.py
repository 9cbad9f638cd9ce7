"""Reconciliation: compare what the hub recorded with what each provider really holds.

ACD is reconciled by ACK code in each dossier's FEC (``pipeline.acd.reconcile``). Cegid Loop documents are
reconciled by their unique file name in the client file's partner folder ("Qonto"): every listed document is
read (paged), deposited records must be there once, and a document whose name no hub record of that Loop
dossier carries is ``unknown``. ``reconcile`` dispatches each connection to its provider's reconciler.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pipeline.acd.reconcile import Finding, Reconciliation, reconcile_acd
from pipeline.store import Record, Store

LOOP = "cegid_loop"
__all__ = ["Finding", "Reconciliation", "reconcile", "reconcile_acd", "reconcile_cegid_loop"]


def _loop_listing(client: Any, dossier: str, folder_id: str) -> dict[str, list[int | str]]:
    """File name → ids of every document in a Cegid Loop partner folder, across pages."""
    names: dict[str, list[int | str]] = defaultdict(list)
    skip = 0
    while True:
        page, total = client.list_documents(dossier, folder_id, skip=skip)
        for item in page:
            names[str(item.get("nom", ""))].append(str(item.get("id", "")))
        skip += len(page)
        if not page or skip >= total:
            return dict(names)


def _loop_name(rec: Record) -> str:
    return str((rec.docs.get(rec.entry_id) or {}).get("name") or "")


def classify_loop(
    store: Store, client_file_id: str, dossier: str, siblings: list[str], in_loop: dict[str, list[int | str]]
) -> Reconciliation:
    """Classify a client file's Cegid Loop records against its partner folder's listing (no network);
    ``siblings`` are every client file sharing that Loop dossier, whose names are known too."""
    out = Reconciliation(LOOP, client_file_id, dossier)
    known: set[str] = set()
    for cf in siblings:
        for rid in store.record_ids(LOOP, cf):
            rec = store.record(rid)
            if rec is None:
                continue
            name = _loop_name(rec)
            if name:
                known.add(name)
            if cf != client_file_id:
                continue
            out.records += 1
            ids = in_loop.get(name, []) if name else []
            if len(ids) > 1:
                out.duplicated.append(_loop_finding(rec, name, ids))
            elif rec.provider_id or rec.state == "exported":
                if ids:
                    out.landed.append(rec.entry_id)
                else:
                    out.missing.append(_loop_finding(rec, name, ids))
            elif ids:
                out.unrecorded.append(rec.entry_id)
            elif rec.state == "dead":
                out.dead.append(rec.entry_id)
            else:
                out.pending.append(rec.entry_id)
    for name, ids in sorted(in_loop.items()):
        if name not in known:
            out.unknown.append(Finding(ack="", name=name, provider_ids=list(ids)))
    return out


def _loop_finding(rec: Record, name: str, ids: list[int | str]) -> Finding:
    return Finding(
        ack="", entry_id=rec.entry_id, client_file_id=rec.client_file_id, state=rec.state, provider_ids=ids, name=name
    )


def reconcile_cegid_loop(store: Store, client_file_id: str) -> Reconciliation:
    """Compare one client file's Cegid Loop records with the documents of its partner folder."""
    from pipeline.cegid.connect import context as loop_context

    conn = store.connection(client_file_id, LOOP)
    if conn is None:
        return Reconciliation(
            LOOP, client_file_id, "", error=f"client file {client_file_id} has no Cegid Loop connection"
        )
    dossier = str(conn.params.get("dossier", ""))
    siblings = [
        c.client_file_id
        for c in store.connections()
        if c.provider == LOOP and c.params.get("dossier") == dossier and c.params.get("url") == conn.params.get("url")
    ]
    try:
        ctx = loop_context(store, client_file_id)
        if not ctx.folder_id:
            return Reconciliation(LOOP, client_file_id, dossier, error="the connection has no partner folder yet")
        listing = _loop_listing(ctx.client, ctx.dossier, ctx.folder_id)
    except Exception as exc:  # noqa: BLE001 - any failure is reported, never hidden behind a green line
        return Reconciliation(LOOP, client_file_id, dossier, error=f"{type(exc).__name__}: {exc}")
    return classify_loop(store, client_file_id, dossier, siblings, listing)


RECONCILERS = {"acd": reconcile_acd, LOOP: reconcile_cegid_loop}


def reconcile(store: Store, client_file_id: str | None = None) -> list[Reconciliation]:
    """Reconcile every ACD and Cegid Loop connection (or one client file's)."""
    return [
        RECONCILERS[conn.provider](store, conn.client_file_id)
        for conn in store.connections(client_file_id)
        if conn.provider in RECONCILERS
    ]
