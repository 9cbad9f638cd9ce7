"""Reconciliation: compare what the hub recorded with what each provider really holds.

ACD is reconciled by ACK code in each dossier's FEC (``pipeline.acd.reconcile``). Cegid Loop cannot be asked
what it holds: its documents are reconciled from the hub's deposit ledger (``pipeline.cegid.reconcile``).
``reconcile`` dispatches each connection to its provider's reconciliation.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.acd.reconcile import Reconciliation, reconcile_acd
from pipeline.cegid.reconcile import LedgerReconciliation, reconcile_cegid_loop
from pipeline.store import Store

RECONCILERS: dict[str, Callable[[Store, str], Reconciliation | LedgerReconciliation]] = {
    "acd": reconcile_acd,
    "cegid_loop": reconcile_cegid_loop,
}


def reconcile(store: Store, client_file_id: str | None = None) -> list[Reconciliation | LedgerReconciliation]:
    """Reconcile every ACD and Cegid Loop connection (or one client file's)."""
    return [
        RECONCILERS[conn.provider](store, conn.client_file_id)
        for conn in store.connections.all(client_file_id)
        if conn.provider in RECONCILERS
    ]
