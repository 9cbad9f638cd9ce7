"""Retention against the real pipeline: entries settle through a real worker and the ACD sandbox, the clock
moves past the history window, and a duplicate or a re-validation arriving months later posts nothing."""

from __future__ import annotations

import json
import time

import pytest

from hubsync_sandbox.samples import sample_entry, sample_event
from pipeline import retention
from pipeline.store.keys import P
from tests.conftest import Hub, run_cli

pytestmark = pytest.mark.integration
FIRM, DOSSIER = "dupont", "DUPONT01"
DAY = 86400.0


def test_entries_trimmed_months_later_are_never_posted_again(hub: Hub) -> None:
    # given three entries confirmed in ACD through the real worker
    cf = hub.cf("retain")
    hub.connect_acd(cf)
    events = []
    for n in range(3):
        entry = sample_entry("expense_report", 700 + n)
        entry["id"] = f"{entry['id']}_{hub.run}"
        events.append(sample_event(cf, entry))
    for event in events:
        hub.emit(event)
    ids = [e["entry"]["id"] for e in events]
    confirmed = hub.wait_states(cf, ids, states=("confirmed",))
    acks = {entry_id: rec.ack for entry_id, rec in confirmed.items()}

    # when the clock moves 31 days on and retention runs (twice at once is safe; here one after the other)
    later = time.time() + 31 * DAY
    first = retention.run(hub.store, at=later)
    retention.run(hub.store, at=later)
    assert first.records >= 3 and hub.store.retention.settled_backlog(at=later) == 0
    for entry_id in ids:
        rec = hub.record(cf, entry_id)
        assert rec.trimmed and rec.state == "confirmed" and rec.ack == acks[entry_id] and rec.provider_id
        assert not hub.store.r.exists(f"{P}:rec:{{{rec.id}}}")

    # and months later the first event comes again (its dedupe key long expired) and the second entry is
    # validated again with a new event
    hub.store.r.delete(f"{P}:event:{events[0]['event_id']}")
    duplicates_before = hub.store.events.counters().get("events_duplicate", 0)
    hub.emit(events[0])
    again = {**events[1], "event_id": f"{events[1]['event_id']}_months_later"}
    hub.emit(again)
    hub.wait(
        lambda: (
            "validated again" in (hub.record(cf, ids[1]).note or "")
            and hub.store.events.counters().get("events_duplicate", 0) > duplicates_before
        ),
        60,
        "the duplicate and the re-validation to be ingested",
    )
    time.sleep(3)  # longer than the confirmation countdown: a chain started by mistake would have posted

    # then ACD still holds exactly one copy of each entry, and every record still says confirmed
    for entry_id in ids:
        assert len(hub.acd_entries_with(FIRM, DOSSIER, acks[entry_id])) == 1, entry_id
        assert hub.record(cf, entry_id).state == "confirmed"
    shown = run_cli(hub.env, "entry", ids[1], "--json")
    assert shown.returncode == 0, shown.stderr
    (item,) = json.loads(shown.stdout)["providers"]
    assert item["state"] == "confirmed" and item["ack"] == f"(#{acks[ids[1]]}#)" and "validated again" in item["note"]
    status = json.loads(run_cli(hub.env, "status", "--json").stdout)
    assert status["providers"]["acd"][cf]["confirmed"] == 3
    assert sum(status["providers"]["acd"][cf].values()) == 3

    # and reconciliation still finds each trimmed entry in ACD by its ACK code
    reconciled = run_cli(hub.env, "reconcile", "--client-file", cf, "--json")
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    (result,) = json.loads(reconciled.stdout)["client_files"]
    assert result["landed"] == 3 and result["missing"] == [] and result["duplicated"] == []
