"""The Cegid Loop part of ``hubsync demo`` (and of the tests that want its figures): what ``connect`` says to a
firm, then a day's receipts and invoices exported while things go wrong — Loop down when the 20:00 export
starts, a 429 storm with ``Retry-After``, one deposit committed and then cut — and the figures that show
nothing was deposited twice and nothing was lost without an operator's decision.

Loop runs on a loopback server of its own (``LoopServer``) so that "down" is a real one: the server is
stopped and its port refuses connections, then it starts again on the same port with the same state.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hubsync_sandbox.cegid import (
    DEMO_API_KEY,
    DEMO_API_SECRET,
    DEMO_DOMAIN,
    DEMO_SUBSCRIPTION_KEY,
    CegidLoopSandbox,
)
from hubsync_sandbox.faults import Fault
from hubsync_sandbox.http import HttpServer, Router, json_response
from hubsync_sandbox.samples import document_ref, sample_entry, sample_event, tiny_pdf, tiny_png
from pipeline.cegid.connect import PROVIDER, connect
from pipeline.cegid.export import exports, pending
from pipeline.errors import HubsyncError
from pipeline.secrets import Secret
from pipeline.store import Store

Echo = Callable[[str], None] | None
SETTLED = ("exported", "skipped", "dead")


def _say(echo: Echo, text: str) -> None:
    if echo is not None:
        echo(text)


class LoopServer:
    """The Cegid Loop sandbox under ``/cegid`` (admin under ``/_sandbox/cegid``) on a loopback port of its own."""

    def __init__(self, sandbox: CegidLoopSandbox | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sandbox = sandbox or CegidLoopSandbox()
        self.host = host
        self.port = port
        self._http: HttpServer | None = None

    def _router(self) -> Router:
        root = Router()
        admin = Router()
        admin.add("GET", "/health", lambda request: json_response({"ok": True}))
        admin.mount("/cegid", self.sandbox.admin_router())
        root.mount("/_sandbox", admin)
        root.mount("/cegid", self.sandbox)
        return root

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://{self.host}:{self.port}"

    @property
    def app_url(self) -> str:
        """The Cegid Loop API base, as given to ``connect --url``."""
        return f"{self.url}/cegid"

    def up(self) -> None:
        """Serve (again, on the same port after ``down``)."""
        self._http = HttpServer(self._router(), self.host, self.port)
        self._http.start()
        self.port = self._http.port

    def down(self) -> None:
        """Stop serving: connections to the port are refused until ``up``."""
        if self._http is not None:
            self._http.stop()
            self._http = None


@dataclass
class DayFigures:
    """What a day's export did, counted from the records and from what the sandbox received."""

    documents: int = 0
    pending: int = 0
    deposited: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    outcome_unknown: dict[str, str] = field(default_factory=dict)
    other_dead: dict[str, str] = field(default_factory=dict)
    not_settled: int = 0
    duplicates: int = 0
    received: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    export_delay_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dict(self.__dict__)

    def lines(self) -> list[str]:
        """The figures as the demo prints them."""
        out = [
            f"  documents of the day:    {self.documents}",
            f"  pending (export took):   {self.pending}",
            f"  deposited:               {self.deposited}",
            f"  skipped:                 {len(self.skipped)}",
            *(f"    {doc}: {reason}" for doc, reason in sorted(self.skipped.items())),
            f"  outcome unknown:         {len(self.outcome_unknown)}",
            *(
                f"    {doc}: dead letter {dl} (look in PIA, then discard it, or replay it)"
                for doc, dl in sorted(self.outcome_unknown.items())
            ),
            f"  other dead letters:      {len(self.other_dead)}",
            f"  not settled:             {self.not_settled}",
            f"  received by Loop:        {self.received} (storeDocument answers: "
            + ", ".join(f"{status} x{n}" for status, n in sorted(self.calls.items()))
            + ")",
            f"  duplicates in Loop:      {self.duplicates}",
            f"  export waited for Loop:  {self.export_delay_seconds:.1f} s",
        ]
        return out


def _jpeg(seed: str) -> bytes:
    """A small file that is a JPEG by its first bytes (unique per seed)."""
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + seed.encode() * 20 + b"\xff\xd9"


def day_events(docs: Any, client_file_id: str, run: str, count: int = 10) -> list[dict[str, Any]]:
    """A day's entries with one document each: PDF, PNG and JPEG receipts and invoices, plus an XML invoice
    and a text file named ``.pdf`` (which must never reach Loop)."""
    kinds = (("purchase", "supplier_invoice"), ("sale", "customer_invoice"), ("expense_report", "receipt"))
    events = []
    for n in range(count + 2):
        entry_kind, doc_kind = kinds[n % len(kinds)]
        entry = sample_entry(entry_kind, n)
        entry["id"] = f"ent_loop_{n}_{run}"
        doc_id = f"doc_loop_{n}_{run}"
        if n >= count:
            data = (
                b'<?xml version="1.0" encoding="UTF-8"?><Invoice><ID>' + doc_id.encode() + b"</ID></Invoice>"
                if n == count
                else f"Facture {doc_id}: texte brut enregistre sous un nom en .pdf\n".encode()
            )
            name, kind = (f"{doc_id}.xml", "application/xml") if n == count else (f"{doc_id}.pdf", "application/pdf")
        elif n % 3 == 1:
            data, name, kind = tiny_png(seed=n + len(run)), f"{doc_id}.png", "image/png"
        elif n % 3 == 2:
            data, name, kind = _jpeg(doc_id), f"{doc_id}.jpg", "image/jpeg"
        else:
            data, name, kind = tiny_pdf(f"{entry['label']} {doc_id}"), f"{doc_id}.pdf", "application/pdf"
        info = docs.put(doc_id, data, content_type=kind, filename=name)
        ref = document_ref(doc_id, f"{info['url']}?token=demo{n}", data, doc_kind, name, paid=n % 2 == 0)
        ref["content_type"] = kind
        events.append(sample_event(client_file_id, entry, event_id=f"evt_loop_{n}_{run}", documents=[ref]))
    return events


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


def run_day(
    store: Store,
    loop: LoopServer,
    docs: Any,
    client_file_id: str,
    dossier: str,
    publish: Callable[[dict[str, Any]], None],
    send_export: Callable[[str], None],
    *,
    run: str,
    timeout: float = 180.0,
    down_seconds: float = 3.0,
    storm: int = 8,
    echo: Echo = None,
) -> DayFigures:
    """Publish a day's events, then run the scheduled export while Loop is down, then a 429 storm and one
    deposit committed and cut; wait until every document settles and count."""
    events = day_events(docs, client_file_id, run)
    for event in events:
        publish(event)
    rids = [f"{PROVIDER}:{client_file_id}:{e['documents'][0]['id']}" for e in events]
    if not _wait(lambda: len(pending(store, client_file_id)) >= len(rids), timeout):
        raise RuntimeError(f"only {len(pending(store, client_file_id))} of {len(rids)} documents became pending")
    taken = len(pending(store, client_file_id))
    calls_before = len(loop.sandbox.calls())
    _say(echo, f"  {taken} documents pending; Loop is down as the 20:00 export starts")
    loop.down()
    sent_at = time.time()
    send_export(client_file_id)
    time.sleep(down_seconds)
    loop.sandbox.set_fault(Fault(mode="rate_limit", retry_after=1, count=storm, route="storeDocument"))
    loop.sandbox.set_fault(Fault(mode="drop_after_commit", count=1, route="storeDocument"))
    loop.up()
    _say(
        echo,
        f"  Loop back after {down_seconds:.0f} s, answering 429 to {storm} deposits, then cutting one after commit",
    )

    def settled() -> bool:
        states = [store.records.fields(rid, "state")[0] for rid in rids]
        return not pending(store, client_file_id) and all(s in SETTLED for s in states)

    _wait(settled, timeout)
    loop.sandbox.clear_faults()
    figures = DayFigures(documents=len(rids), pending=taken)
    history = exports(store, client_file_id)
    if history:
        figures.export_delay_seconds = max(0.0, float(history[0]["started_at"]) - sent_at)
    for rid in rids:
        rec = store.records.get(rid)
        if rec is None or rec.state not in SETTLED:
            figures.not_settled += 1
        elif rec.state == "exported":
            figures.deposited += 1
        elif rec.state == "skipped":
            figures.skipped[rec.entry_id] = rec.note.removeprefix("skipped: ")
        elif (rec.last_error or {}).get("error_class") == "DepositOutcomeUnknown":
            figures.outcome_unknown[rec.entry_id] = str(rec.dead_letter_id)
        else:
            figures.other_dead[rec.entry_id] = str((rec.last_error or {}).get("error_class"))
    received = loop.sandbox.deposits(dossier)
    figures.received = len(received)
    figures.duplicates = loop.sandbox.duplicates(dossier)
    statuses = Counter(
        "cut" if status == 0 else str(status)
        for method, path, status in loop.sandbox.calls()[calls_before:]
        if method == "POST" and path == "/storeDocument"
    )
    figures.calls = dict(statuses)
    return figures


def connect_outcomes(store: Store, url: str, client_file_id: str) -> list[str]:
    """What ``hubsync connect cegid-loop`` prints to a firm: an unknown code, a dossier the key does not
    reach, then a success."""
    out: list[str] = []
    attempts = (("DUPONT99", "an unknown code dossier"), ("DUPONT02", "a dossier the key does not reach"))
    for dossier, what in (*attempts, ("DUPONT01", "the right dossier")):
        out.append(f"$ hubsync connect cegid-loop --client-file {client_file_id} --dossier {dossier} ...   # {what}")
        try:
            report = connect(
                store,
                client_file_id,
                url,
                dossier,
                DEMO_DOMAIN,
                DEMO_API_KEY,
                Secret(DEMO_API_SECRET),
                Secret(DEMO_SUBSCRIPTION_KEY),
            )
        except HubsyncError as exc:
            out.append(f"hubsync: {exc.message}. {exc.hint}")
            continue
        out.extend(report.lines())
    return out


def run_loop_demo(store: Store, docs: Any, run: str, timeout: float, echo: Echo) -> dict[str, Any]:
    """The Cegid Loop part of the demo, on a running worker that consumes ``cegid_loop``."""
    from pipeline.cegid.provider import EXPORT_TASK
    from tasks import app
    from tasks.ingest import publish_event

    loop = LoopServer()
    loop.up()
    cf = f"cf_loop_{run}"
    try:
        _say(echo, "")
        _say(echo, "Cegid Loop")
        for line in connect_outcomes(store, loop.app_url, cf):
            _say(echo, f"  {line}" if line else "")
        _say(echo, "")
        figures = run_day(
            store,
            loop,
            docs,
            cf,
            "DUPONT01",
            publish_event,
            lambda client_file: app.send_task(EXPORT_TASK, args=[client_file], queue="cegid_loop"),
            run=run,
            timeout=timeout,
            echo=echo,
        )
    finally:
        loop.down()
    _say(echo, "")
    _say(echo, "Cegid Loop: a day's export with Loop down at 20:00, a 429 storm and one deposit cut after commit")
    for line in figures.lines():
        _say(echo, line)
    return {"client_file": cf, **figures.to_dict()}
