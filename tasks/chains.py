"""Building a provider's chain from any step: the only place that knows the tasks' order."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from celery import chain
from celery.canvas import Signature
from celery.exceptions import Ignore

from pipeline import runtime
from pipeline.config import settings
from pipeline.errors import HubsyncError
from pipeline.steps import Step, run_step
from pipeline.store import Record
from tasks import app

ACD_TASKS = {
    "fetch": "hubsync.acd.fetch_document",
    "rename": "hubsync.acd.rename_document",
    "map": "hubsync.acd.map_entry",
    "post": "hubsync.acd.post_entry",
    "confirm": "hubsync.acd.confirm_ack",
}
CEGID_LOOP_TASKS = {
    "fetch": "hubsync.cegid_loop.fetch",
    "check": "hubsync.cegid_loop.check",
    "rename": "hubsync.cegid_loop.rename",
    "map": "hubsync.cegid_loop.map",
    "deposit": "hubsync.cegid_loop.deposit",
    "confirm": "hubsync.cegid_loop.confirm",
}
EXPORT_TASK = "hubsync.cegid_loop.export"
CHAINS: dict[str, dict[str, str]] = {"acd": ACD_TASKS, "cegid_loop": CEGID_LOOP_TASKS}


def step_priority(index: int) -> int:
    """The broker priority of a chain's ``index``-th step (0 is served first on Redis): later steps first.

    Each step's next message would otherwise queue behind every chain started since, so with a large backlog
    chains would advance breadth-first and none would finish until the whole backlog was fetched. Serving the
    later steps first lets started chains finish while new ones wait (measured in the README's benchmark).
    9, 6, 3 and 0 are kombu's default Redis priority steps, so no transport option changes. Redis serves
    priority 0 of every queue a worker consumes before the next priority of any, so the upstream's events
    (no priority: 0) would starve the early steps of a worker that also consumes ``events``: run ingest on
    workers of its own (compose.yaml, the README).
    """
    return max(0, 9 - 3 * index)


def signatures(
    provider: str, record_id: str, generation: int, from_step: str, celery_app: Any = None
) -> list[Signature]:
    """The remaining steps of a chain, as immutable signatures carrying only the record id and generation
    (``celery_app``: another app to publish through, e.g. one bound to a test bed's broker)."""
    on = celery_app or app
    tasks = CHAINS[provider]
    names = list(tasks)
    if from_step not in tasks:
        raise ValueError(f"{provider} has no step {from_step!r} (steps: {', '.join(names)})")
    sigs = []
    for step in names[names.index(from_step) :]:
        priority = step_priority(names.index(step))
        sig = on.signature(tasks[step], args=(record_id, generation), immutable=True, queue=provider, priority=priority)
        if provider == "acd" and step == "confirm":
            sig = sig.set(countdown=settings().acd_index_lag_seconds + 0.2)
        sigs.append(sig)
    return sigs


def enqueue(provider: str, record_id: str, generation: int, from_step: str, celery_app: Any = None) -> None:
    """Start (or resume) a record's chain at ``from_step``."""
    sigs = signatures(provider, record_id, generation, from_step, celery_app)
    if len(sigs) == 1:
        sigs[0].apply_async()
    else:
        chain(*sigs).apply_async()  # published through the app its first signature is bound to


class DeadLettered(Exception):
    """The chain stopped; its dead letter waits for an operator (shown as the task's failure)."""


def run_chain_step(
    task: Any,
    step: str,
    record_id: str,
    generation: int,
    functions: Mapping[str, Step],
    on_error: Callable[[Record, HubsyncError], None] | None = None,
) -> None:
    """Run one step for a bound task and turn its outcome into what Celery understands: return to go on with
    the chain, ``task.retry``, a ``DeadLettered`` failure, or ``Ignore`` for a stale message."""
    outcome = run_step(
        runtime.store(), record_id, generation, step, functions[step], task.request.retries, on_error=on_error
    )
    if outcome.action == "retry":
        raise task.retry(countdown=outcome.countdown)
    if outcome.action == "dead":
        rec = runtime.store().record(record_id)
        raise DeadLettered(f"{record_id} dead-lettered at {step} as {rec.dead_letter_id if rec else '?'}")
    if outcome.action == "stale":
        raise Ignore()
