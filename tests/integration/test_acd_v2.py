"""What real i-Suite servers do, end to end (contract v2): dossier sessions under one API code worked on by
several worker processes with short-lived tokens, a server restart, 500 after commit, analytics with and
without an automatic key, an empty label, a non-calendar fiscal year, a FEC too slow to be read twice within
the confirm window, API discovery at connect, a lost GED answer. A real Redis, real `hubsync worker`
processes, the ACD sandbox over loopback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from hubsync_sandbox import Fault
from hubsync_sandbox.samples import document_ref, sample_entry, sample_event, tiny_pdf
from tests.conftest import Hub, run_cli

pytestmark = pytest.mark.integration


def _entry(hub: Hub, kind: str, n: int, **changes: Any) -> dict[str, Any]:
    entry = sample_entry(kind, n)
    entry["id"] = f"{entry['id']}_{hub.run}"
    entry.update(changes)
    return entry


def _signature(lines: list[dict[str, Any]]) -> tuple[tuple[str, str, Decimal, Decimal], ...]:
    """What identifies a posted entry's lines: account, label (with its ACK code) and amounts."""
    return tuple(
        (str(x["Compte"]), str(x["Libelle"]), Decimal(str(x["Debit"])), Decimal(str(x["Credit"]))) for x in lines
    )


def _placement(hub: Hub, firm: str, records: dict[str, Any], home: dict[str, str]) -> dict[str, list[str]]:
    """Where each record's entry is in the firm's dossiers: ``{"right": [...], "wrong": [...], "twice": [...]}``.
    ``home`` maps a client file to its dossier."""
    by_sig = {_signature(rec.payload["LignesEcriture"]): rec for rec in records.values() if rec.payload}
    seen: dict[str, list[str]] = {}
    for dossier in hub.sandbox.acd.firms[firm].dossiers:
        for stored in hub.sandbox.acd.entries(firm, dossier):
            rec = by_sig.get(_signature(stored["LignesEcriture"]))
            if rec is not None:
                seen.setdefault(rec.id, []).append(dossier)
    out: dict[str, list[str]] = {"right": [], "wrong": [], "twice": [], "missing": []}
    for rec in records.values():
        where = seen.get(rec.id, [])
        if not where:
            out["missing"].append(rec.id)
        elif any(d != home[rec.client_file_id] for d in where):
            out["wrong"].append(rec.id)
        elif len(where) > 1:
            out["twice"].append(rec.id)
        else:
            out["right"].append(rec.id)
    return out


@pytest.fixture
def short_tokens(hub: Hub) -> Iterator[None]:
    """ACD kills every token one second after its issue, and answers posts slowly enough for the run to span
    many token lifetimes."""
    acd = hub.sandbox.acd
    saved = (acd.token_lifetime_seconds, acd.token_idle_seconds)
    acd.token_lifetime_seconds, acd.token_idle_seconds = 1.0, 1.0
    acd.set_fault("dupont", Fault(mode="slow", route="compta/ecriture", delay_seconds=0.25))
    yield
    acd.clear_faults("dupont")
    acd.token_lifetime_seconds, acd.token_idle_seconds = saved


def _two_dossiers(hub: Hub, tag: str) -> tuple[str, str, dict[str, str]]:
    one, four = hub.cf(f"{tag}01"), hub.cf(f"{tag}04")
    hub.connect_acd(one, "dupont", "DUPONT01")
    hub.connect_acd(four, "dupont", "DUPONT04")
    return one, four, {one: "DUPONT01", four: "DUPONT04"}


def _emit_both(hub: Hub, one: str, four: str, count: int, start: int) -> tuple[list[str], list[str]]:
    ids1, ids4 = [], []
    for n in range(count):
        kind = ("bank_transaction", "purchase", "expense_report")[n % 3]
        for cf, ids, tag in ((one, ids1, "d1"), (four, ids4, "d4")):
            entry = _entry(hub, kind, start + n)
            entry["id"] = f"{entry['id']}_{tag}"
            hub.emit(sample_event(cf, entry))
            ids.append(entry["id"])
    return ids1, ids4


def test_two_dossiers_of_one_api_code_on_three_workers_with_short_lived_tokens_stay_apart(
    hub: Hub, more_workers: list[Any], short_tokens: None
) -> None:
    # given DUPONT01 and DUPONT04 of one firm under ONE API code, three worker processes, tokens dying every second
    one, four, home = _two_dossiers(hub, "apart")
    logins_before = hub.sandbox.acd.logins("dupont")
    started = time.monotonic()
    # when 80 entries, half for each dossier, are emitted at once
    ids1, ids4 = _emit_both(hub, one, four, 40, 500)
    records = {**hub.wait_states(one, ids1, timeout=240), **hub.wait_states(four, ids4, timeout=240)}
    took = time.monotonic() - started
    # then every entry is confirmed, once, in its own dossier, and none is in the other
    assert {r.state for r in records.values()} == {"confirmed"}, [r.last_error for r in records.values()][:3]
    placed = _placement(hub, "dupont", {r.id: r for r in records.values()}, home)
    logins = hub.sandbox.acd.logins("dupont") - logins_before
    print(
        f"\n80 entries, 2 dossiers of one API code, 3 worker processes, 1 s tokens, {took:.0f}s: "
        f"{len(placed['right'])} in their own dossier, {len(placed['wrong'])} in the other, {len(placed['twice'])} "
        f"twice; {logins} logins"
    )
    assert placed["wrong"] == [] and placed["twice"] == [] and placed["missing"] == []
    assert len(placed["right"]) == 80
    assert logins >= 4  # the tokens did die and were replaced, again and again, while the entries flowed


def test_a_server_restart_mid_run_costs_one_login_per_dossier_and_loses_nothing(
    hub: Hub, more_workers: list[Any]
) -> None:
    # given three workers flowing entries into two dossiers of one API code
    one, four, home = _two_dossiers(hub, "restart")
    hub.sandbox.acd.set_fault("dupont", Fault(mode="slow", route="compta/ecriture", delay_seconds=0.3))
    ids1, ids4 = _emit_both(hub, one, four, 30, 600)

    def posted() -> int:
        pairs = ((one, ids1), (four, ids4))
        return sum(1 for cf, ids in pairs for e in ids if (r := hub.record(cf, e)) is not None and r.posted_at)

    hub.wait(lambda: posted() >= 10, 120, "a few entries posted")
    # when the firm's server restarts (every token and session gone), with posts in flight and every
    # confirmation still to come
    logins_before = hub.sandbox.acd.logins("dupont")
    hub.sandbox.acd.restart("dupont")
    records = {**hub.wait_states(one, ids1, timeout=240), **hub.wait_states(four, ids4, timeout=240)}
    hub.sandbox.acd.clear_faults("dupont")
    # then every entry lands once in its own dossier, and the restart cost at most one login per dossier
    logins = hub.sandbox.acd.logins("dupont") - logins_before
    print(f"\nrestart with 3 workers on 2 dossiers: {logins} login(s) afterwards")
    assert {r.state for r in records.values()} == {"confirmed"}
    placed = _placement(hub, "dupont", {r.id: r for r in records.values()}, home)
    assert len(placed["right"]) == 60 and placed["wrong"] == placed["twice"] == placed["missing"] == []
    assert 1 <= logins <= 2


def test_500_after_commit_is_found_in_the_fec_and_never_posted_again(hub: Hub) -> None:
    cf = hub.cf("err500")
    hub.connect_acd(cf, firm="leroy", dossier="LEROY01")
    hub.sandbox.acd.set_fault("leroy", Fault(mode="error_after_commit", route="compta/ecriture", count=3))
    entries = [_entry(hub, "bank_transaction", 700 + n) for n in range(3)]
    for entry in entries:
        hub.emit(sample_event(cf, entry))
    records = hub.wait_states(cf, [e["id"] for e in entries])
    for rec in records.values():
        assert rec.state == "confirmed", rec.last_error
        assert len(hub.acd_entries_with("leroy", "LEROY01", rec.ack)) == 1
        history = hub.store.records.attempts(rec.id)
        unknown = [a for a in history if a.get("error_class") == "PostOutcomeUnknown"]
        assert unknown and "La référence d'objet n'est pas définie" in unknown[0]["message"]
        assert "found_in_fec" in [a.get("outcome") for a in history]


def test_an_empty_label_syncs_with_a_useful_one(hub: Hub) -> None:
    cf = hub.cf("nolabel")
    hub.connect_acd(cf)
    purchase = _entry(hub, "purchase", 710, label="")
    bank = _entry(hub, "bank_transaction", 711, label="")
    for entry in (purchase, bank):
        hub.emit(sample_event(cf, entry))
    records = hub.wait_states(cf, [purchase["id"], bank["id"]])
    (stored_purchase,) = hub.acd_entries_with("dupont", "DUPONT01", records[purchase["id"]].ack)
    (stored_bank,) = hub.acd_entries_with("dupont", "DUPONT01", records[bank["id"]].ack)
    ack_p, ack_b = records[purchase["id"]].ack, records[bank["id"]].ack
    supplier = purchase["lines"][2]["counterparty"]["name"]
    assert {x["Libelle"] for x in stored_purchase["LignesEcriture"]} == {
        f"{supplier} {purchase['invoice_number']} (#{ack_p}#)"
    }
    day = bank["date"].split("-")
    assert {x["Libelle"] for x in stored_bank["LignesEcriture"]} == {
        f"Opération bancaire du {day[2]}/{day[1]}/{day[0]} (#{ack_b}#)"
    }


def test_analytics_are_sent_and_an_account_with_an_automatic_key_needs_none(hub: Hub) -> None:
    cf = hub.cf("analytics")
    hub.connect_acd(cf)
    split = _entry(hub, "bank_transaction", 720)
    split["lines"][0]["account"] = "622600"  # analytic account, no automatic key
    amount = Decimal(split["lines"][0]["debit"])
    paris = (amount / 2).quantize(Decimal("0.01"))
    split["lines"][0]["analytics"] = [
        {"section": "PARIS", "amount": str(paris)},
        {"section": "LYON", "amount": str(amount - paris)},
    ]
    automatic = _entry(hub, "bank_transaction", 721)
    automatic["lines"][0]["account"] = "613200"  # analytic account with an automatic split key in ACD
    missing = _entry(hub, "bank_transaction", 722)
    missing["lines"][0]["account"] = "622600"
    for entry in (split, automatic, missing):
        hub.emit(sample_event(cf, entry))
    records = hub.wait_states(cf, [split["id"], automatic["id"], missing["id"]])
    # the hub's split is posted as Analytiques
    (stored,) = hub.acd_entries_with("dupont", "DUPONT01", records[split["id"]].ack)
    assert [(a["Section1"], Decimal(str(a["Debit"]))) for a in stored["LignesEcriture"][0]["Analytiques"]] == [
        ("PARIS", paris),
        ("LYON", amount - paris),
    ]
    # ACD applied its own key where the hub gave none
    assert records[automatic["id"]].state == "confirmed", records[automatic["id"]].last_error
    (auto_stored,) = hub.acd_entries_with("dupont", "DUPONT01", records[automatic["id"]].ack)
    assert {a["Section1"] for a in auto_stored["LignesEcriture"][0]["Analytiques"]} == {"PARIS", "LYON"}
    # and without a key nor a split, ACD's refusal is a dead letter saying what to do
    rec = records[missing["id"]]
    assert rec.state == "dead" and rec.last_error["error_class"] == "AnalyticSplitMissing"
    assert rec.step == "post" and "analytic split" in rec.last_error["hint"]
    assert hub.acd_entries_with("dupont", "DUPONT01", rec.ack) == []


def test_a_non_calendar_fiscal_year_is_read_from_the_fec_of_the_year_it_ends(hub: Hub) -> None:
    # given DUPONT04, whose fiscal years run April to March (those ending in 2023 and 2024 closed)
    cf = hub.cf("fy")
    hub.connect_acd(cf, "dupont", "DUPONT04")
    november = _entry(hub, "bank_transaction", 730, date="2026-11-19")  # fiscal year ending March 2027
    february = _entry(hub, "bank_transaction", 731, date="2026-02-10")  # fiscal year ending March 2026
    closed = _entry(hub, "bank_transaction", 732, date="2024-01-15")  # fiscal year ending March 2024: closed
    outside = _entry(hub, "bank_transaction", 733, date="2029-05-02")  # no fiscal year
    posts_before = sum(1 for c in hub.sandbox.acd.calls("dupont") if c[1].lower().endswith("compta/ecriture"))
    for entry in (november, february, closed, outside):
        hub.emit(sample_event(cf, entry))
    records = hub.wait_states(cf, [november["id"], february["id"], closed["id"], outside["id"]])
    for entry in (november, february):
        rec = records[entry["id"]]
        assert rec.state == "confirmed", rec.last_error
        (stored,) = hub.acd_entries_with("dupont", "DUPONT04", rec.ack)
        assert rec.provider_id == str(stored["EcritureNum"])
    assert records[closed["id"]].last_error["error_class"] == "FiscalYearClosed"
    assert records[outside["id"]].last_error["error_class"] == "OutsideFiscalYears"
    assert {records[e["id"]].step for e in (closed, outside)} == {"map"}
    posts = sum(1 for c in hub.sandbox.acd.calls("dupont") if c[1].lower().endswith("compta/ecriture"))
    assert posts - posts_before == 2


def test_a_post_the_server_commits_after_the_client_gave_up_is_found_not_posted_again(hub: Hub) -> None:
    # given a server that takes 9 s to commit a post, while the hub waits 5 s for an answer (an IIS server goes
    # on with a request its client left, until its own request timeout)
    cf = hub.cf("latecommit")
    hub.connect_acd(cf, "leroy")
    hub.sandbox.acd.set_fault("leroy", Fault(mode="slow", route="compta/ecriture", delay_seconds=9, count=1))
    entry = _entry(hub, "bank_transaction", 745)
    hub.emit(sample_event(cf, entry))
    rec = hub.wait_states(cf, [entry["id"]], timeout=120)[entry["id"]]
    # then the timeout is an unknown outcome, looked up in a FEC read after the server's own timeout: found once
    assert rec.state == "confirmed", rec.last_error
    assert len(hub.acd_entries_with("leroy", "LEROY01", rec.ack)) == 1
    outcomes = [a.get("outcome") for a in hub.store.records.attempts(rec.id)]
    assert "found_in_fec" in outcomes and "posted" not in outcomes


def test_an_entry_is_given_up_on_only_after_a_read_made_past_the_window_misses_it(hub: Hub) -> None:
    # given a dossier whose FEC takes 10 s to build (so it is read at most every 30 s, the confirm window) and a
    # server that writes new entries into its FEC 16 s after taking them (the hub expects 2 s): the first read
    # misses the entry, and no other read comes within the window
    cf = hub.cf("slowfec")
    hub.connect_acd(cf, "martin")
    hub.sandbox.acd.set_fault("martin", Fault(mode="slow", route="compta/fec", delay_seconds=10))
    lag, hub.sandbox.acd.index_lag_seconds = hub.sandbox.acd.index_lag_seconds, 16.0
    try:
        entry = _entry(hub, "bank_transaction", 740)
        hub.emit(sample_event(cf, entry))
        rec = hub.wait_states(cf, [entry["id"]], timeout=120)[entry["id"]]
    finally:
        hub.sandbox.acd.index_lag_seconds = lag
    # then it is confirmed by the next read, not dead-lettered because the clock passed the window
    assert rec.state == "confirmed", rec.last_error
    (stored,) = hub.acd_entries_with("martin", "MARTIN01", rec.ack)
    assert rec.provider_id == str(stored["EcritureNum"])
    assert rec.confirmed_at - rec.posted_at > 30


def test_connect_finds_the_api_from_the_browser_address_and_says_where(hub: Hub) -> None:
    seed = hub.sandbox.acd.firms["leroy"]
    env = {**hub.env, "HUBSYNC_ACD_PASSWORD": seed.api_users["QONTO"]}
    browser = hub.sandbox.acd_url("leroy")
    result = run_cli(
        env, "connect", "acd", "--client-file", hub.cf("found"), "--url", browser, "--cnx", seed.cnx,
        "--api-code", "QONTO", "--dossier", "LEROY01",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    api = hub.sandbox.acd_api_url("leroy")
    assert f"ACD API found at {api} (from {browser})" in result.stdout
    assert "fiscal years: 01/01/2023-31/12/2023 closed" in result.stdout
    assert "GED filing plans: AC -> " in result.stdout and "VT -> " in result.stdout
    assert "journals: AC (Achat), VT (Vente), BQ (Tresorerie)" in result.stdout
    assert hub.store.connections.get(hub.cf("found"), "acd").params["api_base"] == api


def test_connect_with_a_wrong_password_costs_one_failed_login(hub: Hub) -> None:
    seed = hub.sandbox.acd.firms["martin"]
    env = {**hub.env, "HUBSYNC_ACD_PASSWORD": "not-the-password"}
    failed_before = sum(1 for c in hub.sandbox.acd.calls("martin") if "authentification" in c[1] and c[2] == 401)
    result = run_cli(
        env, "connect", "acd", "--client-file", hub.cf("badpw"), "--url", hub.sandbox.acd_url("martin"),
        "--cnx", seed.cnx, "--api-code", "QONTO", "--dossier", "MARTIN01",
    )  # fmt: skip
    assert result.returncode == 1
    assert "refused the login of API code 'QONTO'" in result.stderr and "API Access Management" in result.stderr
    failed = sum(1 for c in hub.sandbox.acd.calls("martin") if "authentification" in c[1] and c[2] == 401)
    assert failed - failed_before == 1
    assert hub.store.connections.get(hub.cf("badpw"), "acd") is None


def _connect_martin(hub: Hub, cf: str, url: str) -> Any:
    seed = hub.sandbox.acd.firms["martin"]
    env = {**hub.env, "HUBSYNC_ACD_PASSWORD": seed.api_users["QONTO"]}
    return run_cli(
        env, "connect", "acd", "--client-file", cf, "--url", url, "--cnx", seed.cnx, "--api-code", "QONTO",
        "--dossier", "MARTIN01",
    )  # fmt: skip


def test_connect_waits_out_a_429_at_the_api_and_connects(hub: Hub) -> None:
    # given the API address typed, and the server shedding the first login with 429 (Retry-After 1 s)
    api = hub.sandbox.acd_api_url("martin")
    hub.sandbox.acd.set_fault("martin", Fault(mode="rate_limit", route="authentification", retry_after=1, count=1))
    # when connect runs
    result = _connect_martin(hub, hub.cf("busy429"), api)
    # then it asked the same address again after the wait, and connected
    assert result.returncode == 0, result.stderr
    assert f"ACD API at {api}" in result.stdout
    assert hub.store.connections.get(hub.cf("busy429"), "acd").params["api_base"] == api


@pytest.mark.parametrize(
    "fault",
    [
        Fault(mode="rate_limit", route="authentification", retry_after=60),
        Fault(mode="gateway", route="authentification"),
    ],
    ids=["429", "502"],
)
def test_connect_to_a_busy_server_says_busy_not_wrong_address(hub: Hub, fault: Fault) -> None:
    # given the firm's server shedding every login (429 asking for a minute, or its gateway's 502)
    hub.sandbox.acd.set_fault("martin", fault)
    # when connect runs with the right address and CNX
    result = _connect_martin(hub, hub.cf("busy"), hub.sandbox.acd_url("martin"))
    # then it says the server is busy or off and to try again, not to check the URL and CNX; nothing is stored
    assert result.returncode == 1
    assert "busy or off" in result.stderr and "again in a few minutes" in result.stderr, result.stderr
    assert "Check the i-Suite URL" not in result.stderr
    assert hub.store.connections.get(hub.cf("busy"), "acd") is None


def test_connect_failing_after_discovery_on_a_busy_server_says_to_run_it_again(hub: Hub) -> None:
    # given a server that answers the login but sheds the reference-data reads with 503
    hub.sandbox.acd.set_fault("martin", Fault(mode="status", status=503, route="compta/journal"))
    # when connect runs
    result = _connect_martin(hub, hub.cf("busyref"), hub.sandbox.acd_url("martin"))
    # then it fails saying nothing retries a command and to run it again, not that the hub keeps retrying
    assert result.returncode == 1
    assert "Nothing retries this command: run `hubsync connect acd` again" in result.stderr, result.stderr
    assert "keeps retrying" not in result.stderr and "Retried automatically" not in result.stderr


def test_a_lost_ged_answer_is_looked_up_by_name_and_never_uploaded_twice(hub: Hub) -> None:
    cf = hub.cf("gedlost")
    hub.connect_acd(cf, firm="martin", dossier="MARTIN01")
    hub.sandbox.acd.set_fault("martin", Fault(mode="drop_after_commit", route="ged/documents", count=1))
    data = tiny_pdf(f"lost answer {hub.run}")
    info = hub.sandbox.docs.put(f"doc_lost_{hub.run}", data, filename="lost.pdf")
    entry = _entry(hub, "purchase", 740)
    doc = document_ref(f"doc_lost_{hub.run}", info["url"], data, "supplier_invoice", "lost.pdf")
    hub.emit(sample_event(cf, entry, documents=[doc]))
    rec = hub.wait_states(cf, [entry["id"]])[entry["id"]]
    assert rec.state == "confirmed", rec.last_error
    copies = [d for d in hub.sandbox.acd.documents("martin", "MARTIN01") if d["NomFichier"].startswith(rec.ack)]
    assert len(copies) == 1
    assert "found_in_ged" in [a.get("outcome") for a in hub.store.records.attempts(rec.id)]
    (stored,) = hub.acd_entries_with("martin", "MARTIN01", rec.ack)
    assert stored["ReferenceGed"] == str(copies[0]["Id"])


def test_a_document_the_ged_stores_after_the_client_gave_up_is_found_not_uploaded_again(hub: Hub) -> None:
    # given a GED that takes 9 s to store a file, while the hub waits 5 s for an answer
    cf = hub.cf("gedlate")
    hub.connect_acd(cf, firm="martin", dossier="MARTIN01")
    hub.sandbox.acd.set_fault("martin", Fault(mode="slow", route="ged/documents", delay_seconds=9, count=1))
    data = tiny_pdf(f"late store {hub.run}")
    info = hub.sandbox.docs.put(f"doc_late_{hub.run}", data, filename="late.pdf")
    entry = _entry(hub, "purchase", 741)
    doc = document_ref(f"doc_late_{hub.run}", info["url"], data, "supplier_invoice", "late.pdf")
    started = time.monotonic()
    hub.emit(sample_event(cf, entry, documents=[doc]))
    rec = hub.wait_states(cf, [entry["id"]], timeout=120)[entry["id"]]
    time.sleep(max(0.0, 10.0 - (time.monotonic() - started)))  # the slow upload has been stored by now
    # then it is looked up once the server cannot still be storing it, and found: one copy
    assert rec.state == "confirmed", rec.last_error
    copies = [d for d in hub.sandbox.acd.documents("martin", "MARTIN01") if d["NomFichier"].startswith(rec.ack)]
    assert len(copies) == 1
    assert "found_in_ged" in [a.get("outcome") for a in hub.store.records.attempts(rec.id)]


def test_a_lost_dossier_session_is_reopened_without_a_new_login(hub: Hub) -> None:
    cf = hub.cf("lostsession")
    hub.connect_acd(cf, firm="leroy", dossier="LEROY01")
    warm = _entry(hub, "bank_transaction", 750)
    hub.emit(sample_event(cf, warm))
    hub.wait_states(cf, [warm["id"]])
    logins = hub.sandbox.acd.logins("leroy")
    hub.sandbox.acd.set_fault("leroy", Fault(mode="session_lost", count=3))
    entries = [_entry(hub, "bank_transaction", 751 + n) for n in range(3)]
    for entry in entries:
        hub.emit(sample_event(cf, entry))
    records = hub.wait_states(cf, [e["id"] for e in entries])
    assert {r.state for r in records.values()} == {"confirmed"}
    assert hub.sandbox.acd.logins("leroy") == logins
    status = json.loads(run_cli(hub.env, "entry", entries[0]["id"], "--json").stdout)
    assert status["providers"][0]["provider_id"] == records[entries[0]["id"]].provider_id
