"""Client files' connections to providers (what to reach and as whom; secrets stay sealed)."""

from __future__ import annotations

from pipeline.store import keys
from pipeline.store.client import Redis
from pipeline.store.models import Connection, dumps, loads, now


class ConnectionStore:
    """One connection per client file and provider."""

    def __init__(self, client: Redis) -> None:
        self.r = client

    def save(self, conn: Connection) -> None:
        """Create or replace a client file's connection to a provider."""
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

    def get(self, client_file_id: str, provider: str) -> Connection | None:
        """One connection, or None."""
        h = self.r.hgetall(keys.connection(client_file_id, provider))
        if not h:
            return None
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

    def all(self, client_file_id: str | None = None) -> list[Connection]:
        """Every connection, or those of one client file."""
        out = []
        for member in sorted(self.r.smembers(keys.CONNECTIONS)):
            cf, provider = member.rsplit(":", 1)
            if client_file_id is not None and cf != client_file_id:
                continue
            conn = self.get(cf, provider)
            if conn is not None:
                out.append(conn)
        return out

    def delete(self, client_file_id: str, provider: str) -> Connection | None:
        """Remove a client file's connection to a provider (its records stay); returns what was removed."""
        conn = self.get(client_file_id, provider)
        if conn is None:
            return None
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(keys.connection(client_file_id, provider))
        pipe.srem(keys.CONNECTIONS, f"{client_file_id}:{provider}")
        pipe.execute()
        return conn

    def set_status(self, client_file_id: str, provider: str, status: str, message: str = "") -> None:
        """Mark a connection (e.g. ``auth_failed``) so that no worker keeps trying a wrong password."""
        self.r.hset(keys.connection(client_file_id, provider), mapping={"status": status, "status_message": message})
