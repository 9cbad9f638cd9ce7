"""The Cegid Loop deposit ledger, connect and the export's dossier check, step by step: the suite's private
Redis and the Cegid Loop and document sandboxes over loopback, each step run as a worker runs it
(``pipeline.steps.run_step``) but without a broker, so a crash between two lines can be staged exactly."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from hubsync_sandbox import Fault
from hubsync_sandbox.cegid import (
    DEMO_API_KEY,
    DEMO_API_SECRET,
    DEMO_DOMAIN,
    DEMO_SUBSCRIPTION_KEY,
    CegidLoopSandbox,
)
from hubsync_sandbox.cegid_demo import LoopServer
from hubsync_sandbox.samples import document_ref, sample_entry, sample_event, tiny_pdf
from pipeline import runtime
from pipeline.cegid import connect as loop_connect
from pipeline.cegid import errors
from pipeline.cegid.export import CHECK_FAILED, pending, run_export
from pipeline.cegid.provider import CEGID_LOOP
from pipeline.cegid.reconcile import NotAPossibleDuplicate, mark_duplicate_checked, reconcile_cegid_loop
from pipeline.config import settings
from pipeline.dlq import discard, replay
from pipeline.ingest import ingest
from pipeline.secrets import Secret
from pipeline.steps import Outcome, run_step
from pipeline.store import Store
from tests.conftest import Hub

PROVIDER = "cegid_loop"
STEPS = CEGID_LOOP.step_names
STEP_FUNCTIONS = CEGID_LOOP.step_functions


@dataclass
class World:
    store: Store
    loop: CegidLoopSandbox
    sandbox: Any
    env: dict[str, str]
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    enqueued: list[tuple[str, str, int, str]] = field(default_factory=list)

    def enqueue(self, provider: str, rid: str, generation: int, step: str) -> None:
        self.enqueued.append((provider, rid, generation, step))

    def connect(self, name: str) -> tuple[str, str]:
        cf, dossier = f"cf_{name}_{self.run}", f"{name}{self.run}".upper()
        Hub(self.env, self.sandbox).connect_loop(cf, dossier, f"Client {name}")  # no worker needed for this
        return cf, dossier

    def document(self, cf: str, name: str, kind: str = "supplier_invoice") -> str:
        """A pending document of a new entry; returns its record id."""
        data = tiny_pdf(f"{name} {self.run}")
        doc_id = f"doc_{name}_{self.run}"
        info = self.sandbox.docs.put(doc_id, data, content_type="application/pdf", filename=f"{name}.pdf")
        entry = sample_entry("purchase", 5)
        entry["id"] = f"ent_{name}_{self.run}"
        ref = document_ref(doc_id, info["url"], data, kind, f"{name}.pdf", paid=False)
        result = ingest(self.store, sample_event(cf, entry, documents=[ref]), self.enqueue)
        assert result.outcome == "accepted", result.summary()
        return f"{PROVIDER}:{cf}:{doc_id}"

    def step(self, rid: str, name: str) -> Outcome:
        rec = self.store.records.get(rid)
        assert rec is not None
        return run_step(self.store, rid, rec.generation, name, STEP_FUNCTIONS[name], 0)

    def up_to_deposit(self, rid: str) -> None:
        for name in STEPS[:-1]:
            assert self.step(rid, name).action == "next", self.store.records.get(rid)

    def deposits_in(self, dossier: str) -> int:
        return len(self.loop.deposits(dossier))


@pytest.fixture
def world(hub_env: dict[str, str], sandbox: Any) -> Iterator[World]:
    loop = sandbox.app("cegid")
    loop.clear_faults()
    yield World(runtime.store(), loop, sandbox, hub_env)
    loop.clear_faults()


def _exported(world: World, cf: str) -> list[str]:
    result = run_export(world.store, cf, world.enqueue)
    return result.enqueued


# -- the ledger ----------------------------------------------------------------------------------


def test_a_deposit_is_recorded_in_the_ledger_before_the_chain_moves_on(world: World) -> None:
    # given a pending supplier invoice taken by an export
    cf, dossier = world.connect("ledger")
    rid = world.document(cf, "inv")
    assert _exported(world, cf) == [rid]
    world.up_to_deposit(rid)
    # when the deposit step runs
    assert world.step(rid, "deposit").action == "next"
    # then the record is exported and its ledger holds what Loop answered and what was sent
    rec = world.store.records.get(rid)
    ledger = rec.docs[rec.entry_id]["deposit"]
    (received,) = world.loop.deposits(dossier)
    assert rec.state == "exported" and rec.provider_id == received["documentId"] == ledger["document_id"]
    assert json.loads(ledger["answer"])["documentId"] == received["documentId"]
    assert ledger["filename"] == received["filename"] == rec.docs[rec.entry_id]["name"]
    assert (ledger["transaction"], ledger["content_type"]) == ("PURCHASE", "application/pdf")
    assert (received["transaction"], received["content_type"], received["uploadMode"]) == (
        "PURCHASE",
        "application/pdf",
        "API",
    )
    assert received["uploadAuthor"] == ledger["upload_author"] == f"qonto@{DEMO_DOMAIN}.onmicrosoft.com"
    assert ledger["sha256"] == received["sha256"] and ledger["size"] == received["size"]
    assert rec.ack and rec.ack in ledger["filename"]  # the unique key, kept by the compact form too
    assert "sending" not in {k for k, v in rec.docs[rec.entry_id].items() if v}
    # and running the step again (a redelivered message) sends nothing
    assert world.step(rid, "deposit").action == "next"
    assert world.deposits_in(dossier) == 1


def test_a_lost_answer_dead_letters_as_outcome_unknown_and_is_never_sent_again_by_itself(world: World) -> None:
    # given a document whose deposit Loop commits before the connection is cut
    cf, dossier = world.connect("lost")
    rid = world.document(cf, "lost")
    _exported(world, cf)
    world.up_to_deposit(rid)
    world.loop.set_fault(Fault(mode="drop_after_commit", route="storeDocument", count=1))
    # when the deposit step runs
    outcome = world.step(rid, "deposit")
    # then it is a dead letter that names the file and says Loop may hold it
    assert outcome.action == "dead"
    rec = world.store.records.get(rid)
    dl = world.store.dead_letters.get(rec.dead_letter_id)
    name = rec.docs[rec.entry_id]["name"]
    assert dl.error_class == "DepositOutcomeUnknown" and dl.step == "deposit"
    assert name in dl.message and "may or may not hold it" in dl.message
    assert "discard" in dl.hint and "replay" in dl.hint
    # and a stale message for the same generation (a redelivery) does not send it again
    world.store.records.update(
        rid, state="received", dead_letter_id=None
    )  # as if the worker had died before the letter
    assert world.step(rid, "deposit").action == "dead"
    assert world.deposits_in(dossier) == 1
    assert world.loop.duplicates(dossier) == 0


def test_a_worker_stopped_between_send_and_record_leaves_an_outcome_unknown_never_a_resend(world: World) -> None:
    # given a document marked "sending" by an attempt that never recorded an answer (its worker was killed)
    cf, dossier = world.connect("crash")
    rid = world.document(cf, "crash")
    _exported(world, cf)
    world.up_to_deposit(rid)
    rec = world.store.records.get(rid)
    world.store.records.update_doc(
        rid, rec.entry_id, sending={"at": 1.0, "generation": rec.generation, "context": dossier}
    )
    # when the redelivered message runs the deposit step
    outcome = world.step(rid, "deposit")
    # then nothing is sent: an operator must look
    assert outcome.action == "dead"
    dl = world.store.dead_letters.get(world.store.records.get(rid).dead_letter_id)
    assert dl.error_class == "DepositOutcomeUnknown" and "never recorded an answer" in dl.message
    assert world.deposits_in(dossier) == 0


def test_replaying_an_outcome_unknown_sends_again_and_says_so(world: World) -> None:
    # given an outcome-unknown dead letter (Loop did store the first copy)
    cf, dossier = world.connect("replay")
    rid = world.document(cf, "again")
    _exported(world, cf)
    world.up_to_deposit(rid)
    world.loop.set_fault(Fault(mode="drop_after_commit", route="storeDocument", count=1))
    assert world.step(rid, "deposit").action == "dead"
    dl_id = world.store.records.get(rid).dead_letter_id
    # when an operator replays it (they decided it is not in PIA)
    assert replay(world.store, dl_id, world.enqueue, lambda raw: "") == "chain resumed at deposit"
    assert world.enqueued[-1] == (PROVIDER, rid, 1, "deposit")
    assert world.step(rid, "deposit").action == "next"
    # then it is sent again, the ledger says so, and reconcile lists the possible duplicate
    rec = world.store.records.get(rid)
    assert rec.state == "exported" and rec.docs[rec.entry_id]["deposit"]["resent_after_unknown_outcome"]
    outcomes = [a["outcome"] for a in world.store.records.attempts(rid) if a["step"] == "deposit"]
    assert outcomes[-2:] == ["resending_after_unknown_outcome", "deposited_again"]
    assert world.deposits_in(dossier) == 2
    result = reconcile_cegid_loop(world.store, cf)
    assert not result.ok and [d["document"] for d in result.possible_duplicates] == [rec.entry_id]
    # and once an operator checked PIA for the second copy, it no longer needs a look
    mark_duplicate_checked(world.store, cf, rec.entry_id, "one copy left in PIA", "alice")
    after = reconcile_cegid_loop(world.store, cf)
    assert after.ok and after.possible_duplicates == [] and len(after.deposited) == 1
    with pytest.raises(NotAPossibleDuplicate):
        mark_duplicate_checked(world.store, cf, "doc_never_sent_again", "?", "alice")


def test_discarding_an_outcome_unknown_settles_the_document_as_exported(world: World) -> None:
    # given an outcome-unknown dead letter, which reconcile flags
    cf, dossier = world.connect("discard")
    rid = world.document(cf, "there")
    other = world.document(cf, "fine")
    _exported(world, cf)
    for r in (rid, other):
        world.up_to_deposit(r)
    assert world.step(other, "deposit").action == "next"
    world.loop.set_fault(Fault(mode="drop_after_commit", route="storeDocument", count=1))
    assert world.step(rid, "deposit").action == "dead"
    before = reconcile_cegid_loop(world.store, cf)
    assert not before.ok and [u["document"] for u in before.outcome_unknown] == [f"doc_there_{world.run}"]
    # when an operator found it in PIA and discards the dead letter
    discard(world.store, world.store.records.get(rid).dead_letter_id, "in PIA, checked by the accountant")
    # then the document counts as exported, with the reason in its history, and reconcile is green
    rec = world.store.records.get(rid)
    assert rec.state == "exported"
    assert rec.docs[rec.entry_id]["deposit"]["settled_by_operator"]["reason"] == "in PIA, checked by the accountant"
    assert [a["outcome"] for a in world.store.records.attempts(rid)][-2:] == ["discarded", "settled_as_exported"]
    after = reconcile_cegid_loop(world.store, cf)
    assert after.ok and len(after.deposited) == 2 and after.outcome_unknown == []
    assert world.store.records.states(PROVIDER, cf)["exported"] == 2
    assert world.deposits_in(dossier) == 2


@pytest.mark.parametrize(
    "fault",
    [
        Fault(mode="status", status=503, retry_after=1, count=1, route="storeDocument"),
        Fault(mode="rate_limit", retry_after=2, count=1, route="storeDocument"),
    ],
    ids=["503", "429"],
)
def test_a_refusal_before_loop_took_the_request_is_retried_and_lands_once(world: World, fault: Fault) -> None:
    # given the gateway refusing the first deposit
    cf, dossier = world.connect("retry")
    rid = world.document(cf, "retry")
    _exported(world, cf)
    world.up_to_deposit(rid)
    world.loop.set_fault(fault)
    # when the deposit step runs, then again after its countdown
    first = world.step(rid, "deposit")
    rec = world.store.records.get(rid)
    assert first.action == "retry" and first.countdown >= float(fault.retry_after or 0)
    assert rec.state == "waiting_retry" and not rec.docs[rec.entry_id].get("sending")
    assert world.step(rid, "deposit").action == "next"
    # then it lands once
    assert world.store.records.get(rid).state == "exported"
    assert world.deposits_in(dossier) == 1


def test_loop_down_when_the_deposit_starts_is_retried_and_lands_once(world: World) -> None:
    # given a client file whose Loop runs on a server of its own, and a document ready to deposit
    server = LoopServer(world.loop)
    server.up()
    try:
        cf, dossier = f"cf_down_{world.run}", f"DOWN{world.run}".upper()
        world.loop.add_dossier(dossier, "Down", api_keys=[DEMO_API_KEY])
        loop_connect.connect(
            world.store, cf, server.app_url, dossier, DEMO_DOMAIN, DEMO_API_KEY, Secret(DEMO_API_SECRET),
            Secret(DEMO_SUBSCRIPTION_KEY),
        )  # fmt: skip
        rid = world.document(cf, "down")
        _exported(world, cf)
        world.up_to_deposit(rid)
        # when Loop is down (its port refuses connections) as the deposit starts
        server.down()
        outcome = world.step(rid, "deposit")
        rec = world.store.records.get(rid)
        # then nothing went out: the step waits and retries, with no "sending" mark left behind
        assert outcome.action == "retry" and rec.last_error["error_class"] == "LoopUnavailable"
        assert "nothing was sent" in rec.last_error["message"] and not rec.docs[rec.entry_id].get("sending")
        # and once Loop is back, it lands once
        server.up()
        assert world.step(rid, "deposit").action == "next"
        assert world.store.records.get(rid).state == "exported" and world.deposits_in(dossier) == 1
    finally:
        server.down()


def test_a_21_mb_document_over_acds_20_mib_limit_is_fetched_and_deposited_into_loop(
    world: World, tmp_path: Any
) -> None:
    # given a 21,000,000-byte PDF (over ACD's 20 MiB GED limit, well under Loop's 50,000,000) in the docs store
    size = 21_000_000
    assert settings().document_max_bytes < size
    cf, dossier = world.connect("big")
    path = tmp_path / "big.pdf"
    digest = hashlib.sha256()
    with path.open("wb") as fh:
        block = b"%PDF-1.4\n" + b"0" * (1_000_000 - 9)
        for _ in range(size // len(block)):
            fh.write(block)
            digest.update(block)
    doc_id = f"doc_big_{world.run}"
    info = world.sandbox.docs.put_file(doc_id, path, content_type="application/pdf", filename="big.pdf")
    ref = document_ref(doc_id, info["url"], b"%PDF", "supplier_invoice", "big.pdf", paid=False)
    ref.update(size=size, sha256=digest.hexdigest())
    entry = sample_entry("purchase", 7)
    entry["id"] = f"ent_big_{world.run}"
    assert ingest(world.store, sample_event(cf, entry, documents=[ref]), world.enqueue).outcome == "accepted"
    rid = f"{PROVIDER}:{cf}:{doc_id}"
    _exported(world, cf)
    # when its chain runs
    outcomes = [world.step(rid, name).action for name in STEPS]
    # then it is fetched (streamed) and deposited whole, once
    assert outcomes == ["next"] * 4, world.store.records.get(rid).last_error
    assert world.store.records.get(rid).state == "exported"
    (got,) = world.loop.deposits(dossier)
    assert (got["size"], got["sha256"]) == (size, digest.hexdigest())
    (settings().spool_dir / digest.hexdigest()).unlink(missing_ok=True)


def test_a_file_over_50_000_000_bytes_is_refused_before_anything_is_sent(world: World, tmp_path: Any) -> None:
    cf, dossier = world.connect("huge")
    rid = world.document(cf, "huge")
    _exported(world, cf)
    world.up_to_deposit(rid)
    rec = world.store.records.get(rid)
    path = settings().spool_dir / rec.docs[rec.entry_id]["sha256"]
    with path.open("r+b") as fh:
        fh.truncate(50_000_001)
    try:
        outcome = world.step(rid, "deposit")
    finally:
        path.unlink()
    assert outcome.action == "dead"
    assert world.store.records.get(rid).last_error["error_class"] == "DocumentTooLarge"
    assert "Cegid Loop takes documents up to 50,000,000 bytes" in world.store.records.get(rid).last_error["hint"]
    assert world.deposits_in(dossier) == 0


# -- an entry validated again without one of its documents ---------------------------------------


def _revalidate(world: World, rid: str, suffix: str, keep: bool = False) -> tuple[str, str]:
    """Validate the record's entry again (a new event) with another document in its place, or beside it when
    ``keep``; returns the new document's record id and the event id."""
    rec = world.store.records.get(rid)
    event = json.loads(json.dumps(rec.event))
    name = f"{suffix}_{world.run}"
    data = tiny_pdf(f"{name} again")
    info = world.sandbox.docs.put(f"doc_{name}", data, content_type="application/pdf", filename=f"{name}.pdf")
    ref = document_ref(f"doc_{name}", info["url"], data, "supplier_invoice", f"{name}.pdf", paid=False)
    event_id = f"{event['event_id']}_{suffix}"
    documents = [*event["documents"], ref] if keep else [ref]
    result = ingest(
        world.store,
        sample_event(rec.client_file_id, event["entry"], event_id=event_id, documents=documents),
        world.enqueue,
    )
    assert result.outcome == "accepted", result.summary()
    return f"{PROVIDER}:{rec.client_file_id}:doc_{name}", event_id


def test_a_dead_lettered_document_removed_by_a_revalidation_is_skipped_and_its_dead_letter_superseded(
    world: World,
) -> None:
    # given a document whose chain stopped at fetch (its file was gone)
    cf, dossier = world.connect("gone")
    rid = world.document(cf, "gone")
    world.sandbox.docs.put(world.store.records.get(rid).entry_id, b"", content_type="application/pdf", filename="x.pdf")
    _exported(world, cf)
    assert world.step(rid, "fetch").action == "dead"
    dl_id = world.store.records.get(rid).dead_letter_id
    assert dl_id and world.store.dead_letters.get(dl_id).status == "open"
    # when the entry is validated again with another document in its place
    _new, event_id = _revalidate(world, rid, "instead")
    # then the old one is skipped with the reason, its dead letter is closed as superseded, nothing was sent
    rec = world.store.records.get(rid)
    assert rec.state == "skipped" and rec.dead_letter_id is None
    assert event_id in rec.docs[rec.entry_id]["skip_reason"]
    assert world.store.dead_letters.get(dl_id).status == "superseded"
    assert world.deposits_in(dossier) == 0


def test_an_outcome_unknown_document_removed_by_a_revalidation_stays_for_the_operator(world: World) -> None:
    # given a deposit whose answer was lost
    cf, _dossier = world.connect("lost")
    rid = world.document(cf, "lost")
    _exported(world, cf)
    world.up_to_deposit(rid)
    world.loop.set_fault(Fault(mode="drop_after_commit", route="storeDocument", count=1))
    assert world.step(rid, "deposit").action == "dead"
    dl_id = world.store.records.get(rid).dead_letter_id
    # when the entry is validated again without it
    _revalidate(world, rid, "other")
    # then it stays dead-lettered for an operator (Loop may hold it), with a note saying what happened
    rec = world.store.records.get(rid)
    assert rec.state == "dead" and rec.dead_letter_id == dl_id and world.store.dead_letters.get(dl_id).status == "open"
    assert "after its deposit went out" in rec.note


def test_a_document_removed_while_its_deposit_holds_the_lock_is_noted_then_never_sent(world: World) -> None:
    # given a document ready to deposit, whose deposit lock another worker holds
    cf, dossier = world.connect("busy")
    rid = world.document(cf, "busy")
    _exported(world, cf)
    world.up_to_deposit(rid)
    with world.store.locks.hold(f"deposit:{rid}", ttl_seconds=30):
        # when the entry is validated again without it
        _revalidate(world, rid, "fresh")
        # then it is left alone, with a note
        rec = world.store.records.get(rid)
        assert rec.state != "skipped" and "while its deposit was under way" in rec.note
    # and when that deposit had not sent it, the step's next try skips it instead of sending it
    assert world.step(rid, "deposit").action == "next"
    rec = world.store.records.get(rid)
    assert rec.state == "skipped" and "before it was exported" in rec.docs[rec.entry_id]["skip_reason"]
    assert world.deposits_in(dossier) == 0


def test_a_document_put_back_by_a_later_revalidation_waits_for_the_next_export_again(world: World) -> None:
    # given a document withdrawn by a re-validation before any export
    cf, dossier = world.connect("back")
    rid = world.document(cf, "back")
    _revalidate(world, rid, "without")
    assert world.store.records.get(rid).state == "skipped" and rid not in pending(world.store, cf)
    # when a third validation puts it back beside the other
    _revalidate(world, rid, "with", keep=True)
    # then it is pending again and the next export deposits it
    rec = world.store.records.get(rid)
    assert (rec.state, rec.step) == ("received", "pending") and rid in pending(world.store, cf)
    assert rid in _exported(world, cf)
    for name in STEPS:
        assert world.step(rid, name).action == "next", world.store.records.get(rid)
    assert world.store.records.get(rid).state == "exported" and world.deposits_in(dossier) == 1


# -- connect, the export's dossier check, disconnect ----------------------------------------------


def _connect(world: World, cf: str, dossier: str, secret: str = DEMO_API_SECRET) -> loop_connect.ConnectReport:
    return loop_connect.connect(
        world.store,
        cf,
        world.sandbox.app_url("cegid"),
        dossier,
        "Cabinet-Dupont.onmicrosoft.com",
        DEMO_API_KEY,
        Secret(secret),
        Secret(DEMO_SUBSCRIPTION_KEY),
    )


def test_connect_refuses_an_unknown_dossier_code_and_stores_nothing(world: World) -> None:
    cf = f"cf_unknown_{world.run}"
    with pytest.raises(errors.UnknownDossier) as caught:
        _connect(world, cf, "DUPONT99")
    assert "DUPONT99" in caught.value.message and "lost silently" in caught.value.message
    assert world.store.connections.get(cf, PROVIDER) is None
    assert world.loop.deposits("DUPONT99") == []


def test_connect_explains_a_dossier_the_key_does_not_reach_and_a_wrong_secret(world: World) -> None:
    cf = f"cf_refused_{world.run}"
    with pytest.raises(errors.DossierAccessDenied) as denied:
        _connect(world, cf, "DUPONT02")
    text = denied.value.message + " " + denied.value.hint
    for shown in ("CegidLife", "Loop Hub", "Type: Partenaire", "Application: Qonto", f"API Key: {DEMO_API_KEY}"):
        assert shown in text
    assert f"Email prestataire: qonto@{DEMO_DOMAIN}.onmicrosoft.com" in text
    with pytest.raises(errors.AuthenticationFailed) as wrong:
        _connect(world, cf, "DUPONT01", secret="not-the-secret")
    assert "wrong key or secret" in wrong.value.message and "not-the-secret" not in wrong.value.message
    assert world.store.connections.get(cf, PROVIDER) is None


def test_connect_stores_the_partner_email_and_sealed_secrets_and_names_the_loop_hub_values(world: World) -> None:
    cf = f"cf_ok_{world.run}"
    report = _connect(world, cf, "DUPONT01")
    conn = world.store.connections.get(cf, PROVIDER)
    assert conn.params["partner_email"] == f"qonto@{DEMO_DOMAIN}.onmicrosoft.com"
    assert conn.params["domain"] == DEMO_DOMAIN and conn.params["connected_at"] > 0
    raw = json.dumps(world.store.r.hgetall(f"hubsync:conn:{cf}:{PROVIDER}"))
    assert DEMO_API_SECRET not in raw and DEMO_SUBSCRIPTION_KEY not in raw
    text = "\n".join(report.steps.lines())
    for shown in (
        "Type:               Partenaire",
        "Application:        Qonto",
        f"API Key:            {DEMO_API_KEY}",
        f"Email prestataire:  qonto@{DEMO_DOMAIN}.onmicrosoft.com",
        "24 hours",
        f"hubsync disconnect cegid-loop --client-file {cf}",
    ):
        assert shown in text
    assert report.journals and report.journals[0]["code"] == "ACH"


def test_export_stops_when_the_dossier_is_gone_and_its_documents_wait(world: World) -> None:
    # given a connected client file with a pending document, whose dossier is then deleted in Loop
    cf, dossier = world.connect("gone")
    rid = world.document(cf, "waits")
    world.loop.remove_dossier(dossier)
    # when the export runs
    with pytest.raises(errors.UnknownDossier):
        run_export(world.store, cf, world.enqueue)
    # then nothing was started or sent, the document still waits, and the connection says why
    assert pending(world.store, cf) == [rid] and world.enqueued == []
    conn = world.store.connections.get(cf, PROVIDER)
    assert conn.status == CHECK_FAILED and "lost silently" in conn.status_message
    assert world.loop.deposits(dossier) == []
    # and once the dossier reads again, the next export takes it
    world.loop.add_dossier(dossier, "back", api_keys=[DEMO_API_KEY])
    assert run_export(world.store, cf, world.enqueue).enqueued == [rid]
    assert world.store.connections.get(cf, PROVIDER).status == "ready"


def test_disconnect_removes_the_connection_and_keeps_records_and_history(world: World) -> None:
    cf, dossier = world.connect("bye")
    rid = world.document(cf, "stays")
    gone = loop_connect.disconnect(world.store, cf)
    assert gone is not None and gone.records == 1 and gone.pending == 1 and gone.dossier == dossier
    assert world.store.connections.get(cf, PROVIDER) is None and world.store.records.get(rid) is not None
    assert pending(world.store, cf) == [rid]
    assert loop_connect.disconnect(world.store, cf) is None
    text = "\n".join(gone.lines())
    assert "sealed API secret and subscription key" in text and "1 document record(s)" in text
