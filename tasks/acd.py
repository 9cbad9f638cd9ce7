"""ACD's own task: the reference-data refresh ``hubsync beat`` sends (its chain's tasks: ``tasks.steps``)."""

from __future__ import annotations

import logging
from typing import Any

from pipeline import runtime
from pipeline.acd import reference
from pipeline.acd.provider import REFRESH_TASK
from tasks import app

log = logging.getLogger(__name__)


@app.task(name=REFRESH_TASK, ignore_result=True)
def refresh_reference(client_file_id: str | None = None) -> list[dict[str, Any]]:
    """Refresh the ACD reference data of every connected client file (or one); run by ``hubsync beat``."""
    outcomes = reference.refresh_connections(runtime.store(), client_file_id)
    for outcome in outcomes:
        if not outcome.ok:
            log.warning("reference refresh of %s failed: %s", outcome.client_file_id, outcome.message)
    return [o.to_dict() for o in outcomes]
