"""The pipeline's queues as the broker holds them, read without consuming anything."""

from __future__ import annotations

from pipeline.store import Store

QUEUES = ("events", "acd", "cegid_loop")


def queue_depths(store: Store) -> dict[str, int]:
    """Messages waiting in each of the pipeline's queues, every priority included (``LLEN``: the only read of
    the broker)."""
    return store.broker.depths(QUEUES)
