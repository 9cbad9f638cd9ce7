"""Events seen (a second delivery of one ``event_id`` has no effect) and the global counters."""

from __future__ import annotations

from pipeline.config import settings
from pipeline.store import keys
from pipeline.store.client import Redis


class EventLog:
    """Dedupe marks per event id, and the counters of events received, duplicated and refused."""

    def __init__(self, client: Redis) -> None:
        self.r = client

    def status(self, event_id: str) -> str | None:
        """``done`` once an event's fan-out finished; None when never seen."""
        value: str | None = self.r.get(keys.event(event_id))
        return value

    def mark(self, event_id: str, status: str, count: str | None = None) -> None:
        """Remember an event id so that a second delivery has no effect, and bump the counter ``count`` (one
        round trip for both)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.set(keys.event(event_id), status, ex=settings().event_ttl_seconds)
        if count is not None:
            pipe.hincrby(keys.COUNTERS, count, 1)
        pipe.execute()

    def count(self, name: str, amount: int = 1) -> None:
        """Bump a global counter (events received, duplicates, refused…)."""
        self.r.hincrby(keys.COUNTERS, name, amount)

    def counters(self) -> dict[str, int]:
        """Every global counter."""
        return {k: int(v) for k, v in self.r.hgetall(keys.COUNTERS).items()}
