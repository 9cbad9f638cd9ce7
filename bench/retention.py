"""Memory per entry in Redis inside and after the history window, and what operator reads cost as history grows.

``python -m bench.retention`` starts a private ``redis-server`` and writes records directly through the
``Store`` (no worker, no sandbox: the keys an ACD entry leaves are the same as in the pipeline):

* **memory**: N settled ACD entries, each with its event (one supporting document), its dedupe key, its ACK
  code, the body that was posted, its documents' progress and its attempts; ``INFO used_memory`` before and
  after, divided by N. Then the clock moves past ``HUBSYNC_HISTORY_DAYS`` and retention trims them; then the
  event-dedupe keys expire (90 days). Every per-entry key is in the figures (record, attempts, ACK owner,
  indexes, dedupe key, counters).
* **timing**: for each size, that many settled entries spread over a year (those older than the window are
  trimmed as they are written, as in a hub that has run that long), one dead letter per thousand (at least 60); then the
  median time of ``hubsync status`` (in-process) and of the dashboard's dead-letter, health and audit pages.

It prints a table and writes ``bench/out/retention.json``; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from hubsync_sandbox.embedded import EmbeddedRedis
from hubsync_sandbox.samples import document_ref, sample_entry, sample_event
from pipeline import runtime
from pipeline.acd.mapping import map_entry
from pipeline.config import reset_settings
from pipeline.deadletters import dead_letter_record
from pipeline.errors import PermanentError
from pipeline.store import Connection, Store, keys, record_id
from pipeline.store.models import use_clock
from schemas.event import load_event

DAY = 86400.0
OUT = Path(__file__).resolve().parent / "out"
CLIENT_FILES = 20
DEAD_LETTERS_MIN = 60  # more than a page, so the first page is full at every size
SCOPE = "acd:https://cabinet.example/iSuiteExpert:DUPONT01"


class BenchRefusal(PermanentError):
    """Stands for an ACD refusal, to give the dashboard dead letters to show."""

    default_hint = "Fix the entry in the hub and replay."


class Clock:
    """The store's clock, moved by the bench so that records settle in the past."""

    def __init__(self) -> None:
        self.at = time.time()

    def __call__(self) -> float:
        return self.at


_TEMPLATES: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}


def _event(n: int, cf: str) -> dict[str, Any]:
    """A realistic event (its size is what matters here), built from one template per entry kind."""
    kind = n % 4
    if kind not in _TEMPLATES:
        entry = sample_entry(("purchase", "sale", "expense_report", "bank_transaction")[kind], kind)
        event = sample_event(cf, entry)
        _TEMPLATES[kind] = (event, map_entry(load_event(event).entry, "ABCD", 1))
    template = _TEMPLATES[kind][0]
    data = f"document {n}".encode()
    doc = document_ref(f"doc_{n:09d}", f"https://docs.hub.example/d/{n}?token=t0k3n{n:09d}", data, "receipt", "r.pdf")
    return {
        **template,
        "event_id": f"evt_{n:09d}_{cf}",
        "client_file_id": cf,
        "entry": {**template["entry"], "id": f"ent_{n:09d}"},
        "documents": [doc],
    }


def _payload(n: int, ack: str) -> dict[str, Any]:
    """The body the map step would post (the template's, with this entry's ACK code in its labels)."""
    payload = _TEMPLATES[n % 4][1]
    lines = [
        {**line, "Libelle": str(line.get("Libelle", "")).replace("(#ABCD#)", f"(#{ack}#)")}
        for line in payload.get("LignesEcriture", [])
    ]
    return {**payload, "LignesEcriture": lines}


def write_settled_entry(store: Store, n: int, cf: str, clock: Clock, at: float) -> str:
    """Write one ACD entry's whole life as the chain does (received, documents, ACK, body, posted, confirmed)."""
    clock.at = at
    event = _event(n, cf)
    rid = record_id("acd", cf, event["entry"]["id"])
    store.records.create(rid, event, event["event_id"])
    store.events.mark(event["event_id"], "done")
    store.records.update(rid, enqueued_event=event["event_id"])
    doc = event["documents"][0]
    meta = {"sha256": doc["sha256"], "size": doc["size"], "content_type": "application/pdf", "filename": "r.pdf"}
    # what update_doc writes, without its read (the bench writes through a pipeline)
    store.records.update(rid, **{f"doc:{doc['id']}": meta})
    store.records.update(rid, state="received", step="fetch", retry_since=None, next_retry_at=None)
    ack = store.acks.allocate(SCOPE, rid)
    store.records.update(rid, ack=ack)
    meta.update(name=f"{ack}-{event['entry']['id']}-{doc['id']}-0123456789.pdf", ged_id=n)
    store.records.update(rid, **{f"doc:{doc['id']}": meta})
    store.records.update(rid, state="received", step="rename", retry_since=None, next_retry_at=None)
    store.records.update(rid, payload=_payload(n, ack))
    store.records.update(rid, state="received", step="map", retry_since=None, next_retry_at=None)
    store.records.update(rid, post_started_at=at)
    store.records.update(rid, posted_at=at, post_started_at=None, state="posted")
    store.records.add_attempt(rid, {"step": "post", "outcome": "posted"})
    store.records.update(rid, state="posted", step="post", retry_since=None, next_retry_at=None)
    # the shared FEC read's outcome, then the confirmation with ACD's EcritureNum
    store.records.update(rid, fec_checked_at=at + 5.0, fec_found=[str(100_000 + n)])
    store.records.update(rid, provider_id=str(100_000 + n), confirmed_at=at + 5.0, state="confirmed")
    store.records.add_attempt(rid, {"step": "confirm", "outcome": "confirmed", "provider_id": 100_000 + n})
    store.records.update(rid, state="confirmed", step="confirm", retry_since=None, next_retry_at=None)
    return rid


def fill(url: str, first: int, count: int, clock: Clock, times: Callable[[int], float], batch: int = 500) -> float:
    """Write ``count`` settled entries in pipelined batches; returns entries per second."""
    client = redis.Redis.from_url(url, decode_responses=True)
    started = time.monotonic()
    for start in range(first, first + count, batch):
        pipe = client.pipeline(transaction=False)
        bulk = Store(pipe)
        bulk.retention.trim_on_settle = False  # trimmed per batch below, with the real store
        for n in range(start, min(start + batch, first + count)):
            write_settled_entry(bulk, n, f"cf_{n % CLIENT_FILES:03d}", clock, times(n))
        pipe.execute()
    return count / (time.monotonic() - started)


def fill_lean(url: str, first: int, count: int, clock: Clock, times: Callable[[int], float]) -> None:
    """Write ``count`` settled entries with the two writes that count and index them (created, then confirmed
    with its ACK code and ACD id): the read timings need many records, not their bytes."""
    client = redis.Redis.from_url(url, decode_responses=True)
    for start in range(first, first + count, 1000):
        pipe = client.pipeline(transaction=False)
        bulk = Store(pipe)
        bulk.retention.trim_on_settle = False
        for n in range(start, min(start + 1000, first + count)):
            clock.at = at = times(n)
            cf = f"cf_{n % CLIENT_FILES:03d}"
            rid = record_id("acd", cf, f"ent_{n:09d}")
            bulk.records.create(rid, {"entry": {"id": f"ent_{n:09d}"}}, f"evt_{n:09d}")
            bulk.events.mark(f"evt_{n:09d}", "done")
            bulk.records.update(
                rid, state="confirmed", step="confirm", ack="ABCD", provider_id=n, posted_at=at, confirmed_at=at
            )
        pipe.execute()


def used_memory(client: Any) -> int:
    """Bytes Redis has allocated for data (``INFO memory``)."""
    return int(client.info("memory")["used_memory"])


def _settle_down(client: Any) -> int:
    """``used_memory`` once Redis had a moment to shrink the tables deletions emptied (its cron does it)."""
    time.sleep(1.5)
    return used_memory(client)


def measure_memory(url: str, entries: int, report: Callable[[str], None]) -> dict[str, Any]:
    """Bytes per entry inside the window, after it, and once the dedupe keys expired (steady state: the
    entries past the window are written in batches and trimmed as they go, as in a hub that has run for
    months, so the figure is what each old entry costs, not a transient peak)."""
    store = Store.from_url(url)
    clock = Clock()
    real_now = time.time()
    use_clock(clock)
    try:
        store.r.flushdb()
        base = _settle_down(store.r)
        fill(url, 0, entries, clock, lambda n: real_now - DAY + n * 0.001)
        inside = _settle_down(store.r)
        sample = record_id("acd", "cf_000", "ent_000000000")
        record_bytes = int(store.r.memory_usage(keys.record(sample), samples=0) or 0)

        store.r.flushdb()
        base_after = _settle_down(store.r)
        trimmed = 0
        for first in range(0, entries, 500):
            count = min(500, entries - first)
            fill(url, first, count, clock, lambda n: real_now - 40 * DAY + n * 0.001)
            clock.at = real_now
            trimmed += store.retention.trim_expired(at=real_now, limit=10_000)
        after = _settle_down(store.r)
        for key in store.r.scan_iter(keys.event("*"), count=1000):
            store.r.delete(key)
        after_90 = _settle_down(store.r)
        example = store.r.hget(keys.kept(keys.group("acd", "cf_000")), "ent_000000000")
        breakdown = {}
        for prefix in ("hubsync:kept:*", "hubsync:ack:*", "hubsync:idx*", "hubsync:states", "hubsync:entry:*"):
            breakdown[prefix] = round(
                sum(int(store.r.memory_usage(k, samples=0) or 0) for k in store.r.scan_iter(prefix, count=1000))
                / entries,
                1,
            )
    finally:
        use_clock(None)
    figures = {
        "entries": entries,
        "trimmed": trimmed,
        "bytes_per_entry_inside_window": round((inside - base) / entries),
        "record_hash_bytes_inside_window": record_bytes,
        "bytes_per_entry_after_window": round((after - base_after) / entries),
        "bytes_per_entry_after_90_days": round((after_90 - base_after) / entries),
        "memory_usage_per_entry_after_90_days": breakdown,
        "compact_form_example": example,
    }
    report(
        f"memory, {entries} settled ACD entries: {figures['bytes_per_entry_inside_window']} B/entry inside the "
        f"window (record hash alone {record_bytes} B), {figures['bytes_per_entry_after_window']} B after it "
        f"(event-dedupe keys still there), {figures['bytes_per_entry_after_90_days']} B once they expire (day 90); "
        f"MEMORY USAGE per entry after day 90: {breakdown}"
    )
    return figures


def _redis_commands(client: Any, fn: Callable[[], Any]) -> int:
    """How many commands Redis ran for one call of ``fn`` (``INFO commandstats``; the machine's noise does not
    move it, so it shows whether a read grows with the history)."""

    def total() -> int:
        return sum(int(stats["calls"]) for stats in client.info("commandstats").values())

    before = total()
    fn()
    return total() - before - 1  # the first INFO counts itself in the second


def _median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure_reads(url: str, size: int, repeats: int, report: Callable[[str], None]) -> dict[str, Any]:
    """Fill to ``size`` settled entries over a year (one dead letter per thousand, at least 60), then time the reads."""
    from click.testing import CliRunner

    from pipeline.cli import main
    from pipeline.dashboard.app import Wiring, create_app
    from pipeline.dashboard.auth import parse_users

    store = Store.from_url(url)
    store.r.flushdb()
    for i in range(CLIENT_FILES):
        store.connections.save(
            Connection("acd", f"cf_{i:03d}", {"url": "https://cabinet.example/iSuiteExpert", "dossier": "DUPONT01"})
        )
    clock = Clock()
    real_now = time.time()
    use_clock(clock)
    spread = 365 * DAY
    written = 0
    fill_seconds = 0.0
    try:
        step = 50_000
        while written < size:
            count = min(step, size - written)
            started = time.monotonic()
            fill_lean(url, written, count, clock, lambda n: real_now - spread + spread * n / size)
            clock.at = real_now
            while store.retention.trim_expired(at=real_now, limit=2000) == 2000:
                pass
            fill_seconds += time.monotonic() - started
            written += count
        clock.at = real_now
        for n in range(0, size, max(1, size // max(DEAD_LETTERS_MIN, size // 1000))):
            cf = f"cf_{n % CLIENT_FILES:03d}"
            rid = record_id("acd", cf, f"ent_dead_{n:09d}")
            rec = store.records.create(rid, _event(n, cf), f"evt_dead_{n}")
            store.records.add_attempt(rid, {"step": "post", "outcome": "dead", "error_class": "BenchRefusal"})
            dead_letter_record(store, rec, "post", BenchRefusal(f"entry {n} refused"))
    finally:
        use_clock(None)
    states = store.records.all_states()
    total = sum(sum(counts.values()) for counts in states.values())
    full = sum(int(store.r.scard(keys.index(keys.group("acd", f"cf_{i:03d}")))) for i in range(CLIENT_FILES))

    os.environ["HUBSYNC_REDIS_URL"] = url
    reset_settings()
    runtime.reset()
    runner = CliRunner()

    def status() -> None:
        result = runner.invoke(main, ["status"], catch_exceptions=False)
        assert result.exit_code == 0, result.output

    user = "bench:operator:pbkdf2:sha256:1$x$y"
    app = create_app(
        Wiring(store=lambda: store, users=parse_users(user), enqueue=lambda *a: None, ingest=lambda s, r: "ok"),
        secret_key="bench",
    )
    client = app.test_client()
    with client.session_transaction() as session:
        session.update(user="bench", role="operator")

    def page(path: str) -> Callable[[], None]:
        def get() -> None:
            response = client.get(path)
            assert response.status_code == 200, response.status_code

        return get

    figures = {
        "records": total,
        "full_records": full,
        "dead_letters_open": store.dead_letters.open_count(),
        "fill_entries_per_second": round(size / fill_seconds),
        "redis_used_bytes": used_memory(store.r),
        "status_seconds": _median_seconds(status, repeats),
        "dashboard_first_page_seconds": _median_seconds(page("/"), repeats),
        "dashboard_health_seconds": _median_seconds(page("/health"), repeats),
        "dashboard_audit_seconds": _median_seconds(page("/audit"), repeats),
        "status_redis_commands": _redis_commands(store.r, status),
        "dashboard_first_page_redis_commands": _redis_commands(store.r, page("/")),
        "dashboard_health_redis_commands": _redis_commands(store.r, page("/health")),
        "dashboard_filtered_page_seconds": _median_seconds(
            page("/?client_file=cf_003&error_class=BenchRefusal"), repeats
        ),
    }
    report(
        f"{total:>9} records ({full} inside the window, {figures['dead_letters_open']} dead letters, Redis "
        f"{figures['redis_used_bytes'] / 1e6:.0f} MB): status {figures['status_seconds'] * 1000:.1f} ms, "
        f"dashboard first page {figures['dashboard_first_page_seconds'] * 1000:.1f} ms, health "
        f"{figures['dashboard_health_seconds'] * 1000:.1f} ms, audit "
        f"{figures['dashboard_audit_seconds'] * 1000:.1f} ms, "
        f"filtered {figures['dashboard_filtered_page_seconds'] * 1000:.1f} ms; Redis commands: status "
        f"{figures['status_redis_commands']}, first page {figures['dashboard_first_page_redis_commands']}, health "
        f"{figures['dashboard_health_redis_commands']}"
    )
    return figures


def main() -> None:
    """Run the measurements and write ``bench/out/retention.json``."""
    parser = argparse.ArgumentParser(prog="python -m bench.retention", description=__doc__.split("\n\n")[0])
    parser.add_argument("--memory-entries", type=int, default=10_000, help="settled entries for the memory figures")
    parser.add_argument("--sizes", default="10000,1000000", help="comma-separated record counts to time the reads at")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each read (the median is kept)")
    args = parser.parse_args()
    os.environ.setdefault("HUBSYNC_SECRET_KEY", "bench-only-" + "x" * 32)
    with tempfile.TemporaryDirectory(prefix="hubsync-retention-") as tmp:
        server = EmbeddedRedis(directory=Path(tmp)).start()
        try:
            print(f"private redis-server at {server.url}")
            out: dict[str, Any] = {"memory": measure_memory(server.url, args.memory_entries, print), "reads": []}
            for size in (int(s) for s in args.sizes.split(",") if s.strip()):
                out["reads"].append(measure_reads(server.url, size, args.repeats, print))
        finally:
            server.stop()
    OUT.mkdir(exist_ok=True)
    (OUT / "retention.json").write_text(json.dumps(out, indent=2))
    print(f"figures written to {OUT / 'retention.json'}")


if __name__ == "__main__":
    main()
