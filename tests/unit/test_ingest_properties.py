"""Properties of the ingest under malformed, hostile and huge events: every one is refused with the field
named (or, for a document at an internal address, refused at fetch), nothing raises, and a valid event
beside them still loads."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hubsync_sandbox.samples import document_ref, sample_entry, sample_event, tiny_pdf
from pipeline.acd.mapping import map_entry
from pipeline.documents import DocumentHostNotAllowed, check_url
from pipeline.ingest import ingest, parse
from pipeline.store import Store
from schemas.event import MAX_EVENT_BYTES, load_event

PDF = tiny_pdf("piece")
ALLOWED_HOSTS = ("docs.hub.example",)
JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
NOT_A_STRING = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.lists(st.integers(), max_size=2)
)
CONTROL = st.characters(whitelist_categories=("Cc",), blacklist_characters="\t\n\r")
LABEL_TEXT = st.text(
    st.characters(blacklist_categories=("Cc", "Cs")) | st.sampled_from("\t\n\r"), min_size=0, max_size=300
)
TRAVERSAL_NAMES = st.sampled_from(
    [
        "../../etc/passwd",
        "..\\..\\windows\\win.ini",
        "/etc/shadow",
        "..",
        ".",
        ".htaccess",
        "a/../../b.pdf",
        "C:\\x.pdf",
    ]
)
INTERNAL_URLS = st.sampled_from(
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://10.0.0.1/doc.pdf",
        "http://localhost/doc.pdf",
        "http://localhost:6379/",
        "http://127.0.0.1:8080/admin",
        "http://[::1]/doc.pdf",
        "http://0.0.0.0/doc.pdf",
        "http://192.168.1.1/doc.pdf",
        "http://172.16.0.5/doc.pdf",
        "http://metadata.google.internal/computeMetadata/v1/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_FLUSHALL",
    ]
)
TEXT_FIELDS = [
    ("event_id",),
    ("client_file_id",),
    ("occurred_at",),
    ("entry", "id"),
    ("entry", "kind"),
    ("entry", "journal_code"),
    ("entry", "date"),
    ("entry", "label"),
    ("entry", "lines", 0, "account"),
    ("entry", "lines", 2, "counterparty", "code"),
    ("documents", 0, "url"),
    ("documents", 0, "filename"),
    ("documents", 0, "kind"),
]


def valid_event() -> dict[str, Any]:
    """A purchase with a counterparty and one document."""
    doc = document_ref("doc_1", "https://docs.hub.example/doc_1", PDF, "supplier_invoice", "facture.pdf")
    return sample_event("cf_props", sample_entry("purchase", 1), documents=[doc])


def put(event: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """A copy of ``event`` with the field at ``path`` replaced."""
    out = copy.deepcopy(event)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def dotted(path: tuple[Any, ...]) -> str:
    """The field path as refusals spell it: ``entry.lines.0.debit``."""
    return ".".join(str(p) for p in path)


def refused(raw: Any) -> list[str]:
    """The refusal lines; fails if the event loads."""
    event, _, errors = parse(raw)
    assert event is None, f"accepted: {raw!r:.300}"
    assert errors and all(": " in e for e in errors)
    return errors


@given(raw=JSON_VALUES)
def test_any_json_value_is_loaded_or_refused_never_raises(raw: Any) -> None:
    # given any JSON value at all, decoded or as text, when it is parsed, then it never raises
    for form in (raw, json.dumps(raw), json.dumps(raw).encode()):
        event, _, errors = parse(form)
        assert (event is None) == bool(errors)


@given(path=st.sampled_from(TEXT_FIELDS), value=NOT_A_STRING)
def test_wrong_type_in_any_field_is_refused_naming_that_field(path: tuple[Any, ...], value: Any) -> None:
    errors = refused(put(valid_event(), path, value))
    assert any(e.startswith(dotted(path) + ":") for e in errors), errors


@given(line=st.integers(0, 2), side=st.sampled_from(["debit", "credit"]), amount=st.floats(0.01, 1e6))
def test_json_float_for_money_is_refused_naming_the_amount(line: int, side: str, amount: float) -> None:
    errors = refused(put(valid_event(), ("entry", "lines", line, side), amount))
    assert any(e.startswith(f"entry.lines.{line}.{side}:") and "not a JSON number" in e for e in errors), errors


@given(line=st.integers(0, 2), cents=st.integers(1, 10_000))
def test_unbalanced_entry_is_refused_naming_its_lines(line: int, cents: int) -> None:
    event = valid_event()
    current = event["entry"]["lines"][line]
    side = "debit" if Decimal(current["debit"]) else "credit"
    errors = refused(put(event, ("entry", "lines", line, side), f"{Decimal(current[side]) + Decimal(cents) / 100:.2f}"))
    assert any(e.startswith("entry.lines:") and "does not balance" in e for e in errors), errors


@given(prefix=st.text(max_size=20), control=CONTROL, suffix=st.text(max_size=20))
def test_control_characters_in_labels_are_refused(prefix: str, control: str, suffix: str) -> None:
    errors = refused(put(valid_event(), ("entry", "label"), f"Facture{prefix}{control}{suffix}"))
    assert any(e.startswith("entry.label:") for e in errors), errors


@given(name=TRAVERSAL_NAMES)
def test_path_traversal_file_names_are_refused(name: str) -> None:
    errors = refused(put(valid_event(), ("documents", 0, "filename"), name))
    assert any(e.startswith("documents.0.filename:") for e in errors), errors


@pytest.mark.parametrize("as_text", [False, True])
def test_ten_megabyte_label_is_refused_by_size_without_loading_it(as_text: bool) -> None:
    event = put(valid_event(), ("entry", "label"), "A" * (10 * 1024 * 1024))
    errors = refused(json.dumps(event) if as_text else event)
    assert errors == [f"event: larger than {MAX_EVENT_BYTES} bytes"]


def test_label_just_over_the_limit_is_refused_naming_the_label() -> None:
    errors = refused(put(valid_event(), ("entry", "label"), "B" * 1001))
    assert any(e.startswith("entry.label:") for e in errors), errors


@given(label=LABEL_TEXT)
def test_any_unicode_label_loads_and_is_cut_to_50_with_its_ack_code_whole(label: str) -> None:
    # given any free-text label (emoji, combining marks, right-to-left, wide characters, tabs and line breaks, or
    # none at all)
    event = load_event(put(valid_event(), ("entry", "label"), label))
    # when it is mapped for ACD
    body = map_entry(event.entry, "K7QZ", None)
    # then every line label fits in 50 characters, holds no control character and ends with the whole ACK code
    for line in body["LignesEcriture"]:
        assert len(line["Libelle"]) <= 50 and not any(ch in line["Libelle"] for ch in "\t\n\r")
        assert line["Libelle"].endswith(" (#K7QZ#)")  # never a bare code: an empty label gets a useful one


@given(url=INTERNAL_URLS)
def test_document_at_an_internal_address_is_refused_at_fetch(url: str) -> None:
    # the schema may accept the URL (it is a URL); the fetch refuses it before any connection
    with pytest.raises(DocumentHostNotAllowed):
        check_url(url, ALLOWED_HOSTS, allow_private=False)


@pytest.mark.parametrize("host", ["localhost", "localhost:8080"])
def test_allowed_host_name_resolving_inside_is_still_refused(host: str) -> None:
    url = f"http://{host}/doc.pdf"
    with pytest.raises(DocumentHostNotAllowed):
        check_url(url, (host,), allow_private=False)


@pytest.fixture(scope="module")
def store(redis_server: Any) -> Store:
    """A store on the suite's private Redis."""
    return Store.from_url(redis_server.url)


HOSTILE = st.one_of(
    JSON_VALUES,
    st.builds(put, st.just(valid_event()), st.sampled_from(TEXT_FIELDS), NOT_A_STRING),
    st.builds(lambda a: put(valid_event(), ("entry", "lines", 0, "debit"), a), st.floats(0.01, 1e6)),
    st.builds(lambda n: put(valid_event(), ("documents", 0, "filename"), n), TRAVERSAL_NAMES),
    st.builds(lambda c: put(valid_event(), ("entry", "label"), f"x{c}y"), CONTROL),
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=HOSTILE)
def test_ingest_keeps_every_refusal_as_a_dead_letter_and_never_raises(store: Store, raw: Any) -> None:
    # given a hostile event; when the ingest sees it
    enqueued: list[tuple[str, str, int, str]] = []
    result = ingest(store, raw, lambda *args: enqueued.append(args))
    # then it is refused, kept as a dead letter naming the fields, and nothing is started
    assert result.outcome == "refused"
    assert enqueued == []
    assert result.dead_letter_id is not None
    dl = store.dead_letters.get(result.dead_letter_id)
    assert dl is not None and dl.status == "open"
    assert dl.error_class in ("InvalidEvent", "NoConnection")
    for error in result.errors:
        assert error.split(":", 1)[0] in dl.message
