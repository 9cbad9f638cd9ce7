"""The retry decision: a pure function of the error, the attempt number and the time already spent."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.errors import ErrorKind, HubsyncError

Jitter = Callable[[float, float], float]


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often to retry transient failures."""

    base_seconds: float = 2.0
    max_seconds: float = 300.0
    window_seconds: float = 24 * 3600.0
    visibility_timeout_seconds: float = 3600.0

    @property
    def ceiling_seconds(self) -> float:
        """No countdown may reach the broker's visibility timeout, or the message would be delivered twice."""
        return min(max(1.0, self.max_seconds), self.visibility_timeout_seconds * 0.8)


@dataclass(frozen=True)
class Decision:
    """Retry after ``countdown`` seconds, or give up (dead-letter)."""

    retry: bool
    countdown: float = 0.0
    reason: str = ""


def backoff_seconds(attempt: int, policy: RetryPolicy, jitter: Jitter = random.uniform) -> float:
    """Capped exponential backoff with equal jitter: half fixed, half random."""
    exp = policy.base_seconds * float(2 ** max(0, min(attempt, 30)))
    capped = min(exp, policy.ceiling_seconds)
    return capped / 2 + float(jitter(0.0, capped / 2))


def decide(
    error: HubsyncError,
    attempt: int,
    elapsed_seconds: float,
    policy: RetryPolicy,
    jitter: Jitter = random.uniform,
) -> Decision:
    """Decide what to do after ``error`` on the ``attempt``-th try (0-based), ``elapsed_seconds`` after the
    first failure of this step."""
    if error.kind is not ErrorKind.TRANSIENT:
        return Decision(retry=False, reason=f"{error.kind} error")
    countdown = backoff_seconds(attempt, policy, jitter)
    if error.retry_after is not None:
        countdown = max(countdown, error.retry_after)
    countdown = min(countdown, policy.ceiling_seconds)
    if elapsed_seconds + countdown > policy.window_seconds:
        return Decision(retry=False, reason=f"still failing after {elapsed_seconds:.0f}s (retry window)")
    return Decision(retry=True, countdown=countdown)
