"""Stalled chains, over a real private Redis: a record whose next message was lost is found through the
in-flight index (never a scan) and its chain is published again at the right step, once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from unittest.mock import patch

import pytest

from pipeline.resume import BUSY_QUEUE_DEPTH, resume_from, resume_stalled
from pipeline.store import Store, record_id
from pipeline.store.keys import P
from tests.conftest import flushed_store

ACD_STEPS = ["fetch", "rename", "map", "post", "confirm"]
CHAINS = {"acd": ACD_STEPS, "cegid_loop": ["fetch", "check", "prepare", "deposit"]}
STALL = 60.0


@pytest.fixture
def store(redis_server: Any) -> Iterator[Store]:
    with flushed_store(redis_server, 9) as s:
        yield s


def _record(store: Store, n: int, provider: str = "acd", **fields: Any) -> str:
    rid = record_id(provider, "cf_resume", f"ent_{n}")
    store.records.create(rid, {"event_id": f"evt_{n}"}, f"evt_{n}")
    if fields:
        store.records.update(rid, **fields)
    return rid


def _later(seconds: float) -> Any:
    """Every clock the store and the resume pass read, ``seconds`` from now."""
    moved = time.time() + seconds
    return patch("pipeline.store.models.time.time", return_value=moved)


def test_resume_from_picks_the_step_after_the_last_one_done_or_the_one_that_failed() -> None:
    assert resume_from("received", "received", ACD_STEPS) == "fetch"
    assert resume_from("queued", "received", ACD_STEPS) == "fetch"
    assert resume_from("fetch", "received", ACD_STEPS) == "rename"
    assert resume_from("post", "posted", ACD_STEPS) == "confirm"
    assert resume_from("map", "waiting_retry", ACD_STEPS) == "map"
    assert resume_from("confirm", "posted", ACD_STEPS) == "confirm"


def test_a_record_that_stopped_moving_is_sent_on_at_its_next_step_and_only_once(store: Store) -> None:
    # given a record whose fetch finished and whose rename message was lost, and one that keeps moving
    stuck = _record(store, 1, step="fetch")
    moving = _record(store, 2, step="fetch")
    sent: list[tuple[str, str, int, str]] = []
    # when a resume pass runs after the stall delay, the second record having moved meanwhile
    with _later(STALL + 5):
        store.records.update(moving, step="rename")
        result = resume_stalled(store, lambda *a: sent.append(a), CHAINS, STALL)
        # then only the stuck one is published again, at rename, in its own generation, with an attempt saying so
        assert result.resumed == [stuck]
        assert sent == [("acd", stuck, 0, "rename")]
        assert store.records.attempts(stuck)[-1]["outcome"] == "resumed"
        # and a second pass right after leaves it alone: it is due again only a stall delay later
        assert resume_stalled(store, lambda *a: sent.append(a), CHAINS, STALL).resumed == []
    assert len(sent) == 1


def test_settled_dead_and_pending_export_records_are_never_resumed(store: Store) -> None:
    # given records that are confirmed, dead-lettered, or waiting for the daily Cegid Loop export
    _record(store, 1, state="confirmed", step="confirm", confirmed_at=1.0)
    _record(store, 2, state="dead", step="post")
    _record(store, 3, provider="cegid_loop", step="pending")
    # then none of them is in flight, however long one waits
    assert store.r.zcard(f"{P}:inflight") == 0
    with _later(10 * STALL):
        assert resume_stalled(store, lambda *a: None, CHAINS, STALL).resumed == []


def test_a_retry_due_later_is_not_taken_for_a_stall(store: Store) -> None:
    # given a record waiting for a retry due in 5 minutes
    rid = _record(store, 1, state="waiting_retry", step="post", next_retry_at=time.time() + 300)
    sent: list[Any] = []
    # when the stall delay passes, but not the retry's due time plus the delay
    with _later(STALL + 60):
        assert resume_stalled(store, lambda *a: sent.append(a), CHAINS, STALL).resumed == []
    # then only once the retry is overdue by the delay is the failed step published again
    with _later(300 + STALL + 5):
        assert resume_stalled(store, lambda *a: sent.append(a), CHAINS, STALL).resumed == [rid]
    assert sent == [("acd", rid, 0, "post")]


def test_records_behind_a_long_queue_are_left_alone(store: Store) -> None:
    # given a stalled-looking record while its provider's queue holds a long backlog
    rid = _record(store, 1, step="map")
    store.r.rpush("acd", *["message"] * (BUSY_QUEUE_DEPTH + 1))
    sent: list[Any] = []
    with _later(STALL + 5):
        result = resume_stalled(store, lambda *a: sent.append(a), CHAINS, STALL)
        # then nothing is published: the record is most likely queued
        assert result.resumed == [] and result.busy_providers == ["acd"]
        # and once the backlog drained, it is
        store.r.delete("acd")
        assert resume_stalled(store, lambda *a: sent.append(a), CHAINS, STALL).resumed == [rid]
    assert sent == [("acd", rid, 0, "post")]


def test_recount_rebuilds_the_in_flight_index(store: Store) -> None:
    # given records on their way whose index was lost (data from before the index existed)
    rid = _record(store, 1, step="rename")
    _record(store, 2, state="confirmed", step="confirm", confirmed_at=1.0)
    store.r.delete(f"{P}:inflight")
    # when counters are rebuilt
    store.recount()
    # then only the record on its way is back in the index
    assert store.r.zrange(f"{P}:inflight", 0, -1) == [rid]
