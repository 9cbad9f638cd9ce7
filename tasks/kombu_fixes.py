"""Two changes to kombu's Redis transport: a workaround for it losing the worker when Redis restarts, and
plain pipelines for its unacked bookkeeping.

When the broker connection drops, Celery closes the old connection; the Redis channel first disconnects its
pools and then tries to push the messages it had delivered but not acked back onto their queues, through a
pool it can no longer build (``AttributeError: 'NoneType' object has no attribute 'hostname'``). Celery
takes that for an unrecoverable error and the worker exits (kombu 5.7, ``-P threads``; see celery/kombu
#970 and #582 for the same failure in other paths).

The same happens a moment later when a task that ran across the outage is acked or rejected on the channel
that died with the old connection.

Nothing is lost by skipping that restore, ack or reject: the messages are still in the ``unacked`` hash in
Redis, and any worker's periodic sweep puts them back once the visibility timeout has passed (a step run
again finds its record done and moves on). So the failure is logged and left to the sweep, and the worker
reconnects instead of dying.

Every delivered message is noted in the ``unacked`` hash and its index (ZADD, HSET) and forgotten on ack
(ZREM, HDEL), each pair wrapped in MULTI/EXEC: four of the ten commands a task costs the broker. The pairs
need no transaction. A worker dying between the two writes of a delivery leaves an index entry without its
message (the sweep skips it) or the message without an index entry, which is where a message popped and not
yet noted stands anyway; between the two of an ack, a message already acked. Nothing a transaction would save
is lost without it, so the pairs go in plain pipelines (one round trip each, as before).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)

_PATCHED = "_hubsync_patched"


_TOLERATED = (AttributeError, OSError, redis.RedisError)


def apply() -> None:
    """Make the Redis QoS's restore-on-close, ack and reject tolerate a connection that is already gone, and its
    unacked bookkeeping use plain pipelines (idempotent)."""
    qos = kombu_redis.QoS
    if getattr(qos, _PATCHED, False):
        return

    @contextlib.contextmanager
    def pipe_or_acquire(self: Any, pipe: Any = None, client: Any = None) -> Iterator[Any]:
        if pipe:
            yield pipe
        else:
            with self.channel.conn_or_acquire(client) as conn:
                yield conn.pipeline(transaction=False)

    restore: Any = qos.restore_unacked
    ack: Any = qos.ack
    reject: Any = qos.reject

    def restore_unacked(self: Any, client: Any = None) -> Any:
        try:
            return restore(self, client)
        except _TOLERATED as exc:
            log.warning(
                "could not requeue %d unacked message(s) on a lost broker connection (%s); they stay in Redis "
                "and come back after the visibility timeout",
                len(getattr(self, "_delivered", ()) or ()),
                type(exc).__name__,
            )
            return None

    def safe_ack(self: Any, delivery_tag: Any) -> None:
        try:
            ack(self, delivery_tag)
        except _TOLERATED as exc:
            log.warning("could not ack a message on a lost broker connection (%s); it comes back later", exc)

    def safe_reject(self: Any, delivery_tag: Any, requeue: bool = False) -> None:
        try:
            reject(self, delivery_tag, requeue=requeue)
        except _TOLERATED as exc:
            log.warning("could not reject a message on a lost broker connection (%s); it comes back later", exc)

    patches = (
        ("restore_unacked", restore_unacked),
        ("ack", safe_ack),
        ("reject", safe_reject),
        ("pipe_or_acquire", pipe_or_acquire),
    )
    for name, fn in patches:
        setattr(qos, name, fn)
    setattr(qos, _PATCHED, True)
