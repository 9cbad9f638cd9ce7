"""A private world to run the pipeline in: its own Redis, the sandboxes, real ``hubsync worker`` processes.

The fault suite (``tests/faults``) builds one per scenario; the benchmark (``python -m bench``) builds one
per measurement. Entries go to client files connected to ACD dossiers (by default three firms, dupont, martin
and leroy, one dossier each; a scenario may connect several dossiers of one firm under its one API code) and
are reconciled, entry by entry, against what the ACD sandbox holds in EVERY dossier: an entry is identified by
its exact lines (accounts, labels with their ACK code, amounts), so one posted into another client's dossier
is counted as such, never as landed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from hubsync_sandbox.embedded import EmbeddedRedis
from hubsync_sandbox.samples import DOCUMENT_KIND, document_ref, sample_entry, sample_event, tiny_pdf
from pipeline.store import Store, record_id

FIRMS = {"dupont": "DUPONT01", "martin": "MARTIN01", "leroy": "LEROY01"}
TARGETS: tuple[tuple[str, str], ...] = tuple(FIRMS.items())
KINDS = ("purchase", "sale", "expense_report", "bank_transaction")
INGEST_TASK = "hubsync.ingest_event"


@dataclass
class Batch:
    """What a scenario emitted: entry ids per client file, the ones that deserve a dead letter, emit times."""

    entries: dict[str, list[str]] = field(default_factory=dict)
    expected_dead: set[str] = field(default_factory=set)
    emitted_at: dict[str, float] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    def add(self, other: Batch) -> None:
        """Merge another batch into this one."""
        for cf, ids in other.entries.items():
            self.entries.setdefault(cf, []).extend(ids)
        self.expected_dead |= other.expected_dead
        self.emitted_at.update(other.emitted_at)
        self.events.extend(other.events)

    @property
    def count(self) -> int:
        """How many entries were emitted."""
        return sum(len(ids) for ids in self.entries.values())


class Bed:
    """One scenario's private world: Redis, sandboxes, workers, connected client files."""

    def __init__(
        self,
        tmp: Path,
        visibility_seconds: float | None = None,
        env: dict[str, str] | None = None,
        report: Callable[[str], None] | None = print,
    ) -> None:
        from hubsync_sandbox import SandboxServer
        from hubsync_sandbox.acd import AcdSandbox, demo_acd_firms
        from hubsync_sandbox.docstore import DocStore

        self.tmp = tmp
        self.report = report
        self.run = uuid.uuid4().hex[:6]
        self.redis = EmbeddedRedis(directory=tmp / "redis", appendonly=True).start()
        self.sandbox = SandboxServer(acd=AcdSandbox(demo_acd_firms()), docs=DocStore(), host="127.0.0.1", port=0)
        self.sandbox.start()
        self.store = Store.from_url(self.redis.url)
        self.env = {
            **os.environ,
            "HUBSYNC_REDIS_URL": self.redis.url,
            "HUBSYNC_HOME": str(tmp / "home"),
            "HUBSYNC_SECRET_KEY": os.environ["HUBSYNC_SECRET_KEY"],
            "HUBSYNC_SPOOL_DIR": str(tmp / "spool"),
            "HUBSYNC_DOCUMENT_HOSTS": self.sandbox.url.split("://", 1)[1],
            "HUBSYNC_RETRY_BASE_SECONDS": "0.2",
            "HUBSYNC_RETRY_MAX_SECONDS": "2",
            "HUBSYNC_RETRY_WINDOW_SECONDS": "600",
            "HUBSYNC_BREAKER_THRESHOLD": "3",
            "HUBSYNC_BREAKER_COOLDOWN_SECONDS": "1",
            "HUBSYNC_CONFIRM_WINDOW_SECONDS": "120",
            "HUBSYNC_HTTP_TIMEOUT_SECONDS": "5",
            "HUBSYNC_CONNECT_TIMEOUT_SECONDS": "2",
            # the sandbox's slowest post answers after 5.5 s; an IIS server may go on with a request for 120 s
            "HUBSYNC_ACD_SERVER_REQUEST_TIMEOUT_SECONDS": "8",
            # a chain whose message was lost (pipeline.resume) goes on 30 s after it was due, not 75 minutes
            "HUBSYNC_STALL_SECONDS": "30",
            "HUBSYNC_RESUME_INTERVAL_SECONDS": "5",
            "HUBSYNC_ACD_FEC_TIMEOUT_SECONDS": "30",
            **(env or {}),
        }
        if visibility_seconds is not None:
            self.env.update(
                {
                    "HUBSYNC_VISIBILITY_TIMEOUT_SECONDS": str(visibility_seconds),
                    "HUBSYNC_UNACKED_RESTORE_INTERVAL_SECONDS": "1",
                    "HUBSYNC_UNACKED_RESTORE_THROTTLE": "1",
                    "HUBSYNC_STALL_SECONDS": str(max(20.0, visibility_seconds * 2)),
                }
            )
        self.workers: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.client_files: dict[str, tuple[str, str]] = {}
        self._app: Any = None

    # -- parts ------------------------------------------------------------------------------------

    def start_workers(
        self, count: int = 3, concurrency: int = 8, queues: str = "events,acd", pool: str = "threads"
    ) -> list[subprocess.Popen[bytes]]:
        """Start ``count`` real worker processes on ``queues`` and wait until each is ready."""
        from hubsync_sandbox.demo import start_worker, wait_ready

        started = []
        for _ in range(count):
            log = self.tmp / f"worker{len(self.logs)}.log"
            self.logs.append(log)
            proc = start_worker(self.env, log, queues=queues, concurrency=concurrency, pool=pool)
            self.workers.append(proc)
            started.append((proc, log))
        wait_ready(started)
        return [proc for proc, _ in started]

    @property
    def resumed(self) -> int:
        """Chains the workers published again because nothing moved them (``pipeline.resume``), from their logs."""
        return sum(log.read_text(errors="replace").count("its chain is published again") for log in self.logs)

    def kill_worker(self, index: int = 0) -> None:
        """SIGKILL one worker: no warm shutdown, its unacked messages stay in Redis."""
        proc = self.workers[index]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def connect_firms(self, targets: tuple[tuple[str, str], ...] = TARGETS) -> None:
        """One client file per (firm, dossier), connected from the firm's browser address (API discovery)."""
        from pipeline.acd.connect import connect
        from pipeline.secrets import Secret

        seeds = self.sandbox.acd.firms
        for firm, dossier in targets:
            seed = seeds[firm]
            cf = f"cf_{firm}_{dossier.lower()}_{self.run}"
            connect(
                self.store, cf, self.sandbox.acd_url(firm), seed.cnx, "QONTO", dossier, Secret(seed.api_users["QONTO"])
            )
            self.client_files[cf] = (firm, dossier)

    def cf_of(self, firm: str, dossier: str | None = None) -> str:
        """The (first) client file connected to ``firm`` (or to its ``dossier``)."""
        return next(cf for cf, (f, d) in self.client_files.items() if f == firm and dossier in (None, d))

    # -- events -----------------------------------------------------------------------------------

    def make_batch(
        self,
        count: int,
        tag: str,
        firms: tuple[str, ...] | None = None,
        bad: int = 0,
        documents_every: int = 5,
    ) -> Batch:
        """``count`` valid entries spread over the client files of ``firms`` (all by default; every
        ``documents_every``-th with a PDF), plus ``bad`` entries that deserve a dead letter (an account the
        dossier does not have)."""
        batch = Batch()
        files = [cf for cf, (f, _) in self.client_files.items() if firms is None or f in firms]
        for n in range(count):
            cf = files[n % len(files)]
            kind = KINDS[n % len(KINDS)]
            entry = sample_entry(kind, n)
            entry["id"] = f"ent_{tag}_{n}_{self.run}"
            docs = []
            if documents_every and n % documents_every == 0 and kind in DOCUMENT_KIND:
                data = tiny_pdf(f"{tag} {n} {self.run}")
                doc_id = f"doc_{tag}_{n}_{self.run}"
                info = self.sandbox.docs.put(doc_id, data, content_type="application/pdf", filename=f"p{n}.pdf")
                docs.append(document_ref(doc_id, f"{info['url']}?token=tk{n}", data, DOCUMENT_KIND[kind], f"p{n}.pdf"))
            batch.events.append(sample_event(cf, entry, event_id=f"evt_{tag}_{n}_{self.run}", documents=docs))
            batch.entries.setdefault(cf, []).append(entry["id"])
        for n in range(bad):
            cf = files[n % len(files)]
            entry = sample_entry("bank_transaction", 900 + n)
            entry["id"] = f"ent_{tag}_bad{n}_{self.run}"
            entry["lines"][0]["account"] = "699999"  # not in the dossier's chart of accounts
            batch.events.append(sample_event(cf, entry, event_id=f"evt_{tag}_bad{n}_{self.run}"))
            batch.entries.setdefault(cf, []).append(entry["id"])
            batch.expected_dead.add(entry["id"])
        return batch

    def publisher(self) -> Any:
        """A Celery app bound to this bed's Redis only.

        Not the project's ``tasks`` app: that one reads HUBSYNC_REDIS_URL once, when first imported, and must
        keep pointing at the Redis of the rest of the suite (never at a default or at this bed's).
        """
        if self._app is None:
            from celery import Celery

            app = Celery("hubsync-fault-bed", broker=self.redis.url, set_as_current=False)
            app.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=True)
            self._app = app
        return self._app

    def send(self, name: str, args: list[Any], queue: str, **options: Any) -> None:
        """Publish one task message on this bed's Redis."""
        self.publisher().send_task(name, args=args, queue=queue, **options)

    def publish(self, events: list[Any]) -> None:
        """Send events straight to the `events` queue of this bed's Redis, as the upstream service does."""
        from pipeline.redact import event_argsrepr

        app = self.publisher()
        with app.connection_for_write() as conn:
            for event in events:
                app.send_task(
                    INGEST_TASK,
                    args=[event],
                    queue="events",
                    connection=conn,
                    argsrepr=event_argsrepr(event) if isinstance(event, dict) else "(raw)",
                )

    def emit(self, batch: Batch) -> None:
        """Publish a batch and remember when each entry left."""
        stamp = time.time()
        for event in batch.events:
            batch.emitted_at[event["entry"]["id"]] = stamp
        self.publish(batch.events)

    # -- waiting, looking -------------------------------------------------------------------------

    def record(self, cf: str, entry_id: str) -> Any:
        """An entry's ACD record."""
        return self.store.records.get(f"acd:{cf}:{entry_id}")

    def settled(self, batch: Batch) -> int:
        """How many of the batch's entries are confirmed or dead."""
        states = self.store.records.fields_of_many(self._record_ids(batch), "state")
        return sum(1 for (state,) in states if state in ("confirmed", "dead"))

    def posted(self, batch: Batch) -> int:
        """How many of the batch's entries ACD has taken (posted, confirmed or not)."""
        return sum(1 for (at,) in self.store.records.fields_of_many(self._record_ids(batch), "posted_at") if at)

    @staticmethod
    def _record_ids(batch: Batch) -> list[str]:
        return [record_id("acd", cf, entry_id) for cf, ids in batch.entries.items() for entry_id in ids]

    def wait_posted(self, batch: Batch, at_least: int, timeout: float) -> None:
        """Wait until ``at_least`` of the batch's entries are posted (confirmations come in batches, later)."""
        self.wait(lambda: self.posted(batch) >= at_least, timeout, f"{at_least} entries posted")

    def wait_settled(self, batch: Batch, timeout: float, at_least: int | None = None) -> None:
        """Wait until every entry (or ``at_least`` of them) is confirmed or dead."""
        target = batch.count if at_least is None else at_least
        deadline = time.monotonic() + timeout
        while self.settled(batch) < target:
            if time.monotonic() > deadline:
                states = Counter(
                    (r.state, r.step) if (r := self.record(cf, e)) else ("missing", "")
                    for cf, ids in batch.entries.items()
                    for e in ids
                )
                raise AssertionError(f"not settled after {timeout}s: {dict(states)}\n{self.log_tail()}")
            time.sleep(0.25)

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait for a condition."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.2)

    def log_tail(self, chars: int = 2000) -> str:
        """The end of every worker's log."""
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-chars:]}" for log in self.logs)

    def workers_alive(self) -> int:
        """How many worker processes still run."""
        return sum(1 for proc in self.workers if proc.poll() is None)

    # -- the end ----------------------------------------------------------------------------------

    def placements(self, batch: Batch) -> dict[str, list[tuple[str, str]]]:
        """Every dossier of every sandboxed firm that holds each of the batch's entries (by its exact lines)."""
        sigs: dict[tuple[Any, ...], str] = {}
        for cf, ids in batch.entries.items():
            for entry_id in ids:
                rec = self.record(cf, entry_id)
                if rec is not None and rec.payload:
                    sigs[signature(rec.payload["LignesEcriture"])] = rec.id
        found: dict[str, list[tuple[str, str]]] = {}
        for firm, seed in self.sandbox.acd.firms.items():
            for dossier in seed.dossiers:
                for stored in self.sandbox.acd.entries(firm, dossier):
                    rid = sigs.get(signature(stored.get("LignesEcriture", [])))
                    if rid is not None:
                        found.setdefault(rid, []).append((firm, dossier))
        return found

    def reconcile(self, scenario: str, batch: Batch) -> dict[str, Any]:
        """Compare what was emitted with what ACD holds, entry by entry and dossier by dossier; print one line."""
        from pipeline.acd.reconcile import reconcile_acd

        reports = {cf: reconcile_acd(self.store, cf) for cf in self.client_files}
        where = self.placements(batch)
        landed, lost, dead, unexpected_dead, wrong, duplicates = 0, [], [], [], [], 0
        for cf, ids in batch.entries.items():
            home = self.client_files[cf]
            for entry_id in ids:
                rec = self.record(cf, entry_id)
                places = where.get(rec.id, []) if rec is not None else []
                elsewhere = [p for p in places if p != home]
                copies = len(places) - len(elsewhere)
                if elsewhere:
                    wrong.append((entry_id, home, elsewhere))
                duplicates += max(0, copies - 1)
                if rec is not None and rec.state == "confirmed" and copies >= 1 and not elsewhere:
                    landed += 1
                elif rec is not None and rec.state == "dead" and not places:
                    dead.append(entry_id)
                    if entry_id not in batch.expected_dead:
                        unexpected_dead.append((entry_id, rec.step, (rec.last_error or {}).get("error_class")))
                elif not elsewhere:
                    lost.append((entry_id, rec.state if rec else None, copies))
        result = {
            "scenario": scenario,
            "emitted": batch.count,
            "landed": landed,
            "duplicates": duplicates,
            "lost": len(lost),
            "wrong_dossier": len(wrong),
            "resumed": self.resumed,
            "dead_lettered": len(dead),
            "expected_dead": len(batch.expected_dead),
            "unexpected_dead": unexpected_dead,
            "lost_entries": lost[:20],
            "wrong_entries": wrong[:20],
            "reconcile_missing": sum(len(r.missing) for r in reports.values()),
            "reconcile_duplicated": sum(len(r.duplicated) for r in reports.values()),
            "reconcile_unknown": sum(len(r.unknown) for r in reports.values()),
            "reconcile_errors": [r.error for r in reports.values() if r.error],
        }
        line = (
            f"{scenario:<34} entries {batch.count:>4}  landed {landed:>4}  lost {len(lost)}  duplicates {duplicates}  "
            f"wrong dossier {len(wrong)}  dead-lettered {len(dead)} (expected {len(batch.expected_dead)})"
            + (f"  resumed {self.resumed}" if self.resumed else "")
        )
        if self.report is not None:
            self.report(line)
        return result

    def acd_counts(self) -> dict[str, int]:
        """What the ACD sandbox counted over every firm: logins, sessions opened, FEC requests."""
        acd = self.sandbox.acd
        firms = sorted({firm for firm, _ in self.client_files.values()})
        return {
            "logins": sum(acd.logins(f) for f in firms),
            "session_opens": sum(acd.session_opens(f) for f in firms),
            "fec_requests": sum(acd.fec_requests(f) for f in firms),
        }

    def stop(self) -> None:
        """Stop the workers, the sandboxes and Redis (each of them, whatever fails on the way)."""
        try:
            for proc in self.workers:
                if proc.poll() is None:
                    proc.terminate()
            for proc in self.workers:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        finally:
            try:
                if self._app is not None:
                    self._app.close()
                self.sandbox.stop()
                self.store.close()
            finally:
                self.redis.stop()


def signature(lines: list[dict[str, Any]]) -> tuple[tuple[str, str, Decimal, Decimal], ...]:
    """What identifies a posted entry in ACD: each line's account, label (ACK code included) and amounts."""
    return tuple(
        (str(x.get("Compte")), str(x.get("Libelle")), Decimal(str(x.get("Debit"))), Decimal(str(x.get("Credit"))))
        for x in lines
    )


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0 to 100) of ``values``, nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]
