"""ACD i-Suite Expert, described for the rest of hubsync (``pipeline.providers``)."""

from __future__ import annotations

import os
from typing import Any

from pipeline.acd import cli, connect, context, fanout, reconcile, reference, steps
from pipeline.providers import IdStyle, Provider, ScheduledJob
from pipeline.store import Connection, Store, now

REFRESH_TASK = "hubsync.acd.refresh_reference"
"""The reference-data refresh of every connected dossier, which ``hubsync beat`` sends."""


def _jobs() -> tuple[ScheduledJob, ...]:
    every = float(os.environ.get("HUBSYNC_REFERENCE_REFRESH_SECONDS", "3600"))
    return (ScheduledJob("acd-refresh-reference", REFRESH_TASK, every_seconds=every),)


def _connection_facts(store: Store, conn: Connection) -> dict[str, Any]:
    """The API base a connection speaks to, and how old its dossier's reference data is."""
    fetched = reference.refreshed_at(store, context.scope_of(conn.params))
    return {
        "api_base": conn.params.get("api_base"),
        "reference_refreshed_at": fetched,
        "reference_age_seconds": None if fetched is None else round(max(0.0, now() - fetched), 1),
    }


def _document_line(meta: dict[str, Any]) -> str:
    return f"{meta.get('name') or '-'} (GED id {meta.get('ged_id') or '-'})"


ACD = Provider(
    name=context.PROVIDER,
    display_name="ACD",
    queue="acd",
    steps=steps.CHAIN,
    fan_out=fanout.fan_out_acd,
    context=context.context,
    reconcile=reconcile.reconcile_acd,
    ids=IdStyle(
        key_label="ACK code",
        key_field="ack",
        id_label="ACD EcritureNum",
        key_format="(#{}#)",
        id_prefix="EcritureNum ",
        awaiting_id="posted; not in the FEC yet",
    ),
    on_error=steps.on_error,
    breaker_name=context.breaker_name,
    connection_facts=_connection_facts,
    document_line=_document_line,
    disconnect=connect.disconnect,
    connect_command=cli.connect_acd,
    commands=(cli.refresh,),
    jobs=_jobs,
)
