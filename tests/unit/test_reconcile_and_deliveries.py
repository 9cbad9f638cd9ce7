"""Reconciliation's classification and the redelivery cap, against the suite's private Redis (no network)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from hubsync_sandbox.samples import sample_entry, sample_event
from pipeline.acd.errors import (
    AuthenticationFailed,
    FecUnavailable,
    PostOutcomeUnknown,
    RateLimited,
    ServerUnavailable,
)
from pipeline.acd.fec import entries_by_ack, parse_fec
from pipeline.acd.reconcile import READ_WAIT_MAX_SECONDS, classify, read_wait
from pipeline.deliveries import RedeliveryLimitReached, count_delivery, finished, poisoned
from pipeline.store import Store, now, record_id
from pipeline.store.keys import P


@pytest.fixture(scope="module")
def store(redis_server: Any) -> Store:
    """A store on the suite's private Redis."""
    return Store.from_url(redis_server.url)


def _fec(*rows: tuple[int, str]) -> str:
    header = "JournalCode\tEcritureNum\tEcritureLib\tDebit\tCredit"
    return "\r\n".join([header, *(f"BQ\t{num}\t{label}\t1,00\t0,00" for num, label in rows)]) + "\r\n"


def _record(store: Store, cf: str, scope: str, n: int, **fields: Any) -> tuple[str, str]:
    entry = sample_entry("bank_transaction", n)
    entry["id"] = f"ent_{n}_{uuid.uuid4().hex[:6]}"
    rid = record_id("acd", cf, entry["id"])
    store.records.create(rid, sample_event(cf, entry), f"evt_{entry['id']}")
    ack = store.acks.allocate(f"acd:{scope}", rid)
    store.records.update(rid, ack=ack, **fields)
    return entry["id"], ack


def test_acks_are_read_from_the_end_of_fec_labels_once_per_entry() -> None:
    lines = parse_fec(
        _fec(
            *[(1, "Frais (#K7QZ#)")] * 3,
            (2, "Frais (#K7QZ#)"),
            (3, "Loyer (#AB23#)"),
            (4, "sans code"),
            (5, "(#K7QZ#) not at the end"),
        )
    )
    assert entries_by_ack(lines) == {"K7QZ": ["1", "2"], "AB23": ["3"]}


def test_classify_finds_landed_missing_duplicated_unknown_and_the_rest(store: Store) -> None:
    # given a client file's records in every situation, and what its ACD dossier holds
    cf, scope = f"cf_rec_{uuid.uuid4().hex[:6]}", uuid.uuid4().hex[:16]
    landed, landed_ack = _record(store, cf, scope, 1, provider_id="10", posted_at=now() - 60, state="confirmed")
    missing, missing_ack = _record(store, cf, scope, 2, posted_at=now() - 60, state="posted")
    twice, twice_ack = _record(store, cf, scope, 3, posted_at=now() - 60, state="posted")
    fresh, _ = _record(store, cf, scope, 4, posted_at=now(), state="posted")
    unrecorded, unrecorded_ack = _record(store, cf, scope, 5, state="waiting_retry", post_started_at=now() - 5)
    pending, _ = _record(store, cf, scope, 6, state="received")
    dead, _ = _record(store, cf, scope, 7, state="dead")
    in_acd = {landed_ack: ["10"], twice_ack: ["12", "14"], unrecorded_ack: ["15"], "ZZZZ": ["16"]}
    # when they are classified
    result = classify(store, cf, "DOSSIER01", scope, in_acd)
    # then each lands in its own list, and only missing, duplicated and unknown make it not ok
    assert result.records == 7
    assert result.landed == [landed]
    assert [(f.entry_id, f.ack) for f in result.missing] == [(missing, missing_ack)]
    assert [(f.entry_id, f.provider_ids) for f in result.duplicated] == [(twice, ["12", "14"])]
    assert [(f.ack, f.provider_ids) for f in result.unknown] == [("ZZZZ", ["16"])]
    assert result.indexing == [fresh]
    assert result.unrecorded == [unrecorded]
    assert result.pending == [pending] and result.dead == [dead]
    assert not result.ok
    assert result.to_dict()["missing"][0]["entry_id"] == missing


def test_classify_is_ok_when_everything_landed_once(store: Store) -> None:
    cf, scope = f"cf_rec_{uuid.uuid4().hex[:6]}", uuid.uuid4().hex[:16]
    acks = [_record(store, cf, scope, n, provider_id=str(n), posted_at=now() - 60)[1] for n in range(3)]
    result = classify(store, cf, "DOSSIER01", scope, {ack: [str(n)] for n, ack in enumerate(acks)})
    assert result.ok and len(result.landed) == 3


def test_deliveries_are_counted_per_task_id_and_retry_number(store: Store) -> None:
    task_id = uuid.uuid4().hex
    assert [count_delivery(store, task_id, 0) for _ in range(3)] == [1, 2, 3]
    assert count_delivery(store, task_id, 1) == 1  # a Celery retry is a new message
    finished(store, task_id, 0)  # a run that ended in the worker, whatever its outcome
    assert count_delivery(store, task_id, 0) == 1


def test_message_past_the_cap_dead_letters_its_record_and_must_not_run(store: Store) -> None:
    # given a record whose message already ran as often as allowed
    cf, scope = f"cf_cap_{uuid.uuid4().hex[:6]}", uuid.uuid4().hex[:16]
    entry_id, _ = _record(store, cf, scope, 1, state="received")
    rid = record_id("acd", cf, entry_id)
    task_id = uuid.uuid4().hex
    assert poisoned(store, task_id, 0, rid, "post", limit=3, redelivered=False) is False  # first delivery: free
    assert [poisoned(store, task_id, 0, rid, "post", limit=3) for _ in range(2)] == [False, False]
    assert store.records.get(rid).state == "received"
    # when it is delivered once more
    assert poisoned(store, task_id, 0, rid, "post", limit=3) is True
    # then its record is dead-lettered at that step, naming the cap
    rec = store.records.get(rid)
    assert rec.state == "dead" and rec.step == "post"
    dl = store.dead_letters.get(rec.dead_letter_id)
    assert dl.error_class == RedeliveryLimitReached.__name__ and "delivered 4 times" in dl.message
    assert store.r.ttl(f"{P}:deliveries:{task_id}:0") > 0  # counters expire on their own


def test_poisoned_ingest_message_keeps_its_event_as_a_dead_letter(store: Store) -> None:
    task_id = uuid.uuid4().hex
    event = {"event_id": f"evt_{task_id[:8]}", "anything": True}
    assert poisoned(store, task_id, 0, None, "ingest_event", event, limit=1, redelivered=False) is False
    assert poisoned(store, task_id, 0, None, "ingest_event", event, limit=1) is True
    kept = [d for d in store.dead_letters.all("ingest") if isinstance(d.event, dict) and d.event == event]
    assert len(kept) == 1 and kept[0].error_class == "RedeliveryLimitReached"


def _low(low: float, high: float) -> float:
    return low


@pytest.mark.parametrize(
    ("error", "attempt", "wait"),
    [
        (RateLimited("429", status=429, retry_after=3.0), 0, 3.0),
        (RateLimited("429 without Retry-After", status=429), 0, 0.5),
        (ServerUnavailable("503", status=503), 1, 1.0),
        (ServerUnavailable("502", status=502), 2, 2.0),
        (ServerUnavailable("503 asking little", status=503, retry_after=0.1), 2, 2.0),
    ],
    ids=["429-retry-after", "429-bare", "503", "502-later", "backoff-over-retry-after"],
)
def test_a_busy_acd_is_read_again_after_a_capped_backoff_honouring_retry_after(error, attempt, wait) -> None:
    assert read_wait(error, attempt, _low) == wait


@pytest.mark.parametrize(
    "error",
    [
        RateLimited("429 for ten minutes", status=429, retry_after=READ_WAIT_MAX_SECONDS + 1),
        AuthenticationFailed("wrong password", status=401),
        FecUnavailable("no fiscal year"),
        PostOutcomeUnknown("not a read"),
    ],
    ids=["long-retry-after", "customer", "fec-unavailable", "outcome-unknown"],
)
def test_reconcile_gives_up_at_once_on_what_a_short_wait_cannot_fix(error) -> None:
    assert read_wait(error, 0, _low) is None
