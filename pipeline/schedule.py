"""The scheduled jobs ``hubsync beat`` sends: when each last ran, how it ended, when the next run is due, and
whether it is late.

Workers record each run of a scheduled task (start, end, outcome) under ``hubsync:schedule:<job>``; beat
notes when it first saw each job, so a job that never ran is late too once its first run is overdue.
Several beats may run (they share a lock in Redis and one sends at a time), so nothing here is per beat.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.store import Store, now

LATE_GRACE_MIN_SECONDS = 60.0
LATE_GRACE_MAX_SECONDS = 900.0


def record_seen(store: Store, job: str) -> None:
    """Note (once) when a scheduler first took this job on."""
    store.jobs.seen(job, now())


def record_start(store: Store, job: str, task_id: str) -> None:
    """A worker started a run of a scheduled job."""
    store.jobs.started(job, task_id, now())


def record_end(store: Store, job: str, outcome: str, detail: str = "") -> None:
    """A run ended: ``ok``, ``retry`` or ``failed`` (with a short reason)."""
    store.jobs.ended(job, now(), outcome, detail[:300])


def period_seconds(schedule: Any) -> float:
    """How often a schedule runs: a number of seconds, a ``timedelta``, Celery's ``schedule`` or a daily
    ``crontab`` (one day)."""
    if isinstance(schedule, int | float):
        return float(schedule)
    if isinstance(schedule, timedelta):
        return schedule.total_seconds()
    run_every = getattr(schedule, "run_every", None)
    if isinstance(run_every, timedelta):
        return run_every.total_seconds()
    return 86400.0


def next_run(schedule: Any, after: float) -> float:
    """The first run of ``schedule`` strictly after ``after`` (crontabs by their hours and minutes, in UTC)."""
    hours, minutes = getattr(schedule, "hour", None), getattr(schedule, "minute", None)
    if isinstance(hours, set | frozenset) and isinstance(minutes, set | frozenset):
        moment = datetime.fromtimestamp(after, UTC)
        day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        for offset in range(3):
            for hour in sorted(hours):
                for minute in sorted(minutes):
                    candidate = day + timedelta(days=offset, hours=hour, minutes=minute)
                    if candidate > moment:
                        return candidate.timestamp()
    return after + period_seconds(schedule)


@dataclass
class JobStatus:
    """One scheduled job as ``hubsync status`` and the health page show it."""

    name: str
    task: str
    every_seconds: float
    last_started: float | None
    last_finished: float | None
    outcome: str
    detail: str
    next_due: float
    late: bool
    late_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "name": self.name,
            "task": self.task,
            "every_seconds": self.every_seconds,
            "last_started": self.last_started,
            "last_finished": self.last_finished,
            "outcome": self.outcome,
            "detail": self.detail,
            "next_due": self.next_due,
            "late": self.late,
            "late_seconds": round(self.late_seconds, 1),
        }


def jobs(store: Store, beat_schedule: Mapping[str, Mapping[str, Any]], at: float | None = None) -> list[JobStatus]:
    """Every job of the beat schedule with its last run, next due time and lateness."""
    moment = now() if at is None else at
    names = sorted(beat_schedule)
    out = []
    for name, h in zip(names, store.jobs.runs(names), strict=True):
        entry = beat_schedule[name]
        schedule = entry["schedule"]
        started = float(h["started_at"]) if h.get("started_at") else None
        since = float(h["since"]) if h.get("since") else None
        base = started if started is not None else since
        period = period_seconds(schedule)
        due = next_run(schedule, base) if base is not None else next_run(schedule, moment)
        grace = min(LATE_GRACE_MAX_SECONDS, max(LATE_GRACE_MIN_SECONDS, period * 0.1))
        late_by = moment - due
        out.append(
            JobStatus(
                name=name,
                task=str(entry.get("task", "")),
                every_seconds=period,
                last_started=started,
                last_finished=float(h["finished_at"]) if h.get("finished_at") else None,
                outcome=h.get("outcome", "never ran"),
                detail=h.get("detail", ""),
                next_due=due,
                late=late_by > grace,
                late_seconds=max(0.0, late_by),
            )
        )
    return out


def beat_config() -> tuple[Mapping[str, Mapping[str, Any]], str]:
    """The deployment's beat schedule and the key of the scheduler's lock (from ``celeryconfig``)."""
    config: Any = importlib.import_module("celeryconfig")
    return config.beat_schedule, str(config.redbeat_lock_key)


def beat_lock(store: Store, lock_key: str) -> float | None:
    """Seconds left on the scheduler's lock (some beat holds it and sends), or None when no beat holds it."""
    return store.jobs.lock_ttl(lock_key)
