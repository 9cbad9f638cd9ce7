"""How the command line reaches the message broker without importing the Celery glue.

``pipeline`` is plain Python and ``tasks`` is the Celery application that reads it, never the other way round.
What a command needs from the broker is a ``Dispatch``: start a chain at a step, publish an event as the
upstream does, run a Celery program (a worker, beat, Flower). ``tasks`` provides it under the
``hubsync.dispatch`` entry point of the hubsync distribution, the way other distributions add commands
(``pipeline.plugins``), and a command loads it only when it needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from pipeline.providers import Enqueue

GROUP = "hubsync.dispatch"


@dataclass(frozen=True)
class Dispatch:
    """The broker, as the command line uses it."""

    enqueue: Enqueue
    """Start (or resume) a record's chain at a step."""
    publish_event: Callable[[Any], None]
    """Publish one decoded event to the ``events`` queue, exactly as the upstream service does."""
    start: Callable[[list[str]], None]
    """Run a Celery program on the pipeline's app: ``["worker", …]``, ``["beat", …]``, ``["flower", …]``."""


class NoDispatch(RuntimeError):
    """No installed distribution provides the broker (hubsync's own metadata is missing or stale)."""


def load() -> Dispatch:
    """The ``Dispatch`` the installed hubsync provides."""
    found = sorted(entry_points(group=GROUP), key=lambda ep: ep.name)
    if not found:
        raise NoDispatch(f"no {GROUP} entry point is installed: reinstall hubsync (pip install .)")
    dispatch = found[0].load()
    if not isinstance(dispatch, Dispatch):
        raise NoDispatch(f"{found[0].value} is not a pipeline.dispatch.Dispatch")
    return dispatch
