"""ACD mapping: labels cut around the ACK code, subsidiary codes checked never cut, the POST /compta/ecriture body."""

from __future__ import annotations

import json
import re
import unicodedata
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubsync_sandbox.samples import sample_entry, sample_event
from pipeline.acd.errors import SubsidiaryCodeInvalid, SubsidiaryCodeTooLong
from pipeline.acd.mapping import LABEL_MAX_CHARS, check_subsidiary, cut_label, map_entry, utf16_units
from pipeline.model import Counterparty, Entry
from schemas.event import load_event

ACK = "K7QZ"
TAG = "(#K7QZ#)"
ANY_ACK_TAG = re.compile(r"\(#[A-Z0-9]{4}#\)")


def entry_from(raw: dict) -> Entry:
    """The validated entry of an event around ``raw``, as the pipeline sees it."""
    return load_event(sample_event("cf_dupont", raw)).entry


# -- cut_label ------------------------------------------------------------------------------------


def test_label_over_50_chars_keeps_ack_code():
    # given a label of 69 characters
    label = "Orange Business Services - facture novembre 2026 ligne fixe et mobile"

    # when it is cut for ACD
    result = cut_label(label, ACK)

    # then the text is cut, the ACK code is whole at the end and the total fits in 50 characters
    assert result == "Orange Business Services - facture novemb (#K7QZ#)"
    assert len(result) == LABEL_MAX_CHARS


def test_short_label_is_untouched_except_the_tag():
    # given a label that fits with room to spare
    label = "Frais bancaires mars 2026"

    # when it is cut
    result = cut_label(label, ACK)

    # then only the tag is appended, after one space
    assert result == "Frais bancaires mars 2026 (#K7QZ#)"


def test_label_of_41_chars_fits_exactly_and_42_is_cut():
    # given labels right at and just over the room left by " (#XXXX#)" (50 - 9 = 41 characters)
    fits = "a" * 40 + "b"
    over = "a" * 40 + "bc"

    # when they are cut
    kept, cut = cut_label(fits, ACK), cut_label(over, ACK)

    # then the first is kept whole, the second loses its last character, both are exactly 50 long
    assert kept == "a" * 40 + "b " + TAG
    assert cut == "a" * 40 + "b " + TAG
    assert len(kept) == len(cut) == 50


def test_cut_that_ends_on_a_space_leaves_no_double_space():
    # given a label whose 41st character is a space
    label = "a" * 40 + " suite du libellé"

    # when it is cut
    result = cut_label(label, ACK)

    # then the trailing space is dropped before the tag
    assert result == "a" * 40 + " " + TAG


def test_ack_tag_already_in_label_is_replaced_not_duplicated():
    # given labels already carrying an ACK tag: another entry's, the same one, one in the middle
    other = "Orange novembre (#AB12#)"
    same = "Orange novembre (#K7QZ#)"
    middle = "Orange (#AB12#) novembre"

    # when they are cut with this entry's ACK code
    results = [cut_label(label, ACK) for label in (other, same, middle)]

    # then each carries exactly one tag, this entry's, at the end
    assert results == ["Orange novembre (#K7QZ#)"] * 3
    assert all(len(ANY_ACK_TAG.findall(r)) == 1 for r in results)


def test_whitespace_and_newlines_are_collapsed():
    # given a label with leading/trailing blanks, newlines, tabs and a non-breaking space
    label = "  Orange\r\n\tnovembre \u00a0 2026\n  "

    # when it is cut
    result = cut_label(label, ACK)

    # then every run of blanks is one space and nothing is left at the ends
    assert result == "Orange novembre 2026 (#K7QZ#)"


def test_control_characters_become_spaces():
    # given a label with NUL, ESC and a zero-width space inside
    label = "Orange\x00\x1b nov\u200bembre"

    # when it is cut
    result = cut_label(label, ACK)

    # then they are gone, the words around them kept apart
    assert result == "Orange nov embre (#K7QZ#)"


def test_combining_mark_is_not_split_from_its_base():
    # given a label whose 41st character is a base letter followed by a combining acute accent, and
    # "q" + U+0301 has no precomposed form, so NFC keeps them as two code points
    label = "a" * 40 + "q\u0301" + " reste du libellé"

    # when it is cut right after the base letter
    result = cut_label(label, ACK)

    # then the base goes with its accent instead of leaving a bare accent or a bare base
    assert result == "a" * 40 + " " + TAG
    assert not unicodedata.combining(result[40])


def test_decomposed_accents_count_as_one_character():
    # given a label written with decomposed accents (e + U+0301)
    label = "e\u0301" * 45

    # when it is cut
    result = cut_label(label, ACK)

    # then it is normalised first, so 41 accented letters fit
    assert result == "\u00e9" * 41 + " " + TAG


@pytest.mark.parametrize(
    ("base", "mark"),
    [("\u0e01", "\u0e31"), ("\u0915", "\u093f"), ("\u2764", "\ufe0f")],
    ids=["thai-mai-han-akat", "devanagari-vowel-sign-i", "emoji-variation-selector"],
)
def test_zero_class_combining_mark_is_not_split_from_its_base(base, mark):
    # given a label whose 41st character is a base followed by a mark of general category M
    label = "a" * 40 + base + mark + " reste"

    # when it is cut right after the base
    result = cut_label(label, ACK)

    # then the base is not kept without its mark
    assert result == "a" * 40 + " " + TAG


@pytest.mark.parametrize("label", ["", "   ", "\n\t", "(#AB12#)", " (#K7QZ#) "])
def test_empty_label_gives_just_the_tag(label):
    # given a label with no text of its own

    # when it is cut
    result = cut_label(label, ACK)

    # then the result is the bare tag, without a leading space
    assert result == TAG


@given(
    label=st.text(alphabet=st.characters(exclude_categories=()), max_size=300),
    ack=st.from_regex(r"[A-Z0-9]{4}", fullmatch=True),
)
def test_any_label_fits_ends_with_its_tag_and_has_no_control_characters(label, ack):
    # given any text at all (surrogates, controls, marks, other tags included) and any ACK code

    # when it is cut
    result = cut_label(label, ack)

    # then it fits, ends with the tag, carries that tag once and no control or surrogate character
    assert len(result) <= LABEL_MAX_CHARS
    assert result.endswith(f"(#{ack}#)")
    assert ANY_ACK_TAG.findall(result) == [f"(#{ack}#)"]
    assert not [ch for ch in result if unicodedata.category(ch) in ("Cc", "Cs", "Cf")]
    assert result == result.strip()


# -- check_subsidiary -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "code"),
    [("supplier", "FORANGE"), ("client", "CDURAND"), ("supplier", "F"), ("client", "C123456789012")],
)
def test_subsidiary_code_with_the_right_prefix_is_accepted(kind, code):
    # given a counterparty whose code has its kind's prefix and at most 13 characters
    counterparty = Counterparty(kind=kind, code=code, name="x")

    # when it is checked, then nothing is raised
    assert check_subsidiary(counterparty) is None


@pytest.mark.parametrize(
    ("kind", "code"),
    [("supplier", "CORANGE"), ("client", "FDURAND"), ("supplier", "forange"), ("client", "401000")],
)
def test_subsidiary_code_with_the_wrong_prefix_is_refused(kind, code):
    # given a supplier code not starting with F or a client code not starting with C
    counterparty = Counterparty(kind=kind, code=code, name="x")

    # when it is checked
    with pytest.raises(SubsidiaryCodeInvalid) as info:
        check_subsidiary(counterparty)

    # then it is refused with ACD's own code and the expected prefix named
    assert info.value.code == "codeTiersInvalide"
    assert repr(code) in info.value.message
    assert "start with F for a supplier and C for a client" in info.value.hint


def test_subsidiary_code_of_14_chars_is_refused_not_truncated():
    # given a supplier code of 14 characters
    code = "FORANGEBUSINES"
    counterparty = Counterparty(kind="supplier", code=code, name="Orange Business")

    # when it is checked
    with pytest.raises(SubsidiaryCodeTooLong) as info:
        check_subsidiary(counterparty)

    # then it is refused, naming its length and the limit, and the code is left as it was
    assert info.value.code == "codeTiersTropLong"
    assert "14 characters" in info.value.message
    assert "at most 13" in info.value.message
    assert counterparty.code == code


def test_subsidiary_code_of_exactly_13_chars_is_accepted():
    # given a client code of exactly 13 characters
    counterparty = Counterparty(kind="client", code="CMARTINEZFILS", name="Martinez et Fils")
    assert len(counterparty.code) == 13

    # when it is checked, then nothing is raised
    assert check_subsidiary(counterparty) is None


def test_entry_with_a_long_subsidiary_code_is_never_mapped_with_a_cut_code():
    # given a purchase whose supplier code is 14 characters long
    entry = entry_from(sample_entry("purchase", 1, supplier=("FORANGEBUSINES", "Orange Business")))

    # when it is mapped, then it is refused rather than posted with a shortened code
    with pytest.raises(SubsidiaryCodeTooLong):
        map_entry(entry, ACK, None)


def test_entry_with_a_13_char_subsidiary_code_keeps_it_whole():
    # given a purchase whose supplier code is exactly 13 characters long
    entry = entry_from(sample_entry("purchase", 1, supplier=("FORANGEBUSINE", "Orange Business")))

    # when it is mapped
    body = map_entry(entry, ACK, None)

    # then the supplier line names the whole code
    assert [line["Compte"] for line in body["LignesEcriture"]] == ["606400", "445660", "FORANGEBUSINE"]


# -- map_entry ------------------------------------------------------------------------------------


def test_purchase_maps_to_the_contract_body():
    # given the purchase sample n=1: EDF, 2 February 2026, invoice F-2026-1001, 137.01 + 27.40 = 164.41
    entry = entry_from(sample_entry("purchase", 1))

    # when it is mapped with a GED document id
    body = map_entry(entry, ACK, 8812)

    # then it is exactly the body of POST /compta/ecriture in the contract: no CodeDossier (the dossier is the
    # session's), ReferenceGed as a string at entry level and on each line
    label = "EDF - facture février 2026 fournitures, a (#K7QZ#)"
    common = {"Jour": 2, "NumeroPiece": "F-2026-1001", "NumeroFacture": "F-2026-1001", "ReferenceGed": "8812"}
    assert body == {
        "Journal": "AC",
        "Mois": 2,
        "Annee": 2026,
        "ReferenceGed": "8812",
        "LignesEcriture": [
            {**common, "Compte": "606400", "Libelle": label, "Debit": 137.01, "Credit": 0},
            {**common, "Compte": "445660", "Libelle": label, "Debit": 27.40, "Credit": 0},
            {**common, "Compte": "FEDF", "Libelle": label, "Debit": 0, "Credit": 164.41},
        ],
    }


def test_counterparty_line_names_the_subsidiary_code_not_the_general_account():
    # given a sale whose client line is on general account 411000 with client CMARTINEZ
    entry = entry_from(sample_entry("sale", 1))

    # when it is mapped
    body = map_entry(entry, ACK, None)

    # then that line's Compte is the client code; the others keep their general account
    assert [line["Compte"] for line in body["LignesEcriture"]] == ["CMARTINEZ", "706000", "445710"]
    assert body["Journal"] == "VT"


def test_amounts_are_json_numbers_with_at_most_2_decimals():
    # given a purchase with cents on every line
    entry = entry_from(sample_entry("purchase", 1))

    # when it is mapped and serialised as httpx would
    body = map_entry(entry, ACK, None)
    text = json.dumps(body)

    # then amounts are JSON numbers (not strings), equal to the Decimal amounts to the cent
    assert '"Debit": 137.01' in text
    assert '"Credit": 164.41' in text
    for line, mapped in zip(entry.lines, body["LignesEcriture"], strict=True):
        for side, value in (("Debit", line.debit), ("Credit", line.credit)):
            number = mapped[side]
            assert type(number) is float
            assert Decimal(repr(number)) == value
            assert round(number, 2) == number


def test_largest_amounts_keep_their_cents():
    # given an entry of 1 234 567 890 123.45 (the largest amount the event schema admits has 15 digits)
    raw = sample_entry("bank_transaction", 1)
    raw["lines"][0]["debit"] = raw["lines"][1]["credit"] = "1234567890123.45"

    # when it is mapped
    lines = map_entry(entry_from(raw), ACK, None)["LignesEcriture"]

    # then the amount survives the trip to a JSON number exactly
    assert json.dumps(lines[0]["Debit"]) == "1234567890123.45"
    assert json.dumps(lines[1]["Credit"]) == "1234567890123.45"


def test_entry_without_invoice_number_has_no_numero_facture():
    # given an expense report, which has no invoice number
    entry = entry_from(sample_entry("expense_report", 3))
    assert entry.invoice_number is None

    # when it is mapped
    body = map_entry(entry, ACK, None)

    # then no line carries NumeroFacture (ACD refuses it on journals without invoice numbers) and the
    # piece number falls back to the entry id
    assert all("NumeroFacture" not in line for line in body["LignesEcriture"])
    assert {line["NumeroPiece"] for line in body["LignesEcriture"]} == {"ent_exp_3"}


def test_empty_invoice_number_is_treated_as_none():
    # given a purchase whose invoice number is an empty string
    raw = sample_entry("purchase", 2)
    raw["invoice_number"] = ""

    # when it is mapped
    body = map_entry(entry_from(raw), ACK, None)

    # then there is no NumeroFacture at all
    assert all("NumeroFacture" not in line for line in body["LignesEcriture"])


def test_reference_ged_is_a_string_empty_without_a_document():
    # given a purchase
    entry = entry_from(sample_entry("purchase", 1))

    # when it is mapped without and with a GED id
    without = map_entry(entry, ACK, None)
    with_doc = map_entry(entry, ACK, 42)

    # then ReferenceGed is "" in the first and "42" at entry level and on every line of the second
    assert without["ReferenceGed"] == "" and all(line["ReferenceGed"] == "" for line in without["LignesEcriture"])
    assert with_doc["ReferenceGed"] == "42"
    assert [line["ReferenceGed"] for line in with_doc["LignesEcriture"]] == ["42", "42", "42"]


def test_line_label_is_used_when_the_line_has_one():
    # given a purchase whose VAT line has its own label
    raw = sample_entry("purchase", 1)
    raw["lines"][1]["label"] = "  TVA déductible   sur facture EDF "

    # when it is mapped
    lines = map_entry(entry_from(raw), ACK, None)["LignesEcriture"]

    # then that line carries its own (cleaned) label, the others the entry's, all tagged
    assert lines[1]["Libelle"] == "TVA déductible sur facture EDF (#K7QZ#)"
    assert lines[0]["Libelle"] == lines[2]["Libelle"] == "EDF - facture février 2026 fournitures, a (#K7QZ#)"


def test_every_mapped_label_fits_and_ends_with_the_ack_code():
    # given one entry of each kind
    entries = [entry_from(sample_entry(kind, 7)) for kind in ("purchase", "sale", "expense_report", "bank_transaction")]

    # when they are mapped
    labels = [line["Libelle"] for e in entries for line in map_entry(e, ACK, None)["LignesEcriture"]]

    # then every label is at most 50 characters and ends with the tag
    assert labels
    assert all(len(label) <= 50 and label.endswith(" " + TAG) for label in labels)


# -- analytics and empty labels ----------------------------------------------------------------------


def test_line_analytics_are_sent_as_analytiques_on_the_lines_side():
    # given a purchase whose expense line is split over two sections, and a sale whose revenue line is
    raw = sample_entry("purchase", 1)
    raw["lines"][0]["analytics"] = [{"section": "PARIS", "amount": "100.00"}, {"section": "LYON", "amount": "37.01"}]
    sale = sample_entry("sale", 1)
    sale["lines"][1]["analytics"] = [{"section": "CONSEIL", "amount": sale["lines"][1]["credit"]}]

    # when they are mapped
    lines = map_entry(entry_from(raw), ACK, None)["LignesEcriture"]
    sale_lines = map_entry(entry_from(sale), ACK, None)["LignesEcriture"]

    # then the split is on the debit side of the debit line, the credit side of the credit line, only there
    assert lines[0]["Analytiques"] == [
        {"Section1": "PARIS", "Debit": 100.0, "Credit": 0},
        {"Section1": "LYON", "Debit": 37.01, "Credit": 0},
    ]
    assert "Analytiques" not in lines[1] and "Analytiques" not in lines[2]
    assert sale_lines[1]["Analytiques"] == [{"Section1": "CONSEIL", "Debit": 0, "Credit": sale_lines[1]["Credit"]}]


def test_an_empty_label_becomes_the_counterparty_and_invoice_number():
    raw = sample_entry("purchase", 1)
    raw["label"] = ""
    lines = map_entry(entry_from(raw), ACK, None)["LignesEcriture"]
    assert {line["Libelle"] for line in lines} == {"EDF F-2026-1001 (#K7QZ#)"}


def test_an_empty_label_without_counterparty_or_invoice_becomes_the_kind_and_date():
    raw = sample_entry("bank_transaction", 1)
    raw["label"] = "   "
    lines = map_entry(entry_from(raw), ACK, None)["LignesEcriture"]
    assert {line["Libelle"] for line in lines} == {"Opération bancaire du 02/02/2026 (#K7QZ#)"}


def test_a_label_made_only_of_an_ack_code_is_replaced_too():
    raw = sample_entry("expense_report", 1)
    raw["label"] = "(#ABCD#)"
    lines = map_entry(entry_from(raw), ACK, None)["LignesEcriture"]
    assert {line["Libelle"] for line in lines} == {"Note de frais du 02/02/2026 (#K7QZ#)"}


def test_a_label_with_emoji_fits_50_characters_as_the_dotnet_server_counts_them():
    # given a label whose characters beyond U+FFFF count two UTF-16 units on ACD's .NET server
    label = "Resto 🍕🍕 équipe — dîner client 🎉 chez Mario et Luigi, Paris 11e"

    # when it is cut for ACD
    result = cut_label(label, ACK)

    # then it fits in 50 UTF-16 units with the ACK code whole at the end, so the server's own cut keeps it
    assert utf16_units(result) <= LABEL_MAX_CHARS and result.endswith(" " + TAG)
    dotnet_cut = result.encode("utf-16-le")[: 2 * LABEL_MAX_CHARS].decode("utf-16-le")
    assert dotnet_cut == result
    assert result.startswith("Resto 🍕🍕 équipe")
