"""Reconciliation: compare what the hub recorded with what each provider really holds.

ACD is reconciled by ACK code in each dossier's FEC (``pipeline.acd.reconcile``). Cegid Loop cannot be asked
what it holds: its documents are reconciled from the hub's deposit ledger (``pipeline.cegid.reconcile``).
``reconcile`` hands each connection to its provider's reconciliation (``pipeline.registry``).
"""

from __future__ import annotations

from pipeline.providers import Reconciled
from pipeline.registry import PROVIDERS
from pipeline.store import Store


def reconcile(store: Store, client_file_id: str | None = None) -> list[Reconciled]:
    """Reconcile every connection of an installed provider (or one client file's)."""
    return [
        PROVIDERS.get(conn.provider).reconcile(store, conn.client_file_id)
        for conn in store.connections.all(client_file_id)
        if conn.provider in PROVIDERS
    ]
