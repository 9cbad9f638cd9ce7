"""The Celery application: thin tasks around ``pipeline``. Start workers with ``hubsync worker``."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init

from pipeline import runtime
from pipeline.store.connections import TRUST_SECONDS
from tasks import kombu_fixes

kombu_fixes.apply()

# Every task counts its deliveries (a poison message is dead-lettered, not run forever): tasks.delivery.
app = Celery(
    "hubsync",
    include=[
        "tasks.ingest",
        "tasks.steps",
        "tasks.acd",
        "tasks.cegid_loop",
        "tasks.retention",
        "tasks.schedule",
        "tasks.resume",
    ],
    task_cls="tasks.delivery:HubsyncTask",
)
app.config_from_object("celeryconfig")


@worker_init.connect
def _keep_connections(**_: Any) -> None:
    """A worker's steps share the connections they read for a second (every step reads its client file's)."""
    runtime.keep_connections(TRUST_SECONDS)


@worker_process_init.connect
def _fresh_resources(**_: Any) -> None:
    """A forked pool process must not share its parent's sockets."""
    runtime.reset()
