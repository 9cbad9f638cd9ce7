"""Resuming ACD chains whose message is gone: the record is the truth, the message is disposable.

A broker message can vanish with no worker left to redeliver it: kombu's Redis transport pops a message and
only then records it as unacked, so a worker killed between the two loses it (and an ETA'd retry held by a
worker can go the same way). Its record then stays in a state that is not final, untouched, with nothing
queued to move it. ``resume_stalled`` finds such records (not confirmed, not dead, no update and no retry due
for ``older_than`` seconds) and starts their chain again at the record's step: every step does only what the
record says is left to do, so a chain that was merely slow, and gets a twin, costs one step run, never a
second post.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.config import settings
from pipeline.deadletters import Enqueue
from pipeline.store import Store, now

PROVIDER = "acd"
STEPS = ("fetch", "rename", "map", "post", "confirm")
ACTIVE_STATES = ("received", "waiting_retry", "posted")


@dataclass(frozen=True)
class Stalled:
    """A record nothing moves any more, and the step its chain starts again at."""

    record_id: str
    state: str
    step: str
    idle_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return dict(self.__dict__)


def default_older_than() -> float:
    """Twice the visibility timeout (until then kombu itself brings an unacked message back), at least 10 min."""
    return max(600.0, 2 * settings().retry.visibility_timeout_seconds)


def find_stalled(store: Store, older_than: float) -> list[Stalled]:
    """ACD records in an active state whose last update and due retry are both older than ``older_than``."""
    cutoff = now() - older_than
    out = []
    for provider, client_file in store.record_groups():
        if provider != PROVIDER:
            continue
        rids = store.record_ids(provider, client_file)
        pipe = store.r.pipeline(transaction=False)
        for rid in rids:
            pipe.hmget(f"hubsync:rec:{{{rid}}}", ["state", "step", "updated_at", "next_retry_at"])
        for rid, (state, step, updated, due) in zip(rids, pipe.execute(), strict=True):
            if state not in ACTIVE_STATES:
                continue
            last = max(float(updated or 0), float(due or 0))
            if last < cutoff:
                out.append(Stalled(rid, state, step if step in STEPS else STEPS[0], now() - last))
    return out


def resume_stalled(store: Store, enqueue: Enqueue, older_than: float | None = None) -> list[Stalled]:
    """Start the chain of every stalled ACD record again at its step; returns what was resumed."""
    found = find_stalled(store, default_older_than() if older_than is None else older_than)
    for item in found:
        (generation,) = store.fields(item.record_id, "generation")
        store.update(item.record_id, next_retry_at=now())
        store.add_attempt(
            item.record_id,
            {"step": item.step, "outcome": "resumed", "message": f"nothing moved it for {item.idle_seconds:.0f}s"},
        )
        enqueue(PROVIDER, item.record_id, int(generation or 0), item.step)
    return found
