"""``hubsync.retention.trim``: shrink settled records past the history window (sent by ``hubsync beat``)."""

from __future__ import annotations

import logging

from pipeline import retention, runtime
from tasks import app

RETENTION_TASK = "hubsync.retention.trim"
log = logging.getLogger(__name__)


@app.task(name=RETENTION_TASK, ignore_result=True)
def trim_history() -> dict[str, float | int]:
    """Trim what is past the window (safe beside other runs and the trimming workers do as records settle)."""
    result = retention.run(runtime.store())
    log.info("retention: %s", result.summary())
    return result.to_dict()
