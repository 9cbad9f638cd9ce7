"""The ``entry.validated`` event (see the event contract): validation and loading into domain objects."""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from pipeline.model import (
    COUNTERPARTY_KINDS,
    DOCUMENT_KINDS,
    ENTRY_KINDS,
    Analytic,
    Counterparty,
    Document,
    Entry,
    Event,
    Line,
)

MAX_EVENT_BYTES = 1024 * 1024
MAX_LABEL_CHARS = 1000
MAX_LINES = 500
MAX_DOCUMENTS = 50
IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}\Z")
MONEY = re.compile(r"^[0-9]{1,13}(\.[0-9]{1,2})?\Z")
SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
ACCOUNT = re.compile(r"^[A-Za-z0-9]{1,20}\Z")
SUBSIDIARY = re.compile(r"^[A-Za-z0-9]{1,40}\Z")
SECTION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,19}\Z")
MAX_ANALYTICS = 100


LABEL_WHITESPACE = frozenset("\t\n\r")
"""The control characters free text may hold: text pasted into a label brings tabs and line breaks."""


def _no_control_characters(value: str) -> None:
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Cs"):
            raise ValidationError("must not contain control characters or lone surrogates")


def _no_control_characters_but_whitespace(value: str) -> None:
    for ch in value:
        if ch not in LABEL_WHITESPACE and unicodedata.category(ch) in ("Cc", "Cs"):
            raise ValidationError(
                "must not contain control characters (other than tabs and line breaks) or lone surrogates"
            )


def _identifier(value: str) -> None:
    if not IDENTIFIER.match(value):
        raise ValidationError("must be 1 to 128 letters, digits, '_', '.' or '-', starting with a letter or digit")


class Money(fields.Field):  # type: ignore[type-arg]
    """A non-negative amount written as a decimal string with at most 2 decimals (never a JSON float)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, str):
            raise ValidationError('must be a decimal string such as "120.00", not a JSON number')
        if not MONEY.match(value):
            raise ValidationError('must be a non-negative decimal string with at most 2 decimals, e.g. "120.00"')
        try:
            return Decimal(value)
        except InvalidOperation as exc:  # pragma: no cover - the regex already guards this
            raise ValidationError("is not a decimal number") from exc

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else f"{Decimal(value):.2f}"


class StrictString(fields.String):
    """A string that refuses control characters and lone surrogates."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        result: str = super()._deserialize(value, attr, data, **kwargs)
        _no_control_characters(result)
        return result


class FreeText(fields.String):
    """A label, free text by the event contract: tabs and line breaks are kept (each provider's mapping turns
    them into spaces); NUL, other control characters and lone surrogates are refused."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        result: str = super()._deserialize(value, attr, data, **kwargs)
        _no_control_characters_but_whitespace(result)
        return result


class CounterpartySchema(Schema):
    kind = fields.String(required=True, validate=validate.OneOf(COUNTERPARTY_KINDS))
    code = fields.String(
        required=True,
        validate=validate.Regexp(SUBSIDIARY, error="must be 1 to 40 letters or digits"),
    )
    name = StrictString(load_default="", validate=validate.Length(max=200))

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> Counterparty:
        return Counterparty(kind=data["kind"], code=data["code"], name=data["name"])


class AnalyticSchema(Schema):
    section = fields.String(
        required=True,
        validate=validate.Regexp(SECTION, error="must be 1 to 20 letters, digits, '_', '.' or '-'"),
    )
    amount = Money(required=True)

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> Analytic:
        return Analytic(section=data["section"], amount=data["amount"])


class LineSchema(Schema):
    account = fields.String(required=True, validate=validate.Regexp(ACCOUNT, error="must be 1 to 20 letters or digits"))
    debit = Money(required=True)
    credit = Money(required=True)
    label = FreeText(load_default=None, validate=validate.Length(max=MAX_LABEL_CHARS))
    counterparty = fields.Nested(CounterpartySchema, load_default=None)
    analytics = fields.List(
        fields.Nested(AnalyticSchema),
        load_default=list,
        validate=validate.Length(max=MAX_ANALYTICS, error="holds at most {max} sections"),
    )

    @validates_schema
    def one_side(self, data: dict[str, Any], **kwargs: Any) -> None:
        debit, credit = data.get("debit"), data.get("credit")
        if debit is not None and credit is not None and debit != 0 and credit != 0:
            raise ValidationError("a line has one side at zero: debit or credit, not both", "credit")

    @validates_schema
    def analytics_add_up(self, data: dict[str, Any], **kwargs: Any) -> None:
        shares = data.get("analytics") or []
        debit, credit = data.get("debit"), data.get("credit")
        if not shares or debit is None or credit is None:
            return
        side = debit if debit != 0 else credit
        total = sum((share.amount for share in shares), Decimal(0))
        if total != side:
            raise ValidationError(f"the analytic amounts add up to {total}, not to the line's {side}", "analytics")
        if any(share.amount == 0 for share in shares):
            raise ValidationError("an analytic amount is zero", "analytics")

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> Line:
        return Line(
            account=data["account"],
            debit=data["debit"],
            credit=data["credit"],
            counterparty=data["counterparty"],
            label=data["label"] or None,
            analytics=tuple(data["analytics"]),
        )


class EntrySchema(Schema):
    id = fields.String(required=True, validate=_identifier)
    kind = fields.String(required=True, validate=validate.OneOf(ENTRY_KINDS))
    journal_code = fields.String(
        required=True,
        validate=validate.Regexp(r"^[A-Za-z0-9]{1,10}\Z", error="must be 1 to 10 letters or digits"),
    )
    date = fields.Date(required=True)
    label = FreeText(required=True, validate=validate.Length(max=MAX_LABEL_CHARS))
    invoice_number = StrictString(load_default=None, allow_none=True, validate=validate.Length(max=60))
    currency = fields.String(
        load_default="EUR", validate=validate.Regexp(r"^[A-Z]{3}\Z", error="must be an ISO 4217 code")
    )
    lines = fields.List(
        fields.Nested(LineSchema),
        required=True,
        validate=validate.Length(min=2, max=MAX_LINES, error="must hold between {min} and {max} lines"),
    )

    @validates_schema
    def balances(self, data: dict[str, Any], **kwargs: Any) -> None:
        lines = data.get("lines") or []
        debit = sum((line.debit for line in lines), Decimal(0))
        credit = sum((line.credit for line in lines), Decimal(0))
        if debit != credit:
            raise ValidationError(f"the entry does not balance: debits {debit} ≠ credits {credit}", "lines")
        if lines and debit == 0:
            raise ValidationError("the entry has no amount", "lines")

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> Entry:
        return Entry(
            id=data["id"],
            kind=data["kind"],
            journal_code=data["journal_code"],
            date=data["date"],
            label=data["label"],
            currency=data["currency"],
            lines=tuple(data["lines"]),
            invoice_number=data["invoice_number"] or None,
        )


def _plain_filename(value: str) -> None:
    if "/" in value or "\\" in value or value in (".", "..") or value.startswith("."):
        raise ValidationError("must be a plain file name, without a path")


class DocumentSchema(Schema):
    id = fields.String(required=True, validate=_identifier)
    url = fields.Url(required=True, schemes={"http", "https"}, require_tld=False)
    filename = StrictString(required=True, validate=[validate.Length(min=1, max=255), _plain_filename])
    content_type = fields.String(load_default=None, validate=validate.Length(max=200))
    size = fields.Integer(load_default=None, strict=True, validate=validate.Range(min=0))
    sha256 = fields.String(
        load_default=None, validate=validate.Regexp(SHA256, error="must be 64 lowercase hexadecimal digits")
    )
    kind = fields.String(required=True, validate=validate.OneOf(DOCUMENT_KINDS))
    paid = fields.Boolean(load_default=None, truthy={True}, falsy={False})

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> Document:
        return Document(**data)


class EventSchema(Schema):
    event_id = fields.String(required=True, validate=_identifier)
    event_type = fields.String(required=True, validate=validate.Equal("entry.validated"))
    occurred_at = fields.AwareDateTime(required=True)
    client_file_id = fields.String(required=True, validate=_identifier)
    entry = fields.Nested(EntrySchema, required=True)
    documents = fields.List(
        fields.Nested(DocumentSchema),
        load_default=list,
        validate=validate.Length(max=MAX_DOCUMENTS),
    )

    @validates_schema
    def unique_document_ids(self, data: dict[str, Any], **kwargs: Any) -> None:
        ids = [doc.id for doc in data.get("documents") or []]
        if len(ids) != len(set(ids)):
            raise ValidationError("document ids must be unique within an event", "documents")

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> Event:
        return Event(
            event_id=data["event_id"],
            event_type=data["event_type"],
            occurred_at=data["occurred_at"],
            client_file_id=data["client_file_id"],
            entry=data["entry"],
            documents=tuple(data["documents"]),
        )


def flatten_errors(messages: Any, prefix: str = "") -> list[str]:
    """Turn marshmallow's nested error dict into ``field.path: message`` lines."""
    out: list[str] = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = prefix if key == "_schema" else (f"{prefix}.{key}" if prefix else str(key))
            out.extend(flatten_errors(value, name))
    elif isinstance(messages, list):
        for item in messages:
            if isinstance(item, str):
                out.append(f"{prefix or 'event'}: {item}")
            else:
                out.extend(flatten_errors(item, prefix))
    else:
        out.append(f"{prefix or 'event'}: {messages}")
    return out


_SCHEMA = EventSchema()
_DATETIME = fields.AwareDateTime()
_DATE = fields.Date()


def load_stored_event(data: dict[str, Any]) -> Event:
    """Build the domain objects of an event that ``load_event`` accepted when it came in and hubsync stored
    (each step of a chain reads its record's event): the same objects, without validating it again.

    Validating costs about 0.2 ms per event, paid by every step of every entry; a record's event is only ever
    written by ingest after ``load_event`` accepted it. Keep this beside the schemas above: a test loads a
    corpus of valid events both ways and compares the results.
    """
    entry = data["entry"]
    return Event(
        event_id=data["event_id"],
        event_type=data["event_type"],
        occurred_at=_DATETIME.deserialize(data["occurred_at"]),
        client_file_id=data["client_file_id"],
        entry=Entry(
            id=entry["id"],
            kind=entry["kind"],
            journal_code=entry["journal_code"],
            date=_DATE.deserialize(entry["date"]),
            label=entry["label"],
            currency=entry.get("currency", "EUR"),
            lines=tuple(_stored_line(line) for line in entry["lines"]),
            invoice_number=entry.get("invoice_number") or None,
        ),
        documents=tuple(
            Document(
                id=doc["id"],
                url=doc["url"],
                filename=doc["filename"],
                kind=doc["kind"],
                content_type=doc.get("content_type"),
                size=doc.get("size"),
                sha256=doc.get("sha256"),
                paid=doc.get("paid"),
            )
            for doc in data.get("documents") or ()
        ),
    )


def _stored_line(line: dict[str, Any]) -> Line:
    party = line.get("counterparty")
    return Line(
        account=line["account"],
        debit=Decimal(line["debit"]),
        credit=Decimal(line["credit"]),
        counterparty=None
        if party is None
        else Counterparty(kind=party["kind"], code=party["code"], name=party.get("name", "")),
        label=line.get("label") or None,
        analytics=tuple(
            Analytic(section=share["section"], amount=Decimal(share["amount"])) for share in line.get("analytics") or ()
        ),
    )


def load_event(data: Any) -> Event:
    """Validate a decoded event; raise ``ValidationError`` naming every bad field."""
    if not isinstance(data, dict):
        raise ValidationError({"_schema": ["an event is a JSON object"]})
    event: Event = _SCHEMA.load(data)
    return event
