"""Retention: settled records past ``HUBSYNC_HISTORY_DAYS`` shrink to what they keep for good (a packed field,
see ``models.COMPACT_FIELDS``); dead letters closed before the window are forgotten."""

from __future__ import annotations

from pipeline.config import settings
from pipeline.store import keys
from pipeline.store.client import Redis
from pipeline.store.deadletters import DeadLetterStore
from pipeline.store.models import now
from pipeline.store.records import record_script, script_keys

TRIM_EVERY_SETTLES = 10
TRIM_ON_SETTLE = 2 * TRIM_EVERY_SETTLES


class Retention:
    """Shrinks what the history window has passed, safely with any number of callers at once."""

    def __init__(self, client: Redis, dead_letters: DeadLetterStore) -> None:
        self.r = client
        self.dead_letters = dead_letters
        self._trim = record_script(client, "record_trim")
        self.trim_on_settle = True
        self._settles = 0

    def history_seconds(self) -> float:
        """How long a settled record keeps its full detail (``HUBSYNC_HISTORY_DAYS``)."""
        return settings().history_days * 86400.0

    def on_settled(self) -> None:
        """A record just settled: every ``TRIM_EVERY_SETTLES`` of them in this process, trim twice as many that
        settled long ago (retention without any scheduler, at a tenth of a command per settling record)."""
        if not self.trim_on_settle:
            return
        self._settles += 1
        if self._settles % TRIM_EVERY_SETTLES == 0:
            self.trim_expired(limit=TRIM_ON_SETTLE)

    def trim_expired(self, at: float | None = None, limit: int = 1000) -> int:
        """Shrink up to ``limit`` records settled before the history window to what they keep for good.

        Each record is trimmed by a script that checks again that it is still settled and old enough. Returns
        how many were trimmed.
        """
        cutoff = (now() if at is None else at) - self.history_seconds()
        rids: list[str] = self.r.zrangebyscore(keys.SETTLED, "-inf", cutoff, start=0, num=limit)
        if not rids:
            return 0
        pipe = self.r.pipeline(transaction=False)
        for rid in rids:
            record_keys, group, entry_id = script_keys(rid)
            self._trim(keys=record_keys, args=[rid, group, entry_id, now(), cutoff], client=pipe)
        return sum(int(done) for done in pipe.execute())

    def trim_closed_dead_letters(self, at: float | None = None, limit: int = 1000) -> int:
        """Forget dead letters closed before the history window (their lines in the audit trail stay)."""
        cutoff = (now() if at is None else at) - self.history_seconds()
        return self.dead_letters.forget_closed_before(cutoff, limit)

    def settled_backlog(self, at: float | None = None) -> int:
        """Settled records past the history window and not trimmed yet."""
        cutoff = (now() if at is None else at) - self.history_seconds()
        return int(self.r.zcount(keys.SETTLED, "-inf", cutoff))
