"""`hubsync reconcile` against the real pipeline: green when every entry landed once, and precise when an
entry is missing from ACD, posted twice, or present in ACD without any hub record."""

from __future__ import annotations

import copy
import json
import time

import pytest

from hubsync_sandbox.samples import sample_entry, sample_event
from pipeline.acd.context import context
from tests.conftest import Hub, run_cli

pytestmark = pytest.mark.integration
FIRM, DOSSIER = "martin", "MARTIN01"


def _reconcile(hub: Hub, cf: str) -> tuple[int, dict]:
    shown = run_cli(hub.env, "reconcile", "--client-file", cf, "--json")
    assert shown.stderr == ""
    (result,) = json.loads(shown.stdout)["client_files"]
    return shown.returncode, result


def test_reconcile_is_green_after_a_clean_run_and_names_missing_duplicated_and_unknown(hub: Hub) -> None:
    # given three entries that landed normally
    cf = hub.cf("recon")
    hub.connect_acd(cf, firm=FIRM, dossier=DOSSIER)
    entries = []
    for n in range(3):
        entry = sample_entry("bank_transaction", 400 + n)
        entry["id"] = f"ent_recon_{n}_{hub.run}"
        hub.emit(sample_event(cf, entry))
        entries.append(entry["id"])
    records = hub.wait_states(cf, entries, states=("confirmed",))
    # then reconcile finds each of them once in ACD
    code, result = _reconcile(hub, cf)
    assert code == 0 and result["ok"] is True, result
    assert (result["records"], result["landed"]) == (3, 3)
    assert result["missing"] == result["duplicated"] == result["unknown"] == []
    text = run_cli(hub.env, "reconcile", "--client-file", cf)
    assert text.returncode == 0 and "3 landed, 0 missing, 0 duplicated, 0 unknown" in text.stdout
    # when the first entry is posted a second time behind the hub's back, an entry with an ACK code the hub
    # never allocated appears, and the third entry's code is no longer in ACD (as if deleted there)
    ctx = context(hub.store, cf)
    first, third = records[entries[0]], records[entries[2]]
    ctx.client.post_entry(first.payload)
    foreign = copy.deepcopy(first.payload)
    for line in foreign["LignesEcriture"]:
        line["Libelle"] = line["Libelle"].replace(f"(#{first.ack}#)", "(#Q9Q9#)")
    assert hub.store.r.hget(f"hubsync:ack:acd:{ctx.scope}", "Q9Q9") is None
    ctx.client.post_entry(foreign)
    hub.store.records.update(third.id, ack="Z9Z9")
    time.sleep(2.5)  # ACD's indexing lag
    # then reconcile fails and names each one
    code, result = _reconcile(hub, cf)
    assert code == 1 and result["ok"] is False
    assert [(d["entry_id"], len(d["provider_ids"])) for d in result["duplicated"]] == [(entries[0], 2)]
    assert [(m["entry_id"], m["ack"]) for m in result["missing"]] == [(entries[2], "Z9Z9")]
    assert [u["ack"] for u in result["unknown"]] == ["Q9Q9"]
    text = run_cli(hub.env, "reconcile", "--client-file", cf)
    assert text.returncode == 1
    assert f"duplicated {entries[0]}" in text.stdout and "unknown    (#Q9Q9#): ACD (EcritureNum) ids" in text.stdout
    assert f"missing    {entries[2]} (#Z9Z9#)" in text.stdout


def test_reconcile_waits_out_a_busy_acd_and_says_so(hub: Hub) -> None:
    from hubsync_sandbox import Fault

    # given a connected dossier whose server sheds the first FEC read with 429 (Retry-After 1 s)
    cf = hub.cf("reconbusy")
    hub.connect_acd(cf, firm=FIRM, dossier=DOSSIER)
    hub.sandbox.acd.set_fault(FIRM, Fault(mode="rate_limit", route="compta/fec", retry_after=1, count=1))
    # when reconcile runs, it reads the FEC again after the wait and says ACD was asked again
    shown = run_cli(hub.env, "reconcile", "--client-file", cf)
    assert "could not read ACD" not in shown.stdout, shown.stdout
    assert "0 records, 0 landed, 0 missing" in shown.stdout and "ACD was busy, asked again 1 time(s)" in shown.stdout
    assert "retried    FEC" in shown.stdout and "RateLimited 429" in shown.stdout
    hub.sandbox.acd.set_fault(FIRM, Fault(mode="rate_limit", route="compta/fec", retry_after=1, count=1))
    _, result = _reconcile(hub, cf)
    assert result["error"] == "" and result["fec_years"] and len(result["retries"]) == 1
    # when the server sheds every read, reconcile gives up after a few tries and says how long it asked
    hub.sandbox.acd.set_fault(FIRM, Fault(mode="rate_limit", route="compta/fec", retry_after=1))
    code, result = _reconcile(hub, cf)
    assert code == 1 and "RateLimited" in result["error"] and "still failing after 3 retries" in result["error"]
    assert len(result["retries"]) == 3


def test_reconcile_of_a_client_file_without_acd_fails_clearly(hub: Hub) -> None:
    shown = run_cli(hub.env, "reconcile", "--client-file", hub.cf("nothing"))
    assert shown.returncode == 1 and "has no ACD or Cegid Loop connection" in shown.stderr


def test_reconcile_reports_cegid_loop_documents_from_the_ledger_without_asking_loop(hub: Hub) -> None:
    from hubsync_sandbox import Fault
    from hubsync_sandbox.samples import document_ref, tiny_pdf

    # given a client file on Cegid Loop with two PDFs and an XML invoice, one PDF's deposit cut after commit
    cf = hub.cf("reconloop")
    dossier = f"RL{hub.run}".upper()
    hub.connect_loop(cf, dossier, "Client reconcile")
    loop = hub.sandbox.app("cegid")
    docs = []
    contents = [tiny_pdf(f"reconcile loop {n} {hub.run}") for n in range(2)] + [b"<?xml version='1.0'?><x/>"]
    for n, data in enumerate(contents):
        entry = sample_entry("purchase", 420 + n)
        entry["id"] = f"ent_rl_{n}_{hub.run}"
        doc_id = f"doc_rl_{n}_{hub.run}"
        info = hub.sandbox.docs.put(doc_id, data, content_type="application/pdf", filename=f"rl{n}.pdf")
        hub.emit(sample_event(cf, entry, documents=[document_ref(doc_id, info["url"], data, "receipt", "r.pdf")]))
        docs.append(doc_id)
    hub.wait(lambda: all(hub.store.records.get(f"cegid_loop:{cf}:{d}") for d in docs), 30, "Loop records")
    loop.set_fault(Fault(mode="drop_after_commit", count=1, route="storeDocument"))
    try:
        exported = run_cli(hub.env, "export", "cegid-loop", "--client-file", cf, "--wait", "--timeout", "60", "--json")
    finally:
        loop.clear_faults()
    assert exported.returncode == 1 and "1 document(s) need a look" in exported.stderr, exported.stderr
    calls = len(loop.calls())
    # when reconcile runs
    code, result = _reconcile(hub, cf)
    # then it reports from the ledger (Loop is not asked), and the lost answer needs a look
    assert len(loop.calls()) == calls
    assert code == 1 and result["provider"] == "cegid_loop" and result["source"] == "ledger"
    assert (result["records"], result["deposited"], result["pending"]) == (3, 1, 0)
    assert [s["document"] for s in result["skipped"]] == [docs[2]] and "XML" in result["skipped"][0]["reason"]
    (unknown,) = result["outcome_unknown"]
    assert unknown["document"] in docs[:2] and unknown["dead_letter"] and unknown["filename"].endswith(".pdf")
    # when the operator settles it as "in PIA", reconcile is green
    assert run_cli(hub.env, "dlq", "discard", unknown["dead_letter"], "--reason", "in PIA").returncode == 0
    code, result = _reconcile(hub, cf)
    assert code == 0 and result["ok"] and result["deposited"] == 2 and result["outcome_unknown"] == []
