"""Cegid Loop's own commands: ``hubsync connect cegid-loop`` and ``hubsync export cegid-loop`` (the daily export,
now)."""

from __future__ import annotations

import os
import time
from typing import Any

import click

from pipeline.cegid.connect import CLI_NAME, PROVIDER, connect
from pipeline.cegid.export import connected_client_files, run_export
from pipeline.cegid.steps import OUTCOME_UNKNOWN
from pipeline.console import broker, emit_json, fail, hint, open_store, read_secret
from pipeline.errors import HubsyncError
from pipeline.secrets import Secret


@click.command(CLI_NAME)
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
    secret = Secret(read_secret("HUBSYNC_CEGID_API_SECRET", api_secret_stdin, "api secret"))
    subscription = os.environ.get("HUBSYNC_CEGID_SUBSCRIPTION_KEY", "")
    if not subscription:
        fail("no subscription key: set HUBSYNC_CEGID_SUBSCRIPTION_KEY (the hub's Cegid API-management key)")
    store = open_store()
    try:
        report = connect(store, client_file, url, dossier, domain, api_key, secret, Secret(subscription))
    except HubsyncError as exc:
        fail(f"{exc.message}. {hint(exc, 'run `hubsync connect cegid-loop` again once Cegid Loop answers')}")
    if as_json:
        emit_json(report.to_dict())
        return
    for line in report.lines():
        click.echo(line)


def _outcome_unknown(rec: Any) -> bool:
    return bool((rec.last_error or {}).get("error_class") == OUTCOME_UNKNOWN)


@click.command(CLI_NAME)
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
    store = open_store()
    enqueue = broker().enqueue
    files = [client_file] if client_file else connected_client_files(store)
    if client_file and store.connections.get(client_file, PROVIDER) is None:
        fail(f"client file {client_file} has no Cegid Loop connection (hubsync connect cegid-loop)")
    results = []
    refused: dict[str, str] = {}
    for cf in files:
        try:
            results.append(run_export(store, cf, enqueue))
        except HubsyncError as exc:
            # One client file's dossier must not hold back the others; its documents keep waiting.
            again = "run `hubsync export cegid-loop` again, or the 20:00 UTC export tries again"
            refused[cf] = f"{exc.message}. {hint(exc, again)}"
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
