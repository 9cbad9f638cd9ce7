"""What the Cegid Loop side keeps besides records: each client file's documents pending for the next export,
the events already fanned out, the exports under way and done, and which document carries each file."""

from __future__ import annotations

import json
from typing import Any

from pipeline.store import keys
from pipeline.store.client import Redis

EXPORTS_KEPT = 60


class LoopStore:
    """Pending documents, exports and file claims per client file."""

    def __init__(self, client: Redis) -> None:
        self.r = client

    # -- pending documents ----------------------------------------------------------------------------------

    def add_pending(self, client_file_id: str, rid: str, at: float) -> None:
        """A document waits for the next export (its arrival time kept when it waits already)."""
        self.r.zadd(keys.loop_pending(client_file_id), {rid: at})

    def remove_pending(self, client_file_id: str, rid: str) -> None:
        """A document no longer waits for an export."""
        self.r.zrem(keys.loop_pending(client_file_id), rid)

    def pending(self, client_file_id: str, until: float | None = None) -> list[str]:
        """The record ids waiting for the next export (arrived by ``until``), oldest first."""
        members: list[str] = self.r.zrangebyscore(
            keys.loop_pending(client_file_id), "-inf", "+inf" if until is None else until
        )
        return members

    def pending_counts(self, client_file_ids: list[str]) -> list[int]:
        """How many documents wait for the next export, per client file."""
        pipe = self.r.pipeline(transaction=False)
        for cf in client_file_ids:
            pipe.zcard(keys.loop_pending(cf))
        return [int(n) for n in pipe.execute()]

    def first_sight(self, client_file_id: str, event_id: str, ttl_seconds: int) -> bool:
        """True the first time an event is fanned out to this client file's Loop (for ``ttl_seconds``)."""
        return bool(self.r.set(keys.loop_seen(client_file_id, event_id), "1", nx=True, ex=ttl_seconds))

    # -- exports --------------------------------------------------------------------------------------------

    def export_started(self, export_id: str, ttl_seconds: float) -> None:
        """An export is enqueueing (its mark dies with it after ``ttl_seconds``)."""
        self.r.set(keys.loop_export_live(export_id), "1", px=int(ttl_seconds * 1000))

    def export_ended(self, export_id: str) -> None:
        """An export finished enqueueing."""
        self.r.delete(keys.loop_export_live(export_id))

    def export_live(self, export_id: str) -> bool:
        """Whether an export is still enqueueing."""
        return bool(self.r.exists(keys.loop_export_live(export_id)))

    def add_export(self, client_file_id: str, summary: dict[str, Any]) -> None:
        """Keep an export's summary (the newest ``EXPORTS_KEPT``)."""
        key = keys.loop_exports(client_file_id)
        pipe = self.r.pipeline(transaction=False)
        pipe.lpush(key, json.dumps(summary))
        pipe.ltrim(key, 0, EXPORTS_KEPT - 1)
        pipe.execute()

    def exports(self, client_file_id: str) -> list[dict[str, Any]]:
        """The client file's latest exports, newest first."""
        return [json.loads(raw) for raw in self.r.lrange(keys.loop_exports(client_file_id), 0, -1)]

    # -- files ----------------------------------------------------------------------------------------------

    def claim_file(self, client_file_id: str, sha256: str, rid: str, ttl_seconds: int) -> str | None:
        """Make ``rid`` the document that carries this file into the client file's dossier unless another
        holds it; returns the holder (``rid`` when this call took it)."""
        key = keys.loop_content(client_file_id, sha256)
        if self.r.set(key, rid, nx=True, ex=ttl_seconds):
            return rid
        holder: str | None = self.r.get(key)
        return holder

    def give_file(self, client_file_id: str, sha256: str, rid: str, ttl_seconds: int) -> None:
        """Make ``rid`` the file's carrier, whoever held it."""
        self.r.set(keys.loop_content(client_file_id, sha256), rid, ex=ttl_seconds)
