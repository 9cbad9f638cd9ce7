"""Commands that other installed distributions add to ``hubsync``, through the ``hubsync.commands`` entry points.

The product installs none: ``hubsync sandbox`` and ``hubsync demo`` are made for development and tests, so the
``hubsync-sandbox`` distribution (``sandbox/`` in the repository) registers them. A command of the product
always wins over a registered one of the same name.
"""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint, entry_points
from typing import NoReturn

import click

GROUP = "hubsync.commands"
# Commands of the contract that only an optional distribution provides: asked for without it, say what to install.
OPTIONAL_COMMANDS = {"sandbox": "hubsync-sandbox", "demo": "hubsync-sandbox"}


def registered_commands() -> dict[str, EntryPoint]:
    """The commands installed distributions register under ``hubsync.commands``, by name."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def _stop(message: str) -> NoReturn:
    click.echo(f"hubsync: {message}", err=True)
    sys.exit(1)


class PluginGroup(click.Group):
    """A click group whose commands are its own plus those registered under ``hubsync.commands``."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Own and registered command names, sorted."""
        return sorted({*super().list_commands(ctx), *registered_commands()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """An own command, else a registered one (loaded now), else None; an optional one missing says why."""
        own = super().get_command(ctx, cmd_name)
        if own is not None:
            return own
        entry_point = registered_commands().get(cmd_name)
        if entry_point is None:
            distribution = OPTIONAL_COMMANDS.get(cmd_name)
            if distribution is None:
                return None
            _stop(
                f"`hubsync {cmd_name}` comes with the {distribution} distribution, which is not installed here "
                "(pip install ./sandbox from a hubsync checkout; ./dev installs it)"
            )
        try:
            command: click.Command = entry_point.load()
        except ImportError as exc:
            _stop(f"`hubsync {cmd_name}` is registered ({entry_point.value}) but cannot be imported: {exc}")
        return command
