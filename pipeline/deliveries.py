"""A cap on redeliveries, so that a poison message cannot loop forever.

Late acks and a worker killed mid-task mean Redis hands the message out again after the visibility timeout;
that is what keeps a chain alive through a crash. But a message that kills its worker every time (a
segfault, an out-of-memory kill, a hang the supervisor shoots) would come back forever. A message that comes
back is marked redelivered by the broker (kombu's Redis transport when it restores an unacked message,
RabbitMQ itself); each such run is counted in Redis under the task id and retry number (a Celery retry is a
new message and starts again), and the count is forgotten when a run ends in the worker, whatever its
outcome. A first delivery costs no Redis command at all. Past ``MAX_DELIVERIES`` deliveries of one message,
the record it works on is dead-lettered with ``RedeliveryLimitReached`` and the message is dropped instead
of run.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from pipeline.deadletters import dead_letter_event, dead_letter_record
from pipeline.errors import PermanentError
from pipeline.store import Store

log = logging.getLogger(__name__)

MAX_DELIVERIES = 5
COUNTER_TTL_SECONDS = 7 * 24 * 3600


class RedeliveryLimitReached(PermanentError):
    """One message was delivered too many times without finishing: every worker that ran it died."""

    default_hint = (
        "Workers died while running this step several times in a row (killed, out of memory, crashed). Look at "
        "the workers' logs around the times of the attempts; replay once the cause is fixed."
    )


def max_deliveries() -> int:
    """``HUBSYNC_MAX_DELIVERIES`` (default 5): runs of one message before it counts as poison."""
    raw = os.environ.get("HUBSYNC_MAX_DELIVERIES", "")
    try:
        return max(1, int(raw)) if raw else MAX_DELIVERIES
    except ValueError as exc:
        raise SystemExit(f"HUBSYNC_MAX_DELIVERIES must be an integer, got {raw!r}") from exc


def count_delivery(store: Store, task_id: str, retries: int) -> int:
    """Count one more run of this message; returns how many runs it had, this one included."""
    return store.deliveries.count(task_id, retries, COUNTER_TTL_SECONDS)


def finished(store: Store, task_id: str, retries: int) -> None:
    """Forget a message's count once a run ended in the worker (done, retried, dead-lettered): only runs cut
    short by a dying worker leave a count behind, so the counters stay few."""
    store.deliveries.forget(task_id, retries)


def poisoned(
    store: Store,
    task_id: str,
    retries: int,
    record_id: str | None,
    step: str,
    event: Any = None,
    limit: int = 0,
    redelivered: bool = True,
) -> bool:
    """Count this run if it is a redelivery; past the limit, dead-letter its record (or its event) and say it
    must not run. A first delivery is never poison and is not counted."""
    if not redelivered:
        return False
    limit = limit or max_deliveries()
    runs = count_delivery(store, task_id, retries) + 1  # the first delivery, not counted, ran too
    if runs <= limit:
        if runs > 1:
            log.warning("task %s (retry %d) delivered again: run %d of at most %d", task_id, retries, runs, limit)
        return False
    error = RedeliveryLimitReached(
        f"step {step} was delivered {runs} times without finishing (at most {limit}); every worker that ran it "
        "stopped before the end"
    )
    if record_id is not None:
        rec = store.records.get(record_id)
        if rec is not None and rec.state != "dead":
            store.records.add_attempt(record_id, {"step": step, "outcome": "dead", **error.to_dict()})
            dl = dead_letter_record(store, rec, step, error)
            log.error("record %s dead-lettered as %s: %s", record_id, dl.id, error.message)
    elif event is not None:
        dl = dead_letter_event(store, event, error, step=step)
        log.error("event dead-lettered as %s: %s", dl.id, error.message)
    return True
