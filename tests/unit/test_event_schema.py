"""The ``entry.validated`` event: what loads, and every refusal naming the field path and the rule broken."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from marshmallow import ValidationError

from hubsync_sandbox.samples import document_ref, sample_entry, sample_event, tiny_pdf
from pipeline.acd.mapping import cut_label
from pipeline.ingest import parse
from pipeline.model import ENTRY_KINDS, Counterparty, Document, Entry, Event, Line
from schemas.event import MAX_EVENT_BYTES, flatten_errors, load_event, load_stored_event

PDF = tiny_pdf("facture EDF")


def valid_event() -> dict:
    """The purchase sample n=1 (EDF, 137.01 + 27.40 = 164.41) with one PDF attached."""
    doc = document_ref("doc_551", "https://docs.hub.example/doc_551", PDF, "supplier_invoice", "facture edf.pdf")
    return sample_event("cf_dupont", sample_entry("purchase", 1), documents=[doc])


def refusal(data) -> list[str]:
    """The ``field.path: rule`` lines for an event that must be refused."""
    with pytest.raises(ValidationError) as info:
        load_event(data)
    return flatten_errors(info.value.messages)


# -- what loads -----------------------------------------------------------------------------------


def test_valid_event_loads_into_domain_objects_with_decimal_amounts():
    # given a valid purchase event with one document
    data = valid_event()

    # when it is loaded
    event = load_event(data)

    # then every part is a domain object, amounts are exact Decimals and dates are real dates
    assert isinstance(event, Event)
    assert isinstance(event.entry, Entry)
    assert all(isinstance(line, Line) for line in event.entry.lines)
    assert [(line.debit, line.credit) for line in event.entry.lines] == [
        (Decimal("137.01"), Decimal("0.00")),
        (Decimal("27.40"), Decimal("0.00")),
        (Decimal("0.00"), Decimal("164.41")),
    ]
    assert all(type(line.debit) is Decimal and type(line.credit) is Decimal for line in event.entry.lines)
    assert event.entry.lines[2].counterparty == Counterparty(kind="supplier", code="FEDF", name="EDF")
    assert event.entry.lines[0].counterparty is None
    assert event.entry.date == date(2026, 2, 2)
    assert event.entry.invoice_number == "F-2026-1001"
    assert event.occurred_at == datetime(2026, 11, 19, 9, 12, 44, tzinfo=UTC)
    assert event.documents == (
        Document(
            id="doc_551",
            url="https://docs.hub.example/doc_551",
            filename="facture edf.pdf",
            kind="supplier_invoice",
            content_type="application/pdf",
            size=len(PDF),
            sha256=data["documents"][0]["sha256"],
            paid=None,
        ),
    )


def test_parse_of_json_text_gives_the_event_and_no_errors():
    # given the same event as JSON text, then as UTF-8 bytes
    text = json.dumps(valid_event(), ensure_ascii=False)

    # when it is parsed
    from_text, data, errors = parse(text)
    from_bytes, _, bytes_errors = parse(text.encode("utf-8"))

    # then both give the loaded event, the decoded data and no error
    assert errors == bytes_errors == []
    assert from_text == from_bytes == load_event(valid_event())
    assert data == valid_event()


@pytest.mark.parametrize("kind", ["purchase", "sale", "expense_report", "bank_transaction"])
def test_every_sample_kind_loads(kind):
    # given the sample event of each entry kind
    data = sample_event("cf_dupont", sample_entry(kind, 4))

    # when it is loaded
    event = load_event(data)

    # then its kind and balance survive
    assert event.entry.kind == kind
    assert sum(line.debit for line in event.entry.lines) == sum(line.credit for line in event.entry.lines)


# -- refusals: each names the field path and the rule ----------------------------------------------


def _set(path: str, value):
    """A mutation setting ``path`` (dotted, list indexes as numbers) to ``value``."""

    def mutate(data: dict) -> None:
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value

    return mutate


REFUSALS = [
    pytest.param(
        _set("entry.lines.0.debit", 137.01),
        'entry.lines.0.debit: must be a decimal string such as "120.00", not a JSON number',
        id="json-float-amount",
    ),
    pytest.param(
        _set("entry.lines.1.debit", 27),
        'entry.lines.1.debit: must be a decimal string such as "120.00", not a JSON number',
        id="json-integer-amount",
    ),
    pytest.param(
        _set("entry.lines.0.debit", "137.010"),
        'entry.lines.0.debit: must be a non-negative decimal string with at most 2 decimals, e.g. "120.00"',
        id="three-decimals",
    ),
    pytest.param(
        _set("entry.lines.0.debit", "-137.01"),
        'entry.lines.0.debit: must be a non-negative decimal string with at most 2 decimals, e.g. "120.00"',
        id="negative-amount",
    ),
    pytest.param(
        _set("entry.lines.0.credit", "1.00"),
        "entry.lines.0.credit: a line has one side at zero: debit or credit, not both",
        id="both-sides-non-zero",
    ),
    pytest.param(
        _set("entry.lines.0.debit", "1.00"),
        "entry.lines: the entry does not balance: debits 28.40 ≠ credits 164.41",
        id="unbalanced",
    ),
    pytest.param(
        _set("entry.kind", "refund"),
        "entry.kind: Must be one of: purchase, sale, expense_report, bank_transaction.",
        id="unknown-entry-kind",
    ),
    pytest.param(
        _set("event_type", "entry.created"),
        "event_type: Must be equal to entry.validated.",
        id="bad-event-type",
    ),
    pytest.param(
        _set("occurred_at", "2026-11-19T09:12:44"),
        "occurred_at: Not a valid aware datetime.",
        id="occurred-at-without-zone",
    ),
    pytest.param(
        _set("documents.0.filename", "../etc/passwd"),
        "documents.0.filename: must be a plain file name, without a path",
        id="filename-with-path",
    ),
    pytest.param(
        _set("documents.0.filename", "..\\windows\\win.ini"),
        "documents.0.filename: must be a plain file name, without a path",
        id="filename-with-backslash-path",
    ),
    pytest.param(
        _set("documents.0.sha256", "A" * 64),
        "documents.0.sha256: must be 64 lowercase hexadecimal digits",
        id="sha256-uppercase",
    ),
    pytest.param(
        _set("documents.0.sha256", "abc123"),
        "documents.0.sha256: must be 64 lowercase hexadecimal digits",
        id="sha256-short",
    ),
    pytest.param(
        _set("entry.label", "EDF facture\x07 février"),
        "entry.label: must not contain control characters (other than tabs and line breaks) or lone surrogates",
        id="control-character-in-label",
    ),
    pytest.param(
        _set("entry.label", "EDF facture \ud800 février"),
        "entry.label: must not contain control characters (other than tabs and line breaks) or lone surrogates",
        id="lone-surrogate-in-label",
    ),
    pytest.param(
        _set("entry.lines.1.label", "TVA\x00février"),
        "entry.lines.1.label: must not contain control characters (other than tabs and line breaks) or lone surrogates",
        id="nul-in-line-label",
    ),
    pytest.param(
        _set("entry.label", "EDF\x1b[31m facture"),
        "entry.label: must not contain control characters (other than tabs and line breaks) or lone surrogates",
        id="escape-in-label",
    ),
    pytest.param(
        _set("entry.lines.2.counterparty.name", "EDF\tSA"),
        "entry.lines.2.counterparty.name: must not contain control characters or lone surrogates",
        id="tab-in-counterparty-name",
    ),
    pytest.param(
        _set("entry.label", "x" * 1001),
        "entry.label: Longer than maximum length 1000.",
        id="label-over-1000-chars",
    ),
    pytest.param(
        _set("entry.lines.2.counterparty.kind", "employee"),
        "entry.lines.2.counterparty.kind: Must be one of: supplier, client.",
        id="unknown-counterparty-kind",
    ),
    pytest.param(
        _set("documents.0.url", "file:///etc/passwd"),
        "documents.0.url: Not a valid URL.",
        id="document-url-not-http",
    ),
]


@pytest.mark.parametrize(("mutate", "expected"), REFUSALS)
def test_refusal_names_the_field_path_and_the_rule(mutate, expected):
    # given a valid event broken in exactly one place
    data = valid_event()
    mutate(data)

    # when it is loaded
    errors = refusal(data)

    # then the one error line names the field path and the rule
    assert errors == [expected]


def test_label_of_exactly_1000_chars_is_accepted():
    # given a label right at the limit
    data = valid_event()
    data["entry"]["label"] = "x" * 1000

    # when it is loaded, then it is kept whole
    assert load_event(data).entry.label == "x" * 1000


def test_every_broken_field_is_reported_at_once():
    # given an event broken in three unrelated places
    data = valid_event()
    data["event_type"] = "entry.deleted"
    data["entry"]["kind"] = "refund"
    data["documents"][0]["sha256"] = "nothex"

    # when it is loaded
    errors = refusal(data)

    # then all three are named, not only the first
    assert sorted(errors) == [
        "documents.0.sha256: must be 64 lowercase hexadecimal digits",
        "entry.kind: Must be one of: purchase, sale, expense_report, bank_transaction.",
        "event_type: Must be equal to entry.validated.",
    ]


def test_missing_required_fields_are_named():
    # given an event without entry id nor client file
    data = valid_event()
    del data["entry"]["id"]
    del data["client_file_id"]

    # when it is loaded
    errors = refusal(data)

    # then both missing fields are named
    assert sorted(errors) == [
        "client_file_id: Missing data for required field.",
        "entry.id: Missing data for required field.",
    ]


@pytest.mark.parametrize(
    "path",
    [
        "event_id",
        "entry.journal_code",
        "entry.lines.0.account",
        "entry.lines.0.debit",
        "entry.lines.2.counterparty.code",
        "documents.0.sha256",
    ],
)
def test_value_with_a_trailing_newline_is_refused(path):
    # given a valid event where one constrained value gets a trailing newline
    data = valid_event()
    node = data
    *parents, last = path.split(".")
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[last] = node[last] + "\n"

    # when it is loaded, then that field is refused
    errors = refusal(data)
    assert [e.split(":")[0] for e in errors] == [path]


# -- parse: what arrives as text -----------------------------------------------------------------


def test_parse_names_a_lone_surrogate_escaped_in_json_text():
    # given JSON text whose label holds the escape of a lone surrogate
    data = valid_event()
    data["entry"]["label"] = "EDF @@ février"
    text = json.dumps(data, ensure_ascii=False).replace("@@", "\\ud83d")

    # when it is parsed
    event, _, errors = parse(text)

    # then it is refused on the label
    assert event is None
    assert errors == [
        "entry.label: must not contain control characters (other than tabs and line breaks) or lone surrogates"
    ]


def test_event_over_1_mib_is_refused_before_decoding():
    # given a JSON text one byte over 1 MiB
    head = '{"event_id": "evt_big", "pad": "'
    text = head + "x" * (MAX_EVENT_BYTES - len(head) - 1) + '"}'
    assert len(text.encode()) == MAX_EVENT_BYTES + 1

    # when it is parsed
    event, data, errors = parse(text)

    # then it is refused for its size alone
    assert event is None
    assert errors == ["event: larger than 1048576 bytes"]
    assert data == text


def test_event_size_is_counted_in_bytes_not_characters():
    # given a text of fewer than 1 MiB characters but more than 1 MiB of UTF-8 (é is two bytes)
    text = '{"pad": "' + "é" * (MAX_EVENT_BYTES // 2) + '"}'
    assert len(text) < MAX_EVENT_BYTES < len(text.encode())

    # when it is parsed, then it is refused for its size
    assert parse(text)[2] == ["event: larger than 1048576 bytes"]


def test_event_over_1_mib_as_bytes_is_refused():
    # given the raw bytes of a message over 1 MiB
    raw = b'{"pad": "' + b"x" * MAX_EVENT_BYTES + b'"}'

    # when it is parsed
    event, _, errors = parse(raw)

    # then it is refused for its size
    assert event is None
    assert errors == ["event: larger than 1048576 bytes"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"event_id": ', "event: not valid JSON (Expecting value at line 1 column 14)"),
        (
            "{'event_id': 'evt'}",
            "event: not valid JSON (Expecting property name enclosed in double quotes at line 1 column 2)",
        ),
        ('{"a": 1}\n{"b": 2}', "event: not valid JSON (Extra data at line 2 column 1)"),
        ("", "event: not valid JSON (Expecting value at line 1 column 1)"),
    ],
    ids=["truncated", "single-quotes", "two-documents", "empty"],
)
def test_invalid_json_text_is_refused_with_its_position(text, expected):
    # given text that is not one JSON document

    # when it is parsed
    event, data, errors = parse(text)

    # then it is refused, saying where the JSON breaks, and the text is kept as it came
    assert event is None
    assert errors == [expected]
    assert data == text


@pytest.mark.parametrize("text", ["[1, 2]", '"entry.validated"', "null", "42", "true"])
def test_json_that_is_not_an_object_is_refused(text):
    # given valid JSON that is not an object

    # when it is parsed
    event, data, errors = parse(text)

    # then it is refused as a whole
    assert event is None
    assert errors == ["event: an event is a JSON object"]
    assert data == json.loads(text)


def test_deeply_nested_json_is_refused_not_crashing():
    # given an object nested far deeper than Python's recursion limit, yet well under 1 MiB
    text = '{"entry": ' * 20_000 + "{}" + "}" * 20_000
    assert len(text) < MAX_EVENT_BYTES

    # when it is parsed
    event, _, errors = parse(text)

    # then it is refused with a message instead of raising RecursionError
    assert event is None
    assert errors == ["event: nested too deeply"]


# -- flatten_errors --------------------------------------------------------------------------------


def test_flatten_errors_joins_nested_paths_and_schema_errors():
    # given marshmallow's nested error dict with list indexes and schema-level errors
    messages = {
        "_schema": ["an event is a JSON object"],
        "entry": {"lines": {0: {"debit": ["bad amount"]}, "_schema": ["does not balance"]}},
        "documents": {1: {"sha256": ["not hex", "too short"]}},
    }

    # when they are flattened
    lines = flatten_errors(messages)

    # then each message becomes one "path: rule" line, schema errors on their parent's path
    assert lines == [
        "event: an event is a JSON object",
        "entry.lines.0.debit: bad amount",
        "entry.lines: does not balance",
        "documents.1.sha256: not hex",
        "documents.1.sha256: too short",
    ]


# -- analytics and empty labels ---------------------------------------------------------------------


def test_tabs_and_line_breaks_in_labels_load_and_reach_acd_as_spaces():
    # given labels pasted from a document: tabs, CR and LF in the entry's label and in a line's
    data = valid_event()
    data["entry"]["label"] = "EDF\tfacture\r\nfévrier 2026\n"
    data["entry"]["lines"][1]["label"] = "TVA\t20 %"
    # when the event is loaded, it is accepted with its labels as they came
    event = load_event(data)
    assert event.entry.label == "EDF\tfacture\r\nfévrier 2026\n"
    assert event.entry.lines[1].label == "TVA\t20 %"
    # then ACD gets them with spaces instead
    assert cut_label(event.entry.label, "K7QZ") == "EDF facture février 2026 (#K7QZ#)"
    assert cut_label(event.entry.lines[1].label, "K7QZ") == "TVA 20 % (#K7QZ#)"


def test_an_empty_entry_label_loads():
    data = valid_event()
    data["entry"]["label"] = ""
    assert load_event(data).entry.label == ""


def test_line_analytics_load_as_sections_with_decimal_amounts():
    data = valid_event()
    data["entry"]["lines"][0]["analytics"] = [
        {"section": "PARIS", "amount": "100.00"},
        {"section": "LYON-2", "amount": "37.01"},
    ]
    line = load_event(data).entry.lines[0]
    assert [(a.section, a.amount) for a in line.analytics] == [
        ("PARIS", Decimal("100.00")),
        ("LYON-2", Decimal("37.01")),
    ]
    assert load_event(valid_event()).entry.lines[0].analytics == ()


@pytest.mark.parametrize(
    ("analytics", "error"),
    [
        (
            [{"section": "PARIS", "amount": "100.00"}],
            "entry.lines.0.analytics: the analytic amounts add up to 100.00, not to the line's 137.01",
        ),
        ([{"section": "PARIS", "amount": 137.01}], "entry.lines.0.analytics.0.amount: must be a decimal string"),
        ([{"section": "PA RIS", "amount": "137.01"}], "entry.lines.0.analytics.0.section: must be 1 to 20"),
        ([{"amount": "137.01"}], "entry.lines.0.analytics.0.section: Missing data for required field."),
        (
            [{"section": "A", "amount": "137.01"}, {"section": "B", "amount": "0.00"}],
            "entry.lines.0.analytics: an analytic amount is zero",
        ),
    ],
    ids=["not-adding-up", "float", "bad-section", "no-section", "zero-share"],
)
def test_bad_analytics_are_refused_naming_the_field(analytics, error):
    data = valid_event()
    data["entry"]["lines"][0]["analytics"] = analytics
    assert any(e.startswith(error) for e in refusal(data)), refusal(data)


# -- a stored event is rebuilt without validating it again -------------------------------------------


def _variants() -> list[dict]:
    """Valid events covering every optional field present, absent and null, and every sample kind."""
    out = [sample_event("cf_dupont", sample_entry(kind, n)) for kind in ENTRY_KINDS for n in (1, 2, 3)]
    full = valid_event()
    full["entry"].update(currency="USD", invoice_number="F-2026-77", label="tab\there", date="2026-04-30")
    full["occurred_at"] = "2026-11-19T10:12:44.123456+01:00"
    full["entry"]["lines"][0].update(
        label="line label",
        analytics=[{"section": "PARIS", "amount": "100.00"}, {"section": "LYON-2", "amount": "37.01"}],
    )
    full["entry"]["lines"][1]["counterparty"] = {"kind": "supplier", "code": "EDF"}
    full["documents"][0].update(content_type=None, paid=False)
    bare = valid_event()
    bare["entry"].pop("currency", None)
    bare["entry"]["invoice_number"] = None
    bare["entry"]["lines"][0]["label"] = None
    for key in ("content_type", "size", "sha256", "paid"):
        bare["documents"][0].pop(key, None)
    empty = valid_event()
    empty["entry"]["label"] = ""
    empty["entry"]["invoice_number"] = ""
    empty.pop("documents")
    return [*out, full, bare, empty]


@pytest.mark.parametrize("data", _variants())
def test_a_stored_event_is_rebuilt_as_the_schema_loads_it(data):
    # given an event the schema accepts, stored as JSON the way ingest keeps it
    stored = json.loads(json.dumps(data))
    # then the steps' loader, which does not validate again, builds the very same objects
    assert load_stored_event(stored) == load_event(data)
