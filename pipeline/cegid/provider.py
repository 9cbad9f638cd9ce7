"""Cegid Loop, described for the rest of hubsync (``pipeline.providers``)."""

from __future__ import annotations

from typing import Any

from pipeline.cegid import cli, connect, export, reconcile, steps
from pipeline.console import when
from pipeline.providers import IdStyle, Provider, ScheduledJob
from pipeline.store import Store

EXPORT_TASK = "hubsync.cegid_loop.export"
"""The export of every connected client file's pending documents, which ``hubsync beat`` sends at 20:00 UTC."""


def _jobs() -> tuple[ScheduledJob, ...]:
    daily = (export.EXPORT_HOUR_UTC, 0)
    return (ScheduledJob("cegid-loop-daily-export", EXPORT_TASK, daily_at_utc=daily, expires_seconds=12 * 3600),)


def _pending_exports(store: Store, client_files: list[str]) -> dict[str, tuple[int, str]]:
    """Documents waiting for the next export, and when it runs, per client file."""
    if not client_files:
        return {}
    at = export.next_export_at().strftime("%Y-%m-%d %H:%MZ")
    return {cf: (n, at) for cf, n in zip(client_files, store.loop.pending_counts(client_files), strict=True)}


def _document_line(meta: dict[str, Any]) -> str:
    """Where a document stands in the deposit ledger."""
    name = meta.get("name") or "-"
    ledger = meta.get("deposit")
    if ledger:
        if ledger.get("settled_by_operator"):
            return f"{name}: counted as deposited by an operator ({ledger['settled_by_operator'].get('reason')})"
        return (
            f"{name}: deposited {when(ledger.get('deposited_at'))} as {ledger.get('transaction')} "
            f"{ledger.get('content_type')}, Loop id {ledger.get('document_id') or '(none in its answer)'}"
        )
    if meta.get("skip_reason"):
        return f"{name}: skipped ({meta['skip_reason']})"
    if meta.get("sending"):
        return f"{name}: sent {when(meta['sending'].get('at'))}, outcome unknown (Loop may hold it)"
    return f"{name}: not deposited yet"


CEGID_LOOP = Provider(
    name=connect.PROVIDER,
    display_name="Cegid Loop",
    queue="cegid_loop",
    steps=steps.CHAIN,
    fan_out=export.fan_out_cegid_loop,
    context=connect.context,
    reconcile=reconcile.reconcile_cegid_loop,
    ids=IdStyle(key_label="unique key", key_field="unique_key", id_label="Loop document id"),
    cli_name=connect.CLI_NAME,
    settle_discarded=steps.settle_discarded,
    mark_checked=reconcile.mark_duplicate_checked,
    pending_exports=_pending_exports,
    document_line=_document_line,
    disconnect=connect.disconnect,
    connect_command=cli.connect_cegid_loop,
    export_command=cli.export_cegid_loop,
    jobs=_jobs,
)
