"""What an operator does with a dead letter: replay it from the step that failed (without posting or
uploading anything twice), or discard it on purpose, the reason kept in its audit trail."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.deadletters import INGEST
from pipeline.providers import Enqueue
from pipeline.registry import PROVIDERS
from pipeline.store import Store


class ReplayError(RuntimeError):
    """A replay that cannot happen (unknown id, already closed, nothing to replay)."""


def replay(store: Store, dl_id: str, enqueue: Enqueue, ingest: Callable[[Any], str], who: str = "") -> str:
    """Resume a dead-lettered chain from its failed step (or re-check a kept event); returns what happened."""
    dl = store.dead_letters.get(dl_id)
    if dl is None:
        raise ReplayError(f"no dead letter {dl_id}")
    if dl.status != "open":
        raise ReplayError(f"dead letter {dl_id} is {dl.status}, not open")
    if dl.provider == INGEST:
        if isinstance(dl.event, dict) and dl.event.get("truncated"):
            raise ReplayError(f"dead letter {dl_id} kept only the head of a huge event; emit a corrected one")
        store.dead_letters.close(dl_id, "replayed", "replay", who=who)
        outcome = ingest(dl.event)
        return f"event re-checked: {outcome}"
    rec = store.records.get(dl.record_id)
    if rec is None:
        raise ReplayError(f"the record {dl.record_id} of dead letter {dl_id} is gone")
    provider = PROVIDERS.find(rec.provider)
    if provider is None or dl.step not in provider.step_names:
        raise ReplayError(f"dead letter {dl_id} stopped at {dl.step}, a step of no installed {rec.provider} chain")
    generation = rec.generation + 1
    state = "confirmed" if rec.confirmed_at else ("posted" if rec.posted_at or rec.provider_id else "received")
    store.records.update(
        rec.id,
        generation=generation,
        state=state,
        step=dl.step,
        retry_since=None,
        next_retry_at=None,
        dead_letter_id=None,
    )
    store.records.add_attempt(rec.id, {"step": dl.step, "outcome": "replayed", "dead_letter": dl_id})
    store.dead_letters.close(dl_id, "replayed", "replay", who=who)
    enqueue(rec.provider, rec.id, generation, dl.step)
    return f"chain resumed at {dl.step}"


def discard(store: Store, dl_id: str, reason: str, who: str = "") -> None:
    """Close a dead letter on purpose, with the reason kept in its audit trail."""
    if not reason.strip():
        raise ReplayError("a discard needs a reason")
    dl = store.dead_letters.get(dl_id)
    if dl is None:
        raise ReplayError(f"no dead letter {dl_id}")
    if not store.dead_letters.close(dl_id, "discarded", "discard", reason=reason, who=who):
        raise ReplayError(f"dead letter {dl_id} is {dl.status}, not open")
    if dl.record_id:
        store.records.add_attempt(dl.record_id, {"step": dl.step, "outcome": "discarded", "reason": reason})
        provider = PROVIDERS.find(dl.provider)
        if provider is not None and provider.settle_discarded is not None:
            # a provider whose discard can mean "it landed after all" settles its record
            provider.settle_discarded(store, dl, reason)
        rec = store.records.get(dl.record_id)
        if rec is not None and rec.dead_letter_id == dl_id:
            # settled for good: nothing waits on it any more, so retention may shrink it after the window
            store.records.update(dl.record_id, discarded=dl_id)
