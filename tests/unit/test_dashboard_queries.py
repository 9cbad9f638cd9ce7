"""The dashboard's plain functions over a real Redis, without Flask: filters, groups, masking, replays, health."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any
from unittest.mock import patch

import pytest

from pipeline.dashboard import queries
from pipeline.dashboard.auth import UsersError, authenticate, make_entry, parse_users
from pipeline.deadletters import dead_letter_event, dead_letter_record
from pipeline.errors import InvalidEvent, PermanentError
from pipeline.queues import queue_depths
from pipeline.redact import MASK, event_argsrepr, mask, mask_url
from pipeline.store import Connection, Store, record_id
from tests.conftest import db_url, flushed_store

DAY = 86400.0


class UnknownAccount(PermanentError):
    """Stands for the ACD error of the same name."""

    default_hint = "Add the account to the chart, then replay."


@pytest.fixture
def store(redis_server: Any) -> Iterator[Store]:
    with flushed_store(redis_server, 7) as s:
        yield s


def _event(cf: str, entry_id: str, label: str = "Loyer janvier") -> dict[str, Any]:
    return {
        "event_id": f"evt_{entry_id}",
        "client_file_id": cf,
        "entry": {"id": entry_id, "label": label, "lines": [{"account": "613200", "label": "Loyer bureau"}]},
        "documents": [{"id": "d1", "url": "https://docs.hub.example/d/1?token=SECRET123&sig=abc"}],
        "password": "hunter2-password",
    }


def _dead(store: Store, cf: str, entry_id: str, error: Any, step: str = "post", created_at: float = 0.0) -> str:
    rid = record_id("acd", cf, entry_id)
    store.records.create(rid, _event(cf, entry_id), f"evt_{entry_id}")
    store.records.add_attempt(rid, {"step": step, "outcome": "dead", **error.to_dict()})
    rec = store.records.get(rid)
    assert rec is not None
    with patch("pipeline.deadletters.now", return_value=created_at or time.time()):
        dl = dead_letter_record(store, rec, step, error)
    return dl.id


def test_filter_narrows_by_each_dimension_and_searches_ids_labels_and_error_text(store: Store) -> None:
    a = _dead(store, "cf_a", "ent_1", UnknownAccount("account 681234 is not in the chart"), created_at=10 * DAY)
    b = _dead(store, "cf_b", "ent_2", UnknownAccount("account 689999 is not in the chart"), created_at=20 * DAY)
    c = _dead(store, "cf_a", "ent_3", PermanentError("label refused"), step="map", created_at=20 * DAY)
    dead_letter_event(store, {"event_id": "bad", "entry": {"id": "ent_4"}}, InvalidEvent("entry.kind: bad"))

    def ids(**args: str) -> set[str]:
        return {dl.id for dl in queries.dead_letters(store, queries.Filter.from_args(args))}

    assert ids(provider="acd") == {a, b, c}
    assert ids(client_file="cf_a") == {a, c}
    assert ids(error_class="UnknownAccount") == {a, b}
    assert ids(step="map") == {c}
    assert ids(date_from="1970-01-15", provider="acd") == {b, c}
    assert ids(date_to="1970-01-15", provider="acd") == {a}
    assert ids(q="ent_2") == {b}
    assert ids(q="loyer 689999") == {b}
    assert ids(q="LABEL refused") == {c}
    assert len(ids(provider="ingest")) == 1
    assert ids(date_from="not a date", provider="acd") == {a, b, c}


def test_groups_and_facets_count_dead_letters_by_cause(store: Store) -> None:
    for n in range(3):
        _dead(store, "cf_a", f"ent_{n}", UnknownAccount(f"account 68{n} missing"))
    _dead(store, "cf_a", "ent_9", PermanentError("other"), step="map")
    groups = queries.cause_groups(store, queries.Filter())
    assert [(g.error_class, g.count) for g in groups] == [("UnknownAccount", 3), ("PermanentError", 1)]
    assert groups[0].filter(queries.Filter()).params() == {
        "provider": "acd",
        "client_file": "cf_a",
        "step": "post",
        "error_class": "UnknownAccount",
    }
    facets = queries.facet_counts(store)
    assert facets["error_class"] == [("UnknownAccount", 3), ("PermanentError", 1)]
    assert facets["step"] == [("post", 3), ("map", 1)]


def test_detail_masks_secrets_and_document_tokens_and_shows_attempts_and_states(store: Store) -> None:
    dl_id = _dead(store, "cf_a", "ent_1", UnknownAccount("see https://acd.example/api?password=pw123 for details"))
    shown = queries.detail(store, dl_id, flower_url="https://flower.example/")
    assert shown is not None
    assert "SECRET123" not in shown.event_json and "hunter2" not in shown.event_json
    assert f"token={MASK}&sig={MASK}" in shown.event_json
    assert "pw123" not in shown.message and "pw123" not in str(shown.attempts)
    assert [a["error_class"] for a in shown.attempts] == ["UnknownAccount"]
    assert [(s.provider, s.state) for s in shown.states] == [("acd", "dead")]
    assert shown.flower_url == "https://flower.example/tasks?name=hubsync.acd.post_entry&state=FAILURE"
    assert queries.detail(store, "dl_nope") is None


def test_replay_many_resumes_each_chain_audits_who_and_refuses_the_closed_ones(store: Store) -> None:
    first = _dead(store, "cf_a", "ent_1", UnknownAccount("x"))
    second = _dead(store, "cf_a", "ent_2", UnknownAccount("y"))
    enqueued: list[tuple[str, str, int, str]] = []
    flt = queries.Filter(client_file="cf_a")
    ids = queries.matching_ids(store, flt)
    result = queries.replay_many(store, ids, lambda *a: enqueued.append(a), lambda raw: "ok", who="alice")
    assert sorted(result.done) == sorted([first, second]) and result.refused == []
    assert sorted(e[1] for e in enqueued) == ["acd:cf_a:ent_1", "acd:cf_a:ent_2"]
    assert all(e[2] == 1 and e[3] == "post" for e in enqueued)
    assert queries.matching_ids(store, flt) == []
    again = queries.replay_many(store, [first], lambda *a: None, lambda raw: "ok", who="alice")
    assert again.done == [] and "not open" in again.refused[0][1]
    audit = queries.recent_audit(store)
    assert {(a["who"], a["action"], a["dead_letter"]) for a in audit} == {
        ("alice", "replay", first),
        ("alice", "replay", second),
    }
    assert result.summary("replayed") == "2 replayed"


def test_discard_needs_a_reason_and_records_it(store: Store) -> None:
    dl_id = _dead(store, "cf_a", "ent_1", UnknownAccount("x"))
    with pytest.raises(Exception, match="reason"):
        queries.discard_one(store, dl_id, "  ", who="alice")
    queries.discard_one(store, dl_id, "entered by hand in ACD", who="alice")
    dl = store.dead_letters.get(dl_id)
    assert dl is not None and dl.status == "discarded"
    assert dl.audit[-1]["who"] == "alice" and dl.audit[-1]["reason"] == "entered by hand in ACD"


def test_health_shows_last_success_waiting_retries_breaker_and_queue_depths(store: Store) -> None:
    params = {"url": "https://acd.example/iSuiteExpert", "api_base": "https://acd.example/CNX/api", "dossier": "D1"}
    store.connections.save(Connection("acd", "cf_a", params))
    ok = record_id("acd", "cf_a", "ent_ok")
    store.records.create(ok, {}, "e1")
    with patch("pipeline.store.records.now", return_value=1_700_000_000.0):
        store.records.update(ok, state="confirmed", confirmed_at=1_700_000_000.0)
    waiting = record_id("acd", "cf_a", "ent_wait")
    store.records.create(waiting, {}, "e2")
    store.records.update(waiting, state="waiting_retry")
    store.r.hset("hubsync:breaker:acd:https://acd.example/cnx/api", mapping={"failures": 4})
    store.r.rpush("acd", "m1", "m2")
    (row,) = queries.health(store)
    assert (row.provider, row.client_file, row.dossier, row.connection) == ("acd", "cf_a", "D1", "ready")
    assert row.last_success == "2023-11-14 22:13:20Z"
    assert row.waiting_retries == 1 and row.failures_in_a_row == 4 and row.breaker == "closed"
    assert queue_depths(store) == {"events": 0, "acd": 2, "cegid_loop": 0}


def test_mask_hides_secret_keys_and_url_tokens_everywhere() -> None:
    masked = mask(_event("cf_a", "ent_1"))
    assert masked["password"] == MASK
    assert masked["documents"][0]["url"] == f"https://docs.hub.example/d/1?token={MASK}&sig={MASK}"
    assert masked["entry"]["label"] == "Loyer janvier"
    assert mask_url("https://user:pw@h.example:8443/p?q=1#x") == f"https://{MASK}@h.example:8443/p?q={MASK}#{MASK}"


def test_ingest_argsrepr_names_the_event_and_client_file_only() -> None:
    shown = event_argsrepr(_event("cf_a", "ent_1"))
    assert shown == "(event evt_ent_1 for cf_a)"
    assert "token" not in shown
    assert event_argsrepr("not json") == "(event: a str, not a JSON object)"
    long_id = "<script>" + "x" * 500
    assert event_argsrepr({"event_id": long_id, "client_file_id": 3}) == f"(event script{'x' * 74} for 3)"


def test_users_entries_round_trip_and_malformed_ones_are_refused() -> None:
    name = f"op_{uuid.uuid4().hex[:4]}"
    entry = make_entry(name, "operator", "a long enough password")
    users = parse_users(f"{entry}, {make_entry('vic', 'viewer', 'another long password')}")
    assert users[name].can_act and not users["vic"].can_act
    assert authenticate(users, name, "a long enough password") == users[name]
    assert authenticate(users, name, "wrong password") is None
    assert authenticate(users, "nobody", "a long enough password") is None
    assert "password" not in repr(users[name]) and "pbkdf2" not in repr(users[name])
    for bad in ("", "alice:admin:pbkdf2:sha256:1$a$b", "alice:viewer:plaintext", f"{entry},{entry}"):
        with pytest.raises(UsersError):
            parse_users(bad)
    with pytest.raises(UsersError):
        make_entry("alice", "operator", "short")


def test_health_shows_pending_cegid_loop_exports_and_the_next_export_time(store: Store) -> None:

    rid = record_id("cegid_loop", "cf_c", "doc_1")
    store.records.create(rid, {}, "e1")
    store.loop.add_pending("cf_c", rid, 1.0)
    (row,) = queries.health(store)
    assert (row.provider, row.pending_exports) == ("cegid_loop", 1)
    assert row.next_export.endswith(" 20:00Z")


def test_queue_depths_count_every_priority_kombu_publishes_to(store: Store, redis_server: Any) -> None:
    from kombu import Connection as BrokerConnection
    from kombu import Exchange, Producer, Queue

    from tasks.chains import step_priority

    url = db_url(redis_server, 7)
    acd = Queue("acd", Exchange("acd"), routing_key="acd")
    with BrokerConnection(url) as conn:
        producer = Producer(conn.default_channel)
        for index in range(5):  # one message per step of an ACD chain, each at that step's priority
            producer.publish(
                {"n": index}, exchange=acd.exchange, routing_key="acd", declare=[acd], priority=step_priority(index)
            )
    assert queue_depths(store) == {"events": 0, "acd": 5, "cegid_loop": 0}
    assert len({step_priority(i) for i in range(5)}) == 4  # fetch, rename, map, then post and confirm


def test_first_page_facets_and_causes_come_from_indexes_and_pages_do_not_overlap(store: Store) -> None:
    # given 7 dead letters of one cause and 2 of another, in two client files
    for n in range(7):
        _dead(store, "cf_a", f"ent_{n}", UnknownAccount(f"account 68{n} missing"), created_at=(10 + n) * DAY)
    for n in range(2):
        _dead(store, "cf_b", f"ent_b{n}", PermanentError("label refused"), step="map", created_at=30 * DAY)

    # when the dashboard reads pages of 4
    first = queries.page(store, queries.Filter(), 0, 4)
    second = queries.page(store, queries.Filter(), first.next_offset or 0, 4)

    # then pages are newest first, disjoint, and counted without loading every letter
    assert first.total == 9 and len(first.letters) == 4 and first.previous_offset is None
    assert not {d.id for d in first.letters} & {d.id for d in second.letters}
    assert [d.created_at for d in first.letters] == sorted((d.created_at for d in first.letters), reverse=True)
    counts = queries.facet_counts(store)
    assert counts["error_class"] == [("UnknownAccount", 7), ("PermanentError", 2)]
    assert counts["day"][0] == ("1970-01-31", 2)
    causes = queries.cause_groups(store, queries.Filter(client_file="cf_a"))
    assert [(g.error_class, g.count) for g in causes] == [("UnknownAccount", 7)]
    assert causes[0].hint == UnknownAccount.default_hint and "68" in causes[0].message
    narrowed = queries.page(store, queries.Filter(client_file="cf_a", date_from="1970-01-15"), 0, 50)
    assert narrowed.total == 3
    searched = queries.page(store, queries.Filter(q="684"), 0, 50)
    assert [d.entry_id for d in searched.letters] == ["ent_4"] and searched.complete


def test_a_refused_event_keeps_its_event_id_even_when_it_is_not_valid_json(store: Store) -> None:
    from pipeline.ingest import parse, refuse

    broken = '{"event_id": "evt_broken_\\u00e91", "entry": {"id": "ent_1", "label": "x"'  # cut mid-way
    event, data, errors = parse(broken)
    assert event is None and errors[0].startswith("event: not valid JSON")
    result = refuse(store, data, errors)
    dl = store.dead_letters.get(result.dead_letter_id)
    assert dl.event_id == "evt_broken_é1" and result.event_id == "evt_broken_é1"
    assert dl.to_dict()["event_id"] == "evt_broken_é1"
    # a valid JSON event breaking the schema keeps its id too, and the search box finds it
    event, data, errors = parse({"event_id": "evt_bad_schema", "entry": {}})
    assert store.dead_letters.get(refuse(store, data, errors).dead_letter_id).event_id == "evt_bad_schema"
    assert [d.id for d in queries.dead_letters(store, queries.Filter(q="evt_bad_schema"))] != []
    # nothing to read: no id, never an invented one
    assert dead_letter_event(store, "garbage", InvalidEvent("x")).event_id == ""


def test_a_dead_lettered_record_names_the_event_that_brought_it(store: Store) -> None:
    rid = record_id("acd", "cf_evt", "ent_evt")
    store.records.create(rid, _event("cf_evt", "ent_evt"), "evt_ent_evt")
    dl = dead_letter_record(store, store.records.get(rid), "map", UnknownAccount("account 699999 is not in the chart"))
    assert dl.event_id == "evt_ent_evt"


def test_an_acd_record_shows_its_ecriture_num_once_the_fec_shows_it(store: Store) -> None:
    rid = record_id("acd", "cf_num", "ent_num")
    store.records.create(rid, _event("cf_num", "ent_num"), "evt_num")
    assert queries.provider_id_text(store.records.get(rid)) == "-"
    store.records.update(rid, posted_at=1.0)
    assert queries.provider_id_text(store.records.get(rid)) == "posted; not in the FEC yet"
    store.records.update(rid, provider_id="4711")
    assert queries.provider_id_text(store.records.get(rid)) == "EcritureNum 4711"
