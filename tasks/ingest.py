"""``hubsync.ingest_event``: the task the upstream validation service calls (queue ``events``), and how to
publish to it exactly as the upstream does."""

from __future__ import annotations

import logging
from typing import Any

from pipeline import runtime
from pipeline.config import settings
from pipeline.ingest import INGEST_TASK, ingest
from pipeline.queues import EVENTS_QUEUE
from pipeline.redact import event_argsrepr
from pipeline.retry import backoff_seconds
from tasks import app
from tasks.chains import enqueue

log = logging.getLogger(__name__)


@app.task(name=INGEST_TASK, bind=True, max_retries=None)
def ingest_event(self: Any, event: Any) -> None:
    """Validate one ``entry.validated`` event and fan it out; a refused event becomes a dead letter."""
    try:
        ingest(runtime.store(), event, enqueue)
    except Exception as exc:
        # Ingest is idempotent, so a failure half-way (Redis gone, broker gone) is retried, never dropped.
        countdown = backoff_seconds(self.request.retries, settings().retry)
        log.warning("ingest failed (%s); retry in %.1fs", type(exc).__name__, countdown)
        # The retried message shows ids only, like the first one (Flower must never see the event's URLs).
        raise self.retry(exc=exc, countdown=countdown, max_retries=None, argsrepr=event_argsrepr(event)) from exc


def publish_event(data: Any) -> None:
    """Send one decoded event to the ``events`` queue, exactly as the upstream service does."""
    # argsrepr is what Flower and worker logs show: ids only, never the event and its document URL tokens.
    app.send_task(INGEST_TASK, args=[data], queue=EVENTS_QUEUE, argsrepr=event_argsrepr(data))
