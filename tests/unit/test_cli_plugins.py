"""Commands other distributions add to ``hubsync`` (``hubsync.commands`` entry points): found, run, and missing."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import click
import pytest
from click.testing import CliRunner

from pipeline import plugins
from pipeline.cli import main


@click.command()
@click.argument("name")
def hello(name: str) -> None:
    """Greet NAME (a command registered by a test)."""
    click.echo(f"hello {name}")


def _register(monkeypatch: pytest.MonkeyPatch, **targets: str) -> None:
    entry_points = [EntryPoint(name=name, value=value, group=plugins.GROUP) for name, value in targets.items()]
    monkeypatch.setattr(plugins, "entry_points", lambda group: entry_points if group == plugins.GROUP else [])


def test_the_sandbox_distribution_registers_sandbox_and_demo() -> None:
    registered = plugins.registered_commands()
    assert {"sandbox", "demo"} <= set(registered)
    assert registered["demo"].load().name == "demo"


def test_a_registered_command_is_listed_and_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    _register(monkeypatch, hello=f"{__name__}:hello")

    listing = CliRunner().invoke(main, ["--help"])
    result = CliRunner().invoke(main, ["hello", "world"])

    assert "Greet NAME" in listing.stdout
    assert result.exit_code == 0, result.output
    assert result.stdout == "hello world\n"


def test_a_registered_command_never_replaces_one_of_the_product(monkeypatch: pytest.MonkeyPatch) -> None:
    _register(monkeypatch, keygen=f"{__name__}:hello")

    result = CliRunner().invoke(main, ["keygen", "--help"])

    assert result.exit_code == 0
    assert "HUBSYNC_SECRET_KEY" in result.stdout


@pytest.mark.parametrize("command", ["demo", "sandbox"])
def test_demo_and_sandbox_without_the_sandbox_installed_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    # given no distribution registers any command
    _register(monkeypatch)

    # when an operator asks for the demo or the sandboxes
    result = CliRunner().invoke(main, [command])

    # then one line says which distribution brings it and how to install it
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"hubsync: `hubsync {command}` comes with the hubsync-sandbox distribution")
    assert "pip install ./sandbox" in result.stderr


def test_an_unknown_command_is_still_refused_as_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    _register(monkeypatch)

    result = CliRunner().invoke(main, ["demoo"])

    assert result.exit_code == 2
    assert "No such command 'demoo'" in result.stderr


def test_a_registered_command_that_cannot_be_imported_says_so_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    _register(monkeypatch, demo="hubsync_no_such_module:demo")

    result = CliRunner().invoke(main, ["demo"])

    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert "`hubsync demo` is registered (hubsync_no_such_module:demo) but cannot be imported" in result.stderr
