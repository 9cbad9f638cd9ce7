"""The retry decision: permanent and customer errors stop at once, transient ones back off, capped and jittered."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.acd.errors import (
    AccountLocked,
    AcdTimeout,
    AuthenticationFailed,
    DossierNotShared,
    GedAccessDenied,
    InvoiceNumberManagementOff,
    MalformedResponse,
    PostOutcomeUnknown,
    RateLimited,
    ServerUnavailable,
    SubsidiaryCodeTooLong,
    UnknownJournal,
)
from pipeline.errors import InvalidEvent, NoConnection, ServerConsideredDown
from pipeline.retry import RetryPolicy, backoff_seconds, decide

POLICY = RetryPolicy(base_seconds=2.0, max_seconds=300.0, window_seconds=24 * 3600.0, visibility_timeout_seconds=3600.0)


def lowest(low, high):
    """Jitter pinned at the bottom of its range."""
    return low


def highest(low, high):
    """Jitter pinned at the top of its range."""
    return high


def no_jitter_expected(low, high):
    raise AssertionError("the jitter must not be drawn for an error that is not retried")


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (UnknownJournal("journalInexistant", status=200, code="journalInexistant"), "permanent"),
        (InvoiceNumberManagementOff("numeroFactureNonActive"), "permanent"),
        (SubsidiaryCodeTooLong("code too long"), "permanent"),
        (InvalidEvent("entry.kind: Must be one of"), "permanent"),
        (AuthenticationFailed("wrong password", status=401), "customer"),
        (AccountLocked("locked", status=423), "customer"),
        (DossierNotShared("not shared", status=403), "customer"),
        (GedAccessDenied("GED rights", status=403), "customer"),
        (NoConnection("no provider"), "customer"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v,
)
def test_permanent_and_customer_errors_are_never_retried(error, kind):
    # given a permanent or customer error on the very first attempt

    # when the retry decision is made
    decision = decide(error, attempt=0, elapsed_seconds=0.0, policy=POLICY, jitter=no_jitter_expected)

    # then it is not retried, and the reason names the kind
    assert decision.retry is False
    assert decision.countdown == 0.0
    assert decision.reason == f"{kind} error"


def test_permanent_error_with_retry_after_is_still_not_retried():
    # given a permanent error that happens to carry a Retry-After
    error = UnknownJournal("journalInexistant", retry_after=5.0)

    # when the retry decision is made
    decision = decide(error, attempt=0, elapsed_seconds=0.0, policy=POLICY, jitter=lowest)

    # then it is still not retried
    assert decision.retry is False


@pytest.mark.parametrize(
    "error",
    [
        ServerUnavailable("503", status=503),
        AcdTimeout("slow"),
        MalformedResponse("html"),
        PostOutcomeUnknown("no answer"),
        ServerConsideredDown("breaker open"),
        RateLimited("429", status=429),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transient_error_is_retried_after_the_backoff(error):
    # given a transient error on the third attempt (0-based 2) and the jitter pinned at its top

    # when the retry decision is made
    decision = decide(error, attempt=2, elapsed_seconds=10.0, policy=POLICY, jitter=highest)

    # then it is retried after base * 2**2 = 8 seconds
    assert decision.retry is True
    assert decision.countdown == 8.0
    assert decision.reason == ""


def test_backoff_doubles_from_the_base_with_half_of_it_fixed():
    # given attempts 0 to 5

    # when the backoff is computed with the jitter pinned at each end of its range
    top = [backoff_seconds(n, POLICY, highest) for n in range(6)]
    bottom = [backoff_seconds(n, POLICY, lowest) for n in range(6)]

    # then the top doubles from the base, and the bottom is always half of it (equal jitter)
    assert top == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    assert bottom == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]


def test_jitter_draws_only_over_the_upper_half():
    # given a jitter that records the range it is asked for and returns its middle
    asked = []

    def middle(low, high):
        asked.append((low, high))
        return (low + high) / 2

    # when the backoff of attempt 3 (16 s before jitter) is computed
    seconds = backoff_seconds(3, POLICY, middle)

    # then the jitter was asked for a value between 0 and 8, added to the fixed 8
    assert asked == [(0.0, 8.0)]
    assert seconds == 12.0


def test_backoff_is_capped_at_the_policy_ceiling():
    # given a late attempt whose exponential backoff is far over the 300 s maximum

    # when the retry decision is made
    top = decide(ServerUnavailable("503"), attempt=12, elapsed_seconds=0.0, policy=POLICY, jitter=highest)
    bottom = decide(ServerUnavailable("503"), attempt=12, elapsed_seconds=0.0, policy=POLICY, jitter=lowest)

    # then the countdown never passes the ceiling
    assert POLICY.ceiling_seconds == 300.0
    assert top.countdown == 300.0
    assert bottom.countdown == 150.0


def test_huge_attempt_number_does_not_overflow():
    # given an absurd attempt number (a message redelivered for days)

    # when the backoff is computed
    seconds = backoff_seconds(10_000, POLICY, highest)

    # then it is simply the ceiling
    assert seconds == 300.0


def test_ceiling_stays_below_the_visibility_timeout():
    # given a maximum backoff set higher than the broker's visibility timeout
    policy = RetryPolicy(max_seconds=7200.0, visibility_timeout_seconds=600.0)

    # when a late transient failure is decided
    decision = decide(ServerUnavailable("503"), attempt=20, elapsed_seconds=0.0, policy=policy, jitter=highest)

    # then the countdown is held below the visibility timeout (80% of it)
    assert policy.ceiling_seconds == 480.0
    assert decision.countdown == 480.0
    assert decision.countdown < policy.visibility_timeout_seconds


@given(
    attempt=st.integers(min_value=0, max_value=100),
    base=st.floats(min_value=0.01, max_value=60.0),
    maximum=st.floats(min_value=1.0, max_value=100_000.0),
    visibility=st.floats(min_value=2.0, max_value=100_000.0),
    retry_after=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e9)),
    fraction=st.floats(min_value=0.0, max_value=1.0),
)
def test_no_countdown_ever_reaches_the_visibility_timeout(attempt, base, maximum, visibility, retry_after, fraction):
    # given any policy, attempt, Retry-After and jitter draw
    policy = RetryPolicy(
        base_seconds=base, max_seconds=maximum, window_seconds=1e12, visibility_timeout_seconds=visibility
    )
    error = RateLimited("429", status=429, retry_after=retry_after)

    # when the retry decision is made
    decision = decide(error, attempt, 0.0, policy, jitter=lambda low, high: low + (high - low) * fraction)

    # then it retries, within the ceiling, below the visibility timeout, never sooner than Retry-After allows
    assert decision.retry is True
    assert 0.0 < decision.countdown <= policy.ceiling_seconds < visibility
    if retry_after is not None:
        assert decision.countdown >= min(retry_after, policy.ceiling_seconds)


def test_ceiling_stays_below_a_one_second_visibility_timeout():
    # given a (test-sized) visibility timeout of one second
    policy = RetryPolicy(base_seconds=0.1, max_seconds=300.0, visibility_timeout_seconds=1.0)

    # when a late transient failure is decided
    decision = decide(ServerUnavailable("503"), attempt=20, elapsed_seconds=0.0, policy=policy, jitter=highest)

    # then the countdown is still below the visibility timeout
    assert decision.countdown < policy.visibility_timeout_seconds


def test_default_jitter_stays_within_equal_jitter_bounds():
    # given the real random jitter

    # when many backoffs of attempt 4 (32 s before jitter) are drawn
    draws = [backoff_seconds(4, POLICY) for _ in range(500)]

    # then all lie between half and the whole, and they are not all the same
    assert all(16.0 <= d <= 32.0 for d in draws)
    assert len(set(draws)) > 1


def test_retry_after_longer_than_backoff_is_honoured():
    # given a 429 asking to wait 120 s on the first attempt (backoff would be 1 to 2 s)
    error = RateLimited("429", status=429, retry_after=120.0)

    # when the retry decision is made
    decision = decide(error, attempt=0, elapsed_seconds=0.0, policy=POLICY, jitter=highest)

    # then the countdown is exactly the Retry-After
    assert decision.retry is True
    assert decision.countdown == 120.0


def test_retry_after_shorter_than_backoff_keeps_the_backoff():
    # given a 429 asking to wait 1 s on the sixth attempt (backoff 64 s)
    error = RateLimited("429", status=429, retry_after=1.0)

    # when the retry decision is made
    decision = decide(error, attempt=5, elapsed_seconds=0.0, policy=POLICY, jitter=highest)

    # then the longer backoff wins
    assert decision.countdown == 64.0


def test_retry_after_over_the_ceiling_is_capped():
    # given a 503 asking to wait two hours
    error = ServerUnavailable("503", status=503, retry_after=7200.0)

    # when the retry decision is made
    decision = decide(error, attempt=0, elapsed_seconds=0.0, policy=POLICY, jitter=lowest)

    # then the wait is capped at the ceiling (the message must come back before the visibility timeout)
    assert decision.retry is True
    assert decision.countdown == POLICY.ceiling_seconds == 300.0


def test_retry_window_exhausted_stops_with_a_reason():
    # given a server failing for almost the whole 24 h window, and a next backoff that would pass its end
    error = ServerUnavailable("503", status=503)
    elapsed = 24 * 3600.0 - 100.0

    # when the retry decision is made (backoff 300 s)
    decision = decide(error, attempt=15, elapsed_seconds=elapsed, policy=POLICY, jitter=highest)

    # then it is not retried, and the reason says how long it has been failing
    assert decision.retry is False
    assert decision.reason == "still failing after 86300s (retry window)"


def test_retry_that_lands_exactly_at_the_window_end_is_allowed():
    # given a failure whose next attempt would land exactly at the end of the window
    policy = RetryPolicy(window_seconds=1000.0)

    # when the retry decision is made (backoff 8 s)
    decision = decide(ServerUnavailable("503"), attempt=2, elapsed_seconds=992.0, policy=policy, jitter=highest)

    # then it is still retried; one second later it would not be
    assert decision.retry is True
    assert decision.countdown == 8.0
    late = decide(ServerUnavailable("503"), attempt=2, elapsed_seconds=993.0, policy=policy, jitter=highest)
    assert late.retry is False


def test_retry_after_that_overruns_the_window_stops():
    # given a Retry-After that would take the step past the window's end
    policy = RetryPolicy(window_seconds=1000.0)
    error = RateLimited("429", status=429, retry_after=250.0)

    # when the retry decision is made 800 s into the window
    decision = decide(error, attempt=0, elapsed_seconds=800.0, policy=policy, jitter=lowest)

    # then it gives up rather than retrying beyond the window
    assert decision.retry is False
    assert "retry window" in decision.reason
