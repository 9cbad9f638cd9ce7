"""``hubsync connect <provider>`` (each provider's own command) and ``hubsync disconnect``."""

from __future__ import annotations

import click

from pipeline.console import fail, open_store
from pipeline.registry import PROVIDERS


@click.group()
def connect() -> None:
    """Connect a client file to a provider."""


for _provider in PROVIDERS:
    if _provider.connect_command is not None:
        connect.add_command(_provider.connect_command, _provider.command_name)

_PROVIDER_NAMES = list(dict.fromkeys(name for p in PROVIDERS for name in (p.command_name, p.name)))


@click.command()
@click.argument("provider", type=click.Choice(_PROVIDER_NAMES))
@click.option("--client-file", "client_file", required=True, help="The hub's client file id.")
def disconnect(provider: str, client_file: str) -> None:
    """Remove a client file's connection to PROVIDER; its records and their history stay.

    Connecting again (hubsync connect) starts afresh. For Cegid Loop, this is what the firm does when the
    partner folder has not appeared in Loop 24 hours after the Loop Hub declaration.
    """
    store = open_store()
    chosen = PROVIDERS.find(provider)
    assert chosen is not None  # the choice is the registry's
    if chosen.disconnect is not None:
        gone = chosen.disconnect(store, client_file)
        lines = None if gone is None else gone.lines()
    elif store.connections.delete(client_file, chosen.name) is not None:
        lines = [f"Disconnected {client_file} from {chosen.display_name}; its records and their history stay."]
    else:
        lines = None
    if lines is None:
        fail(f"client file {client_file} has no {chosen.display_name} connection")
    for line in lines:
        click.echo(line)


COMMANDS = (connect, disconnect)
