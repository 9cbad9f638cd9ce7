"""Every worker looks for stalled chains now and then (``pipeline.resume``); a Redis lock lets one at a time.

It runs in a thread of each worker's main process rather than from ``hubsync beat``, so that chains resume
with any number of workers and no scheduler at all, as long as one worker is up.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from celery.signals import worker_ready, worker_shutdown
from kombu.exceptions import OperationalError

from pipeline import runtime
from pipeline.config import settings
from pipeline.registry import PROVIDERS
from pipeline.resume import resume_stalled
from tasks.chains import enqueue

log = logging.getLogger(__name__)
_stop = threading.Event()


def resume_once() -> int:
    """One pass, if no other worker is making one; returns how many chains were resumed."""
    s = settings()
    store = runtime.store()
    if not store.locks.take_turn("resume", max(1.0, s.resume_interval_seconds)):
        return 0
    result = resume_stalled(store, enqueue, PROVIDERS.chains(), s.stall_seconds)
    if result.resumed or result.busy_providers:
        log.warning("resume: %s", result.summary())
    return len(result.resumed)


def _loop() -> None:
    while not _stop.wait(settings().resume_interval_seconds):
        try:
            resume_once()
        except (redis.RedisError, OperationalError) as exc:
            log.info("resume pass skipped: Redis unavailable (%s)", type(exc).__name__)
        except Exception:
            log.exception("resume pass failed")


@worker_ready.connect
def _start(**_: Any) -> None:
    _stop.clear()
    threading.Thread(target=_loop, name="hubsync-resume", daemon=True).start()


@worker_shutdown.connect
def _end(**_: Any) -> None:
    _stop.set()
