"""``hubsync``: the command line operators, scripts and acceptance checks use.

Every command reads its settings from ``HUBSYNC_*`` variables, exits 0 on success and non-zero with a
one-line reason on standard error otherwise; ``--json`` prints one JSON document and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, NoReturn, TextIO

import click
import redis

from pipeline.config import settings
from pipeline.errors import HubsyncError

STATE_ORDER = ("received", "waiting_retry", "posted", "confirmed", "exported", "skipped", "dead")


def fail(message: str, code: int = 1) -> NoReturn:
    """Exit with a one-line reason on standard error."""
    click.echo(f"hubsync: {message}", err=True)
    sys.exit(code)


def emit_json(value: Any) -> None:
    """Print one JSON document on standard output."""
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def _store() -> Any:
    from pipeline import runtime

    store = runtime.store()
    try:
        store.r.ping()
    except (redis.RedisError, OSError) as exc:
        fail(f"cannot reach Redis at {_safe_redis_url()} ({type(exc).__name__}); set HUBSYNC_REDIS_URL")
    return store


def _safe_redis_url() -> str:
    url = settings().redis_url
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://[secure]@{rest.split('@', 1)[1]}"
    return url


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-v", "--verbose", is_flag=True, help="Log what happens (to standard error).")
def main(verbose: bool) -> None:
    """hubsync: sync validated accounting entries into ACD i-Suite Expert (and Cegid Loop).

    Settings come from HUBSYNC_* environment variables (see the README); the most used are
    HUBSYNC_REDIS_URL (broker and records), HUBSYNC_SECRET_KEY (seals stored credentials) and
    HUBSYNC_DOCUMENT_HOSTS (the hosts supporting documents may be fetched from).
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@main.command()
def keygen() -> None:
    """Print a new key for HUBSYNC_SECRET_KEY (seals stored passwords and secrets)."""
    from pipeline.secrets import generate_key

    click.echo(generate_key())


# -- connect -------------------------------------------------------------------------------------------


@main.group()
def connect() -> None:
    """Connect a client file to a provider."""


def _read_secret(env_name: str, from_stdin: bool, what: str) -> str:
    value = sys.stdin.readline().rstrip("\r\n") if from_stdin else os.environ.get(env_name, "")
    if not value:
        fail(f"no {what}: set {env_name} or pass it on standard input with --{what.replace(' ', '-')}-stdin")
    return value


@connect.command("acd")
@click.option("--client-file", "client_file", required=True, help="The hub's client file id (e.g. cf_dupont).")
@click.option("--url", required=True, help="The i-Suite URL, e.g. https://cabinet-dupont.fr/iSuiteExpert.")
@click.option("--cnx", required=True, help="The CNX code (CNX or CNX followed by a number).")
@click.option("--api-code", required=True, help="The API access code created in ACD (e.g. QONTO).")
@click.option("--dossier", required=True, help="The ACD dossier code (e.g. DUPONT01).")
@click.option("--ged-folder", type=int, default=0, show_default=True, help="GED folder id for documents (0: root).")
@click.option("--password-stdin", is_flag=True, help="Read the API password from standard input.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def connect_acd(
    client_file: str,
    url: str,
    cnx: str,
    api_code: str,
    dossier: str,
    ged_folder: int,
    password_stdin: bool,
    as_json: bool,
) -> None:
    """Store an ACD connection for a client file (password from HUBSYNC_ACD_PASSWORD or --password-stdin).

    Logs in, checks the dossier is shared, fetches journals and accounts and reports what it found.
    """
    from pipeline.acd.connect import connect as do_connect
    from pipeline.secrets import Secret

    password = Secret(_read_secret("HUBSYNC_ACD_PASSWORD", password_stdin, "password"))
    store = _store()
    try:
        report = do_connect(store, client_file, url, cnx, api_code, dossier, password, ged_folder)
    except HubsyncError as exc:
        fail(f"{exc.message}. {exc.hint}")
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(f"Connected {client_file} to ACD dossier {dossier} ({report.title or 'untitled'}).")
        click.echo(f"  journals: {', '.join(str(j.get('Code')) for j in report.journals) or 'none'}")
        click.echo(
            f"  accounts: {report.general_accounts} general, {report.client_accounts} client, "
            f"{report.supplier_accounts} supplier"
        )
        for warning in report.warnings:
            click.echo(f"  warning: {warning}")
    if not report.ready:
        fail(f"client file {client_file} is not ready: " + "; ".join(report.warnings), code=2)


# -- emit ----------------------------------------------------------------------------------------------


def _lines(stream: TextIO) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(stream, start=1):
        if line.strip():
            yield number, line.rstrip("\n")


def publish_event(data: Any) -> None:
    """Send one decoded event to the ``events`` queue, exactly as the upstream service does."""
    from tasks import app
    from tasks.ingest import INGEST_TASK

    app.send_task(INGEST_TASK, args=[data], queue="events")


@main.command()
@click.argument("file", type=click.File("r", encoding="utf-8", errors="surrogateescape"))
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def emit(file: TextIO, as_json: bool) -> None:
    """Publish entry.validated events from FILE (one JSON document per line; - for standard input).

    Each event is checked first: a refused one is kept as a dead letter (see `hubsync dlq list`) and
    reported with its line number and every reason; the others go to the `events` queue.
    """
    from pipeline.ingest import parse, refuse

    store = _store()
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


# -- worker --------------------------------------------------------------------------------------------


@main.command()
@click.option(
    "-Q", "--queues", default="events,acd,cegid_loop", show_default=True, help="Comma-separated queues to consume."
)
@click.option(
    "-c", "--concurrency", type=int, default=None, help="Processes or threads (default: 16 threads, else cores)."
)
@click.option(
    "-P",
    "--pool",
    type=click.Choice(["prefork", "threads", "solo", "gevent"]),
    default="threads",
    show_default=True,
    help="Execution pool; HTTP-bound steps do well on threads.",
)
@click.option("-n", "--name", default=None, help="Worker node name (default: hubsync-<queues>@<host>).")
@click.option("-E", "--events", "task_events", is_flag=True, help="Send task events (needed by Flower).")
@click.option("-l", "--loglevel", default="INFO", show_default=True)
def worker(queues: str, concurrency: int | None, pool: str, name: str | None, task_events: bool, loglevel: str) -> None:
    """Run a Celery worker on the pipeline's queues."""
    from tasks import app

    argv = ["worker", "-Q", queues, "-P", pool, "-l", loglevel, "--without-gossip", "--without-mingle"]
    if concurrency is None and pool == "threads":
        concurrency = 16  # steps wait on remote servers: threads, not cores, bound throughput
    if concurrency:
        argv += ["-c", str(concurrency)]
    argv += ["-n", name or f"hubsync-{queues.replace(',', '-')}@%h"]
    if task_events:
        argv.append("-E")
    app.worker_main(argv)


# -- status, entry -------------------------------------------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def status(as_json: bool) -> None:
    """Per provider and client file: entries received, posted, confirmed, waiting, dead-lettered."""
    from pipeline.breaker import Breaker

    store = _store()
    groups: dict[str, dict[str, Any]] = {}
    for provider, client_file in store.record_groups():
        groups.setdefault(provider, {})[client_file] = store.states(provider, client_file)
    connections = []
    for conn in store.connections():
        item: dict[str, Any] = {
            "provider": conn.provider,
            "client_file_id": conn.client_file_id,
            "status": conn.status,
            "message": conn.status_message,
            "dossier": conn.params.get("dossier"),
        }
        if conn.provider == "acd":
            breaker = Breaker(store, f"acd:{conn.params.get('url', '').rstrip('/')}", 0, 0, 0)
            item["server"] = breaker.state()
        connections.append(item)
    dead = len(store.dead_letters())
    doc = {"providers": groups, "connections": connections, "events": store.counters(), "dead_letters_open": dead}
    if as_json:
        emit_json(doc)
        return
    counters = store.counters()
    click.echo(
        f"events: {counters.get('events_received', 0)} received, {counters.get('events_duplicate', 0)} duplicate, "
        f"{counters.get('events_refused', 0)} refused; open dead letters: {dead}"
    )
    header = f"{'provider':<11}{'client file':<24}" + "".join(f"{s:>14}" for s in STATE_ORDER)
    click.echo(header)
    for provider, files in sorted(groups.items()):
        for client_file, counts in sorted(files.items()):
            click.echo(f"{provider:<11}{client_file:<24}" + "".join(f"{counts.get(s, 0):>14}" for s in STATE_ORDER))
    for item in connections:
        server = item.get("server", {})
        extra = f", server {server.get('state')}" if server else ""
        note = f" ({item['message']})" if item["message"] else ""
        click.echo(f"connection {item['provider']} {item['client_file_id']}: {item['status']}{extra}{note}")


@main.command()
@click.argument("entry_id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def entry(entry_id: str, as_json: bool) -> None:
    """Where one entry stands with each provider: state, ACK code, provider ids, attempts, last error."""
    store = _store()
    records = store.records_of_entry(entry_id)
    if not records:
        fail(f"no entry {entry_id} (never received, or refused: see `hubsync dlq list`)")
    out = []
    for rec in records:
        out.append(
            {
                "provider": rec.provider,
                "client_file_id": rec.client_file_id,
                "entry_id": rec.entry_id,
                "state": rec.state,
                "step": rec.step,
                "ack": f"(#{rec.ack}#)" if rec.ack else None,
                "provider_id": rec.provider_id,
                "documents": {
                    doc_id: {k: meta.get(k) for k in ("name", "ged_id", "size", "sha256", "content_type")}
                    for doc_id, meta in rec.docs.items()
                },
                "attempts": rec.attempts_count,
                "history": store.attempts(rec.id),
                "last_error": rec.last_error,
                "dead_letter_id": rec.dead_letter_id,
                "next_retry_at": rec.next_retry_at,
                "note": rec.note,
                "event_id": rec.event_id,
            }
        )
    if as_json:
        emit_json({"entry_id": entry_id, "providers": out})
        return
    for item in out:
        click.echo(f"{item['provider']} / {item['client_file_id']}: {item['state']} (step {item['step']})")
        click.echo(f"  ACK code: {item['ack'] or '-'}   provider id: {item['provider_id'] or '-'}")
        for doc_id, meta in item["documents"].items():
            click.echo(f"  document {doc_id}: {meta.get('name') or '-'} (GED id {meta.get('ged_id') or '-'})")
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


# -- dead letters --------------------------------------------------------------------------------------


@main.group()
def dlq() -> None:
    """The dead-letter store: list, replay, discard."""


@dlq.command("list")
@click.option("--provider", default=None, help="Only this provider (acd, cegid_loop, ingest).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def dlq_list(provider: str | None, as_json: bool) -> None:
    """The dead-lettered chains and events, oldest first."""
    store = _store()
    letters = store.dead_letters(provider)
    if as_json:
        emit_json(
            [
                {**{k: v for k, v in dl.to_dict().items() if k not in ("event", "audit")}, "state": "dead"}
                | {"attempts": len(dl.attempts), "when": _when(dl.created_at)}
                for dl in letters
            ]
        )
        return
    if not letters:
        click.echo("no open dead letters")
        return
    for dl in letters:
        click.echo(
            f"{dl.id}  {_when(dl.created_at)}  {dl.provider}  {dl.client_file_id or '-'}  {dl.entry_id or '-'}  "
            f"step {dl.step}  {dl.error_class}  attempts {len(dl.attempts)}"
        )
        click.echo(f"    {dl.message}")
        if dl.hint:
            click.echo(f"    what to do: {dl.hint}")


def _replay_one(dl_id: str) -> str:
    from pipeline.deadletters import replay
    from pipeline.ingest import ingest
    from tasks.chains import enqueue

    store = _store()
    return replay(store, dl_id, enqueue, lambda raw: ingest(store, raw, enqueue).summary())


@dlq.command("replay")
@click.argument("ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every open dead letter (of --provider).")
@click.option("--provider", default=None, help="With --all: only this provider.")
def dlq_replay(ids: tuple[str, ...], replay_all: bool, provider: str | None) -> None:
    """Replay dead-lettered chains from the step that failed, without creating duplicates."""
    from pipeline.deadletters import ReplayError

    store = _store()
    if replay_all:
        ids = tuple(dl.id for dl in store.dead_letters(provider))
    elif not ids:
        fail("name dead letters to replay, or pass --all")
    failures = 0
    for dl_id in ids:
        try:
            click.echo(f"{dl_id}: {_replay_one(dl_id)}")
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
    from pipeline.deadletters import ReplayError, discard

    store = _store()
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


# -- sandbox, demo -------------------------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8700, show_default=True)
@click.option("--acd-config", type=click.Path(exists=True, dir_okay=False), help="JSON file describing ACD firms.")
@click.option("--index-lag", type=float, default=2.0, show_default=True, help="ACD indexing lag in seconds.")
def sandbox(host: str, port: int, acd_config: str | None, index_lag: float) -> None:
    """Serve ACD i-Suite and document-store sandboxes on loopback (fault switches under /_sandbox)."""
    from pipeline.acd.sandbox import AcdSandbox, demo_acd_firms
    from pipeline.sandbox import SandboxServer
    from pipeline.sandbox.docstore import DocStore

    acd = AcdSandbox.from_json(acd_config) if acd_config else AcdSandbox(demo_acd_firms())
    acd.index_lag_seconds = index_lag
    server = SandboxServer(acd=acd, docs=DocStore(), host=host, port=port)
    click.echo(f"sandbox on {server.url}")
    for firm in sorted(acd.firms):
        click.echo(f"  ACD firm {firm}: {server.acd_url(firm)}")
    click.echo(f"  documents: {server.url}/docs/<id>   faults and state: {server.url}/_sandbox/")
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


@main.command()
@click.option("--entries", type=int, default=24, show_default=True, help="How many sample entries to sync.")
@click.option("--timeout", type=float, default=180.0, show_default=True, help="Give up waiting after this long.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def demo(entries: int, timeout: float, as_json: bool) -> None:
    """The whole thing on one machine: sandboxes, a worker, a batch of sample events, a summary."""
    from pipeline.demo import run_demo

    summary = run_demo(entries=entries, timeout=timeout, echo=None if as_json else click.echo)
    if as_json:
        emit_json(summary)
    if summary["lost"] or summary["duplicates"]:
        fail(f"demo ended with {summary['lost']} entries not landed and {summary['duplicates']} duplicates")


if __name__ == "__main__":
    main()
