"""The Cegid Loop tasks: one per step of ``pipeline.cegid.steps``, and the export ``hubsync beat`` runs daily."""

from __future__ import annotations

import logging
from typing import Any

from pipeline import runtime
from pipeline.cegid import export, steps
from pipeline.config import settings
from pipeline.errors import ErrorKind, HubsyncError
from pipeline.retry import backoff_seconds
from tasks import app
from tasks.chains import CEGID_LOOP_TASKS, EXPORT_TASK, enqueue, run_chain_step

log = logging.getLogger(__name__)


def _run(task: Any, step: str, record_id: str, generation: int) -> None:
    run_chain_step(task, step, record_id, generation, steps.STEP_FUNCTIONS)


@app.task(name=CEGID_LOOP_TASKS["fetch"], bind=True, max_retries=None)
def fetch(self: Any, record_id: str, generation: int) -> None:
    """Fetch the document into the spool (streamed, checked)."""
    _run(self, "fetch", record_id, generation)


@app.task(name=CEGID_LOOP_TASKS["check"], bind=True, max_retries=None)
def check(self: Any, record_id: str, generation: int) -> None:
    """Check its type from the bytes; skip anything but JPEG, PNG and PDF."""
    _run(self, "check", record_id, generation)


@app.task(name=CEGID_LOOP_TASKS["prepare"], bind=True, max_retries=None)
def prepare(self: Any, record_id: str, generation: int) -> None:
    """Fix the deposit's file name and transaction."""
    _run(self, "prepare", record_id, generation)


@app.task(name=CEGID_LOOP_TASKS["deposit"], bind=True, max_retries=None)
def deposit(self: Any, record_id: str, generation: int) -> None:
    """Deposit the document with storeDocument, once, and record it in the ledger."""
    _run(self, "deposit", record_id, generation)


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
