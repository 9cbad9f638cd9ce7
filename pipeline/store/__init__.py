"""The store: everything hubsync keeps, in Redis, in small rooms that each own their keys.

The record is the truth and a broker message is disposable: a task carries a record id, reads what it needs
here, and writes its progress back, so any step can run again on any worker and a replay only has to
re-enqueue an id. Only this package talks to Redis; every key is built in ``keys``; Lua lives in ``lua/``.

    store.records       records, attempt histories, state counters, settled and in-flight indexes
    store.retention     trimming what the history window has passed
    store.dead_letters  dead letters, their facet indexes, the audit trail
    store.acks          ACK codes per ACD dossier
    store.locks         locks shared by every worker
    store.connections   client files' connections to providers
    store.events        event dedupe, global counters
    store.acd           ACD tokens, refused logins, counters
    store.fec           each ACD dossier's FEC board
    store.reference     each ACD dossier's reference data
    store.loop          Cegid Loop pending documents, exports, file claims
    store.breakers      circuit breakers per server
    store.jobs          scheduled jobs' runs
    store.deliveries    runs of each message (poison-message cap)
    store.broker        the broker's queue depths
"""

from __future__ import annotations

from typing import Any

from pipeline.store import keys
from pipeline.store.acd import AcdStore, FecStore, ReferenceStore
from pipeline.store.acks import AckStore
from pipeline.store.client import Redis, connect
from pipeline.store.connections import ConnectionStore
from pipeline.store.deadletters import DeadLetterStore
from pipeline.store.events import EventLog
from pipeline.store.locks import LockBusy, Locks
from pipeline.store.loop import LoopStore
from pipeline.store.models import (
    FINAL_STATES,
    IN_FLIGHT_STATES,
    STATES,
    Connection,
    DeadLetter,
    Record,
    new_dead_letter_id,
    now,
    record_id,
    split_record_id,
    unpack_compact,
)
from pipeline.store.ops import BreakerStore, BrokerView, DeliveryStore, JobStore
from pipeline.store.records import RecordStore
from pipeline.store.retention import Retention

__all__ = [
    "FINAL_STATES",
    "IN_FLIGHT_STATES",
    "STATES",
    "Connection",
    "DeadLetter",
    "LockBusy",
    "Record",
    "Store",
    "keys",
    "new_dead_letter_id",
    "now",
    "record_id",
    "split_record_id",
    "unpack_compact",
]


class Store:
    """Every room of the store on one Redis client."""

    def __init__(self, client: Redis) -> None:
        # The raw client, for the rooms and for tests that inspect Redis; no module outside this package uses it.
        self.r: Any = client
        self.dead_letters = DeadLetterStore(client)
        self.retention = Retention(client, self.dead_letters)
        self.records = RecordStore(client, on_settled=self.retention.on_settled)
        self.acks = AckStore(client)
        self.locks = Locks(client)
        self.connections = ConnectionStore(client)
        self.events = EventLog(client)
        self.acd = AcdStore(client)
        self.fec = FecStore(client)
        self.reference = ReferenceStore(client)
        self.loop = LoopStore(client)
        self.breakers = BreakerStore(client)
        self.jobs = JobStore(client)
        self.deliveries = DeliveryStore(client)
        self.broker = BrokerView(client)

    @classmethod
    def from_url(cls, url: str | None = None) -> Store:
        """Connect to the store at ``url`` (default: ``HUBSYNC_REDIS_URL``)."""
        return cls(connect(url))

    def ping(self) -> None:
        """Raise a ``redis.RedisError`` unless the store answers."""
        self.r.ping()

    def close(self) -> None:
        """Close this store's connections."""
        self.r.close()

    def recount(self) -> dict[tuple[str, str], dict[str, int]]:
        """Rebuild every counter and index from the records and dead letters themselves (expensive: for repair,
        and once after upgrading from a version without them)."""
        states = self.records.recount()
        self.dead_letters.reindex()
        return states

    def command_calls(self) -> int:
        """How many commands this Redis has run since its statistics were last reset (``INFO commandstats``)."""
        return sum(int(stats["calls"]) for stats in self.r.info("commandstats").values())
