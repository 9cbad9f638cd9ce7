"""The pipeline's queues as the broker holds them, read without consuming anything."""

from __future__ import annotations

from pipeline.registry import PROVIDERS
from pipeline.store import Store

EVENTS_QUEUE = "events"
"""Where the upstream publishes its events (``hubsync.ingest_event``)."""


def pipeline_queues() -> tuple[str, ...]:
    """Every queue of the pipeline: events first, then each installed provider's."""
    return (EVENTS_QUEUE, *PROVIDERS.queues())


def queue_depths(store: Store) -> dict[str, int]:
    """Messages waiting in each of the pipeline's queues, every priority included (``LLEN``: the only read of
    the broker)."""
    return store.broker.depths(pipeline_queues())
