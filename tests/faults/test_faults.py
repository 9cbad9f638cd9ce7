"""Nothing in a wrong dossier, nothing lost, nothing posted twice, under faults: several real workers, a few
hundred entries, three firms (or several dossiers of one firm under one API code).

Each scenario injects one kind of trouble while a batch flows, then reconciles what was emitted with what the
ACD sandbox holds in every dossier, entry by entry by its exact lines, and prints one line (entries, landed,
lost, duplicates, in a wrong dossier, dead-lettered). Every batch carries a few entries that deserve a dead
letter (an account missing from the dossier's chart): they, and only they, must be dead-lettered.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from hubsync_sandbox import Fault
from pipeline.deliveries import RedeliveryLimitReached, max_deliveries
from pipeline.store.keys import deliveries as counter_key
from tests.faults.conftest import ENTRIES, WORKERS, Bed, assert_reconciled, percentile

pytestmark = pytest.mark.integration
BAD = 3
SETTLE_SECONDS = 240


def _redelivered(bed: Bed) -> int:
    """Messages a worker started again after another one died running them (the workers log each)."""
    return sum(log.read_text(errors="replace").count("delivered again: run") for log in bed.logs)


def test_worker_killed_mid_chain_loses_nothing_and_posts_nothing_twice(make_bed) -> None:
    # given three workers whose unacked messages come back 10 s after their worker died
    bed: Bed = make_bed(visibility_seconds=10)
    # (half the posts take a second, so the kill catches calls in flight, not only queued messages)
    bed.sandbox.acd.set_fault(None, Fault(mode="slow", route="compta/ecriture", delay_seconds=1.0, probability=0.5))
    batch = bed.make_batch(ENTRIES, "kill", bad=BAD)
    # when one of them is SIGKILLed once a quarter of the batch is posted
    bed.emit(batch)
    bed.wait_posted(batch, batch.count // 4, 120)
    bed.kill_worker(0)
    killed_at = time.monotonic()
    # then the others finish every chain, the killed worker's messages included
    bed.wait_settled(batch, SETTLE_SECONDS)
    print(
        f"killed worker 0; the rest settled {time.monotonic() - killed_at:.1f}s later; "
        f"{_redelivered(bed)} messages ran more than once"
    )
    assert bed.workers_alive() == len(bed.workers) - 1
    assert _redelivered(bed) >= 1, "the kill should have caught tasks in flight"
    assert_reconciled(bed.reconcile("worker SIGKILLed", batch))


def test_poison_message_is_dead_lettered_after_the_delivery_cap(make_bed) -> None:
    # given a record whose post message already ran (and killed its worker) as often as allowed
    bed: Bed = make_bed(workers=1)
    batch = bed.make_batch(1, "poison", documents_every=0)
    bed.emit(batch)
    bed.wait_settled(batch, 60)
    cf, (entry_id,) = next(iter(batch.entries.items()))
    rid = f"acd:{cf}:{entry_id}"
    bed.store.records.update(rid, state="received", confirmed_at=None, provider_id=None, posted_at=None)
    task_id = f"poison-{bed.run}"
    bed.store.r.set(counter_key(task_id, 0), max_deliveries() - 1)
    # when that message is delivered once more (marked redelivered, as the broker marks a restored message)
    generation = bed.store.records.get(rid).generation
    bed.send("hubsync.acd.post_entry", [rid, generation], "acd", task_id=task_id, headers={"redelivered": True})
    # then it does not run: its record is dead-lettered, naming the cap, and the worker goes on
    bed.wait(lambda: bed.store.records.get(rid).state == "dead", 30, "the poison record dead-lettered")
    (dl,) = [d for d in bed.store.dead_letters.all("acd") if d.record_id == rid]
    assert dl.error_class == RedeliveryLimitReached.__name__ and dl.step == "post"
    assert f"delivered {max_deliveries() + 1} times" in dl.message
    assert len([e for e in bed.sandbox.acd.entries("dupont", "DUPONT01") if e]) == 1  # posted once, not again
    after = bed.make_batch(6, "afterpoison", documents_every=0)
    bed.emit(after)
    bed.wait_settled(after, 60)
    assert bed.workers_alive() == 1


def test_redis_restarted_mid_run_loses_nothing(make_bed) -> None:
    # given an append-only Redis and workers whose unacked messages come back 10 s after a lost connection
    bed: Bed = make_bed(visibility_seconds=10)
    batch = bed.make_batch(ENTRIES, "redis", bad=BAD)
    bed.emit(batch)
    bed.wait_posted(batch, batch.count // 4, 120)
    # when Redis stops and starts again on the same port and directory
    done_before = bed.settled(batch)
    bed.redis.stop()
    time.sleep(3)
    bed.redis.start()
    print(f"Redis restarted with {done_before}/{batch.count} entries settled")
    # then every worker reconnects and every entry lands once
    bed.wait_settled(batch, SETTLE_SECONDS)
    assert bed.workers_alive() == len(bed.workers)
    assert_reconciled(bed.reconcile("Redis restarted", batch))


def _latencies(bed: Bed, batch, firms: set[str]) -> list[float]:
    out = []
    for cf, ids in batch.entries.items():
        if bed.client_files[cf][0] not in firms:
            continue
        for entry_id in ids:
            rec = bed.record(cf, entry_id)
            if rec is not None and rec.confirmed_at and entry_id not in batch.expected_dead:
                out.append(rec.confirmed_at - batch.emitted_at[entry_id])
    return out


def test_one_firm_server_off_then_back_lands_once_and_others_keep_their_pace(make_bed) -> None:
    bed: Bed = make_bed()
    others = {"dupont", "leroy"}
    # given the other firms' normal latency
    before = bed.make_batch(ENTRIES // 3, "before", firms=tuple(sorted(others)))
    bed.emit(before)
    bed.wait_settled(before, SETTLE_SECONDS)
    # when martin's server is off while a mixed batch flows
    bed.sandbox.acd.set_fault("martin", Fault(mode="off"))
    martin = bed.make_batch(ENTRIES // 3, "off", firms=("martin",), bad=1)
    during = bed.make_batch(ENTRIES // 3, "during", firms=tuple(sorted(others)), bad=BAD - 1)
    bed.emit(martin)
    bed.emit(during)
    bed.wait_settled(during, SETTLE_SECONDS)
    assert bed.settled(martin) == 0, "martin's entries cannot land while its server is off"
    off_for = 12.0
    time.sleep(max(0.0, off_for - (time.time() - min(martin.emitted_at.values()))))
    bed.sandbox.acd.clear_faults("martin")
    back_at = time.time()
    # then every martin entry lands once after it is back
    bed.wait_settled(martin, SETTLE_SECONDS)
    lat_before, lat_during = _latencies(bed, before, others), _latencies(bed, during, others)
    martin_after = [
        bed.record(cf, e).confirmed_at - back_at
        for cf, ids in martin.entries.items()
        for e in ids
        if e not in martin.expected_dead
    ]
    print(
        f"other firms' latency before: p50 {percentile(lat_before, 50):.2f}s p99 {percentile(lat_before, 99):.2f}s; "
        f"during martin's outage: p50 {percentile(lat_during, 50):.2f}s p99 {percentile(lat_during, 99):.2f}s; "
        f"martin all landed {max(martin_after):.1f}s after its server came back"
    )
    batch = before
    batch.add(martin)
    batch.add(during)
    assert_reconciled(bed.reconcile("one firm's server off", batch))


def test_commit_then_drop_and_slow_answers_on_posts_post_nothing_twice(make_bed) -> None:
    # given every firm's server dropping some posts after committing them, and answering others slowly
    # (some past the client's 5 s timeout: the entry is committed half a second after the client gave up)
    bed: Bed = make_bed()
    for firm in ("dupont", "martin", "leroy"):
        bed.sandbox.acd.set_fault(firm, Fault(mode="drop_after_commit", route="compta/ecriture", probability=0.15))
        bed.sandbox.acd.set_fault(
            firm, Fault(mode="slow", route="compta/ecriture", delay_seconds=2.5, probability=0.15)
        )
        bed.sandbox.acd.set_fault(
            firm, Fault(mode="slow", route="compta/ecriture", delay_seconds=5.5, probability=0.03)
        )
    batch = bed.make_batch(ENTRIES, "drop", bad=BAD)
    # when the batch flows
    bed.emit(batch)
    bed.wait_settled(batch, SETTLE_SECONDS)
    # then each entry is in ACD once, the dropped ones found again by their ACK code
    dropped = sum(
        1
        for f in ("dupont", "martin", "leroy")
        for c in bed.sandbox.acd.calls(f)
        if c[1].endswith("compta/ecriture") and c[2] == 0
    )
    print(f"{dropped} posts answered by a dropped connection or a timeout")
    assert dropped > 0
    assert_reconciled(bed.reconcile("commit-then-drop, slow", batch))


def test_429_storm_with_retry_after_loses_nothing(make_bed) -> None:
    # given every firm shedding load: half of all calls answer 429 with Retry-After for 15 s
    bed: Bed = make_bed()
    bed.sandbox.acd.set_fault(None, Fault(mode="rate_limit", retry_after=2, probability=0.5))
    threading.Timer(15.0, bed.sandbox.acd.clear_faults).start()
    batch = bed.make_batch(ENTRIES, "429", bad=BAD)
    bed.emit(batch)
    bed.wait_settled(batch, SETTLE_SECONDS)
    limited = sum(1 for f in ("dupont", "martin", "leroy") for c in bed.sandbox.acd.calls(f) if c[2] == 429)
    print(f"{limited} calls answered 429")
    assert limited > 0
    assert_reconciled(bed.reconcile("429 storm", batch))


def test_garbage_and_truncated_answers_lose_nothing(make_bed) -> None:
    # given servers answering a quarter of the calls with invalid JSON, a wrong envelope or an HTML page,
    # and cutting some post answers in half after committing, for 15 s
    bed: Bed = make_bed()
    bed.sandbox.acd.set_fault(None, Fault(mode="truncate", route="compta/ecriture", probability=0.1))
    bed.sandbox.acd.set_fault(None, Fault(mode="garbage", probability=0.25))
    threading.Timer(15.0, bed.sandbox.acd.clear_faults).start()
    batch = bed.make_batch(ENTRIES, "garbage", bad=BAD)
    bed.emit(batch)
    bed.wait_settled(batch, SETTLE_SECONDS)
    seen = Counter(
        a.get("error_class")
        for cf, ids in batch.entries.items()
        for e in ids
        for a in bed.store.records.attempts(f"acd:{cf}:{e}")
        if a.get("outcome") == "retry"
    )
    print(f"retried after: {dict(seen)}")
    assert seen["MalformedResponse"] + seen["PostOutcomeUnknown"] > 0
    assert_reconciled(bed.reconcile("garbage answers", batch))


def test_server_restarts_mid_run_cost_one_login_per_dossier_and_lose_nothing(make_bed) -> None:
    # given every firm's server answering posts a little slowly, so that restarts catch calls in flight
    bed: Bed = make_bed()
    bed.sandbox.acd.set_fault(None, Fault(mode="slow", route="compta/ecriture", delay_seconds=0.3, probability=0.5))
    batch = bed.make_batch(ENTRIES, "restart", bad=BAD)
    bed.emit(batch)
    # when every firm's server restarts twice (every token and session gone), a quarter and half-way through
    logins = []
    for share in (4, 2):
        bed.wait_posted(batch, batch.count // share, 120)
        before = bed.acd_counts()["logins"]
        bed.sandbox.acd.restart()
        logins.append(before)
    bed.wait_settled(batch, SETTLE_SECONDS)
    after = bed.acd_counts()["logins"]
    dossiers = len(bed.client_files)
    print(f"2 restarts of {dossiers} dossiers' servers: {after - logins[0]} logins after them (at most {2 * dossiers})")
    assert after - logins[0] <= 2 * dossiers  # one per dossier per restart, not one per worker or thread
    assert_reconciled(bed.reconcile("server restarted twice", batch))


def test_500_after_commit_and_backup_500s_post_nothing_twice(make_bed) -> None:
    # given servers that commit some posts then answer a French .NET 500, and answer others "MySQL away" (no work)
    bed: Bed = make_bed()
    for firm in ("dupont", "martin", "leroy"):
        bed.sandbox.acd.set_fault(firm, Fault(mode="error_after_commit", route="compta/ecriture", probability=0.15))
        bed.sandbox.acd.set_fault(firm, Fault(mode="backup", route="compta/ecriture", probability=0.05))
    batch = bed.make_batch(ENTRIES, "err500", bad=BAD)
    # when the batch flows
    bed.emit(batch)
    bed.wait_settled(batch, SETTLE_SECONDS)
    # then each entry is in ACD once: those committed before the 500 were found in the FEC, not posted again
    errors = sum(
        1
        for f in ("dupont", "martin", "leroy")
        for c in bed.sandbox.acd.calls(f)
        if c[1].lower().endswith("compta/ecriture") and c[2] == 500
    )
    found = sum(
        1
        for cf, ids in batch.entries.items()
        for e in ids
        if "found_in_fec" in [a.get("outcome") for a in bed.store.records.attempts(f"acd:{cf}:{e}")]
    )
    print(f"{errors} posts answered 500; {found} entries committed before their 500 were found in the FEC")
    assert errors > 0 and found > 0
    assert_reconciled(bed.reconcile("500 after commit", batch))


def test_several_dossiers_of_one_api_code_on_three_workers_with_short_tokens_stay_apart(make_bed) -> None:
    # given one firm's dossiers DUPONT01 and DUPONT04 under ONE API code, three worker processes, ACD killing every
    # token 2 s after its issue and forgetting a session now and then
    bed: Bed = make_bed(workers=0, targets=(("dupont", "DUPONT01"), ("dupont", "DUPONT04")))
    bed.sandbox.acd.token_lifetime_seconds = bed.sandbox.acd.token_idle_seconds = 2.0
    bed.sandbox.acd.set_fault("dupont", Fault(mode="session_lost", probability=0.03))
    bed.sandbox.acd.set_fault("dupont", Fault(mode="slow", route="compta/ecriture", delay_seconds=0.2, probability=0.5))
    bed.start_workers(max(3, WORKERS))
    counts = bed.acd_counts()
    batch = bed.make_batch(ENTRIES, "dossiers", bad=BAD)
    started = time.monotonic()
    # when the batch flows into both dossiers at once
    bed.emit(batch)
    bed.wait_settled(batch, SETTLE_SECONDS)
    took = time.monotonic() - started
    # then every entry is in its own dossier, once; none in the other
    after = bed.acd_counts()
    print(
        f"{batch.count} entries over 2 dossiers of one API code in {took:.0f}s with 2 s tokens: "
        f"{after['logins'] - counts['logins']} logins, {after['session_opens'] - counts['session_opens']} sessions "
        f"opened, {after['fec_requests'] - counts['fec_requests']} FEC reads"
    )
    assert after["logins"] - counts["logins"] >= 4  # the tokens did die and were replaced while the entries flowed
    assert_reconciled(bed.reconcile("2 dossiers, 1 API code, 2 s tokens", batch))
