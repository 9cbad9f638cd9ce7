"""ACD's own commands: ``hubsync connect acd`` (one dossier, or every shared dossier of a firm) and
``hubsync refresh`` (its reference data, now)."""

from __future__ import annotations

from typing import Any

import click

from pipeline.acd.connect import connect, connect_all, found_base
from pipeline.acd.reference import refresh_connections
from pipeline.console import emit_json, fail, hint, open_store, read_secret
from pipeline.errors import HubsyncError
from pipeline.secrets import Secret


@click.command("acd")
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
    if all_dossiers:
        if client_file or dossier:
            fail("--all-dossiers names client files itself: drop --client-file and --dossier")
    elif not client_file or not dossier:
        fail("pass --client-file and --dossier, or --all-dossiers")
    password = Secret(read_secret("HUBSYNC_ACD_PASSWORD", password_stdin, "password"))
    store = open_store()
    if all_dossiers:
        _connect_all(store, url, cnx, api_code, password, client_file_prefix, ged_folder, as_json)
        return
    assert client_file is not None and dossier is not None
    try:
        report = connect(store, client_file, url, cnx, api_code, dossier, password, ged_folder)
    except HubsyncError as exc:
        fail(f"{exc.message}. {hint(exc, 'run `hubsync connect acd` again once ACD answers')}")
    if as_json:
        emit_json(report.to_dict())
    else:
        _print_report(report, client_file, dossier, url)
    if not report.ready:
        fail(f"client file {client_file} is not ready: " + "; ".join(report.problems), code=2)


_ATTENTION = {"not_shared": "not shared", "error": "failed"}


def _print_report(report: Any, client_file: str, dossier: str, url: str) -> None:
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
    try:
        outcomes = connect_all(store, url, cnx, api_code, password, prefix, ged_folder)
    except HubsyncError as exc:
        fail(f"{exc.message}. {hint(exc, 'run `hubsync connect acd` again once ACD answers')}")
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


@click.command()
@click.option("--client-file", "client_file", default=None, help="Only this client file (default: every one).")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def refresh(client_file: str | None, as_json: bool) -> None:
    """Fetch the ACD reference data (journals, accounts, GED tree) of connected client files now."""
    store = open_store()
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
