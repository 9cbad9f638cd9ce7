"""Domain objects of an ``entry.validated`` event, as the pipeline sees them after validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

ENTRY_KINDS = ("purchase", "sale", "expense_report", "bank_transaction")
DOCUMENT_KINDS = ("receipt", "supplier_invoice", "customer_invoice")
COUNTERPARTY_KINDS = ("supplier", "client")


@dataclass(frozen=True)
class Counterparty:
    """The third party of a line: its subsidiary account in the accounting software."""

    kind: str
    code: str
    name: str


@dataclass(frozen=True)
class Analytic:
    """A share of a line's amount on one analytic section."""

    section: str
    amount: Decimal


@dataclass(frozen=True)
class Line:
    """One line of an entry; exactly one of ``debit`` and ``credit`` is non-zero; ``analytics`` (if any) split
    the non-zero side over analytic sections."""

    account: str
    debit: Decimal
    credit: Decimal
    counterparty: Counterparty | None = None
    label: str | None = None
    analytics: tuple[Analytic, ...] = ()


@dataclass(frozen=True)
class Document:
    """A supporting document, fetched from ``url``."""

    id: str
    url: str
    filename: str
    kind: str
    content_type: str | None = None
    size: int | None = None
    sha256: str | None = None
    paid: bool | None = None


@dataclass(frozen=True)
class Entry:
    """A validated accounting entry."""

    id: str
    kind: str
    journal_code: str
    date: date
    label: str
    currency: str
    lines: tuple[Line, ...]
    invoice_number: str | None = None


@dataclass(frozen=True)
class Event:
    """An ``entry.validated`` event."""

    event_id: str
    event_type: str
    occurred_at: datetime
    client_file_id: str
    entry: Entry
    documents: tuple[Document, ...] = field(default_factory=tuple)
