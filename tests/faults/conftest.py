"""The fault suite's beds (``hubsync_sandbox.bed.Bed``): a private Redis, the sandboxes, several real `hubsync worker`
processes.

Each scenario gets its own bed, so a killed worker, a restarted Redis or a firm's server left off cannot leak
into the next one, and ACK codes cannot collide with those of the rest of the suite. Entries go to three
firms (dupont, martin, leroy), one client file each, or to several dossiers of one firm under its one API
code; the end of every scenario is a reconciliation of what was emitted against what the ACD sandbox holds in
every dossier, entry by entry, printed as one line: entries, landed, lost, duplicates, in a wrong dossier.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hubsync_sandbox.bed import TARGETS, Batch, Bed, percentile
from pipeline.secrets import generate_key

__all__ = ["TARGETS", "Batch", "Bed", "assert_reconciled", "percentile"]

ENTRIES = int(os.environ.get("HUBSYNC_FAULTS_ENTRIES", "180"))
WORKERS = int(os.environ.get("HUBSYNC_FAULTS_WORKERS", "3"))
CONCURRENCY = int(os.environ.get("HUBSYNC_FAULTS_CONCURRENCY", "8"))
SUMMARY: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Show every scenario's reconciliation line at the end of the run."""
    if SUMMARY:
        terminalreporter.section("fault scenarios: reconciliation")
        for line in SUMMARY:
            terminalreporter.write_line(line)


def assert_reconciled(result: dict[str, Any]) -> None:
    """Nothing in a wrong dossier, nothing lost, nothing posted twice, dead letters only where the input
    deserved one."""
    assert result["wrong_dossier"] == 0, result
    assert result["lost"] == 0, result
    assert result["duplicates"] == 0, result
    assert result["unexpected_dead"] == [], result
    assert result["dead_lettered"] == result["expected_dead"], result
    assert result["reconcile_errors"] == [], result
    assert result["reconcile_missing"] == result["reconcile_duplicated"] == result["reconcile_unknown"] == 0, result


def _report(line: str) -> None:
    print(line)
    SUMMARY.append(line)


@pytest.fixture
def make_bed(tmp_path: Path) -> Iterator[Callable[..., Bed]]:
    """Build beds for a scenario; everything they started is stopped afterwards."""
    beds: list[Bed] = []
    added_key = "HUBSYNC_SECRET_KEY" not in os.environ
    if added_key:
        os.environ["HUBSYNC_SECRET_KEY"] = generate_key()

    def make(
        workers: int = WORKERS,
        visibility_seconds: float | None = None,
        env: dict[str, str] | None = None,
        targets: tuple[tuple[str, str], ...] = TARGETS,
    ) -> Bed:
        # FEC reads every 2 s rather than 5: the suite's batches are short, and settle sooner
        bed = Bed(
            tmp_path / f"bed{len(beds)}",
            visibility_seconds,
            {"HUBSYNC_ACD_FEC_MIN_INTERVAL_SECONDS": "2", **(env or {})},
            report=_report,
        )
        beds.append(bed)
        bed.connect_firms(targets)
        if workers:
            bed.start_workers(workers, CONCURRENCY)
        return bed

    yield make
    for bed in beds:
        bed.stop()
    if added_key:
        os.environ.pop("HUBSYNC_SECRET_KEY", None)
