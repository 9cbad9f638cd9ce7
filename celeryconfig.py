"""Celery settings of every hubsync process (workers, beat, the CLI publishing events).

Chosen for a pipeline whose records, not Celery results, are the truth: no result backend, late acks so a
killed worker's task is delivered again, one message prefetched at a time, and a visibility timeout that
every retry countdown stays below (see ``pipeline.retry.RetryPolicy.ceiling_seconds``).
"""

import os

from celery.schedules import crontab
from kombu import Queue

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

task_default_queue = "events"
task_queues = (Queue("events"), Queue("acd"), Queue("cegid_loop"))
task_routes = {
    "hubsync.ingest_event": {"queue": "events"},
    "hubsync.retention.*": {"queue": "events"},
    "hubsync.acd.*": {"queue": "acd"},
    "hubsync.cegid_loop.*": {"queue": "cegid_loop"},
}

worker_hijack_root_logger = True
worker_redirect_stdouts = False
worker_cancel_long_running_tasks_on_connection_loss = False

# `hubsync beat`: the periodic tasks (each runs on a worker of its queue; a run nobody picked up before the
# next one is due expires instead of piling up).
reference_refresh_seconds = float(os.environ.get("HUBSYNC_REFERENCE_REFRESH_SECONDS", "3600"))
retention_interval_seconds = float(os.environ.get("HUBSYNC_RETENTION_INTERVAL_SECONDS", "3600"))
beat_schedule = {
    "acd-refresh-reference": {
        "task": "hubsync.acd.refresh_reference",
        "schedule": reference_refresh_seconds,
        "options": {"queue": "acd", "expires": reference_refresh_seconds},
    },
    # The Cegid Loop export, every day at 20:00 UTC (crontab read in `timezone` below, not the machine's zone).
    "cegid-loop-daily-export": {
        "task": "hubsync.cegid_loop.export",
        "schedule": crontab(hour=20, minute=0),
        "options": {"queue": "cegid_loop", "expires": 12 * 3600},
    },
    # Settled records past HUBSYNC_HISTORY_DAYS shrink to what they keep for good (pipeline/retention.py).
    "retention-trim": {
        "task": "hubsync.retention.trim",
        "schedule": retention_interval_seconds,
        "options": {"queue": "events", "expires": retention_interval_seconds},
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
