"""Cegid Loop's own task: the export ``hubsync beat`` sends daily (its chain's tasks: ``tasks.steps``)."""

from __future__ import annotations

import logging
from typing import Any

from pipeline import runtime
from pipeline.cegid import export
from pipeline.cegid.provider import EXPORT_TASK
from pipeline.config import settings
from pipeline.errors import ErrorKind, HubsyncError
from pipeline.retry import backoff_seconds
from tasks import app
from tasks.chains import enqueue

log = logging.getLogger(__name__)


@app.task(name=EXPORT_TASK, bind=True, max_retries=None, ignore_result=True)
def export_documents(self: Any, client_file_id: str | None = None) -> None:
    """Export the pending documents of one client file, or of every connected one (``hubsync beat``, 20:00 UTC)."""
    store = runtime.store()
    failed: list[str] = []
    for cf in [client_file_id] if client_file_id else export.connected_client_files(store):
        try:
            result = export.run_export(store, cf, enqueue)
        except HubsyncError as exc:
            log.warning("export of %s failed: %s (%s)", cf, exc.message, exc.error_class)
            if exc.kind is ErrorKind.TRANSIENT:
                failed.append(cf)
            continue
        log.info("export of %s: %d started, %d left for next", cf, len(result.enqueued), result.left_for_next)
    if failed and client_file_id:
        raise self.retry(countdown=backoff_seconds(self.request.retries, settings().retry))
    for cf in failed:
        # Each client file retries on its own, so one firm's trouble does not export the others twice.
        export_documents.apply_async(args=(cf,), countdown=backoff_seconds(0, settings().retry))
