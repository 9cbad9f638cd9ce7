"""A provider's chain, step by step, published in the order its provider declares (``pipeline.registry``).

Each step publishes the next one itself, from inside its task, once its record says the step is done
(``continue_chain``), rather than handing Celery a canvas ``chain``. Celery sends a chain's next message after
the task returned: when that publish fails (Redis gone at that very moment) the task is marked failed and its
message acked, and the chain stops with nothing to show for it. Published from the task body, the same
failure is a Redis error like any other: the task waits for Redis and retries the step (a no-op, the record
says it is done), which publishes the next one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from celery.canvas import Signature
from celery.exceptions import Ignore

from pipeline import runtime
from pipeline.errors import HubsyncError
from pipeline.registry import PROVIDERS
from pipeline.steps import Step, run_step
from pipeline.store import FINAL_STATES, Record
from tasks import app


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


def signature(
    provider: str,
    record_id: str,
    generation: int,
    step: str,
    celery_app: Any = None,
    countdown: float | None = None,
) -> Signature:
    """One step of a chain, as an immutable signature carrying only the record id and generation
    (``celery_app``: another app to publish through, e.g. one bound to a test bed's broker; ``countdown``: the
    delay the previous step chose, instead of the step's usual one)."""
    chain = PROVIDERS.get(provider)
    chain_step = chain.step(step)
    sig = (celery_app or app).signature(
        chain_step.task,
        args=(record_id, generation),
        immutable=True,
        queue=chain.queue,
        priority=step_priority(chain.index(step)),
    )
    if countdown is None and chain_step.countdown is not None:
        countdown = chain_step.countdown()
    if countdown is not None and countdown > 0:
        sig = sig.set(countdown=countdown)
    return sig


def enqueue(
    provider: str,
    record_id: str,
    generation: int,
    from_step: str,
    celery_app: Any = None,
    countdown: float | None = None,
) -> None:
    """Start (or resume) a record's chain at ``from_step``; each step then publishes the next."""
    signature(provider, record_id, generation, from_step, celery_app, countdown).apply_async()


def next_step(provider: str, step: str) -> str | None:
    """The step after ``step`` in a provider's chain, or None after the last."""
    return PROVIDERS.get(provider).next_step(step)


def continue_chain(
    record_id: str, generation: int, step: str, state: str | None = None, countdown: float | None = None
) -> None:
    """Publish the step after ``step``, unless the record settled (confirmed, exported, skipped) or stopped
    (``state``: the record's state as the step left it, read here when not given; ``countdown``: the delay the
    step chose for the next one)."""
    provider = record_id.split(":", 1)[0]
    following = next_step(provider, step)
    if following is None:
        return
    if state is None:
        state = runtime.store().records.fields(record_id, "state")[0]
    if state in FINAL_STATES or state == "dead":
        return
    enqueue(provider, record_id, generation, following, countdown=countdown)


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
    """Run one step for a bound task and turn its outcome into what Celery understands: publish the next step,
    ``task.retry``, a ``DeadLettered`` failure, or ``Ignore`` for a stale message."""
    outcome = run_step(
        runtime.store(), record_id, generation, step, functions[step], task.request.retries, on_error=on_error
    )
    if outcome.action == "retry":
        raise task.retry(countdown=outcome.countdown or 0.0)
    if outcome.action == "dead":
        rec = runtime.store().records.get(record_id)
        raise DeadLettered(f"{record_id} dead-lettered at {step} as {rec.dead_letter_id if rec else '?'}")
    if outcome.action == "stale":
        raise Ignore()
    if outcome.publish_next:
        continue_chain(record_id, generation, step, outcome.state or None, outcome.countdown)


def _wake(provider: str, record_id: str, generation: int, step: str, *, countdown: float | None = None) -> None:
    enqueue(provider, record_id, generation, step, countdown=countdown)


# A step may wake another record's chain (a dossier's FEC read waking the entries it could not settle).
runtime.set_waker(_wake)
