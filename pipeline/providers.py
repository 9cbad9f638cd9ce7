"""What a provider is, described once: everything the rest of hubsync asks of a delivery target.

A provider (ACD i-Suite, Cegid Loop) is a folder of ``pipeline/`` with its client, its steps and its error
table, and a ``provider.py`` that fills in one ``Provider``; ``pipeline.registry`` lists the installed ones.
Ingest asks each connected provider to fan an event out into records; the Celery glue (``tasks``) defines one
task per step and publishes the steps in order; resume, dead letters (replay and discard), reconciliation,
the queues, the dashboard and the command line read the same description. Nothing outside a provider's
folder spells its name.

Adding a provider::

    # pipeline/webhook/provider.py
    WEBHOOK = Provider(
        name="webhook",
        display_name="Hub webhooks",
        queue="webhook",
        steps=(
            ChainStep("sign", "hubsync.webhook.sign", sign),
            ChainStep("deliver", "hubsync.webhook.deliver", deliver, writes=True),
        ),
        fan_out=fan_out_webhook,
        context=context,
        reconcile=reconcile_webhook,
        ids=IdStyle(key_label="delivery id", key_field="delivery_id", id_label="hub receipt"),
    )

    # pipeline/registry.py
    PROVIDERS = Registry([ACD, CEGID_LOOP, WEBHOOK])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import click

from pipeline.errors import HubsyncError
from pipeline.model import Event
from pipeline.steps import Step
from pipeline.store import Connection, DeadLetter, Record, Store

Enqueue = Callable[[str, str, int, str], None]
"""``enqueue(provider, record_id, generation, from_step)``: start a provider's chain at a step."""

FanOut = Callable[[Store, Event, dict[str, Any], Enqueue], tuple[str, bool]]
"""Turn one valid event into the provider's records, starting their chains or keeping them for later; returns
the record id(s) to show and whether it acted (False: this event was already fanned out)."""


class Report(Protocol):
    """What a command prints about something a provider did."""

    def lines(self) -> list[str]:
        """The lines, as an operator reads them."""
        ...


class Reconciled(Report, Protocol):
    """One client file reconciled with its provider: whether it reconciles, its JSON form, the lines shown."""

    @property
    def ok(self) -> bool:
        """Nothing needs a look."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of ``hubsync reconcile --json``."""
        ...


@dataclass(frozen=True)
class ChainStep:
    """One step of a provider's chain."""

    name: str
    task: str
    """The Celery task that runs it: kept forever, since messages in flight and Flower know the step by it."""
    run: Step
    countdown: Callable[[], float] | None = None
    """Seconds the step waits before it runs, read each time it is published (None: it runs at once)."""
    writes: bool = False
    """The step that writes to the provider: its outcome may be unknown, and it is never blindly sent again."""


@dataclass(frozen=True)
class IdStyle:
    """How a provider's identifiers read: the hub's key on the record (ACD's ACK code) and the id the provider
    gave back (ACD's EcritureNum, a Loop document id)."""

    key_label: str
    """What the key is called on a ``hubsync entry`` line ("ACK code")."""
    key_field: str
    """The key's field in ``hubsync entry --json`` ("ack")."""
    id_label: str
    """What the provider's id is called on a ``hubsync entry`` line ("ACD EcritureNum")."""
    key_format: str = "{}"
    """How the key is written ("(#{}#)")."""
    id_prefix: str = ""
    """What the dashboard writes before the provider's id ("EcritureNum ")."""
    awaiting_id: str = ""
    """What a record written to the provider but without its id yet says, when the id comes later ("posted; not
    in the FEC yet"); empty when the id comes with the write's answer."""

    def key(self, rec: Record) -> str | None:
        """The record's key as operators read it, or None before it has one."""
        return self.key_format.format(rec.ack) if rec.ack else None

    def provider_id(self, rec: Record) -> str:
        """The provider's id of a record as the dashboard shows it (``-`` when there is none)."""
        if rec.provider_id:
            return f"{self.id_prefix}{rec.provider_id}"
        if self.awaiting_id and rec.posted_at:
            return self.awaiting_id
        return "-"

    def id_line(self, rec: Record) -> str:
        """The provider's id as ``hubsync entry`` prints it, with its label."""
        line = f"{self.id_label}: {rec.provider_id or '-'}"
        if not rec.provider_id and self.awaiting_id and rec.posted_at:
            line += f" ({self.awaiting_id})"
        return line


@dataclass(frozen=True)
class ScheduledJob:
    """A periodic task of a provider that ``hubsync beat`` sends to the provider's queue."""

    name: str
    task: str
    every_seconds: float = 0.0
    """Every so many seconds, unless ``daily_at_utc`` is given."""
    daily_at_utc: tuple[int, int] | None = None
    """Once a day at this hour and minute, UTC."""
    expires_seconds: float = 0.0
    """A run nobody picked up within this is dropped (0: within its period)."""


@dataclass(frozen=True)
class Provider:
    """A delivery target, described once."""

    name: str
    """Its name in record ids (``acd:<client file>:<entry>``), connections and dead letters."""
    display_name: str
    """Its name in sentences ("Cegid Loop")."""
    queue: str
    """The Celery queue its steps run on."""
    steps: tuple[ChainStep, ...]
    """Its chain, in order."""
    fan_out: FanOut
    """Ingest's part: one event into records."""
    context: Callable[[Store, str], object]
    """What a step needs to talk to one client file's account (client, dossier...), built without a network call;
    raises ``NoConnection`` for a client file not connected."""
    reconcile: Callable[[Store, str], Reconciled]
    """Compare one client file's records with what the provider holds."""
    ids: IdStyle
    """How its identifiers read."""
    cli_name: str = ""
    """Its name on the command line when not ``name`` (``cegid-loop``)."""
    on_error: Callable[[Record, HubsyncError], None] | None = None
    """Called with every error of a step, before the retry decision (ACD: a refused password stops all logins)."""
    settle_discarded: Callable[[Store, DeadLetter, str], None] | None = None
    """A discard that can mean "it landed after all" settles the record here (the dead letter and the reason)."""
    mark_checked: Callable[[Store, str, str, str, str], None] | None = None
    """``hubsync reconcile --checked``: an operator looked for a possible duplicate in the provider
    (store, client file, document or entry id, what was found, who); raises ``ValueError`` when it is not one."""
    breaker_name: Callable[[dict[str, Any]], str] | None = None
    """The circuit breaker of a connection's server (from the connection's parameters), if calls go through one."""
    connection_facts: Callable[[Store, Connection], dict[str, Any]] | None = None
    """What ``hubsync status --json`` adds about one of its connections."""
    pending_exports: Callable[[Store, list[str]], dict[str, tuple[int, str]]] | None = None
    """For a provider that sends on a schedule: documents waiting and the next run, per client file."""
    document_line: Callable[[dict[str, Any]], str] | None = None
    """How ``hubsync entry`` describes one of a record's documents (None: its name and nothing else)."""
    disconnect: Callable[[Store, str], Report | None] | None = None
    """Remove a client file's connection and say what went and what stayed; None when there was none."""
    connect_command: click.Command | None = None
    """``hubsync connect <cli name>``."""
    export_command: click.Command | None = None
    """``hubsync export <cli name>``."""
    commands: tuple[click.Command, ...] = ()
    """Its own top-level commands (``hubsync refresh``)."""
    jobs: Callable[[], tuple[ScheduledJob, ...]] = tuple
    """What ``hubsync beat`` sends for it, read when the Celery settings load."""

    def __post_init__(self) -> None:
        names = [step.name for step in self.steps]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"provider {self.name}: its steps need distinct names, at least one ({names})")
        if sum(step.writes for step in self.steps) > 1:
            raise ValueError(f"provider {self.name}: one step at most writes to the provider")

    @property
    def command_name(self) -> str:
        """Its name on the command line."""
        return self.cli_name or self.name

    @property
    def step_names(self) -> tuple[str, ...]:
        """Its steps' names, in order."""
        return tuple(step.name for step in self.steps)

    @property
    def step_functions(self) -> dict[str, Step]:
        """Each step's function, by step name."""
        return {step.name: step.run for step in self.steps}

    def step(self, name: str) -> ChainStep:
        """One step, by name; ``ValueError`` for a step it does not have."""
        for step in self.steps:
            if step.name == name:
                return step
        raise ValueError(f"{self.name} has no step {name!r} (steps: {', '.join(self.step_names)})")

    def index(self, name: str) -> int:
        """The position of a step in the chain (0 for the first)."""
        return self.step_names.index(self.step(name).name)

    def next_step(self, name: str) -> str | None:
        """The step after ``name``, or None after the last."""
        following = self.index(name) + 1
        return self.steps[following].name if following < len(self.steps) else None


class UnknownProvider(KeyError):
    """A name no installed provider has (a record or dead letter of a provider removed since)."""


class Registry:
    """The installed providers, in the order they were registered (ingest fans out in that order)."""

    def __init__(self, providers: Iterable[Provider] = ()) -> None:
        self._providers: dict[str, Provider] = {}
        for provider in providers:
            self.register(provider)

    def register(self, provider: Provider) -> Provider:
        """Add a provider; refuses one whose name, command-line name, queue or task names are taken."""
        taken_names = {name for p in self for name in (p.name, p.command_name)}
        taken_tasks = {step.task for p in self for step in p.steps}
        clashes = [
            *({provider.name, provider.command_name} & taken_names),
            *([provider.queue] if provider.queue in self.queues() else []),
            *({step.task for step in provider.steps} & taken_tasks),
        ]
        if clashes:
            raise ValueError(f"provider {provider.name} clashes with an installed one: {', '.join(sorted(clashes))}")
        self._providers[provider.name] = provider
        return provider

    def __iter__(self) -> Iterator[Provider]:
        return iter(list(self._providers.values()))

    def __len__(self) -> int:
        return len(self._providers)

    def __contains__(self, name: object) -> bool:
        return name in self._providers

    def get(self, name: str) -> Provider:
        """The provider called ``name``; ``UnknownProvider`` when none is."""
        try:
            return self._providers[name]
        except KeyError:
            raise UnknownProvider(name) from None

    def find(self, name: str) -> Provider | None:
        """The provider called ``name`` (its name or its command-line name), or None."""
        found = self._providers.get(name)
        if found is None:
            found = next((p for p in self if p.command_name == name), None)
        return found

    def step_of_task(self, task: str) -> tuple[Provider, ChainStep] | None:
        """The provider and step a Celery task name runs, or None for a task that is no chain step."""
        for provider in self:
            for step in provider.steps:
                if step.task == task:
                    return provider, step
        return None

    def names(self) -> list[str]:
        """Every provider's name."""
        return list(self._providers)

    def queues(self) -> list[str]:
        """Every provider's queue."""
        return [p.queue for p in self]

    def chains(self) -> dict[str, list[str]]:
        """Every provider's steps, in order, by provider name."""
        return {p.name: list(p.step_names) for p in self}

    def display_names(self) -> str:
        """Every provider's display name, as a sentence reads them ("ACD or Cegid Loop")."""
        names = [p.display_name for p in self]
        return " or ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + f" or {names[-1]}"
