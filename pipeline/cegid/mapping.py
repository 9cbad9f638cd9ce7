"""The ``metadonnees`` part of a PIA deposit, from the entry and the document it supports."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pipeline.model import Document, Entry

DOCUMENT_TYPES = {"receipt": "recu", "supplier_invoice": "facture_fournisseur", "customer_invoice": "facture_client"}
EXPORTED_KINDS = tuple(DOCUMENT_TYPES)
CENT = Decimal("0.01")


class UnmappableDocument(ValueError):
    """A document kind Cegid Loop has no type for."""


def total_ttc(entry: Entry) -> Decimal:
    """The entry's total (the sum of its debits, equal to the sum of its credits), to the cent."""
    return sum((line.debit for line in entry.lines), Decimal("0")).quantize(CENT)


def counterparty_name(entry: Entry) -> str | None:
    """The name of the entry's first counterparty, if it has one."""
    return next((line.counterparty.name for line in entry.lines if line.counterparty is not None), None)


def payment_status(doc: Document) -> str:
    """``paye`` for a receipt or a paid invoice, else ``non_paye``."""
    return "paye" if doc.kind == "receipt" or doc.paid else "non_paye"


def metadonnees(entry: Entry, doc: Document) -> dict[str, Any]:
    """The deposit's metadata, without ``dossierPartenaireId`` (added at deposit time from the connection)."""
    kind = DOCUMENT_TYPES.get(doc.kind)
    if kind is None:
        raise UnmappableDocument(f"document kind {doc.kind!r} is not exported to Cegid Loop")
    data: dict[str, Any] = {
        "typeDocument": kind,
        "statutPaiement": payment_status(doc),
        "date": entry.date.isoformat(),
        "montantTTC": f"{total_ttc(entry):.2f}",
        "devise": entry.currency,
    }
    tiers = counterparty_name(entry)
    if tiers:
        data["tiers"] = tiers
    if entry.invoice_number:
        data["reference"] = entry.invoice_number
    return data
