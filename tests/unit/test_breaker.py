"""The circuit breaker per server, over a real private Redis: it opens at the threshold, holds calls back, lets
one probe through, and a process that just found it clean spends no read on it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline import breaker as breaker_module
from pipeline.breaker import Breaker
from pipeline.errors import ServerConsideredDown
from pipeline.store import Store
from tests.conftest import flushed_store


@pytest.fixture
def store(redis_server: Any) -> Iterator[Store]:
    with flushed_store(redis_server, 13) as s:
        breaker_module._clean.clear()
        yield s
        breaker_module._clean.clear()


def _breaker(store: Store, name: str = "acd:https://firm.example/api") -> Breaker:
    return Breaker(store, name, threshold=3, cooldown_seconds=0.3, probe_ttl_seconds=5)


def test_three_failures_open_the_breaker_then_one_probe_goes_and_a_success_closes_it(store: Store) -> None:
    b = _breaker(store)
    for _ in range(3):
        b.before_call()
        b.failure()
    with pytest.raises(ServerConsideredDown, match="held back"):
        b.before_call()
    time.sleep(0.35)
    b.before_call()  # the probe
    with pytest.raises(ServerConsideredDown, match="probed"):
        _breaker(store).before_call()
    b.success()
    assert b.state()["state"] == "closed"
    _breaker(store).before_call()


def test_a_process_that_found_the_breaker_clean_reads_and_clears_nothing_for_a_second(store: Store) -> None:
    # given a breaker this process found clean
    b = _breaker(store)
    b.before_call()
    calls = store.command_calls()
    # when calls go through and succeed within the second
    for _ in range(5):
        b.before_call()
        b.success()
    # then Redis was not asked anything
    assert store.command_calls() - calls == 1  # the INFO that counted
    # and once it is older than that, the next call reads again
    breaker_module._clean.clear()
    before = store.command_calls()
    b.before_call()
    assert store.command_calls() - before == 2  # this read, and the INFO


def test_a_failure_forgets_that_the_breaker_was_clean(store: Store) -> None:
    b = _breaker(store)
    b.before_call()
    b.failure()
    b.before_call()
    b.success()  # clears the recorded failure, since this process no longer takes the breaker as clean
    assert b.state() == {"state": "closed", "failures": 0}
