"""The ACD chain end to end: a real Redis, a real worker process, the ACD and document sandboxes over loopback."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from hubsync_sandbox import Fault
from hubsync_sandbox.samples import document_ref, sample_entry, sample_event, tiny_pdf
from tests.conftest import SHARED_DOCUMENTS, Hub, run_cli

pytestmark = pytest.mark.integration
FIRM, DOSSIER = "dupont", "DUPONT01"


def _doc(
    hub: Hub,
    name: str,
    data: bytes | None = None,
    path: Path | None = None,
    kind: str = "supplier_invoice",
    content_type: str = "application/pdf",
) -> dict[str, Any]:
    doc_id = f"doc_{name}_{hub.run}"
    if path is not None:
        info = hub.sandbox.docs.put_file(doc_id, str(path), content_type=content_type)
        data = path.read_bytes()
    else:
        assert data is not None
        info = hub.sandbox.docs.put(doc_id, data, content_type=content_type, filename=f"{name}.pdf")
    return document_ref(doc_id, f"{info['url']}?token=t0k3n", data, kind, f"{name} scan.pdf")


def _entry(hub: Hub, kind: str, n: int, **changes: Any) -> dict[str, Any]:
    entry = sample_entry(kind, n)
    entry["id"] = f"{entry['id']}_{hub.run}"
    entry.update(changes)
    return entry


def _shared(name: str) -> Path:
    path = SHARED_DOCUMENTS / name
    if not path.exists():
        pytest.fail(f"test document {path} is missing (the shared data folder must sit beside the project)")
    return path


def test_each_entry_kind_lands_once_with_its_document_and_is_confirmed(hub: Hub) -> None:
    # given a client file connected to ACD, and one entry of each kind with real supporting documents
    cf = hub.cf("kinds")
    hub.connect_acd(cf)
    pdf = _doc(hub, "pdf", path=_shared("facturx-invoice-en16931.pdf"))
    png = _doc(hub, "png", path=_shared("invoice-customer.png"), kind="customer_invoice", content_type="image/png")
    jpg = _doc(hub, "jpg", path=_shared("receipt-bakery.jpg"), kind="receipt", content_type="image/jpeg")
    events = [
        sample_event(cf, _entry(hub, "purchase", 1), documents=[pdf]),
        sample_event(cf, _entry(hub, "sale", 2), documents=[png]),
        sample_event(cf, _entry(hub, "expense_report", 3), documents=[jpg]),
        sample_event(cf, _entry(hub, "bank_transaction", 4)),
    ]
    # when they are emitted
    for event in events:
        hub.emit(event)
    records = hub.wait_states(cf, [e["entry"]["id"] for e in events])
    # then each is confirmed, stored once in ACD with its ACK code on every line, its document linked
    for event in events:
        rec = records[event["entry"]["id"]]
        assert rec.state == "confirmed", rec.last_error
        stored = hub.acd_entries_with(FIRM, DOSSIER, rec.ack)
        assert len(stored) == 1
        lines = stored[0]["LignesEcriture"]
        assert len(lines) == len(event["entry"]["lines"])
        assert all(line["Libelle"].endswith(f"(#{rec.ack}#)") and len(line["Libelle"]) <= 50 for line in lines)
        assert rec.provider_id == str(stored[0]["EcritureNum"])  # ACD's number, read back from the FEC
        if event["documents"]:
            ged_id = rec.docs[event["documents"][0]["id"]]["ged_id"]
            assert {line.get("ReferenceGed") for line in lines} == {str(ged_id)} == {stored[0]["ReferenceGed"]}
            ged = [d for d in hub.sandbox.acd.documents(FIRM, DOSSIER) if d["Id"] == ged_id]
            assert ged and ged[0]["NomFichier"].startswith(rec.ack)
            assert ged[0]["sha256"] == event["documents"][0]["sha256"]
            # filed in the journal's filing-plan folder (AC 11, VT 21), or at the root for a journal without one
            assert ged[0]["idArboGed"] == {"AC": 11, "VT": 21}.get(event["entry"]["journal_code"], 0)
        else:
            assert all(line["ReferenceGed"] == "" for line in lines)
    # and the operator sees it with `hubsync entry`
    shown = run_cli(hub.env, "entry", events[0]["entry"]["id"], "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["providers"][0]["state"] == "confirmed"


def test_label_over_50_chars_is_cut_with_ack_code_intact(hub: Hub) -> None:
    cf = hub.cf("label")
    hub.connect_acd(cf)
    label = "Fournitures de bureau et consommables informatiques pour le siège social, commande trimestrielle"
    event = sample_event(cf, _entry(hub, "bank_transaction", 5, label=label))
    hub.emit(event)
    rec = hub.wait_states(cf, [event["entry"]["id"]])[event["entry"]["id"]]
    assert rec.state == "confirmed", rec.last_error
    (stored,) = hub.acd_entries_with(FIRM, DOSSIER, rec.ack)
    for line in stored["LignesEcriture"]:
        assert len(line["Libelle"]) == 50
        assert line["Libelle"] == f"{label[:41].rstrip()} (#{rec.ack}#)"


def test_subsidiary_code_over_13_chars_or_with_wrong_prefix_is_refused_without_posting(hub: Hub) -> None:
    cf = hub.cf("tiers")
    hub.connect_acd(cf)
    too_long = _entry(hub, "purchase", 6)
    too_long["lines"][2]["counterparty"] = {"kind": "supplier", "code": "F1234567890123", "name": "Too Long"}
    wrong_prefix = _entry(hub, "sale", 7)
    wrong_prefix["lines"][0]["counterparty"] = {"kind": "client", "code": "FDURAND", "name": "Durand"}
    exactly_13 = _entry(hub, "purchase", 8)
    exactly_13["lines"][2]["counterparty"] = {"kind": "supplier", "code": f"F{hub.run}ABCDEF"[:13], "name": "Max"}
    posts_before = sum(1 for c in hub.sandbox.acd.calls(FIRM) if c[1].endswith("compta/ecriture"))
    for entry in (too_long, wrong_prefix, exactly_13):
        hub.emit(sample_event(cf, entry))
    records = hub.wait_states(cf, [too_long["id"], wrong_prefix["id"], exactly_13["id"]])
    assert records[too_long["id"]].state == "dead"
    assert records[too_long["id"]].last_error["error_class"] == "SubsidiaryCodeTooLong"
    assert "13" in records[too_long["id"]].last_error["message"]
    assert records[wrong_prefix["id"]].last_error["error_class"] == "SubsidiaryCodeInvalid"
    assert records[exactly_13["id"]].state == "confirmed"
    posts_after = sum(1 for c in hub.sandbox.acd.calls(FIRM) if c[1].endswith("compta/ecriture"))
    assert posts_after - posts_before == 1
    suppliers = {a["Code"] for a in hub.sandbox.acd.accounts(FIRM, DOSSIER, "fournisseurs")}
    assert exactly_13["lines"][2]["counterparty"]["code"] in suppliers
    assert "F1234567890123" not in suppliers and "F123456789012" not in suppliers
    listed = json.loads(run_cli(hub.env, "dlq", "list", "--provider", "acd", "--json").stdout)
    mine = [d for d in listed if d["client_file_id"] == cf]
    assert {d["error_class"] for d in mine} == {"SubsidiaryCodeTooLong", "SubsidiaryCodeInvalid"}
    assert all(d["step"] == "map" and d["hint"] for d in mine)


def test_missing_subsidiary_is_created_once_when_many_entries_need_it_at_once(hub: Hub) -> None:
    cf = hub.cf("newsup")
    hub.connect_acd(cf)
    code = f"FNEW{hub.run}".upper()[:13]
    entries = []
    for n in range(8):
        entry = _entry(hub, "purchase", 20 + n)
        entry["lines"][2]["counterparty"] = {"kind": "supplier", "code": code, "name": "Nouveau Fournisseur"}
        entries.append(entry)
    creations_before = [c for c in hub.sandbox.acd.calls(FIRM) if c[1].endswith("comptes/fournisseur")]
    for entry in entries:
        hub.emit(sample_event(cf, entry))
    records = hub.wait_states(cf, [e["id"] for e in entries])
    assert all(r.state == "confirmed" for r in records.values())
    codes = [a["Code"] for a in hub.sandbox.acd.accounts(FIRM, DOSSIER, "fournisseurs")]
    assert codes.count(code) == 1
    creations = [c for c in hub.sandbox.acd.calls(FIRM) if c[1].endswith("comptes/fournisseur")]
    assert len(creations) - len(creations_before) == 1


def test_server_off_for_a_while_then_back_every_entry_lands_exactly_once(hub: Hub) -> None:
    cf = hub.cf("off")
    hub.connect_acd(cf, firm="martin", dossier="MARTIN01")
    hub.sandbox.acd.set_fault("martin", Fault(mode="off"))
    entries = [_entry(hub, "bank_transaction", 30 + n) for n in range(10)]
    for entry in entries:
        hub.emit(sample_event(cf, entry))
    hub.wait(
        lambda: all((r := hub.record(cf, e["id"])) is not None and r.state == "waiting_retry" for e in entries),
        30,
        "every entry waiting for the server",
    )
    hub.sandbox.acd.clear_faults("martin")
    records = hub.wait_states(cf, [e["id"] for e in entries])
    assert all(r.state == "confirmed" for r in records.values())
    for rec in records.values():
        assert len(hub.acd_entries_with("martin", "MARTIN01", rec.ack)) == 1
        assert any(a.get("outcome") == "retry" for a in hub.store.records.attempts(rec.id))


def test_commit_then_dropped_connection_does_not_post_twice(hub: Hub) -> None:
    cf = hub.cf("drop")
    hub.connect_acd(cf, firm="leroy", dossier="LEROY01")
    hub.sandbox.acd.set_fault("leroy", Fault(mode="drop_after_commit", route="compta/ecriture", count=4))
    entries = [_entry(hub, "bank_transaction", 40 + n) for n in range(4)]
    for entry in entries:
        hub.emit(sample_event(cf, entry))
    records = hub.wait_states(cf, [e["id"] for e in entries])
    acks = Counter()
    for stored in hub.sandbox.acd.entries("leroy", "LEROY01"):
        acks[stored["LignesEcriture"][0]["Libelle"][-8:]] += 1
    for rec in records.values():
        assert rec.state == "confirmed", rec.last_error
        assert acks[f"(#{rec.ack}#)"] == 1
        outcomes = [a.get("outcome") for a in hub.store.records.attempts(rec.id)]
        assert "found_in_fec" in outcomes


def test_same_event_delivered_three_times_has_one_effect(hub: Hub) -> None:
    cf = hub.cf("dup")
    hub.connect_acd(cf)
    event = sample_event(cf, _entry(hub, "bank_transaction", 50))
    for _ in range(3):
        hub.emit(event)
    rec = hub.wait_states(cf, [event["entry"]["id"]])[event["entry"]["id"]]
    assert rec.state == "confirmed"
    hub.wait(lambda: hub.store.events.counters().get("events_duplicate", 0) >= 2, 10, "duplicates counted")
    assert len(hub.acd_entries_with(FIRM, DOSSIER, rec.ack)) == 1
    assert rec.generation == 0


def test_invalid_event_is_refused_with_every_field_named_and_kept(hub: Hub, tmp_path: Path) -> None:
    cf = hub.cf("invalid")
    hub.connect_acd(cf)
    good = sample_event(cf, _entry(hub, "bank_transaction", 60))
    bad = sample_event(cf, _entry(hub, "bank_transaction", 61))
    bad["entry"]["lines"][0]["debit"] = 12.5
    bad["entry"]["kind"] = "gift"
    events_file = tmp_path / "events.jsonl"
    events_file.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n{not json\n")
    result = run_cli(hub.env, "emit", str(events_file))
    assert result.returncode == 1
    assert "1 event(s) accepted, 2 refused" in result.stdout
    assert "line 2:" in result.stderr and "entry.lines.0.debit" in result.stderr and "entry.kind" in result.stderr
    assert "line 3:" in result.stderr and "not valid JSON" in result.stderr
    # the refused one is kept, visible and names every error
    listed = json.loads(run_cli(hub.env, "dlq", "list", "--provider", "ingest", "--json").stdout)
    mine = [d for d in listed if d["entry_id"] == bad["entry"]["id"]]
    assert len(mine) == 1 and mine[0]["error_class"] == "InvalidEvent"
    assert "entry.lines.0.debit" in mine[0]["message"] and "entry.kind" in mine[0]["message"]
    # an invalid event published straight to the queue is kept by the worker too
    direct = sample_event(cf, _entry(hub, "bank_transaction", 62))
    direct["occurred_at"] = "yesterday"
    hub.emit(direct)
    hub.wait(
        lambda: any(d.entry_id == direct["entry"]["id"] for d in hub.store.dead_letters.all("ingest")), 20, "kept event"
    )
    assert hub.wait_states(cf, [good["entry"]["id"]])[good["entry"]["id"]].state == "confirmed"


def test_replay_after_the_cause_is_fixed_lands_once(hub: Hub) -> None:
    cf = hub.cf("replay")
    hub.connect_acd(cf)
    entry = _entry(hub, "bank_transaction", 70)
    account = f"6{hub.run[:5]}".replace("a", "1").replace("b", "2").replace("c", "3").replace("d", "4")
    account = "".join(ch if ch.isdigit() else "5" for ch in account)
    entry["lines"][0]["account"] = account
    pdf = _doc(hub, "replay", data=tiny_pdf("replay"))
    hub.emit(sample_event(cf, entry, documents=[pdf]))
    rec = hub.wait_states(cf, [entry["id"]])[entry["id"]]
    assert rec.state == "dead" and rec.last_error["error_class"] == "UnknownAccount"
    (dl,) = [d for d in hub.store.dead_letters.all("acd") if d.entry_id == entry["id"]]
    assert dl.step == "map" and "chart of accounts" in dl.hint  # refused before any post
    # the accountant adds the account in ACD, the operator replays
    hub.sandbox.acd.add_account(FIRM, DOSSIER, "generaux", account, "Compte ajouté")
    result = run_cli(hub.env, "dlq", "replay", dl.id)
    assert result.returncode == 0, result.stderr
    rec = hub.wait_states(cf, [entry["id"]], states=("confirmed",))[entry["id"]]
    assert len(hub.acd_entries_with(FIRM, DOSSIER, rec.ack)) == 1
    ged_names = [
        d["NomFichier"] for d in hub.sandbox.acd.documents(FIRM, DOSSIER) if d["NomFichier"].startswith(rec.ack)
    ]
    assert len(ged_names) == 1, "replay from the failed step must not upload the document again"
    assert hub.store.dead_letters.get(dl.id).status == "replayed"
    assert run_cli(hub.env, "dlq", "replay", dl.id).returncode == 1


def test_wrong_password_dead_letters_every_entry_without_locking_the_firm_out(hub: Hub) -> None:
    # given a connected client file whose ACD password is then changed by the firm
    cf = hub.cf("pwd")
    hub.connect_acd(cf, firm="leroy", dossier="LEROY01")
    old_password = hub.sandbox.acd.firms["leroy"].api_users["QONTO"]
    hub.sandbox.acd.set_password("leroy", "QONTO", "changed-by-the-firm")
    hub.sandbox.acd.expire_tokens("leroy")
    failed_logins_before = sum(
        1 for c in hub.sandbox.acd.calls("leroy") if c[1].endswith("authentification") and c[2] == 401
    )
    try:
        entries = [_entry(hub, "bank_transaction", 80 + n) for n in range(6)]
        for entry in entries:
            hub.emit(sample_event(cf, entry))
        records = hub.wait_states(cf, [e["id"] for e in entries])
        # then every entry is dead-lettered as needing the customer, with a hint naming where to fix it
        assert {(r.state, (r.last_error or {}).get("error_class")) for r in records.values()} == {
            ("dead", "AuthenticationFailed")
        }
        assert all("API Access Management" in r.last_error["hint"] for r in records.values())
        failed_logins = sum(
            1 for c in hub.sandbox.acd.calls("leroy") if c[1].endswith("authentification") and c[2] == 401
        )
        # and the hub tried the refused password once, far from ACD's lockout (5 failures in a row)
        assert failed_logins - failed_logins_before == 1
        status = json.loads(run_cli(hub.env, "status", "--json").stdout)
        conn = next(c for c in status["connections"] if c["client_file_id"] == cf)
        assert conn["status"] == "auth_failed"
    finally:
        hub.sandbox.acd.set_password("leroy", "QONTO", old_password)
    # when the firm's password is connected again, a replay of everything lands each entry once
    hub.connect_acd(cf, firm="leroy", dossier="LEROY01")
    result = run_cli(hub.env, "dlq", "replay", "--all", "--provider", "acd")
    assert result.returncode == 0, result.stderr
    records = hub.wait_states(cf, [e["id"] for e in entries], states=("confirmed",))
    for rec in records.values():
        assert len(hub.acd_entries_with("leroy", "LEROY01", rec.ack)) == 1
