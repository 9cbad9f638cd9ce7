"""``hubsync``: the command line operators, scripts and acceptance checks use.

Every command reads its settings from ``HUBSYNC_*`` variables, exits 0 on success and non-zero with a
one-line reason on standard error otherwise; ``--json`` prints one JSON document and nothing else
(``pipeline.console``). The commands live by group: connections, entries and dead letters, status,
exports and reconciliation, and running the pipeline; each provider brings its own (``connect acd``,
``export cegid-loop``, ``refresh``: ``pipeline.registry``), and other installed distributions add theirs
(``pipeline.plugins``).
"""

from __future__ import annotations

import logging
import sys

import click

from pipeline.cli import connections, entries, ops, reconcile, status
from pipeline.plugins import PluginGroup
from pipeline.registry import PROVIDERS
from pipeline.secrets import generate_key


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
    click.echo(generate_key())


for _command in (*connections.COMMANDS, *entries.COMMANDS, *status.COMMANDS, *reconcile.COMMANDS, *ops.COMMANDS):
    main.add_command(_command)
for _provider in PROVIDERS:
    for _command in _provider.commands:
        main.add_command(_command)
