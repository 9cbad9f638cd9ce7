"""compose.yaml cannot be run here (no Docker engine), so check what can be checked without one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_runs_redis_as_a_durable_queue() -> None:
    redis = _compose()["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert "healthcheck" in redis


def test_every_hubsync_command_in_compose_exists_in_the_cli() -> None:
    services = _compose()["services"]
    commands = [s["command"] for s in services.values() if s.get("command", [None])[0] == "hubsync"]
    assert len(commands) >= 3
    for command in commands:
        result = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", *command[1:2], "--help"], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, f"{command}: {result.stderr}"
        for option in (part for part in command[2:] if part.startswith("--")):
            assert option in result.stdout, f"{command[1]} has no option {option}"


def test_compose_keeps_secrets_out_of_the_file() -> None:
    base_env = _compose()["x-hubsync"]["environment"]
    assert base_env["HUBSYNC_SECRET_KEY"].startswith("${HUBSYNC_SECRET_KEY")
    for name, value in base_env.items():
        if any(word in name for word in ("SECRET", "PASSWORD", "KEY")):
            assert str(value).startswith("${"), f"{name} is baked into compose.yaml"


def test_compose_runs_two_beats_that_share_the_scheduler_lock() -> None:
    beat = _compose()["services"]["beat"]
    assert beat["deploy"]["replicas"] >= 2
    assert "--schedule-file" not in beat["command"]  # the schedule lives in Redis, shared by both
