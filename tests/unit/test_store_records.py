"""Records written by the store's scripts, over a real private Redis: a step's end is one script guarded by its
generation, the post marker is a claim two runs cannot both win, fields no counter depends on are one HSET."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.store import Store, record_id
from tests.conftest import flushed_store

RID = record_id("acd", "cf_rec", "ent_1")


@pytest.fixture
def store(redis_server: Any) -> Iterator[Store]:
    with flushed_store(redis_server, 12) as s:
        s.records.create(RID, {"entry": {"id": "ent_1"}}, "evt_1")
        yield s


def test_a_step_end_writes_its_fields_and_the_state_its_progress_gives(store: Store) -> None:
    # when the post step ends with posted_at among its fields
    state = store.records.finish_step(RID, "post", 0, attempt={"outcome": "posted"}, posted_at=1.5, payload={"a": 1})
    # then the record is posted, at that step, with the fields and the attempt, and counted once as posted
    rec = store.records.get(RID)
    assert state == "posted" and (rec.state, rec.step, rec.posted_at, rec.payload) == ("posted", "post", 1.5, {"a": 1})
    assert [a["outcome"] for a in store.records.attempts(RID)] == ["posted"]
    assert (
        store.records.states("acd", "cf_rec")["posted"] == 1 and store.records.states("acd", "cf_rec")["received"] == 0
    )


def test_a_step_end_of_a_replaced_generation_writes_nothing(store: Store) -> None:
    # given a record a re-validation moved to generation 1 while a step of generation 0 ran
    store.records.update(RID, generation=1, step="received")
    # when the old step ends
    state = store.records.finish_step(RID, "map", 0, payload={"stale": True})
    # then nothing of it is written
    rec = store.records.get(RID)
    assert state is None and rec.payload is None and rec.step == "received"


def test_only_one_of_two_runs_claims_the_post_and_a_posted_entry_is_never_claimed(store: Store) -> None:
    # when two runs that both saw no marker claim the post
    first = store.records.claim_start(RID, "post_started_at", None, 10.0, ("posted_at", "provider_id"))
    second = store.records.claim_start(RID, "post_started_at", None, 11.0, ("posted_at", "provider_id"))
    # then the first wins and the second sees the first's marker
    assert first == ("claimed", repr(10.0)) and second[0] == "taken"
    assert store.records.get(RID).post_started_at == 10.0
    # and a run that saw that marker may claim again (a repost after a conclusive miss), but not once posted
    assert store.records.claim_start(RID, "post_started_at", 10.0, 12.0, ("posted_at",))[0] == "claimed"
    store.records.finish_step(RID, "post", 0, posted_at=13.0, post_started_at=None)
    assert store.records.claim_start(RID, "post_started_at", None, 14.0, ("posted_at",))[0] == "done"
    assert store.records.claim_start(record_id("acd", "cf_rec", "nope"), "m", None, 1.0, ())[0] == "gone"


def test_a_note_is_one_write_and_refuses_the_fields_counters_depend_on(store: Store) -> None:
    # when a field no counter depends on is noted, and another cleared
    store.records.note(RID, post_started_at=5.0)
    store.records.note(RID, post_started_at=None, fec_found=["1"])
    # then both land, and the state is untouched
    rec = store.records.get(RID)
    assert rec.post_started_at is None and rec.extra["fec_found"] == '["1"]' and rec.state == "received"
    # and a field that moves counters or indexes is refused
    with pytest.raises(ValueError, match="state"):
        store.records.note(RID, state="posted")


def test_a_ready_connection_is_kept_a_second_and_a_refused_one_is_always_read_again(store: Store) -> None:
    from pipeline.store import Connection
    from pipeline.store.connections import TRUST_SECONDS

    # given a worker's store, which keeps what it read (any other store reads what is there now)
    assert Store(store.r).connections.trust_seconds == 0
    store.connections.trust_seconds = TRUST_SECONDS
    # and a ready connection this process read, then changed by another process
    store.connections.save(Connection("acd", "cf_conn", {"dossier": "D1"}))
    assert store.connections.get("cf_conn", "acd").params == {"dossier": "D1"}
    other = Store(store.r)
    other.connections.save(Connection("acd", "cf_conn", {"dossier": "D2"}))
    # then this process sees its copy for up to a second, and the change when asked fresh
    assert store.connections.get("cf_conn", "acd").params == {"dossier": "D1"}
    assert store.connections.get("cf_conn", "acd", fresh=True).params == {"dossier": "D2"}
    # and a connection marked refused elsewhere is not kept: every look reads it
    other.connections.set_status("cf_conn", "acd", "auth_failed", "refused")
    assert store.connections.get("cf_conn", "acd", fresh=True).status == "auth_failed"
    assert store.connections.get("cf_conn", "acd").status == "auth_failed"
    # and a copy handed out cannot change the kept one
    other.connections.set_status("cf_conn", "acd", "ready")
    got = store.connections.get("cf_conn", "acd", fresh=True)
    got.params["dossier"] = "changed"
    assert store.connections.get("cf_conn", "acd").params == {"dossier": "D2"}
