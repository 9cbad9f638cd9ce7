"""ACD onboarding and reference data: checks before any post, refreshes, `connect acd --all-dossiers`, beat."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from hubsync_sandbox.samples import sample_entry, sample_event
from pipeline.acd.context import dossier_scope
from pipeline.acd.reference import load, refreshed_at
from tests.conftest import ROOT, Hub, run_cli

pytestmark = pytest.mark.integration
FIRM, DOSSIER = "dupont", "DUPONT01"


def _entry(hub: Hub, kind: str, n: int, **changes: Any) -> dict[str, Any]:
    entry = sample_entry(kind, n)
    entry["id"] = f"{entry['id']}_{hub.run}"
    entry.update(changes)
    return entry


def _calls(hub: Hub, route: str, firm: str = FIRM) -> int:
    return sum(1 for c in hub.sandbox.acd.calls(firm) if c[1].endswith(route))


def _account(hub: Hub, first: str = "6") -> str:
    """A six-digit general account code no other test uses."""
    return first + "".join(str(int(ch, 16) % 10) for ch in hub.run[:5])


def _scope(hub: Hub, firm: str = FIRM, dossier: str = DOSSIER) -> str:
    return dossier_scope(hub.sandbox.acd_api_url(firm).casefold(), dossier)


def _connect_cli(hub: Hub, *args: str, firm: str = FIRM) -> subprocess.CompletedProcess[str]:
    seed = hub.sandbox.acd.firms[firm]
    env = {**hub.env, "HUBSYNC_ACD_PASSWORD": seed.api_users["QONTO"]}
    return run_cli(
        env, "connect", "acd", "--url", hub.sandbox.acd_url(firm), "--cnx", seed.cnx, "--api-code", "QONTO", *args
    )


def test_unknown_journal_account_and_invoice_number_are_refused_before_any_post(hub: Hub) -> None:
    # given a connected client file, and entries ACD would refuse for its journal, an account, an invoice number
    cf = hub.cf("refuse")
    hub.connect_acd(cf)
    account = _account(hub, "9")
    bad_journal = _entry(hub, "bank_transaction", 90, journal_code="ZZ")
    bad_account = _entry(hub, "bank_transaction", 91)
    bad_account["lines"][0]["account"] = account
    bad_invoice = _entry(hub, "bank_transaction", 92, invoice_number="F-2026-0092")
    posts_before = _calls(hub, "compta/ecriture")
    refreshes_before = _calls(hub, "compta/comptes/generaux")
    # when they are emitted
    for entry in (bad_journal, bad_account, bad_invoice):
        hub.emit(sample_event(cf, entry))
    records = hub.wait_states(cf, [bad_journal["id"], bad_account["id"], bad_invoice["id"]])
    # then each is dead-lettered at map with a message naming what is wrong, and nothing was posted
    assert _calls(hub, "compta/ecriture") == posts_before
    journal_error = records[bad_journal["id"]].last_error
    assert records[bad_journal["id"]].state == "dead" and journal_error["error_class"] == "UnknownJournal"
    assert "journal 'ZZ' does not exist in ACD dossier DUPONT01" in journal_error["message"]
    account_error = records[bad_account["id"]].last_error
    assert account_error["error_class"] == "UnknownAccount"
    assert account_error["message"] == f"account {account} is not in the chart of accounts of ACD dossier DUPONT01"
    invoice_error = records[bad_invoice["id"]].last_error
    assert invoice_error["error_class"] == "InvoiceNumberManagementOff"
    assert "invoice-number management is off on journal BQ" in invoice_error["message"]
    assert "File > Settings > Entry > Invoice Number Management" in invoice_error["hint"]
    # and the reference data was refreshed before refusing (it might have been stale)
    assert _calls(hub, "compta/comptes/generaux") > refreshes_before
    letters = [d for d in hub.store.dead_letters.all("acd") if d.client_file_id == cf]
    assert {d.step for d in letters} == {"map"} and len(letters) == 3
    # and the operator sees the reasons
    listed = json.loads(run_cli(hub.env, "dlq", "list", "--provider", "acd", "--json").stdout)
    assert {d["error_class"] for d in listed if d["client_file_id"] == cf} == {
        "UnknownJournal",
        "UnknownAccount",
        "InvoiceNumberManagementOff",
    }


def test_account_added_in_acd_after_connect_lands_without_an_operator(hub: Hub) -> None:
    # given a client file connected before the firm added an account to its chart in ACD
    cf = hub.cf("added")
    hub.connect_acd(cf)
    account = _account(hub, "6")
    assert account not in load(hub.store, _scope(hub)).general
    hub.sandbox.acd.add_account(FIRM, DOSSIER, "generaux", account, "Compte ajouté dans ACD")
    # when an entry on that account arrives
    entry = _entry(hub, "bank_transaction", 93)
    entry["lines"][0]["account"] = account
    hub.emit(sample_event(cf, entry))
    rec = hub.wait_states(cf, [entry["id"]])[entry["id"]]
    # then the stale reference data is refreshed and the entry lands, once, with no dead letter
    assert rec.state == "confirmed", rec.last_error
    assert len(hub.acd_entries_with(FIRM, DOSSIER, rec.ack)) == 1
    assert not [d for d in hub.store.dead_letters.all("acd") if d.client_file_id == cf]
    assert account in load(hub.store, _scope(hub)).general


def test_subsidiary_created_by_map_joins_the_reference_data_at_once(hub: Hub) -> None:
    cf = hub.cf("newtiers")
    hub.connect_acd(cf, firm="martin", dossier="MARTIN01")
    code = f"FREF{hub.run}".upper()[:13]
    entry = _entry(hub, "purchase", 94)
    entry["lines"][2]["counterparty"] = {"kind": "supplier", "code": code, "name": "Fournisseur Nouveau"}
    hub.emit(sample_event(cf, entry))
    rec = hub.wait_states(cf, [entry["id"]])[entry["id"]]
    assert rec.state == "confirmed", rec.last_error
    ref = load(hub.store, _scope(hub, "martin", "MARTIN01"))
    assert code in ref.suppliers
    assert code in {a["Code"] for a in hub.sandbox.acd.accounts("martin", "MARTIN01", "fournisseurs")}


def test_refresh_command_picks_up_a_new_account_and_status_shows_the_age(hub: Hub) -> None:
    # given a connected client file, and an account added in ACD afterwards
    cf = hub.cf("refresh")
    hub.connect_acd(cf, firm="leroy", dossier="LEROY01")
    scope = _scope(hub, "leroy", "LEROY01")
    first = refreshed_at(hub.store, scope)
    assert first is not None
    account = _account(hub, "7")
    hub.sandbox.acd.add_account("leroy", "LEROY01", "generaux", account, "Compte ajouté")
    time.sleep(0.05)
    # when the operator refreshes it
    result = run_cli(hub.env, "refresh", "--client-file", cf, "--json")
    # then the reference data holds the account, and it is as fresh as can be
    assert result.returncode == 0, result.stderr
    (outcome,) = json.loads(result.stdout)
    assert outcome["client_file_id"] == cf and outcome["ok"] and outcome["general_accounts"] >= 19
    ref = load(hub.store, scope)
    assert account in ref.general and ref.refreshed_at > first
    assert {"AC", "VT", "BQ", "OD", "NF"} <= set(ref.journals) and ref.ged_tree
    status = json.loads(run_cli(hub.env, "status", "--json").stdout)
    conn = next(c for c in status["connections"] if c["client_file_id"] == cf)
    assert 0 <= conn["reference_age_seconds"] < 30
    text = run_cli(hub.env, "status").stdout
    assert any(cf in line and "reference data" in line and "old" in line for line in text.splitlines())
    # and an unknown client file is a clear error
    missing = run_cli(hub.env, "refresh", "--client-file", hub.cf("nothing"))
    assert missing.returncode == 1 and "has no ACD connection" in missing.stderr


def test_connect_warns_about_journals_without_invoice_numbers(hub: Hub) -> None:
    cf = hub.cf("warn")
    result = _connect_cli(hub, "--client-file", cf, "--dossier", DOSSIER)
    assert result.returncode == 0, result.stderr
    assert "journals without invoice-number management (AN, BQ, NF, OD, SI)" in result.stdout
    assert "turn on File > Settings > Entry > Invoice Number Management if entries on them carry" in result.stdout
    assert load(hub.store, _scope(hub)) is not None
    assert hub.store.connections.get(cf, "acd").status == "ready"


def test_connect_refuses_an_unshared_dossier_and_an_empty_chart_is_not_ready(hub: Hub) -> None:
    unshared = _connect_cli(hub, "--client-file", hub.cf("unshared"), "--dossier", "DUPONT02")
    assert unshared.returncode == 1
    assert "not shared" in unshared.stderr and "Sharing Management" in unshared.stderr
    assert hub.store.connections.get(hub.cf("unshared"), "acd") is None
    empty = _connect_cli(hub, "--client-file", hub.cf("empty"), "--dossier", "DUPONT03")
    assert empty.returncode == 2
    assert "chart of accounts is empty" in empty.stderr and "not ready" in empty.stderr
    assert hub.store.connections.get(hub.cf("empty"), "acd").status == "incomplete"


def test_connect_all_dossiers_twice_connects_each_shared_dossier_once(hub: Hub) -> None:
    # given firm dupont: DUPONT01 and DUPONT04 complete, DUPONT02 not shared, DUPONT03 with an empty chart
    prefix = hub.cf("all") + "_"
    # when every dossier is connected
    first = _connect_cli(hub, "--all-dossiers", "--client-file-prefix", prefix)
    # then the complete one is connected, the unshared one is named with where to share it, the empty one not ready
    assert first.returncode == 2, first.stderr
    lines = first.stdout.splitlines()
    assert any(line.startswith(f"DUPONT01 (Boulangerie Dupont) -> {prefix}dupont01: connected") for line in lines)
    assert any(line.startswith("DUPONT02 (Garage Dupont): dossier DUPONT02 is not shared") for line in lines)
    assert "i-Suite Expert > Sharing Management" in first.stdout
    assert any(
        line.startswith(f"DUPONT03 (Dupont Immobilier) -> {prefix}dupont03: connected; not ready") for line in lines
    )
    assert any(line.startswith(f"DUPONT04 (Dupont Traiteur) -> {prefix}dupont04: connected") for line in lines)
    assert "3 client file(s) connected or updated, 0 unchanged" in first.stdout
    assert "DUPONT02 not shared, DUPONT03 not ready" in first.stderr
    ready = hub.store.connections.get(f"{prefix}dupont01", "acd")
    assert ready is not None and ready.status == "ready" and ready.params["dossier"] == "DUPONT01"
    assert hub.store.connections.get(f"{prefix}dupont02", "acd") is None
    assert hub.store.connections.get(f"{prefix}dupont03", "acd").status == "incomplete"
    before = {
        cf: hub.store.connections.get(cf, "acd")
        for cf in (f"{prefix}dupont01", f"{prefix}dupont03", f"{prefix}dupont04")
    }
    # when it runs again
    second = _connect_cli(hub, "--all-dossiers", "--client-file-prefix", prefix, "--json")
    # then nothing changes, and it says so
    assert second.returncode == 2, second.stderr
    outcomes = {o["dossier"]: o for o in json.loads(second.stdout)["dossiers"]}
    assert outcomes["DUPONT01"]["outcome"] == "unchanged" and outcomes["DUPONT01"]["ready"]
    assert outcomes["DUPONT01"]["message"] == "already connected, unchanged"
    assert outcomes["DUPONT03"]["outcome"] == "unchanged" and not outcomes["DUPONT03"]["ready"]
    assert outcomes["DUPONT02"]["outcome"] == "not_shared" and "Sharing Management" in outcomes["DUPONT02"]["hint"]
    assert outcomes["DUPONT02"]["client_file_id"] is None
    for cf, conn in before.items():
        assert hub.store.connections.get(cf, "acd") == conn
    third = _connect_cli(hub, "--all-dossiers", "--client-file-prefix", prefix)
    assert "0 client file(s) connected or updated, 3 unchanged" in third.stdout
    assert third.stdout.count("already connected, unchanged") == 3


def test_connect_needs_a_dossier_or_all_dossiers(hub: Hub) -> None:
    result = _connect_cli(hub, "--client-file", hub.cf("nodossier"))
    assert result.returncode == 1 and "--all-dossiers" in result.stderr


def test_beat_schedules_the_reference_refresh_and_the_worker_runs_it(hub: Hub, tmp_path: Any) -> None:
    # given a connected client file, and beat told to refresh every second
    cf = hub.cf("beat")
    hub.connect_acd(cf, firm="martin", dossier="MARTIN01")
    scope = _scope(hub, "martin", "MARTIN01")
    first = refreshed_at(hub.store, scope)
    env = {**hub.env, "HUBSYNC_REFERENCE_REFRESH_SECONDS": "1"}
    log = (tmp_path / "beat.log").open("wb")
    beat = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "beat", "-s", str(tmp_path / "schedule")],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # then the worker refreshes the reference data on the schedule
        hub.wait(lambda: (refreshed_at(hub.store, scope) or 0) > (first or 0), 30, "a scheduled refresh")
    finally:
        beat.terminate()
        try:
            beat.wait(15)
        except subprocess.TimeoutExpired:
            beat.kill()
        log.close()
    assert "hubsync.acd.refresh_reference" in (tmp_path / "beat.log").read_text()


def test_beat_schedule_is_configured_from_the_environment() -> None:
    code = (
        "import json, celeryconfig; e = celeryconfig.beat_schedule['acd-refresh-reference']; "
        "print(json.dumps([e['task'], e['schedule'], e['options']['queue']]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"HUBSYNC_REFERENCE_REFRESH_SECONDS": "120", "PATH": ""},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(out.stdout) == ["hubsync.acd.refresh_reference", 120.0, "acd"], out.stderr
