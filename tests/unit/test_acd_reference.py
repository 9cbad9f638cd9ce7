"""ACD reference data: ``check_entry`` refuses what ACD would refuse, before any call, with precise messages."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from hubsync_sandbox.samples import sample_entry, sample_event
from pipeline.acd.context import dossier_scope
from pipeline.acd.errors import (
    EntryRefused,
    FiscalYearClosed,
    InactiveAccount,
    InvoiceNumberManagementOff,
    OutsideFiscalYears,
    UnknownAccount,
    UnknownJournal,
)
from pipeline.acd.fec import FiscalYear
from pipeline.acd.reference import Reference, check_entry
from pipeline.model import Entry
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
    from pipeline.store import Store, keys

    client = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/8", decode_responses=True)
    client.flushdb()
    store = Store(client)
    first = reference(refreshed_at=100.0)
    assert ref_mod.load_for_check(store, first.scope) is None  # never fetched
    ref_mod.save(store, first)
    loaded = ref_mod.load_for_check(store, first.scope)
    assert loaded is not None and loaded.general == CHART
    # the stored chart changes behind this process's back, refreshed_at unchanged: the loaded copy is kept
    client.sadd(keys.reference_general(first.scope), "699999")
    kept = ref_mod.load_for_check(store, first.scope)
    assert kept is loaded and "699999" not in kept.general
    # a refresh (new refreshed_at) is seen at once
    ref_mod.save(store, reference(general=CHART | {"699999"}, refreshed_at=200.0))
    again = ref_mod.load_for_check(store, first.scope)
    assert again is not None and "699999" in again.general and again.refreshed_at == 200.0
    client.flushdb()


# -- v2: inactive accounts, fiscal years, tolerant reading --------------------------------------------

YEARS = [
    FiscalYear(date(2023, 1, 1), date(2023, 12, 31), closed=True),
    FiscalYear(date(2024, 1, 1), date(2025, 3, 31)),
    FiscalYear(date(2025, 4, 1), date(2026, 3, 31)),
    FiscalYear(date(2026, 4, 1), date(2027, 3, 31), current=True),
]


def test_an_inactive_general_or_subsidiary_account_is_refused_naming_it() -> None:
    with pytest.raises(InactiveAccount) as info:
        check_entry(entry("bank_transaction"), reference(inactive={"627000"}))
    assert "account 627000 is inactive in ACD dossier DUPONT01" in info.value.message
    with pytest.raises(InactiveAccount):
        check_entry(entry("purchase"), reference(inactive={"FEDF"}))
    assert "reactivate" in info.value.hint


def test_a_date_in_a_closed_fiscal_year_is_refused() -> None:
    with pytest.raises(FiscalYearClosed) as info:
        check_entry(entry("bank_transaction", date="2023-06-30"), reference(fiscal_years=YEARS))
    assert "01/01/2023-31/12/2023" in info.value.message and "closed" in info.value.message


def test_a_date_outside_every_fiscal_year_is_refused_listing_them() -> None:
    with pytest.raises(OutsideFiscalYears) as info:
        check_entry(entry("bank_transaction", date="2027-06-30"), reference(fiscal_years=YEARS))
    assert "30/06/2027 is in no fiscal year" in info.value.message and "01/04/2026-31/03/2027" in info.value.message


def test_a_non_calendar_fiscal_year_holds_its_months_and_gives_its_end_year_for_the_fec() -> None:
    ref = reference(fiscal_years=YEARS)
    november = entry("bank_transaction", date="2026-11-19")
    check_entry(november, ref)
    assert ref.fec_year(november) == 2027
    assert ref.fec_year(entry("bank_transaction", date="2026-02-10")) == 2026


def test_without_fiscal_years_from_the_server_dates_are_not_checked() -> None:
    check_entry(entry("bank_transaction", date="2031-01-01"), reference(fiscal_years=None))


def test_analytic_accounts_are_not_refused_before_acd_decides() -> None:
    check_entry(entry("bank_transaction"), reference(analytic={"627000"}))


def test_a_journals_filing_plan_gives_its_folder() -> None:
    ref = reference(filing_plans={"AC": {"Id": 11, "Libelle": "Factures fournisseurs"}})
    assert ref.folder_for("AC") == 11 and ref.folder_for("BQ") is None
    assert reference(filing_plans=None).folder_for("AC") is None


def test_reference_data_is_read_tolerantly_from_the_server() -> None:
    import httpx

    from pipeline.acd import reference as ref_mod
    from pipeline.acd.client import AcdClient, AcdCredentials
    from pipeline.secrets import Secret

    answers = {
        "/compta/journal": [
            {"code": "AC", "libelle": "Achats", "nature": "Achat", "numeroFacture": "true", "Extra": 1},
            {"Code": "AN", "Libelle": "A nouveaux", "Nature": "ANouveau", "NumeroFacture": False},
            {"Code": "SI", "Libelle": "Situation", "Nature": "SituationInventaire"},
        ],
        "/compta/comptes/generaux": [
            {"Code": "606400", "CptInactif": False, "ActivationAnalytique": 1},
            {"code": "607000", "cptInactif": "true"},
        ],
        "/compta/comptes/clients": [{"Code": "CDURAND", "Categ": "C"}],
        "/compta/comptes/fournisseurs": [{"Code": "FEDF", "Categ": "F", "CptInactif": True}],
        "/compta/exercices": [{"DateDebut": "2026-04-01T00:00:00", "DateFin": "2027-03-31T00:00:00", "Courant": True}],
        "/ged/arborescence": {"Arborescences": [{"Id": 1, "Libelle": "Achats"}]},
        "/compta/planClassementEcriture/AC": {"Id": 11, "Libelle": "Factures"},
        "/compta/planClassementEcriture/AN": {
            "codeRetour": 0,
            "listeErreurs": [{"erreur": "planClassementIntrouvable"}],
        },
        "/compta/planClassementEcriture/SI": {
            "codeRetour": 0,
            "listeErreurs": [{"erreur": "planClassementIntrouvable"}],
        },
    }

    class Tokens:
        store = None

        def get(self, key):
            from pipeline.acd.tokens import Token

            return Token("T" * 30, "fp")

        def touch(self, key, token):
            pass

    def handler(request: httpx.Request) -> httpx.Response:
        route = request.url.path.removeprefix("/CNX/api/v1")
        return httpx.Response(200, json=answers[route])

    http = httpx.Client(transport=httpx.MockTransport(handler))
    creds = AcdCredentials("https://x.fr/CNX/api", "CNX", "QONTO", Secret("pw"))
    ref = ref_mod.fetch(AcdClient(http, creds, "DUPONT01", Tokens()), "scope")  # type: ignore[arg-type]
    assert sorted(ref.journals) == ["AC", "AN", "SI"]
    assert ref.journals["AC"]["NumeroFacture"] is True and ref.journals["SI"]["Nature"] == "SituationInventaire"
    assert ref.general == {"606400", "607000"} and ref.inactive == {"607000", "FEDF"}
    assert ref.analytic == {"606400"}
    assert ref.fiscal_years == [FiscalYear(date(2026, 4, 1), date(2027, 3, 31), current=True)]
    assert ref.filing_plans == {"AC": {"Id": 11, "Libelle": "Factures"}}
    assert ref.ged_tree == [{"Id": 1, "Libelle": "Achats"}]
