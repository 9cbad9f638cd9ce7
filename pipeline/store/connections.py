"""Client files' connections to providers (what to reach and as whom; secrets stay sealed).

Every step of every entry reads its client file's connection. A worker keeps a ready connection it read for
``TRUST_SECONDS`` (``trust_seconds``; 0, the default, everywhere else: the command line and tests read what
is there now) and reads it again after: a reconnection made elsewhere reaches its steps a second later at
most, and a connection that is not ready (a refused password) is never kept, so it is seen at once.
"""

from __future__ import annotations

import dataclasses
import threading
import time

from pipeline.store import keys
from pipeline.store.client import Redis
from pipeline.store.models import Connection, dumps, loads, now

TRUST_SECONDS = 1.0


class ConnectionStore:
    """One connection per client file and provider."""

    def __init__(self, client: Redis, trust_seconds: float = 0.0) -> None:
        self.r = client
        self.trust_seconds = trust_seconds
        self._kept: dict[tuple[str, str], tuple[Connection, float]] = {}
        self._lock = threading.Lock()

    def _forget(self, client_file_id: str, provider: str) -> None:
        with self._lock:
            self._kept.pop((client_file_id, provider), None)

    def save(self, conn: Connection) -> None:
        """Create or replace a client file's connection to a provider."""
        self._forget(conn.client_file_id, conn.provider)
        key = keys.connection(conn.client_file_id, conn.provider)
        existing = self.r.hget(key, "created_at")
        stamp = now()
        self.r.hset(
            key,
            mapping={
                "provider": conn.provider,
                "client_file_id": conn.client_file_id,
                "params": dumps(conn.params),
                "secret": conn.sealed_secret,
                "created_at": existing or stamp,
                "updated_at": stamp,
                "status": conn.status,
                "status_message": conn.status_message,
            },
        )
        self.r.sadd(keys.CONNECTIONS, f"{conn.client_file_id}:{conn.provider}")

    def get(self, client_file_id: str, provider: str, fresh: bool = False) -> Connection | None:
        """One connection, or None (a ready one this process read less than ``trust_seconds`` ago unless
        ``fresh``)."""
        if self.trust_seconds <= 0:
            return self._read(client_file_id, provider)
        if not fresh:
            with self._lock:
                kept = self._kept.get((client_file_id, provider))
            if kept is not None and time.monotonic() - kept[1] < self.trust_seconds:
                return dataclasses.replace(kept[0], params=dict(kept[0].params))
        conn = self._read(client_file_id, provider)
        with self._lock:
            if conn is not None and conn.status == "ready":
                self._kept[(client_file_id, provider)] = (conn, time.monotonic())
            else:
                self._kept.pop((client_file_id, provider), None)
        return dataclasses.replace(conn, params=dict(conn.params)) if conn is not None else None

    def of_client_file(self, client_file_id: str, providers: list[str]) -> list[Connection]:
        """A client file's connections to ``providers``, read as they are now (one round trip, whatever the
        number of client files)."""
        pipe = self.r.pipeline(transaction=False)
        for provider in providers:
            pipe.hgetall(keys.connection(client_file_id, provider))
        return [_connection(h) for h in pipe.execute() if h]

    def _read(self, client_file_id: str, provider: str) -> Connection | None:
        h = self.r.hgetall(keys.connection(client_file_id, provider))
        return _connection(h) if h else None

    def all(self, client_file_id: str | None = None) -> list[Connection]:
        """Every connection, or those of one client file."""
        out = []
        for member in sorted(self.r.smembers(keys.CONNECTIONS)):
            cf, provider = member.rsplit(":", 1)
            if client_file_id is not None and cf != client_file_id:
                continue
            conn = self._read(cf, provider)
            if conn is not None:
                out.append(conn)
        return out

    def delete(self, client_file_id: str, provider: str) -> Connection | None:
        """Remove a client file's connection to a provider (its records stay); returns what was removed."""
        self._forget(client_file_id, provider)
        conn = self._read(client_file_id, provider)
        if conn is None:
            return None
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(keys.connection(client_file_id, provider))
        pipe.srem(keys.CONNECTIONS, f"{client_file_id}:{provider}")
        pipe.execute()
        return conn

    def set_status(self, client_file_id: str, provider: str, status: str, message: str = "") -> None:
        """Mark a connection (e.g. ``auth_failed``) so that no worker keeps trying a wrong password."""
        self._forget(client_file_id, provider)
        self.r.hset(keys.connection(client_file_id, provider), mapping={"status": status, "status_message": message})


def _connection(h: dict[str, str]) -> Connection:
    return Connection(
        provider=h["provider"],
        client_file_id=h["client_file_id"],
        params=loads(h.get("params"), {}),
        sealed_secret=h.get("secret", ""),
        created_at=float(h.get("created_at") or 0),
        updated_at=float(h.get("updated_at") or 0),
        status=h.get("status", "ready"),
        status_message=h.get("status_message", ""),
    )
