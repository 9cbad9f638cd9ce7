"""Celery settings of every hubsync process (workers, beat, the CLI publishing events).

Chosen for a pipeline whose records, not Celery results, are the truth: no result backend, late acks so a
killed worker's task is delivered again, one message prefetched at a time, and a visibility timeout that
every retry countdown stays below (see ``pipeline.retry.RetryPolicy.ceiling_seconds``).
"""

import os

from kombu import Queue

broker_url = os.environ.get("HUBSYNC_REDIS_URL", "redis://127.0.0.1:6379/0")
broker_connection_retry_on_startup = True
broker_transport_options = {
    "visibility_timeout": int(float(os.environ.get("HUBSYNC_VISIBILITY_TIMEOUT_SECONDS", "3600"))),
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
    "hubsync.acd.*": {"queue": "acd"},
    "hubsync.cegid_loop.*": {"queue": "cegid_loop"},
}

worker_hijack_root_logger = True
worker_redirect_stdouts = False
worker_cancel_long_running_tasks_on_connection_loss = False
