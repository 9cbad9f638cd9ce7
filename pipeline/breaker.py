"""A circuit breaker per remote server, shared by every worker through Redis.

After ``threshold`` failures in a row the breaker opens: calls to that server are held back (the entries
wait without a network call) until ``cooldown`` has passed; then one worker probes. A success closes the
breaker and the waiting entries go at their next wake-up; a failure opens it again. One firm's server
being off thus costs the others nothing: no worker slot waits on its timeouts.
"""

from __future__ import annotations

import random

from pipeline.errors import ServerConsideredDown
from pipeline.store import Store, now


class Breaker:
    """Open/half-open/closed state of one server, in Redis."""

    def __init__(
        self, store: Store, name: str, threshold: int, cooldown_seconds: float, probe_ttl_seconds: float
    ) -> None:
        self.store = store
        self.name = name
        self.threshold = threshold
        self.cooldown = cooldown_seconds
        self.probe_ttl = probe_ttl_seconds

    def before_call(self) -> None:
        """Raise ``ServerConsideredDown`` unless the server may be called now (closed, or our turn to probe)."""
        open_until = self.store.breakers.open_until(self.name)
        if not open_until:
            return
        wait = open_until - now()
        if wait > 0:
            raise ServerConsideredDown(
                f"{self.name} failed repeatedly; calls held back for {wait:.0f}s more",
                retry_after=wait + random.uniform(0, min(5.0, self.cooldown / 2)),
            )
        if not self.store.breakers.take_probe(self.name, self.probe_ttl):
            raise ServerConsideredDown(
                f"{self.name} is being probed", retry_after=random.uniform(1.0, max(1.5, self.cooldown / 3))
            )

    def success(self) -> None:
        """The server answered: close the breaker."""
        self.store.breakers.close(self.name)

    def failure(self) -> None:
        """The server failed (off, 5xx, timeout): count, and open at the threshold."""
        if self.store.breakers.fail(self.name) >= self.threshold:
            self.store.breakers.open(self.name, now() + self.cooldown, now())

    def state(self) -> dict[str, float | int | str]:
        """``closed``/``open``/``half-open`` with the failure count, for status and the dashboard."""
        h = self.store.breakers.state(self.name)
        if not h:
            return {"state": "closed", "failures": 0}
        open_until = float(h.get("open_until") or 0)
        state = "closed" if not open_until else ("open" if open_until > now() else "half-open")
        return {"state": state, "failures": int(h.get("failures") or 0), "open_until": open_until}
