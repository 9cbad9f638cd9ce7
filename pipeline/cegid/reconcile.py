"""Cegid Loop reconciliation, from the hub's deposit ledger: Loop has no route that lists what it holds.

Each record of a client file is counted once:

- ``deposited``: Loop answered the deposit (its document id and raw answer are in the ledger), or an
  operator settled an outcome-unknown deposit as "in PIA" (``settled_by_operator``);
- ``skipped``: not JPEG, PNG or PDF, with its reason;
- ``outcome_unknown``: the deposit went out and its answer was lost; Loop may or may not hold it and only an
  operator can say (``hubsync dlq discard`` if it is in PIA, ``hubsync dlq replay`` to send it again);
- ``pending`` (waiting for an export or on its way), ``dead`` (any other dead letter).

``possible_duplicates`` lists documents an operator chose to send again after an unknown outcome: if the
first deposit did land after all, PIA holds two copies. The reconciliation needs a look (``ok`` false) while
any outcome is unknown and while any possible duplicate has not been checked in PIA: Loop cannot be asked,
so an operator says it was (``mark_duplicate_checked``, ``hubsync reconcile --checked``), as ACD's
duplicates clear once the second entry is gone from its FEC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.cegid.connect import PROVIDER
from pipeline.store import Record, Store, now, record_id


@dataclass
class LedgerReconciliation:
    """One client file's Cegid Loop documents, as the ledger knows them."""

    client_file_id: str
    dossier: str
    records: int = 0
    deposited: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    outcome_unknown: list[dict[str, Any]] = field(default_factory=list)
    possible_duplicates: list[dict[str, Any]] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    provider: str = PROVIDER

    @property
    def ok(self) -> bool:
        """No deposit with an unknown outcome, no possible duplicate left unchecked, and the ledger could be read."""
        return not (self.outcome_unknown or self.possible_duplicates or self.error)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for ``hubsync reconcile --json``."""
        return {
            "provider": self.provider,
            "client_file_id": self.client_file_id,
            "dossier": self.dossier,
            "ok": self.ok,
            "error": self.error,
            "source": "ledger",
            "records": self.records,
            "deposited": len(self.deposited),
            "skipped": self.skipped,
            "outcome_unknown": self.outcome_unknown,
            "possible_duplicates": self.possible_duplicates,
            "pending": len(self.pending),
            "dead": self.dead,
        }

    def lines(self) -> list[str]:
        """What ``hubsync reconcile`` prints for this client file."""
        head = f"{self.provider} {self.client_file_id} ({self.dossier}): "
        if self.error:
            return [head + f"could not read the ledger: {self.error}"]
        out = [
            head + f"{self.records} documents in the hub's deposit ledger (Loop cannot be asked): "
            f"{len(self.deposited)} deposited, {len(self.skipped)} skipped, {len(self.outcome_unknown)} outcome "
            f"unknown, {len(self.pending)} pending, {len(self.dead)} dead"
        ]
        for item in self.skipped:
            out.append(f"  skipped           {item['document']}: {item['reason']}")
        for item in self.outcome_unknown:
            dl = item.get("dead_letter") or "?"
            out.append(
                f"  outcome unknown   {item['document']} {item['filename']}: sent, answer lost; look in PIA, then "
                f"`hubsync dlq discard {dl} --reason 'in PIA'` or `hubsync dlq replay {dl}`"
            )
        for item in self.possible_duplicates:
            out.append(
                f"  possible duplicate {item['document']} {item['filename']}: sent again after an unknown outcome; "
                "PIA may hold two copies: look, delete the second if so, then `hubsync reconcile --client-file "
                f"{self.client_file_id} --checked {item['document']} --reason '…'`"
            )
        for item in self.dead:
            out.append(f"  dead              {item['document']}: {item['error_class']} ({item.get('dead_letter')})")
        return out


def _doc(rec: Record) -> dict[str, Any]:
    return rec.docs.get(rec.entry_id) or {}


def classify(store: Store, client_file_id: str, dossier: str) -> LedgerReconciliation:
    """Sort a client file's Cegid Loop records by what their ledger says (no network)."""
    out = LedgerReconciliation(client_file_id, dossier)
    for rid in store.records.ids(PROVIDER, client_file_id):
        rec = store.records.get(rid)
        if rec is None:
            continue
        out.records += 1
        meta = _doc(rec)
        ledger = meta.get("deposit") or {}
        name = str(meta.get("name") or "")
        if rec.state == "exported":
            out.deposited.append(
                {
                    "document": rec.entry_id,
                    "filename": ledger.get("filename") or name,
                    "document_id": rec.provider_id,
                    "settled_by_operator": bool(ledger.get("settled_by_operator")),
                }
            )
            if ledger.get("resent_after_unknown_outcome") and not ledger.get("duplicate_checked"):
                out.possible_duplicates.append({"document": rec.entry_id, "filename": ledger.get("filename") or name})
        elif rec.state == "skipped":
            reason = str(meta.get("skip_reason") or rec.note.removeprefix("skipped: "))
            out.skipped.append({"document": rec.entry_id, "reason": reason})
        elif rec.state == "dead":
            error = (rec.last_error or {}).get("error_class", "")
            if error == "DepositOutcomeUnknown":
                out.outcome_unknown.append(
                    {
                        "document": rec.entry_id,
                        "filename": name,
                        "sent_at": (meta.get("sending") or {}).get("at"),
                        "why": (meta.get("unknown") or {}).get("why", ""),
                        "dead_letter": rec.dead_letter_id,
                    }
                )
            else:
                out.dead.append({"document": rec.entry_id, "error_class": error, "dead_letter": rec.dead_letter_id})
        else:
            out.pending.append(rec.entry_id)
    return out


def reconcile_cegid_loop(store: Store, client_file_id: str) -> LedgerReconciliation:
    """Reconcile one client file's Cegid Loop documents from the ledger."""
    conn = store.connections.get(client_file_id, PROVIDER)
    dossier = str(conn.params.get("dossier", "")) if conn is not None else ""
    try:
        return classify(store, client_file_id, dossier)
    except Exception as exc:  # noqa: BLE001 - any failure is reported, never hidden behind a green line
        return LedgerReconciliation(client_file_id, dossier, error=f"{type(exc).__name__}: {exc}")


class NotAPossibleDuplicate(ValueError):
    """The document named is not one sent again after an unknown outcome."""


def mark_duplicate_checked(store: Store, client_file_id: str, document_id: str, reason: str, who: str) -> None:
    """An operator looked in PIA for a second copy of a document sent again (and removed it if there was one)."""
    rid = record_id(PROVIDER, client_file_id, document_id)
    rec = store.records.get(rid)
    ledger = (_doc(rec).get("deposit") or {}) if rec is not None else {}
    if rec is None or rec.state != "exported" or not ledger.get("resent_after_unknown_outcome"):
        raise NotAPossibleDuplicate(
            f"document {document_id} of {client_file_id} is not a possible duplicate (not sent again after an "
            "unknown outcome)"
        )
    checked = {"reason": reason, "who": who, "at": now()}
    store.records.update_doc(rid, document_id, deposit={**ledger, "duplicate_checked": checked})
    store.records.add_attempt(rid, {"step": "reconcile", "outcome": "duplicate_checked", **checked})
