"""Celery settings of every hubsync process (workers, beat, the CLI publishing events).

Chosen for a pipeline whose records, not Celery results, are the truth: no result backend, late acks so a
killed worker's task is delivered again, one message prefetched at a time, and a visibility timeout that
every retry countdown stays below (see ``pipeline.retry.RetryPolicy.ceiling_seconds``).
"""

import os
from typing import Any

from celery.schedules import crontab
from kombu import Queue

from pipeline.ingest import INGEST_TASK
from pipeline.providers import ScheduledJob
from pipeline.queues import EVENTS_QUEUE, pipeline_queues
from pipeline.registry import PROVIDERS

broker_url = os.environ.get("HUBSYNC_REDIS_URL", "redis://127.0.0.1:6379/0")
broker_connection_retry_on_startup = True
broker_transport_options = {
    "visibility_timeout": int(float(os.environ.get("HUBSYNC_VISIBILITY_TIMEOUT_SECONDS", "3600"))),
    # How often a worker looks for messages a dead worker left unacked (kombu sweeps every interval times throttle
    # seconds: 100 s by default); lower both with a short visibility timeout.
    "unacked_restore_interval": int(float(os.environ.get("HUBSYNC_UNACKED_RESTORE_INTERVAL_SECONDS", "10"))),
    "unacked_restore_throttle": int(os.environ.get("HUBSYNC_UNACKED_RESTORE_THROTTLE", "10")),
}

task_serializer = "json"
accept_content = ["json"]
result_backend = None
task_ignore_result = True
task_store_errors_even_if_ignored = False

task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = int(os.environ.get("HUBSYNC_PREFETCH", "1"))

task_default_queue = EVENTS_QUEUE
task_queues = tuple(Queue(name) for name in pipeline_queues())
task_routes = {
    INGEST_TASK: {"queue": EVENTS_QUEUE},
    "hubsync.retention.*": {"queue": EVENTS_QUEUE},
    # each provider's tasks (its chain's steps, its scheduled jobs) run on its own queue
    **{f"hubsync.{provider.name}.*": {"queue": provider.queue} for provider in PROVIDERS},
}

worker_hijack_root_logger = True
worker_redirect_stdouts = False
worker_cancel_long_running_tasks_on_connection_loss = False

# `hubsync beat`: the periodic tasks (each runs on a worker of its queue; a run nobody picked up before the
# next one is due expires instead of piling up).
retention_interval_seconds = float(os.environ.get("HUBSYNC_RETENTION_INTERVAL_SECONDS", "3600"))


def _beat_entry(job: ScheduledJob, queue: str) -> dict[str, Any]:
    """A provider's scheduled job as Celery beat reads it (a daily one as a crontab, read in UTC below)."""
    if job.daily_at_utc is not None:
        hour, minute = job.daily_at_utc
        return {
            "task": job.task,
            "schedule": crontab(hour=hour, minute=minute),
            "options": {"queue": queue, "expires": job.expires_seconds or 86400.0},
        }
    return {
        "task": job.task,
        "schedule": job.every_seconds,
        "options": {"queue": queue, "expires": job.expires_seconds or job.every_seconds},
    }


beat_schedule = {
    # each provider's own jobs: ACD's reference-data refresh, the Cegid Loop export every day at 20:00 UTC
    **{job.name: _beat_entry(job, provider.queue) for provider in PROVIDERS for job in provider.jobs()},
    # Settled records past HUBSYNC_HISTORY_DAYS shrink to what they keep for good (pipeline/retention.py).
    "retention-trim": {
        "task": "hubsync.retention.trim",
        "schedule": retention_interval_seconds,
        "options": {"queue": EVENTS_QUEUE, "expires": retention_interval_seconds},
    },
}
timezone = "UTC"
enable_utc = True

# Several `hubsync beat` may run: the schedule and each job's last run live in Redis (celery-redbeat), and a
# lock there lets one beat send at a time. The others wait for the lock; when its holder dies the lock expires
# after HUBSYNC_BEAT_LOCK_SECONDS and one of them takes over, sending whatever fell due meanwhile.
beat_scheduler = "redbeat.RedBeatScheduler"
redbeat_redis_url = broker_url
redbeat_redis_options: dict[str, object] = {}
redbeat_key_prefix = "hubsync:beat:"
redbeat_lock_key = "hubsync:beat:lock"
redbeat_lock_timeout = int(float(os.environ.get("HUBSYNC_BEAT_LOCK_SECONDS", "60")))
# How often beat wakes up (and a waiting beat tries the lock); stays well below the lock's lifetime.
beat_max_loop_interval = max(1, min(10, redbeat_lock_timeout // 5))
