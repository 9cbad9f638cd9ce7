"""A circuit breaker per remote server, shared by every worker through Redis.

After ``threshold`` failures in a row the breaker opens: calls to that server are held back (the entries
wait without a network call) until ``cooldown`` has passed; then one worker probes. A success closes the
breaker and the waiting entries go at their next wake-up; a failure opens it again. One firm's server
being off thus costs the others nothing: no worker slot waits on its timeouts.

A process that found a server's breaker clean (no failure recorded) trusts that for ``CLEAN_FOR_SECONDS``:
its calls in that second read nothing before and clear nothing after. A breaker another process opens meanwhile
holds this one's calls a second later at most.
"""

from __future__ import annotations

import random
import threading
import time

from pipeline.errors import ServerConsideredDown
from pipeline.store import Store, now

CLEAN_FOR_SECONDS = 1.0

# Per process: breaker name -> monotonic time until which it is taken as clean without a read.
_clean: dict[str, float] = {}
_clean_lock = threading.Lock()


def _is_clean(name: str) -> bool:
    with _clean_lock:
        return _clean.get(name, 0.0) > time.monotonic()


def _note_clean(name: str, clean: bool) -> None:
    with _clean_lock:
        if clean:
            _clean[name] = time.monotonic() + CLEAN_FOR_SECONDS
        else:
            _clean.pop(name, None)


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
        if _is_clean(self.name):
            return
        recorded = self.store.breakers.state(self.name)
        if not recorded:
            _note_clean(self.name, True)
            return
        open_until = float(recorded.get("open_until") or 0.0)
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
        """The server answered: close the breaker (nothing to do when this process just found it clean)."""
        if _is_clean(self.name):
            return
        self.store.breakers.close(self.name)
        _note_clean(self.name, True)

    def failure(self) -> None:
        """The server failed (off, 5xx, timeout): count, and open at the threshold."""
        _note_clean(self.name, False)
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
