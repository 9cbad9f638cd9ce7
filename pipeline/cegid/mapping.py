"""What a PIA deposit carries besides the bytes: its ``transaction`` and a file name an accountant can read.

``storeDocument`` has no field for the date, the kind, whether an invoice is paid or the counterparty, so
the file name carries them, with the hub's unique key at the end, e.g.
``2026-11-19_facture-fournisseur_non-payee_Orange-SA_doc-8842-3f9a0c1b2d.pdf``: ASCII only, at most
``FILENAME_MAX_CHARS``, and the same on every retry of a record (it depends only on the event and the bytes).
"""

from __future__ import annotations

import re
import unicodedata

from pipeline.model import Document, Entry

TRANSACTIONS = {"receipt": "PURCHASE", "supplier_invoice": "PURCHASE", "customer_invoice": "SALE"}
EXPORTED_KINDS = tuple(TRANSACTIONS)
KIND_WORDS = {"receipt": "recu", "supplier_invoice": "facture-fournisseur", "customer_invoice": "facture-client"}
EXTENSIONS = {"application/pdf": "pdf", "image/jpeg": "jpg", "image/png": "png"}
PARTY_MAX_CHARS = 40
DOC_ID_MAX_CHARS = 40
SHA_PREFIX_CHARS = 10
FILENAME_MAX_CHARS = 150
_NOT_WORD = re.compile(r"[^A-Za-z0-9]+")


class UnmappableDocument(ValueError):
    """A document kind or content type Cegid Loop does not take."""


def slug(value: str, limit: int) -> str:
    """``value`` in ASCII letters, digits and single hyphens, at most ``limit`` characters ("" when empty)."""
    ascii_value = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    return _NOT_WORD.sub("-", ascii_value).strip("-")[:limit].strip("-")


def transaction(doc: Document) -> str:
    """``PURCHASE`` for receipts and supplier invoices, ``SALE`` for customer invoices."""
    try:
        return TRANSACTIONS[doc.kind]
    except KeyError:
        raise UnmappableDocument(f"document kind {doc.kind!r} is not exported to Cegid Loop") from None


def paid_word(doc: Document) -> str:
    """``paye`` for a receipt, ``payee`` or ``non-payee`` for an invoice (unpaid unless the hub says paid)."""
    if doc.kind == "receipt":
        return "paye"
    return "payee" if doc.paid else "non-payee"


def counterparty(entry: Entry) -> str:
    """Who the document is from or to: the entry's first counterparty, else its label."""
    name = next((line.counterparty.name for line in entry.lines if line.counterparty is not None), None)
    return slug(name or entry.label or "", PARTY_MAX_CHARS)


def unique_key(doc_id: str, sha256: str) -> str:
    """The hub's own key for a deposited file: the document id and the start of its content hash."""
    return f"{slug(doc_id, DOC_ID_MAX_CHARS) or 'doc'}-{sha256[:SHA_PREFIX_CHARS]}"


def deposit_filename(entry: Entry, doc: Document, sha256: str, content_type: str) -> str:
    """The name the document is deposited under: date, kind, paid or not, counterparty, unique key."""
    ext = EXTENSIONS.get(content_type)
    if ext is None:
        raise UnmappableDocument(f"content type {content_type!r} is not exported to Cegid Loop")
    kind = KIND_WORDS.get(doc.kind)
    if kind is None:
        raise UnmappableDocument(f"document kind {doc.kind!r} is not exported to Cegid Loop")
    parts = [entry.date.isoformat(), kind, paid_word(doc), counterparty(entry), unique_key(doc.id, sha256)]
    name = "_".join(part for part in parts if part) + f".{ext}"
    assert len(name) <= FILENAME_MAX_CHARS, name  # bounded by construction: every part has a limit
    return name
