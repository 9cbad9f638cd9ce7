"""Record every run of a scheduled task (start, end, outcome) for ``hubsync status`` and the health page.

Celery's signals do it for every task of the beat schedule, so the tasks themselves know nothing about it.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import redis
from celery.signals import beat_init, task_failure, task_postrun, task_prerun

from pipeline import runtime, schedule
from tasks import app

log = logging.getLogger(__name__)


def _jobs() -> dict[str, str]:
    """Task name -> job name, from the beat schedule."""
    return {str(entry["task"]): name for name, entry in (app.conf.beat_schedule or {}).items()}


@task_prerun.connect
def _started(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    job = _jobs().get(getattr(task, "name", ""))
    if job is not None:
        with contextlib.suppress(redis.RedisError):
            schedule.record_start(runtime.store(), job, task_id or "")


@task_failure.connect
def _failed(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    job = _jobs().get(getattr(sender, "name", ""))
    if job is not None:
        with contextlib.suppress(redis.RedisError):
            schedule.record_end(runtime.store(), job, "failed", f"{type(exception).__name__}: {exception}")


@task_postrun.connect
def _ended(task: Any = None, state: str | None = None, **_: Any) -> None:
    job = _jobs().get(getattr(task, "name", ""))
    if job is None or state == "FAILURE":  # a failure was recorded with its reason
        return
    with contextlib.suppress(redis.RedisError):
        schedule.record_end(runtime.store(), job, "ok" if state == "SUCCESS" else str(state or "?").lower())


@beat_init.connect
def _beat_started(**_: Any) -> None:
    with contextlib.suppress(redis.RedisError):
        for job in _jobs().values():
            schedule.record_seen(runtime.store(), job)
