"""State counters, the settled index and retention, over a real private Redis: every state change keeps the
counters equal to a full recount, and a trimmed record still stops a duplicate or a re-validation."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from hubsync_sandbox.samples import sample_entry, sample_event
from pipeline.deadletters import dead_letter_record
from pipeline.deliveries import poisoned
from pipeline.dlq import discard, replay
from pipeline.errors import PermanentError
from pipeline.ingest import ingest
from pipeline.store import Connection, Store, record_id
from pipeline.store.keys import P
from tests.conftest import db_url, flushed_store

DAY = 86400.0
CF = "cf_count"


class Refused(PermanentError):
    """Stands for a permanent provider refusal."""

    default_hint = "fix and replay"


@pytest.fixture
def store(redis_server: Any) -> Iterator[Store]:
    with flushed_store(redis_server, 8) as s:
        s.connections.save(Connection("acd", CF, {"url": "https://acd.example/iSuiteExpert", "dossier": "D1"}))
        yield s


def counts(store: Store) -> dict[str, int]:
    """The non-zero counters of the test's client file."""
    return {state: n for state, n in store.records.states("acd", CF).items() if n}


def assert_recount_agrees(store: Store) -> None:
    kept = store.records.all_states()
    assert store.recount() == kept


def _event(n: int, event_suffix: str = "") -> dict[str, Any]:
    entry = sample_entry("purchase", n)
    event = sample_event(CF, entry)
    event["event_id"] = f"evt_{entry['id']}{event_suffix}"
    return event


def _ingest(store: Store, event: dict[str, Any]) -> list[tuple[str, str, int, str]]:
    sent: list[tuple[str, str, int, str]] = []
    ingest(store, event, lambda *a: sent.append(a))
    return sent


def _confirm(store: Store, rid: str, provider_id: str = "4242") -> None:
    store.records.update(rid, ack="AB3K", state="posted", provider_id=provider_id, posted_at=time.time())
    store.records.update(rid, state="confirmed", confirmed_at=time.time())


def test_counters_follow_every_state_change_and_agree_with_a_recount(store: Store) -> None:
    # given an entry received, retried, posted, then confirmed
    event = _event(1)
    assert len(_ingest(store, event)) == 1
    rid = record_id("acd", CF, event["entry"]["id"])
    assert counts(store) == {"received": 1}
    store.records.update(rid, state="waiting_retry")
    assert counts(store) == {"waiting_retry": 1}
    store.records.update(rid, state="waiting_retry", next_retry_at=time.time())  # same state: no move
    assert counts(store) == {"waiting_retry": 1}
    _confirm(store, rid)
    assert counts(store) == {"confirmed": 1}
    assert_recount_agrees(store)

    # when a second entry is dead-lettered, replayed, dead-lettered again and discarded
    other = _event(2)
    _ingest(store, other)
    rid2 = record_id("acd", CF, other["entry"]["id"])
    rec = store.records.get(rid2)
    assert rec is not None
    dl = dead_letter_record(store, rec, "map", Refused("account missing"))
    assert counts(store) == {"confirmed": 1, "dead": 1}
    replay(store, dl.id, lambda *a: None, lambda raw: "ok")
    assert counts(store) == {"confirmed": 1, "received": 1}
    rec = store.records.get(rid2)
    assert rec is not None
    dl2 = dead_letter_record(store, rec, "map", Refused("account missing again"))
    discard(store, dl2.id, "entered by hand")
    assert counts(store) == {"confirmed": 1, "dead": 1}
    assert store.records.get(rid2).settled_at is not None  # type: ignore[union-attr]

    # and a re-validation of the discarded entry starts it again, a redelivered poison message kills it
    _ingest(store, _event(2, "_v2"))
    assert counts(store) == {"confirmed": 1, "received": 1}
    assert store.records.get(rid2).settled_at is None  # type: ignore[union-attr]
    for _ in range(3):
        poisoned(store, "task-1", 0, rid2, "post", limit=2)
    assert counts(store) == {"confirmed": 1, "dead": 1}

    # then the counters never drifted from what the records say
    assert_recount_agrees(store)
    assert store.dead_letters.open_count() == 1


def test_duplicate_and_revalidation_of_an_entry_trimmed_months_later_post_nothing(store: Store) -> None:
    # given a confirmed entry, and the clock moved past the history window
    event = _event(3)
    _ingest(store, event)
    rid = record_id("acd", CF, event["entry"]["id"])
    _confirm(store, rid, provider_id="777")
    store.records.add_attempt(rid, {"step": "post", "outcome": "posted"})
    later = time.time() + 31 * DAY
    assert store.retention.settled_backlog(at=later) == 1

    # when retention runs (twice, as two workers would)
    assert store.retention.trim_expired(at=later) == 1
    assert store.retention.trim_expired(at=later) == 0

    # then only the compact form is left, still counted, still found by entry id
    assert not store.r.exists(f"{P}:rec:{{{rid}}}") and not store.r.exists(f"{P}:rec:{{{rid}}}:attempts")
    rec = store.records.get(rid)
    assert rec is not None and rec.trimmed
    assert (rec.state, rec.ack, rec.provider_id, rec.event_id) == ("confirmed", "AB3K", "777", event["event_id"])
    assert counts(store) == {"confirmed": 1}
    assert [r.id for r in store.records.of_entry(event["entry"]["id"])] == [rid]
    assert store.records.ids("acd", CF) == [rid]
    assert_recount_agrees(store)

    # when the same event arrives again after its dedupe key expired, and then a re-validation
    store.r.delete(f"{P}:event:{event['event_id']}")
    assert _ingest(store, event) == []
    assert _ingest(store, _event(3, "_again")) == []

    # then nothing was enqueued: the re-validation is only noted, the entry stays confirmed and counted once
    rec = store.records.get(rid)
    assert rec is not None and rec.state == "confirmed" and rec.provider_id == "777"
    assert "validated again" in rec.note
    assert counts(store) == {"confirmed": 1}
    assert_recount_agrees(store)


def test_nothing_in_flight_dead_or_inside_the_window_is_trimmed(store: Store) -> None:
    states = {}
    for n, state in enumerate(("received", "waiting_retry", "posted"), start=10):
        event = _event(n)
        _ingest(store, event)
        rid = record_id("acd", CF, event["entry"]["id"])
        store.records.update(rid, state=state)
        states[rid] = state
    dead_event = _event(20)
    _ingest(store, dead_event)
    dead_rid = record_id("acd", CF, dead_event["entry"]["id"])
    rec = store.records.get(dead_rid)
    assert rec is not None
    dead_letter_record(store, rec, "post", Refused("closed year"))
    fresh_event = _event(21)
    _ingest(store, fresh_event)
    fresh = record_id("acd", CF, fresh_event["entry"]["id"])
    _confirm(store, fresh)

    assert store.retention.trim_expired(at=time.time() + 365 * DAY) == 1  # only the confirmed one
    for rid, state in states.items():
        rec = store.records.get(rid)
        assert rec is not None and not rec.trimmed and rec.state == state and rec.event
    rec = store.records.get(dead_rid)
    assert rec is not None and not rec.trimmed and rec.state == "dead"
    assert store.retention.trim_expired(at=time.time() + 29 * DAY) == 0
    assert_recount_agrees(store)


def test_a_write_to_a_trimmed_record_brings_it_back_whole_and_counted_once(store: Store) -> None:
    event = _event(30)
    _ingest(store, event)
    rid = record_id("acd", CF, event["entry"]["id"])
    _confirm(store, rid)
    store.retention.trim_expired(at=time.time() + 31 * DAY)

    store.records.add_attempt(rid, {"step": "received", "outcome": "looked at"})

    rec = store.records.get(rid)
    assert rec is not None and not rec.trimmed and rec.state == "confirmed" and rec.ack == "AB3K"
    assert rec.attempts_count == 1 and rec.settled_at is not None
    assert counts(store) == {"confirmed": 1}
    assert store.r.hlen(f"{P}:kept:acd:{CF}") == 0
    assert store.retention.trim_expired(at=time.time() + 29 * DAY) == 0  # a fresh window from the write
    assert store.retention.trim_expired(at=time.time() + 31 * DAY) == 1
    assert_recount_agrees(store)


def test_dead_letter_indexes_page_filter_and_count_without_reading_every_letter(store: Store) -> None:
    ids = []
    for n in range(7):
        event = _event(40 + n)
        _ingest(store, event)
        rec = store.records.get(record_id("acd", CF, event["entry"]["id"]))
        assert rec is not None
        ids.append(dead_letter_record(store, rec, "map" if n % 2 else "post", Refused(f"no {n}")).id)

    page, total = store.dead_letters.page(offset=0, count=3)
    assert total == 7 and len(page) == 3 and page[0] == ids[-1]
    page2, _ = store.dead_letters.page(offset=3, count=3)
    assert not set(page) & set(page2)
    mapped, total_map = store.dead_letters.page(where={"step": "map", "client_file": CF}, count=50)
    assert total_map == 3 and set(mapped) == {ids[1], ids[3], ids[5]}
    assert store.dead_letters.facets()["step"] == {"map": 3, "post": 4}

    discard(store, ids[1], "by hand")
    assert store.dead_letters.facets()["step"] == {"map": 2, "post": 4}
    assert store.dead_letters.facets("closed")["step"] == {"map": 1}
    groups = {(g[2], g[4]) for g in store.dead_letters.groups()}
    assert groups == {("map", 2), ("post", 4)}
    items, kept = store.dead_letters.audit_page(count=10)
    assert kept == 1 and items[0]["dead_letter"] == ids[1]

    # closed dead letters go after the window; open ones stay
    assert store.retention.trim_closed_dead_letters(at=time.time() + 31 * DAY) == 1
    assert store.dead_letters.get(ids[1]) is None and store.dead_letters.facets("closed")["step"] == {}
    assert store.dead_letters.open_count() == 6 and store.dead_letters.audit_page()[1] == 1


def test_recount_after_an_upgrade_counts_indexes_and_lets_old_records_be_trimmed(store: Store) -> None:
    # given what the previous version left: a confirmed record and an open dead letter, with no counter or index
    rid = record_id("acd", CF, "ent_legacy")
    store.r.hset(f"{P}:rec:{{{rid}}}", mapping={"state": "confirmed", "updated_at": time.time() - 60 * DAY})
    store.r.sadd(f"{P}:idx:acd:{CF}", "ent_legacy")
    store.r.sadd(f"{P}:idx", f"acd:{CF}")
    dead = {
        "id": "dl_legacy", "provider": "acd", "client_file_id": CF, "entry_id": "ent_x", "record_id": "",
        "step": "post", "error_class": "Refused", "error_kind": "permanent", "message": "m", "hint": "h",
        "created_at": time.time(), "event": None, "attempts": [], "status": "open", "audit": [],
    }  # fmt: skip
    store.r.hset(f"{P}:dlq:dl_legacy", "data", json.dumps(dead))
    store.r.zadd(f"{P}:dlq:open", {"dl_legacy": dead["created_at"]})
    assert counts(store) == {} and store.dead_letters.page()[1] == 0

    # when the operator runs the repair once
    store.recount()

    # then the counters, the dead-letter pages and retention all know the old data
    assert counts(store) == {"confirmed": 1}
    assert store.dead_letters.page() == (["dl_legacy"], 1)
    assert store.retention.trim_expired() == 1
    assert store.records.get(rid).trimmed  # type: ignore[union-attr]


def test_dlq_list_and_status_read_pages_and_counters_on_the_command_line(store: Store, redis_server: Any) -> None:
    from tests.conftest import run_cli

    ids = []
    for n in range(3):
        event = _event(60 + n)
        _ingest(store, event)
        rec = store.records.get(record_id("acd", CF, event["entry"]["id"]))
        assert rec is not None
        ids.append(dead_letter_record(store, rec, "post", Refused(f"no {n}")).id)
    env = {**os.environ, "HUBSYNC_REDIS_URL": db_url(redis_server, 8)}

    first = run_cli(env, "dlq", "list", "--limit", "2", "--json")
    rest = run_cli(env, "dlq", "list", "--limit", "2", "--offset", "2", "--json")
    text = run_cli(env, "dlq", "list", "--limit", "2")
    status = run_cli(env, "status", "--json")

    assert first.returncode == 0, first.stderr
    assert [d["id"] for d in json.loads(first.stdout)] == ids[:2]
    assert [d["id"] for d in json.loads(rest.stdout)] == ids[2:]
    assert json.loads(first.stdout)[0]["event_id"] == "evt_" + json.loads(first.stdout)[0]["entry_id"]
    assert "1-2 of 3: next page with --offset 2" in text.stdout
    doc = json.loads(status.stdout)
    assert doc["providers"]["acd"][CF]["dead"] == 3 and doc["dead_letters_open"] == 3


def test_the_compact_form_is_small_and_keeps_times_state_and_a_discarded_records_dead_letter(store: Store) -> None:
    # given a confirmed entry and a discarded one, both trimmed after the window
    confirmed_event, discarded_event = _event(40), _event(41)
    _ingest(store, confirmed_event)
    _ingest(store, discarded_event)
    confirmed = record_id("acd", CF, confirmed_event["entry"]["id"])
    discarded = record_id("acd", CF, discarded_event["entry"]["id"])
    posted_at = time.time()
    _confirm(store, confirmed, provider_id="100042")
    store.records.update(confirmed, posted_at=posted_at)
    unsure = time.time()
    store.records.update(discarded, post_started_at=unsure)  # a post whose outcome stayed unknown
    rec = store.records.get(discarded)
    assert rec is not None
    dl = dead_letter_record(store, rec, "post", Refused("keeps failing"))
    discard(store, dl.id, "entered by hand in ACD")
    assert store.retention.trim_expired(at=time.time() + 31 * DAY) == 2

    # then each keeps one short field (a letter per state, times in base 36)
    packed = store.r.hget(f"{P}:kept:acd:{CF}", confirmed_event["entry"]["id"])
    assert packed.startswith(f"c|{confirmed_event['event_id']}|AB3K|0|") and packed.endswith("|||100042")
    assert len(packed) == len(confirmed_event["event_id"]) + 32  # 6-character times, a letter for the state
    kept = store.records.get(confirmed)
    assert kept is not None and kept.trimmed and kept.state == "confirmed" and kept.provider_id == "100042"
    assert kept.posted_at == int(posted_at) and kept.confirmed_at == kept.settled_at
    gone = store.records.get(discarded)
    assert gone is not None and gone.state == "dead" and gone.dead_letter_id == dl.id
    assert gone.post_started_at == int(unsure)  # a re-validation looks that post up before posting again
    assert_recount_agrees(store)

    # and a write brings the discarded one back still settled (its dead letter is the discarded one)
    store.records.add_attempt(discarded, {"step": "received", "outcome": "looked at"})
    back = store.records.get(discarded)
    assert back is not None and not back.trimmed and back.dead_letter_id == dl.id and back.settled_at is not None
    assert counts(store) == {"confirmed": 1, "dead": 1}
    assert_recount_agrees(store)
