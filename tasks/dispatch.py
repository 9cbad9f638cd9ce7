"""The broker as the command line uses it (``pipeline.dispatch``), provided under the ``hubsync.dispatch`` entry
point: chains start through ``tasks.chains``, events go to ``hubsync.ingest_event``, programs run on ``app``."""

from __future__ import annotations

from pipeline.dispatch import Dispatch
from tasks import app
from tasks.chains import enqueue
from tasks.ingest import publish_event

DISPATCH = Dispatch(enqueue=enqueue, publish_event=publish_event, start=app.start)
