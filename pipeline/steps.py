"""Running one step of a provider chain: load the record, run the step, decide retry or dead letter.

This is everything a Celery task does besides being a Celery task, so it is tested without a broker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from pipeline.config import settings
from pipeline.deadletters import dead_letter_record
from pipeline.errors import (
    Deferred,
    ErrorKind,
    HubsyncError,
    PermanentError,
    RetryWindowExhausted,
    ServerConsideredDown,
)
from pipeline.retry import decide
from pipeline.store import Record, Store, now

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Done:
    """What a step leaves to be written with its end, in the same script (fields, an attempt), and how long the
    next step should wait (None: its usual delay)."""

    fields: dict[str, Any] = field(default_factory=dict)
    attempt: dict[str, Any] | None = None
    next_in: float | None = None
    publish_next: bool = True
    """False: the next step needs no message of its own (another record's run will do its work)."""


Step = Callable[[Store, Record], Done | None]
"""One step of a chain: does only what the record says is not done yet; its last writes may be left to ``Done``."""


class InternalError(PermanentError):
    """A bug in hubsync itself; the chain is kept for replay once it is fixed."""

    default_hint = "An unexpected error in hubsync: report it with this dead letter; replay after the fix."


@dataclass(frozen=True)
class Outcome:
    """``next`` (go on with the chain; ``state`` is the record's state then, ``countdown`` the next step's delay
    when the step chose one), ``retry`` after ``countdown``, ``dead`` or ``stale`` (stop quietly)."""

    action: str
    countdown: float | None = None
    state: str = ""
    publish_next: bool = True


def run_step(
    store: Store,
    rid: str,
    generation: int,
    name: str,
    step: Step,
    attempt: int,
    on_error: Callable[[Record, HubsyncError], None] | None = None,
) -> Outcome:
    """Run ``step`` on record ``rid`` and classify what happened."""
    rec = store.records.get(rid)
    if rec is None:
        log.error("step %s: record %s does not exist; message dropped", name, rid)
        return Outcome("stale")
    if rec.trimmed:
        log.info("step %s: record %s settled long ago (trimmed); message ignored", name, rid)
        return Outcome("stale")
    if rec.generation != generation:
        log.info("step %s: record %s moved to generation %s; stale message ignored", name, rid, rec.generation)
        return Outcome("stale")
    if rec.state == "dead":
        log.info("step %s: record %s is dead-lettered; message ignored", name, rid)
        return Outcome("stale")
    try:
        done = step(store, rec) or Done()
    except HubsyncError as err:
        error = err
    except redis.RedisError:
        raise
    except Exception as exc:
        log.exception("step %s failed unexpectedly on %s", name, rid)
        error = InternalError(f"{type(exc).__name__} in step {name}")
    else:
        # the state follows from the step's progress, read and written in one script (store.records.finish_step)
        state = store.records.finish_step(rid, name, generation, attempt=done.attempt, **done.fields)
        if state is None:
            log.info("step %s: record %s moved to another generation while it ran; its end is not written", name, rid)
            return Outcome("stale")
        return Outcome("next", countdown=done.next_in, state=state, publish_next=done.publish_next)

    if on_error is not None:
        on_error(rec, error)
    if isinstance(error, Deferred):
        countdown = error.retry_after or 1.0
        store.records.update(rid, next_retry_at=now() + countdown)
        return Outcome("retry", countdown)
    since = rec.retry_since or now()
    decision = decide(error, attempt, now() - since, settings().retry)
    noted: dict[str, Any] | None = None
    if not isinstance(error, ServerConsideredDown) or attempt % 10 == 0:
        noted = {"step": name, "outcome": "retry" if decision.retry else "dead", **error.to_dict()}
    if decision.retry:
        store.records.update(
            rid,
            attempt=noted,
            state="waiting_retry",
            step=name,
            retry_since=since,
            next_retry_at=now() + decision.countdown,
            last_error=error.to_dict(),
        )
        level = logging.INFO if isinstance(error, ServerConsideredDown) else logging.WARNING
        log.log(level, "step %s on %s: %s; retry in %.1fs", name, rid, error.message, decision.countdown)
        return Outcome("retry", decision.countdown)
    if noted is not None:
        store.records.add_attempt(rid, noted)
    if error.kind is ErrorKind.TRANSIENT:
        error = RetryWindowExhausted(f"{error.message} ({error.error_class}; {decision.reason})", status=error.status)
    dl = dead_letter_record(store, rec, name, error)
    log.error("step %s on %s dead-lettered as %s: %s", name, rid, dl.id, error.message)
    return Outcome("dead")
