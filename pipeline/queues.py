"""The pipeline's queues as the broker holds them, read without consuming anything."""

from __future__ import annotations

from pipeline.store import Store

QUEUES = ("events", "acd", "cegid_loop")

# kombu keeps a Redis queue as one list per priority step: "<queue>" for 0, "<queue>\x06\x16<n>" for the others.
PRIORITY_STEPS = (0, 3, 6, 9)


def queue_depths(store: Store) -> dict[str, int]:
    """Messages waiting in each of the pipeline's queues, every priority included (``LLEN``: the only read of
    the broker)."""
    pipe = store.r.pipeline(transaction=False)
    for queue in QUEUES:
        for pri in PRIORITY_STEPS:
            pipe.llen(queue if pri == 0 else f"{queue}\x06\x16{pri}")
    sizes = [int(n) for n in pipe.execute()]
    step = len(PRIORITY_STEPS)
    return {queue: sum(sizes[i * step : (i + 1) * step]) for i, queue in enumerate(QUEUES)}
