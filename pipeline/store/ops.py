"""What operations keep: circuit breakers per server, scheduled jobs' runs, message deliveries (the
poison-message cap), and the broker's queue depths (read without consuming anything)."""

from __future__ import annotations

from pipeline.store import keys
from pipeline.store.client import Redis

# kombu keeps a Redis queue as one list per priority step: "<queue>" for 0, "<queue>\x06\x16<n>" for the others.
PRIORITY_STEPS = (0, 3, 6, 9)


class BreakerStore:
    """Failures and open time of each server's circuit breaker."""

    def __init__(self, client: Redis) -> None:
        self.r = client

    def take_probe(self, name: str, ttl_seconds: float) -> bool:
        """True for the one caller that may probe the server now."""
        return bool(self.r.set(keys.breaker_probe(name), "1", nx=True, px=int(ttl_seconds * 1000)))

    def close(self, name: str) -> None:
        """Close the breaker (the server answered)."""
        if self.r.exists(keys.breaker(name)):
            self.r.delete(keys.breaker(name), keys.breaker_probe(name))

    def fail(self, name: str) -> int:
        """Count one failure; returns the failures in a row."""
        return int(self.r.hincrby(keys.breaker(name), "failures", 1))

    def open(self, name: str, until: float, at: float) -> None:
        """Hold calls back until ``until``; the next probe is anyone's."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(keys.breaker(name), mapping={"open_until": until, "opened_at": at})
        pipe.delete(keys.breaker_probe(name))
        pipe.execute()

    def state(self, name: str) -> dict[str, str]:
        """The breaker's raw fields (empty when closed and clean)."""
        h: dict[str, str] = self.r.hgetall(keys.breaker(name))
        return h


class JobStore:
    """Each scheduled job's last run, and the scheduler's lock."""

    def __init__(self, client: Redis) -> None:
        self.r = client

    def seen(self, job: str, at: float) -> None:
        """Note (once) when a scheduler first took this job on."""
        self.r.hsetnx(keys.job(job), "since", at)

    def started(self, job: str, task_id: str, at: float) -> None:
        """A worker started a run."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hsetnx(keys.job(job), "since", at)
        pipe.hset(keys.job(job), mapping={"started_at": at, "task_id": task_id, "outcome": "running"})
        pipe.execute()

    def ended(self, job: str, at: float, outcome: str, detail: str) -> None:
        """A run ended."""
        self.r.hset(keys.job(job), mapping={"finished_at": at, "outcome": outcome, "detail": detail})

    def runs(self, jobs: list[str]) -> list[dict[str, str]]:
        """The last run of each job (empty for a job never seen)."""
        pipe = self.r.pipeline(transaction=False)
        for job in jobs:
            pipe.hgetall(keys.job(job))
        return list(pipe.execute())

    def lock_ttl(self, lock_key: str) -> float | None:
        """Seconds left on the scheduler's lock (celery-redbeat's own key), or None when nobody holds it."""
        ttl = int(self.r.pttl(lock_key))
        return ttl / 1000 if ttl > 0 else None


class DeliveryStore:
    """Runs of each message, counted while it runs."""

    def __init__(self, client: Redis) -> None:
        self.r = client

    def count(self, task_id: str, retries: int, ttl_seconds: int) -> int:
        """Count one more run of this message; returns how many runs it had, this one included."""
        key = keys.deliveries(task_id, retries)
        pipe = self.r.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, ttl_seconds)
        runs, _ = pipe.execute()
        return int(runs)

    def forget(self, task_id: str, retries: int) -> None:
        """A run ended in the worker: forget the message's count."""
        self.r.delete(keys.deliveries(task_id, retries))


class BrokerView:
    """The broker's queues when it is this Redis, read without consuming anything."""

    def __init__(self, client: Redis) -> None:
        self.r = client

    def depths(self, queues: tuple[str, ...]) -> dict[str, int]:
        """Messages waiting in each queue, every priority included (``LLEN`` only)."""
        pipe = self.r.pipeline(transaction=False)
        for queue in queues:
            for pri in PRIORITY_STEPS:
                pipe.llen(queue if pri == 0 else f"{queue}\x06\x16{pri}")
        sizes = [int(n) for n in pipe.execute()]
        step = len(PRIORITY_STEPS)
        return {queue: sum(sizes[i * step : (i + 1) * step]) for i, queue in enumerate(queues)}
