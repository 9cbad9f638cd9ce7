"""Several worker processes at once: what must happen once happens once."""

from __future__ import annotations

import subprocess

import pytest

from hubsync_sandbox.samples import sample_entry, sample_event
from tests.conftest import Hub

pytestmark = pytest.mark.integration
WORKERS = 3


def test_one_new_subsidiary_needed_by_30_entries_on_three_worker_processes_is_created_once(
    hub: Hub, more_workers: list[subprocess.Popen[bytes]]
) -> None:
    # given three worker processes and 30 entries that all need the same supplier account, unknown to ACD
    cf = hub.cf("procs")
    hub.connect_acd(cf, firm="martin", dossier="MARTIN01")
    code = f"FPROC{hub.run}".upper()[:13]
    entries = []
    for n in range(30):
        entry = sample_entry("purchase", 100 + n)
        entry["id"] = f"ent_proc_{n}_{hub.run}"
        entry["lines"][2]["counterparty"] = {"kind": "supplier", "code": code, "name": "Fournisseur Partagé"}
        entries.append(entry)
    creations_before = [c for c in hub.sandbox.acd.calls("martin") if c[1].endswith("comptes/fournisseur")]
    # when they are emitted at once
    for entry in entries:
        hub.emit(sample_event(cf, entry))
    records = hub.wait_states(cf, [e["id"] for e in entries], timeout=120)
    # then every entry is confirmed, the account exists once, and exactly one creation call reached ACD
    assert all(r.state == "confirmed" for r in records.values())
    codes = [a["Code"] for a in hub.sandbox.acd.accounts("martin", "MARTIN01", "fournisseurs")]
    assert codes.count(code) == 1
    creations = [c for c in hub.sandbox.acd.calls("martin") if c[1].endswith("comptes/fournisseur")]
    assert len(creations) - len(creations_before) == 1
    for rec in records.values():
        assert len(hub.acd_entries_with("martin", "MARTIN01", rec.ack)) == 1
    print(f"\n30 entries on {WORKERS} worker processes: {len(creations) - len(creations_before)} account creation")
