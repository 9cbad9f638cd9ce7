"""The ceiling: a 5-step Celery chain of no-op tasks with the pipeline's own settings (``celeryconfig``).

Its worker runs with the same pool, concurrency, late acks, prefetch and no result backend as the pipeline's,
on a queue of its own; the last step writes when the chain finished, so the driver can time it.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery, chain
from kombu import Queue

QUEUE = "raw"
STEP = "bench.raw.step"
DONE_KEY = "bench:raw:done"
STEPS = 5

app = Celery("hubsync-raw", set_as_current=False)
app.config_from_object("celeryconfig")
app.conf.update(task_queues=(Queue(QUEUE),), task_default_queue=QUEUE, task_routes={}, beat_schedule={})
_redis: redis.Redis | None = None


def _client() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(os.environ["HUBSYNC_REDIS_URL"])
    return _redis


@app.task(name=STEP, ignore_result=True)
def step(n: int, chain_id: str) -> None:
    """Do nothing; the last step records when its chain finished."""
    if n == STEPS:
        _client().hset(DONE_KEY, chain_id, time.time())


def send_chains(publisher: Celery, count: int, tag: str) -> None:
    """Publish ``count`` 5-step chains (immutable signatures, as the pipeline's) through ``publisher``."""
    with publisher.connection_for_write() as conn:
        for i in range(count):
            cid = f"{tag}-{i}"
            sigs = [publisher.signature(STEP, args=(n, cid), immutable=True, queue=QUEUE) for n in range(1, STEPS + 1)]
            chain(*sigs).apply_async(connection=conn)
