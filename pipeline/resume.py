"""Resuming chains whose next message was lost: the record is the truth, so a record that stopped moving is
sent on from where it stands.

Every record on its way (``received``, ``posted``, ``waiting_retry``; not one waiting for the daily export) is
in an index scored by when it is due to move again (when it entered flight, or its next retry; a pass
re-scores a record it finds has moved since, so ordinary progress costs no index write). A message can still
vanish: kombu's Redis transport pops a message from its queue and records it as unacked in two steps, and a
Redis restart between them loses it; then no retry, no redelivery and no dead letter will ever come for that
record. A record that has not moved for ``HUBSYNC_STALL_SECONDS`` after it was due (by default longer than the
visibility timeout, after which kombu itself would have restored any message a dead worker held) gets its
chain published again at its step.

The original message may still exist after all (a queue far longer than usual): the new one then runs the
same steps a second time, which the steps make harmless (each does only what its record says is not done;
posting and depositing are locked and looked up). No generation is bumped, so a record is never pushed behind
a long queue over and over. While a provider's queues hold more than ``BUSY_QUEUE_DEPTH`` messages, its
records are left alone: they are most likely queued, and are looked at again once the backlog drains.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pipeline.providers import Enqueue
from pipeline.queues import queue_depths
from pipeline.registry import PROVIDERS
from pipeline.store import IN_FLIGHT_STATES, LockBusy, Store, now

log = logging.getLogger(__name__)

BUSY_QUEUE_DEPTH = 1000
BATCH = 200


@dataclass
class ResumeResult:
    """What one pass did: records sent on, and records left alone because their provider's queue is long."""

    resumed: list[str] = field(default_factory=list)
    busy_providers: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs."""
        busy = f"; left alone behind long queues: {', '.join(self.busy_providers)}" if self.busy_providers else ""
        return f"{len(self.resumed)} stalled chain(s) resumed{busy}"


def resume_from(step: str, state: str, steps: Sequence[str]) -> str:
    """The step to publish again for a record whose last written ``step`` and ``state`` are these.

    A record waiting for a retry failed at ``step``; any other record finished ``step`` (or has not started:
    ``received``, ``queued``) and goes on with the next one. A record past its last step runs it again."""
    if step not in steps:
        return steps[0]
    if state == "waiting_retry":
        return step
    index = steps.index(step) + 1
    return steps[index] if index < len(steps) else steps[-1]


def resume_stalled(
    store: Store,
    enqueue: Enqueue,
    chains: Mapping[str, Sequence[str]],
    stall_seconds: float,
    limit: int = BATCH,
) -> ResumeResult:
    """Publish again the chain of every record due to move more than ``stall_seconds`` ago (up to ``limit``);
    ``chains``: each provider's steps in order (``PROVIDERS.chains()``)."""
    result = ResumeResult()
    rows = store.records.stalled(now() - stall_seconds, limit)
    if not rows:
        return result
    depths = queue_depths(store)
    for rid, due in rows:
        provider = rid.split(":", 1)[0]
        steps = chains.get(provider)
        if steps is None:
            continue
        installed = PROVIDERS.find(provider)
        if depths.get(installed.queue if installed else provider, 0) > BUSY_QUEUE_DEPTH:
            if provider not in result.busy_providers:
                result.busy_providers.append(provider)
            continue
        try:
            with store.locks.hold(f"record:{rid}", ttl_seconds=30):
                rec = store.records.get(rid)
                if rec is None or rec.trimmed or rec.state not in IN_FLIGHT_STATES or rec.step == "pending":
                    continue
                moved = max(rec.updated_at, rec.next_retry_at or 0.0)
                if moved > now() - stall_seconds:
                    store.records.rescore(rid, moved)  # it moved since it entered the index
                    continue
                step = resume_from(rec.step, rec.state, steps)
                idle = now() - due
                store.records.add_attempt(
                    rid, {"step": step, "outcome": "resumed", "reason": f"no progress for {idle:.0f}s after due"}
                )
                store.records.update(rid, next_retry_at=None)
                store.records.rescore(rid, now())
                enqueue(provider, rid, rec.generation, step)
        except LockBusy:
            continue
        log.warning("%s had not moved for %.0fs after it was due; its chain is published again at %s", rid, idle, step)
        result.resumed.append(rid)
    return result
