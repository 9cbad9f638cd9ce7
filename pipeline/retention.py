"""Retention: settled records keep their full detail for ``HUBSYNC_HISTORY_DAYS``, then only what correctness
needs for good (``pipeline.store.COMPACT_FIELDS``); closed dead letters are forgotten after the same window
(their audit lines stay).

Three things trim, and any number of them may run at once (each record is trimmed by a script that checks
again that it is still settled and old enough): the ``hubsync.retention.trim`` task beat sends every
``HUBSYNC_RETENTION_INTERVAL_SECONDS``; every record that settles, which trims a few old ones on its way
(``Store.trim_expired``), so retention keeps pace with the traffic even with no beat at all; and this
module's ``run`` from the command line (``hubsync retention``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pipeline.store import Store

BATCH = 1000


@dataclass
class RetentionResult:
    """What one retention pass trimmed, and what it left for the next one."""

    records: int = 0
    dead_letters: int = 0
    backlog: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, float | int]:
        """JSON form for task results, ``--json`` and the scheduled-job record."""
        return {
            "records": self.records,
            "dead_letters": self.dead_letters,
            "backlog": self.backlog,
            "seconds": round(self.seconds, 3),
        }

    def summary(self) -> str:
        """One line for logs and the command line."""
        return (
            f"trimmed {self.records} record(s) and {self.dead_letters} closed dead letter(s); "
            f"{self.backlog} left past the window"
        )


def run(store: Store, at: float | None = None, budget_seconds: float = 60.0) -> RetentionResult:
    """Trim in batches until nothing is left past the window or the time budget is spent."""
    started = time.monotonic()
    result = RetentionResult()
    while time.monotonic() - started < budget_seconds:
        done = store.retention.trim_expired(at=at, limit=BATCH)
        result.records += done
        if done < BATCH:
            break
    while time.monotonic() - started < budget_seconds:
        done = store.retention.trim_closed_dead_letters(at=at, limit=BATCH)
        result.dead_letters += done
        if done < BATCH:
            break
    result.backlog = store.retention.settled_backlog(at=at)
    result.seconds = time.monotonic() - started
    return result
