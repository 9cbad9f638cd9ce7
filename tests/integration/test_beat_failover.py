"""Two real `hubsync beat` processes on one Redis: one sends, the other waits; kill the sender and the other
takes over, and the scheduled job keeps running (a 2-second retention schedule stands for the 20:00 export)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.store.keys import job as job_key
from tests.conftest import Hub, run_cli
from tests.ui.conftest import stop

pytestmark = pytest.mark.integration
JOB = "retention-trim"
ACQUIRED = "beat: Acquired lock"


def _start_beat(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "beat", "-l", "INFO"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _sent(log: Path) -> int:
    return log.read_text(errors="replace").count(f"Sending due task {JOB}")


def _job(hub: Hub) -> dict[str, Any]:
    found: dict[str, Any] = hub.store.r.hgetall(job_key(JOB))
    return found


def test_killing_the_beat_that_holds_the_lock_lets_the_other_take_over_and_the_job_keeps_running(
    hub: Hub, tmp_path: Path
) -> None:
    # given two beats with a short retention schedule and a short lock
    env = {**hub.env, "HUBSYNC_RETENTION_INTERVAL_SECONDS": "2", "HUBSYNC_BEAT_LOCK_SECONDS": "5"}
    log_a, log_b = tmp_path / "beat-a.log", tmp_path / "beat-b.log"
    first = _start_beat(env, log_a)
    second: subprocess.Popen[bytes] | None = None
    try:
        hub.wait(lambda: ACQUIRED in log_a.read_text(errors="replace"), 60, "the first beat to take the lock")
        second = _start_beat(env, log_b)
        hub.wait(lambda: _sent(log_a) >= 3, 60, "the first beat to send the job a few times")
        hub.wait(lambda: _job(hub).get("outcome") == "ok", 60, "a worker to run the job")

        # then the second beat waits: it never took the lock nor sent anything while the first was alive
        assert second.poll() is None, log_b.read_text()
        assert ACQUIRED not in log_b.read_text(errors="replace") and _sent(log_b) == 0

        # when the beat holding the lock is killed outright (no chance to release it)
        killed_at = time.time()
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)

        # then the second beat takes the lock once it expires, and the job runs again, sent by it
        hub.wait(lambda: ACQUIRED in log_b.read_text(errors="replace"), 90, "the second beat to take over")
        hub.wait(lambda: _sent(log_b) >= 2, 60, "the second beat to send the job")
        hub.wait(lambda: float(_job(hub).get("started_at") or 0) > killed_at + 1, 60, "a run after the kill")
        took_over = next(
            line for line in log_b.read_text(errors="replace").splitlines() if ACQUIRED in line
        )  # e.g. "[2026-12-03 10:40:02,118: INFO/MainProcess] beat: Acquired lock"
        print(f"\nbeat killed at {time.strftime('%H:%M:%S', time.gmtime(killed_at))}; standby: {took_over.strip()}")

        # and `hubsync status` shows the job's last run, its next due time, and that it is not late
        shown = run_cli(env, "status", "--json")
        assert shown.returncode == 0, shown.stderr
        (job,) = [j for j in json.loads(shown.stdout)["scheduled"] if j["name"] == JOB]
        assert job["outcome"] in ("ok", "running") and job["last_started"] > killed_at and not job["late"]
        assert json.loads(shown.stdout)["beat_lock_seconds_left"] is not None
    finally:
        if first.poll() is None:
            stop(first)
        if second is not None and second.poll() is None:
            stop(second)


def test_status_says_loudly_when_a_scheduled_job_is_late(hub: Hub) -> None:
    # given a job whose last run started two hours ago on an hourly schedule, and no beat running
    env = {**hub.env, "HUBSYNC_REFERENCE_REFRESH_SECONDS": "3600"}
    hub.store.r.hset(
        job_key("acd-refresh-reference"),
        mapping={"started_at": time.time() - 7200, "finished_at": time.time() - 7190, "outcome": "ok"},
    )
    try:
        shown = run_cli(env, "status")
        # then the table flags it LATE and standard error names it
        assert shown.returncode == 0, shown.stderr
        line = next(x for x in shown.stdout.splitlines() if "acd-refresh-reference" in x)
        assert "LATE by" in line
        assert "scheduled job acd-refresh-reference is late" in shown.stderr
    finally:
        hub.store.r.delete(job_key("acd-refresh-reference"))
