"""What went where: ``hubsync export <provider>`` (a provider that sends on a schedule, now) and ``hubsync
reconcile`` (the hub's records against what each provider holds)."""

from __future__ import annotations

import getpass
import sys

import click

from pipeline.console import emit_json, fail, open_store
from pipeline.reconcile import reconcile
from pipeline.registry import PROVIDERS
from pipeline.store import Store


@click.group("export")
def export_group() -> None:
    """Export pending documents now instead of waiting for the daily run."""


for _provider in PROVIDERS:
    if _provider.export_command is not None:
        export_group.add_command(_provider.export_command, _provider.command_name)


@click.command("reconcile")
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
    store = open_store()
    if checked:
        if not client_file or not reason.strip():
            fail("--checked needs --client-file and a --reason (what was found in PIA)")
        try:
            who = getpass.getuser()
        except (KeyError, OSError):
            who = "unknown"
        for document_id in checked:
            _mark_checked(store, client_file, document_id, reason, who)
    results = reconcile(store, client_file)
    if client_file and not results:
        fail(f"client file {client_file} has no {PROVIDERS.display_names()} connection")
    if as_json:
        emit_json({"ok": all(r.ok for r in results), "client_files": [r.to_dict() for r in results]})
    else:
        for r in results:
            for line in r.lines():
                click.echo(line)
    if not all(r.ok for r in results):
        sys.exit(1)


def _mark_checked(store: Store, client_file: str, document_id: str, reason: str, who: str) -> None:
    """Note that an operator looked for a possible duplicate in its provider, in the first provider that kept
    it as one; fails saying why when none did."""
    refusals = []
    for provider in PROVIDERS:
        if provider.mark_checked is None:
            continue
        try:
            provider.mark_checked(store, client_file, document_id, reason, who)
        except ValueError as exc:
            refusals.append(str(exc))
        else:
            return
    fail("; ".join(refusals) or "no installed provider keeps possible duplicates to check")


COMMANDS = (export_group, reconcile_cmd)
