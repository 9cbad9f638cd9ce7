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
from pipeline.errors import ErrorKind, HubsyncError
from pipeline.plugins import PluginGroup

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
        store.ping()
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


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
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
@click.option("--client-file", "client_file", default=None, help="The hub's client file id (e.g. cf_dupont).")
@click.option(
    "--url",
    required=True,
    help="The i-Suite address in the browser (e.g. https://cabinet.fr/iSuiteExpert) or the API's.",
)
@click.option("--cnx", required=True, help="The CNX code (CNX or CNX followed by a number).")
@click.option("--api-code", required=True, help="The API access code created in ACD (e.g. QONTO).")
@click.option("--dossier", default=None, help="The ACD dossier code (e.g. DUPONT01).")
@click.option(
    "--all-dossiers",
    is_flag=True,
    help="Connect every shared dossier of the firm, one client file each (<prefix><dossier in lower case>).",
)
@click.option(
    "--client-file-prefix", default="cf_", show_default=True, help="With --all-dossiers: client file id prefix."
)
@click.option(
    "--ged-folder",
    type=int,
    default=0,
    show_default=True,
    help="GED folder id for documents of journals without a filing plan (0: the root).",
)
@click.option("--password-stdin", is_flag=True, help="Read the API password from standard input.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def connect_acd(
    client_file: str | None,
    url: str,
    cnx: str,
    api_code: str,
    dossier: str | None,
    all_dossiers: bool,
    client_file_prefix: str,
    ged_folder: int,
    password_stdin: bool,
    as_json: bool,
) -> None:
    """Store an ACD connection for a client file (password from HUBSYNC_ACD_PASSWORD or --password-stdin).

    URL is the address seen in the browser (…/iSuiteExpert, …/cnx/iSuiteExpert, …/CNX) or the API address:
    the command finds the API base, says which one it found and stores it. Logs in once (a refused password
    is never retried), checks the dossier is shared, fetches and keeps its reference data (journals, accounts,
    fiscal years, GED filing plans) and reports what it found. With --all-dossiers, does so for every shared
    dossier of the firm; running it again changes nothing that is already connected.
    """
    from pipeline.acd.connect import connect as do_connect
    from pipeline.secrets import Secret

    if all_dossiers:
        if client_file or dossier:
            fail("--all-dossiers names client files itself: drop --client-file and --dossier")
    elif not client_file or not dossier:
        fail("pass --client-file and --dossier, or --all-dossiers")
    password = Secret(_read_secret("HUBSYNC_ACD_PASSWORD", password_stdin, "password"))
    store = _store()
    if all_dossiers:
        _connect_all(store, url, cnx, api_code, password, client_file_prefix, ged_folder, as_json)
        return
    assert client_file is not None and dossier is not None
    try:
        report = do_connect(store, client_file, url, cnx, api_code, dossier, password, ged_folder)
    except HubsyncError as exc:
        fail(f"{exc.message}. {_hint(exc, 'run `hubsync connect acd` again once ACD answers')}")
    if as_json:
        emit_json(report.to_dict())
    else:
        _print_report(report, client_file, dossier, url)
    if not report.ready:
        fail(f"client file {client_file} is not ready: " + "; ".join(report.problems), code=2)


_ATTENTION = {"not_shared": "not shared", "error": "failed"}


def _print_report(report: Any, client_file: str, dossier: str, url: str) -> None:
    from pipeline.acd.connect import found_base

    click.echo(found_base(url, report))
    click.echo(f"Connected {client_file} to ACD dossier {report.dossier or dossier} ({report.title or 'untitled'}).")
    journals = ", ".join(f"{j.get('Code')} ({j.get('Nature') or '?'})" for j in report.journals)
    click.echo(f"  journals: {journals or 'none'}")
    click.echo(
        f"  accounts: {report.general_accounts} general, {report.client_accounts} client, "
        f"{report.supplier_accounts} supplier"
        + (f"; inactive: {', '.join(report.inactive_accounts)}" if report.inactive_accounts else "")
    )
    if report.fiscal_years is None:
        click.echo("  fiscal years: this server does not list them")
    else:
        years = ", ".join(
            f"{y.start:%d/%m/%Y}-{y.end:%d/%m/%Y}" + (" closed" if y.closed else "") + (" current" if y.current else "")
            for y in report.fiscal_years
        )
        click.echo(f"  fiscal years: {years or 'none'}")
    if report.filing_plans is None:
        click.echo("  GED filing plans: this server does not give them (documents go to the GED root)")
    else:
        plans = ", ".join(
            f"{code} -> {plan.get('Libelle') or plan.get('Id')}" for code, plan in report.filing_plans.items()
        )
        click.echo(f"  GED filing plans: {plans or 'none (documents go to the GED root)'}")
    for warning in report.warnings:
        click.echo(f"  warning: {warning}")


def _connect_all(
    store: Any, url: str, cnx: str, api_code: str, password: Any, prefix: str, ged_folder: int, as_json: bool
) -> None:
    from pipeline.acd.connect import connect_all

    try:
        outcomes = connect_all(store, url, cnx, api_code, password, prefix, ged_folder)
    except HubsyncError as exc:
        fail(f"{exc.message}. {_hint(exc, 'run `hubsync connect acd` again once ACD answers')}")
    if as_json:
        emit_json({"dossiers": [o.to_dict() for o in outcomes]})
    else:
        base = next((o.report.api_base for o in outcomes if o.report is not None), "")
        if base:
            click.echo(f"ACD API found at {base}")
        for o in outcomes:
            target = f" -> {o.client_file_id}" if o.client_file_id else ""
            click.echo(f"{o.dossier} ({o.title or 'untitled'}){target}: {o.message}")
            if o.hint and o.outcome in ("not_shared", "error"):
                click.echo(f"  what to do: {o.hint}")
            if o.report is not None:
                for warning in o.report.warnings:
                    if warning not in o.report.problems:
                        click.echo(f"  warning: {warning}")
        changed = sum(o.outcome in ("connected", "updated") for o in outcomes)
        unchanged = sum(o.outcome == "unchanged" for o in outcomes)
        click.echo(f"{changed} client file(s) connected or updated, {unchanged} unchanged")
    attention = [o for o in outcomes if not o.ready]
    if attention:
        fail(
            f"{len(attention)} dossier(s) need attention: "
            + ", ".join(f"{o.dossier} {_ATTENTION.get(o.outcome, 'not ready')}" for o in attention),
            code=2,
        )


@main.command()
@click.option("--client-file", "client_file", default=None, help="Only this client file (default: every one).")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def refresh(client_file: str | None, as_json: bool) -> None:
    """Fetch the ACD reference data (journals, accounts, GED tree) of connected client files now."""
    from pipeline.acd.reference import refresh_connections

    store = _store()
    outcomes = refresh_connections(store, client_file)
    if client_file and not outcomes:
        fail(f"client file {client_file} has no ACD connection")
    if as_json:
        emit_json([o.to_dict() for o in outcomes])
    else:
        for o in outcomes:
            counts = (
                f" ({o.journals} journals, {o.general_accounts} general and {o.subsidiary_accounts} subsidiary "
                "accounts)"
                if o.ok
                else ""
            )
            click.echo(f"{o.client_file_id} / {o.dossier}: {o.message}{counts}")
    failed = [o for o in outcomes if not o.ok]
    if failed:
        fail(f"{len(failed)} of {len(outcomes)} refresh(es) failed: " + ", ".join(o.client_file_id for o in failed))


# -- Cegid Loop ----------------------------------------------------------------------------------------


@connect.command("cegid-loop")
@click.option("--client-file", "client_file", required=True, help="The hub's client file id (e.g. cf_dupont).")
@click.option(
    "--url",
    default="https://api.cegid.com/loop-api-publiques",
    show_default=True,
    help="The Cegid Loop API base URL.",
)
@click.option("--dossier", required=True, help="The client's code dossier in Cegid Loop.")
@click.option(
    "--domain", required=True, help="The firm's Loop domain: it names the partner e-mail declared in Loop Hub."
)
@click.option("--api-key", "api_key", required=True, help="The API key from the administrator's CegidLife account.")
@click.option("--api-secret-stdin", is_flag=True, help="Read the API secret from standard input.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def connect_cegid_loop(
    client_file: str, url: str, dossier: str, domain: str, api_key: str, api_secret_stdin: bool, as_json: bool
) -> None:
    """Store a Cegid Loop connection (secret from HUBSYNC_CEGID_API_SECRET or --api-secret-stdin).

    The partner subscription key comes from HUBSYNC_CEGID_SUBSCRIPTION_KEY. Checks the key and the dossier
    code with a read (an unknown code is refused: Loop would accept and lose every document sent to it), then
    prints what the firm must declare in Loop Hub, with the exact values.
    """
    from pipeline.cegid.connect import connect as do_connect
    from pipeline.secrets import Secret

    secret = Secret(_read_secret("HUBSYNC_CEGID_API_SECRET", api_secret_stdin, "api secret"))
    subscription = os.environ.get("HUBSYNC_CEGID_SUBSCRIPTION_KEY", "")
    if not subscription:
        fail("no subscription key: set HUBSYNC_CEGID_SUBSCRIPTION_KEY (the hub's Cegid API-management key)")
    store = _store()
    try:
        report = do_connect(store, client_file, url, dossier, domain, api_key, secret, Secret(subscription))
    except HubsyncError as exc:
        fail(f"{exc.message}. {_hint(exc, 'run `hubsync connect cegid-loop` again once Cegid Loop answers')}")
    if as_json:
        emit_json(report.to_dict())
        return
    for line in report.lines():
        click.echo(line)


def _hint(exc: HubsyncError, again: str) -> str:
    """What to do after a command failed: a transient error's default hint says the hub retries, which is true
    of a chain's steps but not of a command an operator ran, so it says what to run instead (a hint written
    for the command itself is kept)."""
    if exc.kind is ErrorKind.TRANSIENT and exc.hint == type(exc).default_hint:
        return f"Nothing retries this command: {again}."
    return exc.hint


@main.command()
@click.argument("provider", type=click.Choice(["acd", "cegid-loop", "cegid_loop"]))
@click.option("--client-file", "client_file", required=True, help="The hub's client file id.")
def disconnect(provider: str, client_file: str) -> None:
    """Remove a client file's connection to PROVIDER; its records and their history stay.

    Connecting again (hubsync connect) starts afresh. For Cegid Loop, this is what the firm does when the
    partner folder has not appeared in Loop 24 hours after the Loop Hub declaration.
    """
    store = _store()
    if provider in ("cegid-loop", "cegid_loop"):
        from pipeline.cegid.connect import disconnect as loop_disconnect

        gone = loop_disconnect(store, client_file)
        if gone is None:
            fail(f"client file {client_file} has no Cegid Loop connection")
        for line in gone.lines():
            click.echo(line)
        return
    conn = store.connections.delete(client_file, provider)
    if conn is None:
        fail(f"client file {client_file} has no {provider} connection")
    records = len(store.records.ids(provider, client_file))
    click.echo(f"Disconnected {client_file} from ACD dossier {conn.params.get('dossier', '')}.")
    click.echo("  removed: the connection (server, CNX, API code, dossier) with its sealed password")
    click.echo(f"  kept: {records} record(s) and their history; connect again with `hubsync connect acd`")


def _outcome_unknown(rec: Any) -> bool:
    return bool((rec.last_error or {}).get("error_class") == "DepositOutcomeUnknown")


@main.group("export")
def export_group() -> None:
    """Export pending documents now instead of waiting for the daily run."""


@export_group.command("cegid-loop")
@click.option("--client-file", "client_file", default=None, help="Only this client file (default: every one).")
@click.option(
    "--wait",
    is_flag=True,
    help="Wait until every document taken is exported, skipped or dead; exit 1 if an outcome is unknown.",
)
@click.option("--timeout", type=float, default=600.0, show_default=True, help="With --wait: give up after this.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def export_cegid_loop(client_file: str | None, wait: bool, timeout: float, as_json: bool) -> None:
    """Run the Cegid Loop export now: start one chain per pending receipt or invoice (as at 20:00 UTC)."""
    import time

    from pipeline.cegid.export import connected_client_files, run_export
    from tasks.chains import enqueue

    store = _store()
    files = [client_file] if client_file else connected_client_files(store)
    if client_file and store.connections.get(client_file, "cegid_loop") is None:
        fail(f"client file {client_file} has no Cegid Loop connection (hubsync connect cegid-loop)")
    results = []
    refused: dict[str, str] = {}
    for cf in files:
        try:
            results.append(run_export(store, cf, enqueue))
        except HubsyncError as exc:
            # One client file's dossier must not hold back the others; its documents keep waiting.
            again = "run `hubsync export cegid-loop` again, or the 20:00 UTC export tries again"
            refused[cf] = f"{exc.message}. {_hint(exc, again)}"
            click.echo(f"hubsync: export of {cf} failed, its documents wait: {refused[cf]}", err=True)
    taken = [rid for result in results for rid in result.enqueued]
    deadline = time.monotonic() + timeout
    settled = ("exported", "skipped", "dead")
    while wait and time.monotonic() < deadline:
        states = [store.records.fields(rid, "state")[0] for rid in taken]
        if all(state is None or state in settled for state in states):
            break
        time.sleep(0.5)
    records = [rec for rec in (store.records.get(rid) for rid in taken) if rec is not None]
    counts = {state: sum(1 for rec in records if rec.state == state) for state in settled}
    counts["waiting"] = len(records) - sum(counts[s] for s in settled)
    unknown = [rec for rec in records if rec.state == "dead" and _outcome_unknown(rec)]
    counts["outcome_unknown"] = len(unknown)
    skipped = {rec.entry_id: rec.note.removeprefix("skipped: ") for rec in records if rec.state == "skipped"}
    doc = {
        "exports": [r.to_dict() for r in results],
        "documents": len(taken),
        "counts": counts,
        "skipped": skipped,
        "outcome_unknown": {rec.entry_id: rec.dead_letter_id for rec in unknown},
        "refused": refused,
        "waited": wait,
    }
    if as_json:
        emit_json(doc)
    else:
        for r in results:
            note = " (another export was running)" if r.busy else ""
            click.echo(
                f"{r.client_file_id}: dossier {r.dossier} read; {len(r.enqueued)} document(s) started, "
                f"{r.left_for_next} left for the next export{note}"
            )
        if wait:
            click.echo(
                f"deposited {counts['exported']}, skipped {counts['skipped']}, outcome unknown "
                f"{counts['outcome_unknown']}, dead {counts['dead'] - counts['outcome_unknown']} other, still "
                f"waiting {counts['waiting']}"
            )
            for doc_id, reason in sorted(skipped.items()):
                click.echo(f"  skipped {doc_id}: {reason}")
            for rec in unknown:
                click.echo(
                    f"  outcome unknown {rec.entry_id}: Loop may hold it; look in PIA, then `hubsync dlq discard "
                    f"{rec.dead_letter_id} --reason 'in PIA'` or `hubsync dlq replay {rec.dead_letter_id}`"
                )
    if refused:
        fail(f"{len(refused)} client file(s) not exported: {', '.join(sorted(refused))}")
    if wait and counts["waiting"]:
        fail(f"{counts['waiting']} document(s) not settled after {timeout:.0f}s", code=2)
    if wait and unknown:
        fail(
            f"{len(unknown)} document(s) need a look: sent, answer lost, Cegid Loop may hold them; look in PIA, then "
            "discard or replay each dead letter (`hubsync dlq list --provider cegid_loop`)"
        )


# -- emit ----------------------------------------------------------------------------------------------


def _lines(stream: TextIO) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(stream, start=1):
        if line.strip():
            yield number, line.rstrip("\n")


def publish_event(data: Any) -> None:
    """Send one decoded event to the ``events`` queue, exactly as the upstream service does."""
    from pipeline.redact import event_argsrepr
    from tasks import app
    from tasks.ingest import INGEST_TASK

    # argsrepr is what Flower and worker logs show: ids only, never the event and its document URL tokens.
    app.send_task(INGEST_TASK, args=[data], queue="events", argsrepr=event_argsrepr(data))


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


@main.command()
@click.option("-s", "--schedule-file", default=None, hidden=True, help="Ignored: the schedule lives in Redis.")
@click.option("-l", "--loglevel", default="INFO", show_default=True)
def beat(schedule_file: str | None, loglevel: str) -> None:
    """Run the scheduler (celeryconfig.beat_schedule): ACD reference-data refreshes, the daily Cegid Loop export
    at 20:00 UTC, retention.

    Run two or more for safety: the schedule and each job's last run live in Redis and a lock there lets one
    beat send at a time; if it dies, another takes over within HUBSYNC_BEAT_LOCK_SECONDS (default 60) and
    sends what fell due meanwhile. The tasks it sends run on the workers of their queues.
    """
    from tasks import app

    app.start(["beat", "-l", loglevel])


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def retention(as_json: bool) -> None:
    """Trim now what is past HUBSYNC_HISTORY_DAYS (beat does it every HUBSYNC_RETENTION_INTERVAL_SECONDS)."""
    from pipeline import retention as retention_mod

    result = retention_mod.run(_store(), budget_seconds=3600.0)
    if as_json:
        emit_json(result.to_dict())
    else:
        click.echo(result.summary())


# -- status, entry -------------------------------------------------------------------------------------


def _late(seconds: float) -> str:
    return f"LATE by {_age(seconds)}"


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option(
    "--recount",
    is_flag=True,
    help="First rebuild the state counters by reading every record (expensive: repair only).",
)
def status(as_json: bool, recount: bool) -> None:
    """Per provider and client file: entries received, posted, confirmed, waiting, dead-lettered; scheduled jobs.

    Reads counters kept up to date as states change, so it costs the same whatever the history. A scheduled
    job that is late is flagged LATE (and named on standard error).
    """
    from pipeline import schedule
    from pipeline.acd.context import breaker_name, scope_of
    from pipeline.acd.reference import refreshed_at
    from pipeline.breaker import Breaker
    from pipeline.store import now

    store = _store()
    if recount:
        store.recount()
    groups: dict[str, dict[str, Any]] = {}
    for (provider, client_file), counts in store.records.all_states().items():
        groups.setdefault(provider, {})[client_file] = counts
    connections = []
    for conn in store.connections.all():
        item: dict[str, Any] = {
            "provider": conn.provider,
            "client_file_id": conn.client_file_id,
            "status": conn.status,
            "message": conn.status_message,
            "dossier": conn.params.get("dossier"),
            "connected_at": float(conn.params.get("connected_at") or conn.created_at or 0) or None,
        }
        item["connected_age_seconds"] = None if not item["connected_at"] else round(now() - item["connected_at"], 1)
        if conn.provider == "acd":
            breaker = Breaker(store, breaker_name(conn.params), 0, 0, 0)
            item["server"] = breaker.state()
            item["api_base"] = conn.params.get("api_base")
            fetched = refreshed_at(store, scope_of(conn.params))
            item["reference_refreshed_at"] = fetched
            item["reference_age_seconds"] = None if fetched is None else round(max(0.0, now() - fetched), 1)
        connections.append(item)
    dead = store.dead_letters.open_count()
    beat_schedule, lock_key = schedule.beat_config()
    jobs = schedule.jobs(store, beat_schedule)
    lock = schedule.beat_lock(store, lock_key)
    counters = store.events.counters()
    doc = {
        "providers": groups,
        "connections": connections,
        "events": counters,
        "dead_letters_open": dead,
        "scheduled": [j.to_dict() for j in jobs],
        "beat_lock_seconds_left": lock,
        "retention": {"history_days": settings().history_days, "backlog": store.retention.settled_backlog()},
    }
    if as_json:
        emit_json(doc)
    else:
        click.echo(
            f"events: {counters.get('events_received', 0)} received, {counters.get('events_duplicate', 0)} "
            f"duplicate, {counters.get('events_refused', 0)} refused; open dead letters: {dead}"
        )
        header = f"{'provider':<11}{'client file':<24}" + "".join(f"{s:>14}" for s in STATE_ORDER)
        click.echo(header)
        for provider, files in sorted(groups.items()):
            for client_file, counts in sorted(files.items()):
                click.echo(f"{provider:<11}{client_file:<24}" + "".join(f"{counts.get(s, 0):>14}" for s in STATE_ORDER))
        for item in connections:
            server = item.get("server", {})
            extra = f", server {server.get('state')}" if server else ""
            if item["provider"] == "acd":
                age = item["reference_age_seconds"]
                extra += ", no reference data yet" if age is None else f", reference data {_age(age)} old"
            age = item["connected_age_seconds"]
            extra += "" if age is None else f", connected {_age(age)} ago"
            note = f" ({item['message']})" if item["message"] else ""
            click.echo(f"connection {item['provider']} {item['client_file_id']}: {item['status']}{extra}{note}")
        beat_state = "no beat holds the scheduler lock" if lock is None else "a beat holds the scheduler lock"
        click.echo(f"scheduled jobs ({beat_state}):")
        for job in jobs:
            last = "never ran" if job.last_started is None else f"last {_when(job.last_started)} {job.outcome}"
            if job.outcome == "failed" and job.detail:
                last += f" ({job.detail})"
            flag = f"  {_late(job.late_seconds)}" if job.late else ""
            click.echo(f"  {job.name:<26}{last}; next due {_when(job.next_due)}{flag}")
    for job in jobs:
        if job.late:
            click.echo(
                f"hubsync: scheduled job {job.name} is late: due {_when(job.next_due)}, "
                f"{_late(job.late_seconds).lower()} (is a `hubsync beat` running, and a worker on its queue?)",
                err=True,
            )


@main.command()
@click.argument("entry_id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def entry(entry_id: str, as_json: bool) -> None:
    """Where one entry stands with each provider: state, ACK code, provider ids, attempts, last error."""
    store = _store()
    records = store.records.of_entry(entry_id)
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
                "ack": f"(#{rec.ack}#)" if rec.ack and rec.provider == "acd" else None,
                "unique_key": rec.ack if rec.provider == "cegid_loop" else None,
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
        )
    if as_json:
        emit_json({"entry_id": entry_id, "providers": out})
        return
    for item in out:
        click.echo(f"{item['provider']} / {item['client_file_id']}: {item['state']} (step {item['step']})")
        if item["provider"] == "cegid_loop":
            click.echo(f"  unique key: {item['unique_key'] or '-'}   Loop document id: {item['provider_id'] or '-'}")
        else:
            click.echo(f"  ACK code: {item['ack'] or '-'}   {_provider_id_text(item)}")
        for doc_id, meta in item["documents"].items():
            if item["provider"] == "cegid_loop":
                click.echo(f"  document {doc_id}: {_loop_doc_line(meta)}")
                continue
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
        if item["trimmed"]:
            click.echo(
                f"  settled {_when(item['settled_at'])}; its event, documents and attempts were trimmed after "
                f"{settings().history_days:g} days (HUBSYNC_HISTORY_DAYS): what stops a second post is kept"
            )


_DOC_FIELDS = ("name", "ged_id", "size", "sha256", "content_type")
_LOOP_DOC_FIELDS = ("transaction", "skip_reason", "sending", "unknown", "deposit")


def _loop_doc_line(meta: dict[str, Any]) -> str:
    name = meta.get("name") or "-"
    ledger = meta.get("deposit")
    if ledger:
        if ledger.get("settled_by_operator"):
            return f"{name}: counted as deposited by an operator ({ledger['settled_by_operator'].get('reason')})"
        return (
            f"{name}: deposited {_when(ledger.get('deposited_at'))} as {ledger.get('transaction')} "
            f"{ledger.get('content_type')}, Loop id {ledger.get('document_id') or '(none in its answer)'}"
        )
    if meta.get("skip_reason"):
        return f"{name}: skipped ({meta['skip_reason']})"
    if meta.get("sending"):
        return f"{name}: sent {_when(meta['sending'].get('at'))}, outcome unknown (Loop may hold it)"
    return f"{name}: not deposited yet"


def _provider_id_text(item: dict[str, Any]) -> str:
    if item["provider"] != "acd":
        return f"provider id: {item['provider_id'] or '-'}"
    if item["provider_id"]:
        return f"ACD EcritureNum: {item['provider_id']}"
    if item["posted_at"]:
        return "ACD EcritureNum: - (posted; not in the FEC yet)"
    return "ACD EcritureNum: -"


@main.command("resume-stalled")
@click.option(
    "--older-than",
    type=float,
    default=None,
    help="Seconds past due without any progress (default: HUBSYNC_STALL_SECONDS, 1.25 x the visibility timeout).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def resume_stalled_cmd(older_than: float | None, as_json: bool) -> None:
    """Publish again the chains nothing moves any more (their broker message was lost). Workers do it by
    themselves every HUBSYNC_RESUME_INTERVAL_SECONDS; this does it now. Safe at any time: every step does only
    what its record says is left."""
    from pipeline.resume import resume_stalled
    from tasks.chains import CHAINS, enqueue

    stall = settings().stall_seconds if older_than is None else older_than
    chains = {provider: list(tasks) for provider, tasks in CHAINS.items()}
    result = resume_stalled(_store(), enqueue, chains, stall)
    if as_json:
        emit_json({"resumed": result.resumed, "busy_providers": result.busy_providers})
        return
    for rid in result.resumed:
        click.echo(f"{rid}: published again")
    click.echo(result.summary())


@main.command("reconcile")
@click.option("--client-file", default=None, help="Only this client file (default: every connection).")
@click.option(
    "--checked",
    "checked",
    multiple=True,
    metavar="DOCUMENT_ID",
    help="Cegid Loop: this possible duplicate was looked for in PIA (a second copy removed if there was one).",
)
@click.option("--reason", default="", help="With --checked: what was found, kept in the document's history.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def reconcile_cmd(client_file: str | None, checked: tuple[str, ...], reason: str, as_json: bool) -> None:
    """Compare the hub's records with what ACD holds (by ACK code, in each dossier's FEC), and report Cegid Loop
    documents from the hub's deposit ledger (Loop cannot be asked): deposited, skipped with reason, outcome
    unknown, possible duplicates.

    Exits 1 when anything does not reconcile or needs a look (or a dossier could not be read), 0 otherwise.
    """
    import getpass

    from pipeline.cegid.reconcile import LedgerReconciliation, NotAPossibleDuplicate, mark_duplicate_checked
    from pipeline.reconcile import reconcile

    store = _store()
    if checked:
        if not client_file or not reason.strip():
            fail("--checked needs --client-file and a --reason (what was found in PIA)")
        try:
            who = getpass.getuser()
        except (KeyError, OSError):
            who = "unknown"
        for document_id in checked:
            try:
                mark_duplicate_checked(store, client_file, document_id, reason, who)
            except NotAPossibleDuplicate as exc:
                fail(str(exc))
    results = reconcile(store, client_file)
    if client_file and not results:
        fail(f"client file {client_file} has no ACD or Cegid Loop connection")
    if as_json:
        emit_json({"ok": all(r.ok for r in results), "client_files": [r.to_dict() for r in results]})
    else:
        for r in results:
            if isinstance(r, LedgerReconciliation):
                for line in r.lines():
                    click.echo(line)
                continue
            head = f"{r.provider} {r.client_file_id} ({r.dossier}): "
            retries = getattr(r, "retries", None) or []
            if r.error:
                click.echo(head + f"could not read ACD: {r.error}")
                for note in retries:
                    click.echo(f"  retried    {note}")
                continue
            years = getattr(r, "years", None)
            click.echo(
                head + f"{r.records} records, {len(r.landed)} landed, {len(r.missing)} missing, "
                f"{len(r.duplicated)} duplicated, {len(r.unknown)} unknown, {len(r.pending)} pending, "
                f"{len(r.dead)} dead, {len(r.indexing) + len(r.unrecorded)} settling"
                + (f" (FEC {', '.join(map(str, years))})" if years else "")
                + (f"; ACD was busy, asked again {len(retries)} time(s)" if retries else "")
            )
            for note in retries:
                click.echo(f"  retried    {note}")
            where = "ACD (EcritureNum)" if r.provider == "acd" else "Cegid Loop"
            for f in r.missing:
                key = f"(#{f.ack}#)" if f.ack else f.name
                click.echo(f"  missing    {f.entry_id} {key} state {f.state}: not in {where}")
            for f in r.duplicated:
                ids = ", ".join(str(i) for i in f.provider_ids)
                key = f"(#{f.ack}#)" if f.ack else f.name
                click.echo(f"  duplicated {f.entry_id} {key}: {where} ids {ids}")
            for f in r.unknown:
                ids = ", ".join(str(i) for i in f.provider_ids)
                key = f"(#{f.ack}#)" if f.ack else f.name
                click.echo(f"  unknown    {key}: {where} ids {ids}, no hub record")
    if not all(r.ok for r in results):
        sys.exit(1)


# -- dead letters --------------------------------------------------------------------------------------


@main.group()
def dlq() -> None:
    """The dead-letter store: list, replay, discard."""


@dlq.command("list")
@click.option("--provider", default=None, help="Only this provider (acd, cegid_loop, ingest).")
@click.option("--limit", type=int, default=100, show_default=True, help="At most this many (one page).")
@click.option("--offset", type=int, default=0, show_default=True, help="Skip this many first (the next page).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def dlq_list(provider: str | None, limit: int, offset: int, as_json: bool) -> None:
    """The dead-lettered chains and events, oldest first, one page at a time."""
    store = _store()
    ids, total = store.dead_letters.page(
        "open", {"provider": provider or ""}, offset=max(0, offset), count=max(1, limit), newest_first=False
    )
    letters = store.dead_letters.by_ids(ids)
    if as_json:
        emit_json(
            [
                {**{k: v for k, v in dl.to_dict().items() if k not in ("event", "audit")}, "state": "dead"}
                | {"attempts": len(dl.attempts), "when": _when(dl.created_at), "event_id": _event_id(dl)}
                for dl in letters
            ]
        )
        return
    if not letters:
        click.echo("no open dead letters" if not total else f"no open dead letters past {offset} (of {total})")
        return
    for dl in letters:
        click.echo(
            f"{dl.id}  {_when(dl.created_at)}  {dl.provider}  {dl.client_file_id or '-'}  {dl.entry_id or '-'}  "
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
        ids = tuple(store.dead_letters.page("open", {"provider": provider or ""}, count=10**9, newest_first=False)[0])
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


# -- dashboard, flower ---------------------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8800, show_default=True)
def dashboard(host: str, port: int) -> None:
    """Serve the operators' web dashboard (users from HUBSYNC_DASHBOARD_USERS; see the README)."""
    from pipeline.dashboard.auth import UsersError
    from pipeline.dashboard.server import app_from_env, serve

    try:
        app = app_from_env()
    except UsersError as exc:
        fail(str(exc))
    _store()
    click.echo(f"dashboard on http://{host}:{port}/")
    with contextlib.suppress(KeyboardInterrupt):
        serve(app, host, port)


@main.command("dashboard-user")
@click.argument("name")
@click.argument("role", type=click.Choice(["viewer", "operator"]))
def dashboard_user(name: str, role: str) -> None:
    """Print a HUBSYNC_DASHBOARD_USERS entry for NAME, hashing a password read from standard input."""
    from pipeline.dashboard.auth import UsersError, make_entry

    password = sys.stdin.readline().rstrip("\r\n")
    try:
        click.echo(make_entry(name, role, password))
    except UsersError as exc:
        fail(str(exc))


@main.command()
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=5555, show_default=True)
@click.option("--url-prefix", default="", help="Serve under this path (behind a reverse proxy).")
def flower(address: str, port: int, url_prefix: str) -> None:
    """Run Flower on the pipeline's Redis, with basic auth from HUBSYNC_FLOWER_BASIC_AUTH (required)."""
    from pipeline.monitoring import FlowerConfigError, check_basic_auth, run_flower

    try:
        check_basic_auth(os.environ.get("HUBSYNC_FLOWER_BASIC_AUTH", ""))
    except FlowerConfigError as exc:
        fail(str(exc))
    run_flower(address, port, url_prefix)


if __name__ == "__main__":
    main()
