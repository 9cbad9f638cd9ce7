"""The base class of every hubsync task: caps redeliveries and survives a Redis restart mid-task."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import redis
from celery import Task
from celery.exceptions import Ignore, Retry
from kombu.exceptions import OperationalError

from pipeline import runtime
from pipeline.config import settings
from pipeline.deliveries import finished, poisoned
from pipeline.ingest import INGEST_TASK
from pipeline.registry import PROVIDERS
from pipeline.retry import backoff_seconds

log = logging.getLogger(__name__)
REDIS_WAIT_SECONDS = 60.0


def _step_of(task_name: str) -> tuple[str | None, str]:
    found = PROVIDERS.step_of_task(task_name)
    if found is not None:
        return found[1].name, found[1].name
    return None, task_name.rsplit(".", 1)[-1]


class HubsyncTask(Task):  # type: ignore[misc]
    """Counts each run of a message (dead-letters it past ``HUBSYNC_MAX_DELIVERIES``) and retries, instead of
    failing, a task that lost Redis half-way (the record is the truth: running the step again is safe)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        if request.called_directly or not request.id:
            return super().__call__(*args, **kwargs)
        try:
            step, name = _step_of(self.name)
            record_id = args[0] if step is not None and args and isinstance(args[0], str) else None
            event = args[0] if self.name == INGEST_TASK and args else None
            again = _redelivered(request)
            if poisoned(runtime.store(), request.id, request.retries, record_id, name, event, redelivered=again):
                raise Ignore()
            try:
                return super().__call__(*args, **kwargs)
            finally:
                if again:
                    with contextlib.suppress(redis.RedisError):
                        finished(runtime.store(), request.id, request.retries)
        except (Ignore, Retry):
            raise
        except (redis.RedisError, OperationalError) as exc:
            # A step's own writes and the publish of the chain's next step both need Redis; losing it half-way
            # retries the step, which finds its work done and publishes the next one. Retrying publishes a
            # message too: wait for Redis first, or Celery would drop this one (Reject) when
            # the publish fails. If Redis stays away, the message is still unacked there and comes back.
            back = _wait_for_redis(REDIS_WAIT_SECONDS)
            countdown = backoff_seconds(request.retries, settings().retry)
            log.warning(
                "%s lost Redis (%s; %s); retry in %.1fs",
                self.name,
                type(exc).__name__,
                "back" if back else "still away",
                countdown,
            )
            raise self.retry(exc=exc, countdown=countdown, max_retries=None) from exc


def _redelivered(request: Any) -> bool:
    """Whether the broker hands this message out again (kombu marks a restored message in its delivery info and
    its headers; RabbitMQ sets the flag itself)."""
    info = request.delivery_info or {}
    return bool(info.get("redelivered") or getattr(request, "redelivered", False))


def _wait_for_redis(timeout_seconds: float) -> bool:
    """Wait until the store answers again; False if it did not within ``timeout_seconds``."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            runtime.store().ping()
            return True
        except redis.RedisError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)
