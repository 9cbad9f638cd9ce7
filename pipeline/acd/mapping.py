"""From a validated entry to the body of ACD's ``POST /compta/ecriture``.

ACD keeps no external id, so every line's label ends with the entry's ACK code ``(#XXXX#)``; labels are
always cut here to 50 characters (counted as .NET counts them, in UTF-16 units) with that code kept whole
(ACD would cut a longer one silently, losing the code). An empty label is replaced by a useful one, never
refused. Subsidiary codes are checked, never cut. The dossier is the session's: no ``CodeDossier`` is sent.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from pipeline.acd.client import amount
from pipeline.acd.errors import SubsidiaryCodeInvalid, SubsidiaryCodeTooLong
from pipeline.model import Counterparty, Entry, Line

LABEL_MAX_CHARS = 50
SUBSIDIARY_MAX_CHARS = 13
SUBSIDIARY_PREFIX = {"supplier": "F", "client": "C"}
KIND_LABELS = {
    "purchase": "Achat",
    "sale": "Vente",
    "expense_report": "Note de frais",
    "bank_transaction": "Opération bancaire",
}
_ACK_TAG = re.compile(r"\s*\(#[A-Z0-9]{4}#\)\s*")
_SPACES = re.compile(r"\s+")


def ack_tag(ack: str) -> str:
    """The marker ACD keeps at the end of every line label: ``(#XXXX#)``."""
    return f"(#{ack}#)"


def utf16_units(text: str) -> int:
    """The length of ``text`` as ACD's .NET server counts characters: UTF-16 code units, so a character beyond
    U+FFFF (most emoji) counts two. A label that fits this count fits a count in code points too."""
    return len(text.encode("utf-16-le")) // 2


def cut_label(label: str, ack: str, limit: int = LABEL_MAX_CHARS) -> str:
    """``label`` cut so that ``label + " (#XXXX#)"`` fits in ``limit`` characters as .NET counts them (UTF-16
    units: the server cuts a longer label silently, and an emoji counted as one character here would push the
    ACK code's end past its cut), never splitting a character from its combining marks; an ACK tag already in
    the label is replaced."""
    tag = ack_tag(ack)
    text = unicodedata.normalize("NFC", label)
    text = "".join(" " if unicodedata.category(ch)[0] in ("C", "Z") else ch for ch in text)
    text = _ACK_TAG.sub(" ", text)
    text = _SPACES.sub(" ", text).strip()
    room = limit - len(tag) - 1
    if utf16_units(text) > room:
        cut = used = 0
        for ch in text:
            used += 2 if ord(ch) > 0xFFFF else 1
            if used > room:
                break
            cut += 1
        while cut > 0 and unicodedata.category(text[cut]).startswith("M"):
            cut -= 1
        text = text[:cut].rstrip()
    return f"{text} {tag}" if text else tag


def check_subsidiary(counterparty: Counterparty) -> None:
    """Refuse a subsidiary code ACD would refuse: wrong prefix for its kind, or over 13 characters."""
    prefix = SUBSIDIARY_PREFIX[counterparty.kind]
    code = counterparty.code
    if not code.startswith(prefix):
        raise SubsidiaryCodeInvalid(
            f"{counterparty.kind} code {code!r} must start with {prefix!r}", code="codeTiersInvalide"
        )
    if len(code) > SUBSIDIARY_MAX_CHARS:
        raise SubsidiaryCodeTooLong(
            f"subsidiary code {code!r} has {len(code)} characters; ACD allows at most {SUBSIDIARY_MAX_CHARS}",
            code="codeTiersTropLong",
        )


def subsidiaries(entry: Entry) -> list[Counterparty]:
    """The entry's distinct counterparties, each checked."""
    seen: dict[str, Counterparty] = {}
    for line in entry.lines:
        if line.counterparty is not None:
            check_subsidiary(line.counterparty)
            seen.setdefault(line.counterparty.code, line.counterparty)
    return list(seen.values())


def _printable(text: str | None) -> str:
    if not text:
        return ""
    cleaned = "".join(" " if unicodedata.category(ch)[0] in ("C", "Z") else ch for ch in text)
    return _SPACES.sub(" ", _ACK_TAG.sub(" ", cleaned)).strip()


def fallback_label(entry: Entry) -> str:
    """A useful label for an entry that has none: its counterparty and invoice number, else its kind and date."""
    names = [line.counterparty.name or line.counterparty.code for line in entry.lines if line.counterparty]
    parts = [p for p in (_printable(names[0]) if names else "", _printable(entry.invoice_number)) if p]
    if parts:
        return " ".join(parts)
    return f"{KIND_LABELS.get(entry.kind, entry.kind)} du {entry.date:%d/%m/%Y}"


def line_label(entry: Entry, line: Line, ack: str) -> str:
    """The ``Libelle`` of one line: its own label, else the entry's, else a built one; cut, ACK code whole."""
    text = _printable(line.label) or _printable(entry.label) or fallback_label(entry)
    return cut_label(text, ack)


def _analytics(line: Line) -> list[dict[str, Any]]:
    debit = line.debit != 0
    return [
        {
            "Section1": share.section,
            "Debit": amount(share.amount) if debit else 0,
            "Credit": 0 if debit else amount(share.amount),
        }
        for share in line.analytics
    ]


def map_entry(entry: Entry, ack: str, ged_id: int | str | None) -> dict[str, Any]:
    """The JSON body ACD expects for this entry (``ReferenceGed`` as a string, ``""`` when there is no document)."""
    subsidiaries(entry)
    piece = entry.invoice_number or entry.id
    reference_ged = "" if ged_id is None else str(ged_id)
    lines = []
    for line in entry.lines:
        body: dict[str, Any] = {
            "Jour": entry.date.day,
            "NumeroPiece": piece,
            "Compte": line.counterparty.code if line.counterparty is not None else line.account,
            "Libelle": line_label(entry, line, ack),
            "Debit": amount(line.debit),
            "Credit": amount(line.credit),
            "ReferenceGed": reference_ged,
        }
        if entry.invoice_number:
            body["NumeroFacture"] = entry.invoice_number
        if line.analytics:
            body["Analytiques"] = _analytics(line)
        lines.append(body)
    return {
        "Journal": entry.journal_code,
        "Mois": entry.date.month,
        "Annee": entry.date.year,
        "ReferenceGed": reference_ged,
        "LignesEcriture": lines,
    }
