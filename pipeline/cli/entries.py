"""Entries and dead letters: ``hubsync emit`` (publish events as the upstream does), ``hubsync entry`` (where one
entry stands with each provider) and ``hubsync dlq`` (list, replay, discard)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any, TextIO

import click

from pipeline.config import settings
from pipeline.console import broker, emit_json, fail, open_store, when
from pipeline.deadletters import INGEST
from pipeline.dlq import ReplayError, discard, replay
from pipeline.ingest import ingest, parse, refuse
from pipeline.providers import Enqueue
from pipeline.registry import PROVIDERS
from pipeline.store import Record, Store
from pipeline.views import document_text, ids_of


def _lines(stream: TextIO) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(stream, start=1):
        if line.strip():
            yield number, line.rstrip("\n")


@click.command()
@click.argument("file", type=click.File("r", encoding="utf-8", errors="surrogateescape"))
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def emit(file: TextIO, as_json: bool) -> None:
    """Publish entry.validated events from FILE (one JSON document per line; - for standard input).

    Each event is checked first: a refused one is kept as a dead letter (see `hubsync dlq list`) and
    reported with its line number and every reason; the others go to the `events` queue.
    """
    store = open_store()
    publish_event = broker().publish_event
    accepted = 0
    refused: list[dict[str, Any]] = []
    for number, line in _lines(file):
        event, data, errors = parse(line)
        if event is None:
            result = refuse(store, data, errors)
            refused.append({"line": number, "errors": errors, "dead_letter": result.dead_letter_id})
            if not as_json:
                click.echo(f"line {number}: refused ({result.dead_letter_id}): " + "; ".join(errors), err=True)
            continue
        publish_event(data)
        accepted += 1
    if as_json:
        emit_json({"accepted": accepted, "refused": refused})
    else:
        click.echo(f"{accepted} event(s) accepted, {len(refused)} refused")
    if refused:
        sys.exit(1)


@click.command()
@click.argument("entry_id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def entry(entry_id: str, as_json: bool) -> None:
    """Where one entry stands with each provider: state, ACK code, provider ids, attempts, last error."""
    store = open_store()
    records = store.records.of_entry(entry_id)
    if not records:
        fail(f"no entry {entry_id} (never received, or refused: see `hubsync dlq list`)")
    out = [(rec, _entry_item(store, rec)) for rec in records]
    if as_json:
        emit_json({"entry_id": entry_id, "providers": [item for _rec, item in out]})
        return
    for rec, item in out:
        ids = ids_of(rec.provider)
        click.echo(f"{item['provider']} / {item['client_file_id']}: {item['state']} (step {item['step']})")
        click.echo(f"  {ids.key_label}: {ids.key(rec) or '-'}   {ids.id_line(rec)}")
        for doc_id, meta in item["documents"].items():
            click.echo(f"  document {doc_id}: {document_text(rec.provider, meta)}")
        click.echo(f"  attempts: {item['attempts']}")
        if item["last_error"]:
            err = item["last_error"]
            click.echo(f"  last error: {err.get('error_class')}: {err.get('message')}")
            if err.get("hint"):
                click.echo(f"  what to do: {err.get('hint')}")
        if item["dead_letter_id"]:
            click.echo(
                f"  dead letter: {item['dead_letter_id']} (replay with `hubsync dlq replay {item['dead_letter_id']}`)"
            )
        if item["note"]:
            click.echo(f"  note: {item['note']}")
        if item["trimmed"]:
            click.echo(
                f"  settled {when(item['settled_at'])}; its event, documents and attempts were trimmed after "
                f"{settings().history_days:g} days (HUBSYNC_HISTORY_DAYS): what stops a second post is kept"
            )


_DOC_FIELDS = ("name", "ged_id", "size", "sha256", "content_type")
_LOOP_DOC_FIELDS = ("transaction", "skip_reason", "sending", "unknown", "deposit")


def _entry_item(store: Store, rec: Record) -> dict[str, Any]:
    """One record as ``hubsync entry --json`` shows it; its key under its provider's name for it (``ack``,
    ``unique_key``), every other provider's one empty."""
    ids = ids_of(rec.provider)
    keys: dict[str, str | None] = {p.ids.key_field: None for p in PROVIDERS}
    keys[ids.key_field] = ids.key(rec)
    return {
        "provider": rec.provider,
        "client_file_id": rec.client_file_id,
        "entry_id": rec.entry_id,
        "state": rec.state,
        "step": rec.step,
        **keys,
        "provider_id": rec.provider_id,
        "posted_at": rec.posted_at,
        "documents": {
            doc_id: {k: meta.get(k) for k in _DOC_FIELDS} | {k: meta[k] for k in _LOOP_DOC_FIELDS if k in meta}
            for doc_id, meta in rec.docs.items()
        },
        "attempts": rec.attempts_count,
        "history": store.records.attempts(rec.id),
        "last_error": rec.last_error,
        "dead_letter_id": rec.dead_letter_id,
        "next_retry_at": rec.next_retry_at,
        "note": rec.note,
        "event_id": rec.event_id,
        "settled_at": rec.settled_at,
        "trimmed": rec.trimmed,
    }


# -- dead letters --------------------------------------------------------------------------------------


@click.group()
def dlq() -> None:
    """The dead-letter store: list, replay, discard."""


@dlq.command("list")
@click.option("--provider", default=None, help=f"Only this provider ({', '.join([*PROVIDERS.names(), INGEST])}).")
@click.option("--limit", type=int, default=100, show_default=True, help="At most this many (one page).")
@click.option("--offset", type=int, default=0, show_default=True, help="Skip this many first (the next page).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def dlq_list(provider: str | None, limit: int, offset: int, as_json: bool) -> None:
    """The dead-lettered chains and events, oldest first, one page at a time."""
    store = open_store()
    ids, total = store.dead_letters.page(
        "open", {"provider": provider or ""}, offset=max(0, offset), count=max(1, limit), newest_first=False
    )
    letters = store.dead_letters.by_ids(ids)
    if as_json:
        emit_json(
            [
                {**{k: v for k, v in dl.to_dict().items() if k not in ("event", "audit")}, "state": "dead"}
                | {"attempts": len(dl.attempts), "when": when(dl.created_at), "event_id": _event_id(dl)}
                for dl in letters
            ]
        )
        return
    if not letters:
        click.echo("no open dead letters" if not total else f"no open dead letters past {offset} (of {total})")
        return
    for dl in letters:
        click.echo(
            f"{dl.id}  {when(dl.created_at)}  {dl.provider}  {dl.client_file_id or '-'}  {dl.entry_id or '-'}  "
            f"event {dl.event_id or '-'}  step {dl.step}  {dl.error_class}  attempts {len(dl.attempts)}"
        )
        click.echo(f"    {dl.message}")
        if dl.hint:
            click.echo(f"    what to do: {dl.hint}")
    if offset + len(letters) < total:
        click.echo(f"{offset + 1}-{offset + len(letters)} of {total}: next page with --offset {offset + len(letters)}")


def _event_id(dl: Any) -> str | None:
    """The dead letter's event id: its own field when it has one, else read from the event it kept."""
    value = getattr(dl, "event_id", None) or (dl.event.get("event_id") if isinstance(dl.event, dict) else None)
    return value if isinstance(value, str) else None


def _replay_one(store: Store, dl_id: str, enqueue: Enqueue) -> str:
    return replay(store, dl_id, enqueue, lambda raw: ingest(store, raw, enqueue).summary())


@dlq.command("replay")
@click.argument("ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every open dead letter (of --provider).")
@click.option("--provider", default=None, help="With --all: only this provider.")
def dlq_replay(ids: tuple[str, ...], replay_all: bool, provider: str | None) -> None:
    """Replay dead-lettered chains from the step that failed, without creating duplicates."""
    store = open_store()
    enqueue = broker().enqueue
    if replay_all:
        ids = tuple(store.dead_letters.page("open", {"provider": provider or ""}, count=10**9, newest_first=False)[0])
    elif not ids:
        fail("name dead letters to replay, or pass --all")
    failures = 0
    for dl_id in ids:
        try:
            click.echo(f"{dl_id}: {_replay_one(store, dl_id, enqueue)}")
        except ReplayError as exc:
            failures += 1
            click.echo(f"hubsync: {exc}", err=True)
    click.echo(f"{len(ids) - failures} replayed, {failures} not replayed")
    if failures:
        sys.exit(1)


@dlq.command("discard")
@click.argument("ids", nargs=-1, required=True)
@click.option("--reason", required=True, help="Why (kept in the audit trail).")
def dlq_discard(ids: tuple[str, ...], reason: str) -> None:
    """Remove dead letters on purpose; the reason is recorded."""
    store = open_store()
    failures = 0
    for dl_id in ids:
        try:
            discard(store, dl_id, reason)
            click.echo(f"{dl_id}: discarded")
        except ReplayError as exc:
            failures += 1
            click.echo(f"hubsync: {exc}", err=True)
    if failures:
        sys.exit(1)


COMMANDS = (emit, entry, dlq)
