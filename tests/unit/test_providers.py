"""The provider seam: each provider is described once, in its own folder, and everything else asks the registry;
a provider added by registration alone is fanned out to, published, shown and settled like the others."""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hubsync_sandbox.samples import sample_entry, sample_event
from pipeline import views
from pipeline.deadletters import dead_letter_record
from pipeline.dlq import discard
from pipeline.errors import NoConnection, OutcomeUnknown
from pipeline.ingest import ingest
from pipeline.model import Event
from pipeline.providers import ChainStep, Enqueue, IdStyle, Provider, Registry
from pipeline.registry import PROVIDERS
from pipeline.store import Connection, DeadLetter, Record, Store, record_id
from tests.conftest import ROOT, flushed_store

# What messages in flight, Flower and the operators' scripts know: these names never change.
CELERY_NAMES = {
    "acd": (
        "acd",
        [
            ("fetch", "hubsync.acd.fetch_document"),
            ("rename", "hubsync.acd.rename_document"),
            ("map", "hubsync.acd.map_entry"),
            ("post", "hubsync.acd.post_entry"),
            ("confirm", "hubsync.acd.confirm_ack"),
        ],
    ),
    "cegid_loop": (
        "cegid_loop",
        [
            ("fetch", "hubsync.cegid_loop.fetch"),
            ("check", "hubsync.cegid_loop.check"),
            ("prepare", "hubsync.cegid_loop.prepare"),
            ("deposit", "hubsync.cegid_loop.deposit"),
        ],
    ),
}


def _package_of(provider: Provider) -> Path:
    """The folder a provider lives in (where its steps are)."""
    module = provider.steps[0].run.__module__
    return ROOT.joinpath(*module.split(".")[:-1])


def _spelled(source: str, filename: str, words: set[str], task_prefixes: tuple[str, ...]) -> list[int]:
    """Lines where a string literal is one of ``words`` or names one of the tasks (``hubsync.acd.…``)."""
    return sorted(
        node.lineno
        for node in ast.walk(ast.parse(source, filename=filename))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and (node.value in words or node.value.startswith(task_prefixes))
    )


def test_no_module_outside_a_provider_folder_spells_the_provider() -> None:
    # given every module of the product but the providers' own folders
    files = sorted([*(ROOT / "pipeline").rglob("*.py"), *(ROOT / "tasks").rglob("*.py"), ROOT / "celeryconfig.py"])
    assert len(PROVIDERS) >= 2

    offending = []
    for provider in PROVIDERS:
        words = {provider.name, provider.command_name, provider.queue}
        home = _package_of(provider)
        for path in files:
            if home in path.parents:
                continue
            lines = _spelled(path.read_text(encoding="utf-8"), str(path), words, (f"hubsync.{provider.name}.",))
            offending += [f"{path.relative_to(ROOT)}:{line} spells {provider.name}" for line in lines]

    # then nothing branches on a provider's name or knows its tasks: it asks the registry
    assert offending == []


def test_the_spelling_reader_sees_a_branch_and_a_task_name() -> None:
    source = 'if provider == "acd" and step == "confirm":\n    name = "hubsync.acd.confirm_ack"\n'

    assert _spelled(source, "x.py", {"acd"}, ("hubsync.acd.",)) == [1, 2]


def test_every_chain_step_keeps_its_celery_task_and_queue_names() -> None:
    described = {p.name: (p.queue, [(s.name, s.task) for s in p.steps]) for p in PROVIDERS}

    assert described == CELERY_NAMES


def test_the_celery_settings_route_every_task_to_its_provider_queue() -> None:
    # A private copy of the settings module: importing `celeryconfig` itself would pin the broker URL.
    spec = importlib.util.spec_from_file_location("celeryconfig_seam", ROOT / "celeryconfig.py")
    assert spec is not None and spec.loader is not None
    config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(config)

    def routed(task: str) -> str:
        return next(route["queue"] for pattern, route in config.task_routes.items() if fnmatch.fnmatch(task, pattern))

    assert [q.name for q in config.task_queues] == ["events", "acd", "cegid_loop"]
    assert {task: routed(task) for _queue, steps in CELERY_NAMES.values() for _step, task in steps} == {
        task: queue for queue, steps in CELERY_NAMES.values() for _step, task in steps
    }
    assert routed("hubsync.ingest_event") == "events"
    assert {name: entry["options"]["queue"] for name, entry in config.beat_schedule.items()} == {
        "acd-refresh-reference": "acd",
        "cegid-loop-daily-export": "cegid_loop",
        "retention-trim": "events",
    }


def test_the_worker_defines_one_task_per_step_of_every_provider() -> None:
    from tasks import app
    from tasks.steps import STEP_TASKS

    names = {task for _queue, steps in CELERY_NAMES.values() for _step, task in steps}

    assert set(STEP_TASKS) == names
    assert names <= set(app.tasks)


def test_every_provider_builds_its_context_only_for_a_connected_client_file(redis_server: Any) -> None:
    with flushed_store(redis_server, 11) as store:
        for provider in PROVIDERS:
            with pytest.raises(NoConnection):
                provider.context(store, "cf_never_connected")


def test_a_registry_refuses_a_provider_whose_names_are_taken() -> None:
    registry = Registry([WEBHOOK])
    twin = Provider(
        name="webhook2",
        display_name="Other",
        queue="other",
        steps=(ChainStep("sign", "hubsync.webhook.sign", _sign),),
        fan_out=_fan_out,
        context=_context,
        reconcile=_reconcile,
        ids=WEBHOOK.ids,
    )

    with pytest.raises(ValueError, match=r"hubsync\.webhook\.sign"):
        registry.register(twin)
    assert registry.names() == ["webhook"]


# -- a provider added by registration alone ----------------------------------------------------------------


def _sign(store: Store, rec: Record) -> None:
    """Sign the delivery."""


def _deliver(store: Store, rec: Record) -> None:
    """Deliver it to the hub."""


def _fan_out(store: Store, event: Event, data: dict[str, Any], enqueue: Enqueue) -> tuple[str, bool]:
    rid = record_id("webhook", event.client_file_id, event.entry.id)
    store.records.create(rid, data, event.event_id)
    enqueue("webhook", rid, 0, "sign")
    return rid, True


def _context(store: Store, client_file_id: str) -> object:
    return client_file_id


def _reconcile(store: Store, client_file_id: str) -> Any:
    raise NotImplementedError


SETTLED: list[tuple[str, str]] = []


def _settle(store: Store, dl: DeadLetter, reason: str) -> None:
    SETTLED.append((dl.id, reason))


WEBHOOK = Provider(
    name="webhook",
    display_name="Hub webhooks",
    queue="webhook",
    steps=(
        ChainStep("sign", "hubsync.webhook.sign", _sign),
        ChainStep("deliver", "hubsync.webhook.deliver", _deliver, countdown=lambda: 1.5, writes=True),
    ),
    fan_out=_fan_out,
    context=_context,
    reconcile=_reconcile,
    ids=IdStyle(key_label="delivery id", key_field="delivery_id", id_label="hub receipt", id_prefix="receipt "),
    settle_discarded=_settle,
)


@pytest.fixture
def with_webhook() -> Iterator[Provider]:
    PROVIDERS.register(WEBHOOK)
    try:
        yield WEBHOOK
    finally:
        del PROVIDERS._providers[WEBHOOK.name]


@pytest.fixture
def store(redis_server: Any) -> Iterator[Store]:
    with flushed_store(redis_server, 11) as s:
        yield s


def test_a_registered_provider_is_fanned_out_published_shown_and_settled(with_webhook: Provider, store: Store) -> None:
    # given a client file connected to a provider nothing but the registry knows
    from tasks.chains import next_step, signature

    store.connections.save(Connection(provider="webhook", client_file_id="cf_w", params={}, sealed_secret=""))
    started: list[tuple[str, str, int, str]] = []

    # when an event of that client file comes in
    result = ingest(store, sample_event("cf_w", sample_entry("purchase", 1)), lambda *a: started.append(a))

    # then the provider made its record and started its chain at its first step
    (rid,) = result.records
    assert result.outcome == "accepted" and started == [("webhook", rid, 0, "sign")]
    # and its steps are published as its tasks, on its queue, with the countdown it declared
    sig = signature("webhook", rid, 0, "deliver")
    assert (sig.task, sig.options["queue"], sig.options["countdown"]) == ("hubsync.webhook.deliver", "webhook", 1.5)
    assert next_step("webhook", "sign") == "deliver" and next_step("webhook", "deliver") is None
    # and operators read its ids its way
    store.records.update(rid, provider_id="R-17")
    rec = store.records.get(rid)
    assert rec is not None and views.provider_id_text(rec) == "receipt R-17"
    assert views.ids_of("webhook").id_line(rec) == "hub receipt: R-17"
    # and a discard of its dead letter lets it settle the record
    dl = dead_letter_record(store, rec, "deliver", OutcomeUnknown("no answer from the hub"))
    discard(store, dl.id, "the hub has it", who="alice")
    assert SETTLED[-1] == (dl.id, "the hub has it")
