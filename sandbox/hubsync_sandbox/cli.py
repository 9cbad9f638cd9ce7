"""``hubsync sandbox`` and ``hubsync demo``: commands this distribution adds to the hubsync command line.

They are registered under the ``hubsync.commands`` entry-point group (``sandbox/pyproject.toml``), which
``pipeline.plugins`` reads; the hubsync distribution itself has neither.
"""

from __future__ import annotations

import contextlib

import click

from pipeline.console import emit_json, fail


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8700, show_default=True)
@click.option("--acd-config", type=click.Path(exists=True, dir_okay=False), help="JSON file describing ACD firms.")
@click.option("--index-lag", type=float, default=2.0, show_default=True, help="ACD indexing lag in seconds.")
def sandbox(host: str, port: int, acd_config: str | None, index_lag: float) -> None:
    """Serve ACD i-Suite and document-store sandboxes on loopback (fault switches under /_sandbox)."""
    from hubsync_sandbox import SandboxServer
    from hubsync_sandbox.acd import AcdSandbox, demo_acd_firms
    from hubsync_sandbox.docstore import DocStore

    acd = AcdSandbox.from_json(acd_config) if acd_config else AcdSandbox(demo_acd_firms())
    acd.index_lag_seconds = index_lag
    server = SandboxServer(acd=acd, docs=DocStore(), host=host, port=port)
    from hubsync_sandbox.cegid import DEMO_API_KEY, DEMO_DOMAIN, DEMO_SUBSCRIPTION_KEY, CegidLoopSandbox

    server.mount("cegid", CegidLoopSandbox())
    click.echo(f"sandbox on {server.url}")
    click.echo(
        f"  Cegid Loop: {server.app_url('cegid')} (dossier DUPONT01, API key {DEMO_API_KEY}, subscription key "
        f"{DEMO_SUBSCRIPTION_KEY}, any --domain, e.g. {DEMO_DOMAIN})"
    )
    for firm in sorted(acd.firms):
        click.echo(f"  ACD firm {firm}: {server.acd_url(firm)} (API at {server.acd_api_url(firm)})")
    click.echo(f"  documents: {server.url}/docs/<id>   faults and state: {server.url}/_sandbox/")
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


@click.command()
@click.option("--entries", type=int, default=24, show_default=True, help="How many sample entries to sync.")
@click.option("--timeout", type=float, default=180.0, show_default=True, help="Give up waiting after this long.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def demo(entries: int, timeout: float, as_json: bool) -> None:
    """The whole thing on one machine: sandboxes, a worker, a batch of sample events, a summary."""
    from hubsync_sandbox.demo import run_demo

    summary = run_demo(entries=entries, timeout=timeout, echo=None if as_json else click.echo)
    if as_json:
        emit_json(summary)
    if summary["lost"] or summary["duplicates"] or summary["wrong_dossier"]:
        fail(
            f"demo ended with {summary['lost']} entries not landed, {summary['duplicates']} duplicates and "
            f"{summary['wrong_dossier']} in a wrong dossier"
        )
    loop = summary.get("cegid_loop") or {}
    if loop.get("duplicates") or loop.get("not_settled"):
        fail(
            f"demo's Cegid Loop export ended with {loop['not_settled']} documents not settled and "
            f"{loop['duplicates']} duplicates"
        )
