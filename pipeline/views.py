"""What operators see of the pipeline, computed once for the command line and the dashboard: the states in
their order, a record's key and provider id as its provider writes them, a server's circuit breaker, every
connection as ``hubsync status`` lists it, and the health of each client file with each provider.

Everything is read from counters and indexes the store keeps as states change (``store.records.all_states``,
``last_successes``, the dead letters' groups): no record is read, whatever the history.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from pipeline.breaker import Breaker
from pipeline.console import when
from pipeline.providers import IdStyle
from pipeline.redact import mask_text
from pipeline.registry import PROVIDERS
from pipeline.store import Connection, Record, Store, now

STATE_ORDER = ("received", "waiting_retry", "posted", "confirmed", "exported", "skipped", "dead")
"""The states as tables list them, from arrival to the end of the chain."""

UNKNOWN_IDS = IdStyle(key_label="key", key_field="key", id_label="provider id")
"""How the ids of a record whose provider is not installed here read."""


def ids_of(provider: str) -> IdStyle:
    """How a provider's identifiers read."""
    installed = PROVIDERS.find(provider)
    return installed.ids if installed is not None else UNKNOWN_IDS


def key_text(rec: Record) -> str | None:
    """The record's key as its provider writes it (ACD: ``(#XXXX#)``), or None before it has one."""
    return ids_of(rec.provider).key(rec)


def provider_id_text(rec: Record) -> str:
    """The provider's id for a record: ACD's EcritureNum once its FEC shows the entry (ACD gives none back), a
    Loop document id, or ``-``."""
    return ids_of(rec.provider).provider_id(rec)


def breaker_state(store: Store, conn: Connection) -> dict[str, float | int | str] | None:
    """The circuit breaker of a connection's server (state, failures in a row, open until), or None for a
    provider whose calls go through none."""
    installed = PROVIDERS.find(conn.provider)
    if installed is None or installed.breaker_name is None:
        return None
    return Breaker(store, installed.breaker_name(conn.params), 0, 0, 0).state()


def state_counts(store: Store) -> dict[str, dict[str, dict[str, int]]]:
    """Records per state, per provider and client file."""
    groups: dict[str, dict[str, dict[str, int]]] = {}
    for (provider, client_file), counts in store.records.all_states().items():
        groups.setdefault(provider, {})[client_file] = counts
    return groups


def connection(store: Store, conn: Connection) -> dict[str, Any]:
    """One connection as ``hubsync status`` shows it: its status, dossier, age, server and provider's facts."""
    connected_at = float(conn.params.get("connected_at") or conn.created_at or 0) or None
    item: dict[str, Any] = {
        "provider": conn.provider,
        "client_file_id": conn.client_file_id,
        "status": conn.status,
        "message": conn.status_message,
        "dossier": conn.params.get("dossier"),
        "connected_at": connected_at,
        "connected_age_seconds": None if not connected_at else round(now() - connected_at, 1),
    }
    server = breaker_state(store, conn)
    if server is not None:
        item["server"] = server
    installed = PROVIDERS.find(conn.provider)
    if installed is not None and installed.connection_facts is not None:
        item.update(installed.connection_facts(store, conn))
    return item


@dataclass
class Health:
    """How one client file fares with one provider."""

    provider: str
    client_file: str
    connection: str
    connection_message: str
    dossier: str
    states: dict[str, int]
    last_success: str
    waiting_retries: int
    dead_open: int
    failures_in_a_row: int
    breaker: str
    breaker_until: str
    pending_exports: int | None = None
    next_export: str = ""


def health(store: Store) -> list[Health]:
    """Per client file and provider: last success, failures in a row, waiting retries, breaker state, exports
    waiting (from counters kept as states change: no record is read)."""
    all_states = store.records.all_states()
    connections = {(c.provider, c.client_file_id): c for c in store.connections.all()}
    pairs = set(all_states) | set(connections)
    dead: Counter[tuple[str, str]] = Counter()
    for provider, client_file, _step, _error_class, n, _at, _id in store.dead_letters.groups("open"):
        dead[(provider, "" if client_file == "-" else client_file)] += n
    successes = store.records.last_successes()
    exports: dict[str, dict[str, tuple[int, str]]] = {}
    for installed in PROVIDERS:
        if installed.pending_exports is not None:
            files = sorted(cf for provider, cf in pairs if provider == installed.name)
            exports[installed.name] = installed.pending_exports(store, files)
    out = []
    for provider, client_file in sorted(pairs):
        conn = connections.get((provider, client_file))
        states = all_states.get((provider, client_file)) or store.records.states(provider, client_file)
        server = (breaker_state(store, conn) if conn is not None else None) or {"state": "-", "failures": 0}
        until = float(server.get("open_until") or 0)
        pending, next_export = exports.get(provider, {}).get(client_file, (None, ""))
        out.append(
            Health(
                provider=provider,
                client_file=client_file,
                connection=conn.status if conn else "not connected",
                connection_message=mask_text(conn.status_message) if conn else "",
                dossier=str(conn.params.get("dossier") or "-") if conn else "-",
                states=states,
                last_success=when(successes.get((provider, client_file))),
                waiting_retries=states.get("waiting_retry", 0),
                dead_open=dead.get((provider, client_file), 0),
                failures_in_a_row=int(server.get("failures") or 0),
                breaker=str(server.get("state")),
                breaker_until=when(until) if server.get("state") == "open" else "",
                pending_exports=pending,
                next_export=next_export,
            )
        )
    return out


def document_text(provider: str, meta: dict[str, Any]) -> str:
    """One of a record's documents as ``hubsync entry`` describes it (its provider says how)."""
    installed = PROVIDERS.find(provider)
    if installed is not None and installed.document_line is not None:
        return installed.document_line(meta)
    return str(meta.get("name") or "-")
