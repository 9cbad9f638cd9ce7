"""Sample ``entry.validated`` events and documents, for the demo, the tests and the benchmarks."""

from __future__ import annotations

import hashlib
import zlib
from datetime import date
from decimal import Decimal
from typing import Any

SUPPLIERS = [("FORANGE", "Orange SA"), ("FEDF", "EDF"), ("FBUROPLUS", "Buro Plus"), ("FTRANSLOG", "Translog")]
CLIENTS = [("CDURAND", "Durand SARL"), ("CMARTINEZ", "Martinez et Fils")]
LABELS = {
    "purchase": "{name} - facture {month} 2026 fournitures, abonnement et frais de service",
    "sale": "Facture client {name} - prestations de conseil {month} 2026",
    "expense_report": "Note de frais déplacement client Lyon repas et train {month}",
    "bank_transaction": "Frais bancaires tenue de compte {month} 2026",
}
MONTHS = ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre"]


def tiny_pdf(text: str) -> bytes:
    """A small, valid one-page PDF showing ``text``."""
    safe = text.encode("latin-1", "replace").replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
    stream = b"BT /F1 12 Tf 72 720 Td (" + safe + b") Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def tiny_png(width: int = 8, height: int = 8, seed: int = 0) -> bytes:
    """A small valid PNG (grey gradient)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    rows = b"".join(b"\x00" + bytes((x * 16 + y + seed) % 256 for x in range(width)) for y in range(height))
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x00\x00\x00\x00"
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def sample_entry(kind: str, n: int, *, supplier: tuple[str, str] | None = None) -> dict[str, Any]:
    """One balanced entry of ``kind``; ``n`` varies amounts, dates and counterparties."""
    month = MONTHS[n % len(MONTHS)]
    day = date(2026, 1 + n % 10, 1 + n % 27)
    ht = Decimal(100 + (n * 37) % 900) + Decimal(n % 100) / 100
    tva = (ht * Decimal("0.20")).quantize(Decimal("0.01"))
    ttc = ht + tva
    if kind == "purchase":
        code, name = supplier or SUPPLIERS[n % len(SUPPLIERS)]
        lines = [
            {"account": "606400", "debit": _money(ht), "credit": "0.00"},
            {"account": "445660", "debit": _money(tva), "credit": "0.00"},
            {
                "account": "401000",
                "debit": "0.00",
                "credit": _money(ttc),
                "counterparty": {"kind": "supplier", "code": code, "name": name},
            },
        ]
        journal, invoice = "AC", f"F-2026-{1000 + n}"
    elif kind == "sale":
        code, name = CLIENTS[n % len(CLIENTS)]
        lines = [
            {
                "account": "411000",
                "debit": _money(ttc),
                "credit": "0.00",
                "counterparty": {"kind": "client", "code": code, "name": name},
            },
            {"account": "706000", "debit": "0.00", "credit": _money(ht)},
            {"account": "445710", "debit": "0.00", "credit": _money(tva)},
        ]
        journal, invoice = "VT", f"V-2026-{2000 + n}"
    elif kind == "expense_report":
        code, name = "", "Note de frais"
        lines = [
            {"account": "625100", "debit": _money(ht), "credit": "0.00"},
            {"account": "445660", "debit": _money(tva), "credit": "0.00"},
            {"account": "421000", "debit": "0.00", "credit": _money(ttc)},
        ]
        journal, invoice = "NF", None
    else:
        code, name = "", "Banque"
        lines = [
            {"account": "627000", "debit": _money(ht), "credit": "0.00"},
            {"account": "512000", "debit": "0.00", "credit": _money(ht)},
        ]
        journal, invoice = "BQ", None
    entry: dict[str, Any] = {
        "id": f"ent_{kind[:3]}_{n}",
        "kind": kind,
        "journal_code": journal,
        "date": day.isoformat(),
        "label": LABELS[kind].format(name=name, month=month),
        "currency": "EUR",
        "lines": lines,
    }
    if invoice:
        entry["invoice_number"] = invoice
    return entry


def sample_event(
    client_file_id: str,
    entry: dict[str, Any],
    *,
    event_id: str | None = None,
    documents: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An ``entry.validated`` event around ``entry``."""
    return {
        "event_id": event_id or f"evt_{client_file_id}_{entry['id']}",
        "event_type": "entry.validated",
        "occurred_at": "2026-11-19T09:12:44Z",
        "client_file_id": client_file_id,
        "entry": entry,
        "documents": documents or [],
    }


def document_ref(
    doc_id: str, url: str, data: bytes, kind: str, filename: str, paid: bool | None = None
) -> dict[str, Any]:
    """The ``documents[]`` item of an event for bytes served at ``url``, with size and SHA-256."""
    ref: dict[str, Any] = {
        "id": doc_id,
        "url": url,
        "filename": filename,
        "content_type": "application/pdf" if data.startswith(b"%PDF") else "image/png",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "kind": kind,
    }
    if paid is not None:
        ref["paid"] = paid
    return ref


DOCUMENT_KIND = {"purchase": "supplier_invoice", "sale": "customer_invoice", "expense_report": "receipt"}
