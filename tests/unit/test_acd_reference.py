"""ACD reference data: ``check_entry`` refuses what ACD would refuse, before any call, with precise messages."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.acd.errors import EntryRefused, InvoiceNumberManagementOff, UnknownAccount, UnknownJournal
from pipeline.acd.reference import Reference, check_entry, dossier_scope
from pipeline.model import Entry
from pipeline.samples import sample_entry, sample_event
from schemas.event import load_event

CHART = {"401000", "411000", "421000", "445660", "445710", "512000", "606400", "625100", "627000", "706000"}


def reference(**changes: Any) -> Reference:
    """The reference data of a dossier like the sandbox's DUPONT01."""
    values: dict[str, Any] = {
        "scope": dossier_scope("https://cabinet-dupont.fr/iSuiteExpert", "DUPONT01"),
        "dossier": "DUPONT01",
        "journals": {
            "AC": {"Code": "AC", "Libelle": "Achats", "Nature": "Achat", "NumeroFacture": True},
            "VT": {"Code": "VT", "Libelle": "Ventes", "Nature": "Vente", "NumeroFacture": True},
            "BQ": {"Code": "BQ", "Libelle": "Banque", "Nature": "Tresorerie", "NumeroFacture": False},
            "NF": {"Code": "NF", "Libelle": "Notes de frais", "Nature": "OperationDiverse", "NumeroFacture": False},
        },
        "general": set(CHART),
        "subsidiaries": {"FORANGE", "FEDF", "CDURAND"},
    }
    values.update(changes)
    return Reference(**values)


def entry(kind: str, n: int = 1, **changes: Any) -> Entry:
    """A validated sample entry of ``kind`` with ``changes`` applied to its raw form."""
    raw = sample_entry(kind, n)
    raw.update(changes)
    return load_event(sample_event("cf_dupont", raw)).entry


@pytest.mark.parametrize("kind", ["purchase", "sale", "expense_report", "bank_transaction"])
def test_every_sample_kind_passes_against_a_complete_dossier(kind: str) -> None:
    check_entry(entry(kind), reference())


def test_unknown_journal_is_refused_naming_it_and_the_journals_that_exist() -> None:
    with pytest.raises(UnknownJournal) as info:
        check_entry(entry("bank_transaction", journal_code="ZZ"), reference())
    assert "journal 'ZZ' does not exist in ACD dossier DUPONT01" in info.value.message
    assert "AC, BQ, NF, VT" in info.value.message
    assert info.value.code == "journalInexistant"
    assert "Create the journal" in info.value.hint


def test_unknown_general_account_is_refused_naming_the_account() -> None:
    raw = sample_entry("bank_transaction", 1)
    raw["lines"][0]["account"] = "628100"
    with pytest.raises(UnknownAccount) as info:
        check_entry(entry("bank_transaction", lines=raw["lines"]), reference())
    assert info.value.message == "account 628100 is not in the chart of accounts of ACD dossier DUPONT01"
    assert info.value.code == "compteInexistant"
    assert "chart of accounts" in info.value.hint


def test_several_unknown_accounts_are_all_named_once() -> None:
    raw = sample_entry("expense_report", 1)
    raw["lines"][0]["account"] = "625700"
    raw["lines"][1]["account"] = "445620"
    with pytest.raises(UnknownAccount) as info:
        check_entry(entry("expense_report", lines=raw["lines"]), reference())
    assert "accounts 625700, 445620 are not in the chart of accounts" in info.value.message


def test_an_empty_chart_is_named_as_such() -> None:
    with pytest.raises(UnknownAccount) as info:
        check_entry(entry("bank_transaction"), reference(general=set(), dossier="DUPONT03"))
    assert "627000, 512000" in info.value.message
    assert "the chart of accounts of ACD dossier DUPONT03 is empty" in info.value.message


def test_a_line_with_a_counterparty_is_not_checked_against_the_chart() -> None:
    # given a purchase whose supplier line carries a collective account the chart does not hold
    raw = sample_entry("purchase", 1)
    raw["lines"][2]["account"] = "401999"
    # then it passes: the line posts to the subsidiary code, which map creates if it is missing
    check_entry(entry("purchase", lines=raw["lines"]), reference())
    check_entry(entry("purchase", lines=raw["lines"]), reference(subsidiaries=set()))


def test_invoice_number_on_a_journal_without_invoice_number_management_is_refused() -> None:
    with pytest.raises(InvoiceNumberManagementOff) as info:
        check_entry(entry("bank_transaction", invoice_number="F-2026-77"), reference())
    assert "invoice number 'F-2026-77'" in info.value.message
    assert "invoice-number management is off on journal BQ of ACD dossier DUPONT01" in info.value.message
    assert "File > Settings > Entry > Invoice Number Management" in info.value.hint
    assert info.value.code == "numeroFactureNonActive"


def test_no_invoice_number_on_such_a_journal_passes() -> None:
    check_entry(entry("expense_report"), reference())


def test_refusals_are_permanent_entry_refusals() -> None:
    for bad in (entry("bank_transaction", journal_code="ZZ"), entry("bank_transaction", invoice_number="X-1")):
        with pytest.raises(EntryRefused) as info:
            check_entry(bad, reference())
        assert info.value.kind == "permanent"


def test_reference_lists_journals_without_invoice_numbers_and_splits_subsidiaries() -> None:
    ref = reference()
    assert ref.journals_without_invoice_numbers() == ["BQ", "NF"]
    assert ref.clients == {"CDURAND"} and ref.suppliers == {"FORANGE", "FEDF"}


def test_the_check_reuses_loaded_reference_data_until_it_is_refreshed(redis_server: Any) -> None:
    import redis

    from pipeline.acd import reference as ref_mod
    from pipeline.store import Store

    client = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/8", decode_responses=True)
    client.flushdb()
    store = Store(client)
    first = reference(refreshed_at=100.0)
    assert ref_mod.load_for_check(store, first.scope) is None  # never fetched
    ref_mod.save(store, first)
    loaded = ref_mod.load_for_check(store, first.scope)
    assert loaded is not None and loaded.general == CHART
    # the stored chart changes behind this process's back, refreshed_at unchanged: the loaded copy is kept
    client.sadd(ref_mod._general_key(first.scope), "699999")
    kept = ref_mod.load_for_check(store, first.scope)
    assert kept is loaded and "699999" not in kept.general
    # a refresh (new refreshed_at) is seen at once
    ref_mod.save(store, reference(general=CHART | {"699999"}, refreshed_at=200.0))
    again = ref_mod.load_for_check(store, first.scope)
    assert again is not None and "699999" in again.general and again.refreshed_at == 200.0
    client.flushdb()
