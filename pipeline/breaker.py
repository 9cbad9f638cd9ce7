"""A circuit breaker per remote server, shared by every worker through Redis.

After ``threshold`` failures in a row the breaker opens: calls to that server are held back (the entries
wait without a network call) until ``cooldown`` has passed; then one worker probes. A success closes the
breaker and the waiting entries go at their next wake-up; a failure opens it again. One firm's server
being off thus costs the others nothing: no worker slot waits on its timeouts.
"""

from __future__ import annotations

import random

from pipeline.errors import ServerConsideredDown
from pipeline.store import P, Store, now


class Breaker:
    """Open/half-open/closed state of one server, in Redis."""

    def __init__(
        self, store: Store, name: str, threshold: int, cooldown_seconds: float, probe_ttl_seconds: float
    ) -> None:
        self.store = store
        self.key = f"{P}:breaker:{name}"
        self.name = name
        self.threshold = threshold
        self.cooldown = cooldown_seconds
        self.probe_ttl = probe_ttl_seconds

    def before_call(self) -> None:
        """Raise ``ServerConsideredDown`` unless the server may be called now (closed, or our turn to probe)."""
        open_until = self.store.r.hget(self.key, "open_until")
        if not open_until:
            return
        wait = float(open_until) - now()
        if wait > 0:
            raise ServerConsideredDown(
                f"{self.name} failed repeatedly; calls held back for {wait:.0f}s more",
                retry_after=wait + random.uniform(0, min(5.0, self.cooldown / 2)),
            )
        if not self.store.r.set(f"{self.key}:probe", "1", nx=True, px=int(self.probe_ttl * 1000)):
            raise ServerConsideredDown(
                f"{self.name} is being probed", retry_after=random.uniform(1.0, max(1.5, self.cooldown / 3))
            )

    def success(self) -> None:
        """The server answered: close the breaker."""
        if self.store.r.exists(self.key):
            self.store.r.delete(self.key, f"{self.key}:probe")

    def failure(self) -> None:
        """The server failed (off, 5xx, timeout): count, and open at the threshold."""
        pipe = self.store.r.pipeline(transaction=False)
        pipe.hincrby(self.key, "failures", 1)
        pipe.hget(self.key, "open_until")
        failures, _open_until = pipe.execute()
        if int(failures) >= self.threshold:
            self.store.r.hset(self.key, mapping={"open_until": now() + self.cooldown, "opened_at": now()})
            self.store.r.delete(f"{self.key}:probe")

    def state(self) -> dict[str, float | int | str]:
        """``closed``/``open``/``half-open`` with the failure count, for status and the dashboard."""
        h = self.store.r.hgetall(self.key)
        if not h:
            return {"state": "closed", "failures": 0}
        open_until = float(h.get("open_until") or 0)
        state = "closed" if not open_until else ("open" if open_until > now() else "half-open")
        return {"state": state, "failures": int(h.get("failures") or 0), "open_until": open_until}
