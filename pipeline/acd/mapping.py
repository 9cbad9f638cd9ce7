"""From a validated entry to the body of ACD's ``POST /compta/ecriture``.

ACD keeps no external id, so every line's label ends with the entry's ACK code ``(#XXXX#)``; labels are
cut to 50 characters with that code kept whole. Subsidiary codes are checked, never cut.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from pipeline.acd.client import amount
from pipeline.acd.errors import SubsidiaryCodeInvalid, SubsidiaryCodeTooLong
from pipeline.model import Counterparty, Entry

LABEL_MAX_CHARS = 50
SUBSIDIARY_MAX_CHARS = 13
SUBSIDIARY_PREFIX = {"supplier": "F", "client": "C"}
_ACK_TAG = re.compile(r"\s*\(#[A-Z0-9]{4}#\)\s*")
_SPACES = re.compile(r"\s+")


def ack_tag(ack: str) -> str:
    """The marker ACD keeps at the end of every line label: ``(#XXXX#)``."""
    return f"(#{ack}#)"


def cut_label(label: str, ack: str, limit: int = LABEL_MAX_CHARS) -> str:
    """``label`` cut so that ``label + " (#XXXX#)"`` fits in ``limit`` characters, never splitting a character
    from its combining marks; an ACK tag already in the label is replaced."""
    tag = ack_tag(ack)
    text = unicodedata.normalize("NFC", label)
    text = "".join(" " if unicodedata.category(ch)[0] in ("C", "Z") else ch for ch in text)
    text = _ACK_TAG.sub(" ", text)
    text = _SPACES.sub(" ", text).strip()
    room = limit - len(tag) - 1
    if len(text) > room:
        cut = room
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


def map_entry(entry: Entry, dossier: str, ack: str, ged_id: int | None) -> dict[str, Any]:
    """The JSON body ACD expects for this entry."""
    subsidiaries(entry)
    piece = entry.invoice_number or entry.id
    lines = []
    for line in entry.lines:
        body: dict[str, Any] = {
            "Jour": entry.date.day,
            "NumeroPiece": piece,
            "Compte": line.counterparty.code if line.counterparty is not None else line.account,
            "Libelle": cut_label(line.label or entry.label, ack),
            "Debit": amount(line.debit),
            "Credit": amount(line.credit),
        }
        if entry.invoice_number:
            body["NumeroFacture"] = entry.invoice_number
        if ged_id is not None:
            body["ReferenceGed"] = ged_id
        lines.append(body)
    return {
        "CodeDossier": dossier,
        "Journal": entry.journal_code,
        "Mois": entry.date.month,
        "Annee": entry.date.year,
        "LignesEcriture": lines,
    }
