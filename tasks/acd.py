"""The ACD chain's tasks: each runs one step of ``pipeline.acd.steps`` and only decides retry or stop."""

from __future__ import annotations

import logging
from typing import Any

from pipeline import runtime
from pipeline.acd import reference, stalled, steps
from tasks import app
from tasks.chains import ACD_TASKS, enqueue, run_chain_step

log = logging.getLogger(__name__)


def _run(task: Any, step: str, record_id: str, generation: int) -> None:
    run_chain_step(task, step, record_id, generation, steps.STEP_FUNCTIONS, on_error=steps.on_error)


@app.task(name=ACD_TASKS["fetch"], bind=True, max_retries=None)
def fetch_document(self: Any, record_id: str, generation: int) -> None:
    """Fetch the entry's supporting documents (streamed, checked)."""
    _run(self, "fetch", record_id, generation)


@app.task(name=ACD_TASKS["rename"], bind=True, max_retries=None)
def rename_document(self: Any, record_id: str, generation: int) -> None:
    """Give documents their unique names and upload them to the ACD GED."""
    _run(self, "rename", record_id, generation)


@app.task(name=ACD_TASKS["map"], bind=True, max_retries=None)
def map_entry(self: Any, record_id: str, generation: int) -> None:
    """Map the entry to ACD's shape, creating missing subsidiary accounts."""
    _run(self, "map", record_id, generation)


@app.task(name=ACD_TASKS["post"], bind=True, max_retries=None)
def post_entry(self: Any, record_id: str, generation: int) -> None:
    """Post the entry to ACD, once."""
    _run(self, "post", record_id, generation)


@app.task(name=ACD_TASKS["confirm"], bind=True, max_retries=None)
def confirm_ack(self: Any, record_id: str, generation: int) -> None:
    """Confirm the entry is in ACD by its ACK code."""
    _run(self, "confirm", record_id, generation)


REFRESH_TASK = "hubsync.acd.refresh_reference"


@app.task(name=REFRESH_TASK, ignore_result=True)
def refresh_reference(client_file_id: str | None = None) -> list[dict[str, Any]]:
    """Refresh the ACD reference data of every connected client file (or one); run by ``hubsync beat``."""
    outcomes = reference.refresh_connections(runtime.store(), client_file_id)
    for outcome in outcomes:
        if not outcome.ok:
            log.warning("reference refresh of %s failed: %s", outcome.client_file_id, outcome.message)
    return [o.to_dict() for o in outcomes]


RESUME_STALLED_TASK = "hubsync.acd.resume_stalled"


@app.task(name=RESUME_STALLED_TASK, ignore_result=True)
def resume_stalled(older_than: float | None = None) -> int:
    """Start again the chains whose message is gone (meant for a scheduler, every few minutes)."""
    found = stalled.resume_stalled(runtime.store(), enqueue, older_than)
    for item in found:
        log.warning("resumed %s at %s: nothing moved it for %.0fs", item.record_id, item.step, item.idle_seconds)
    return len(found)
