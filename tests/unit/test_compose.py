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


def _dockerfile_stages() -> dict[str, list[str]]:
    """Each named stage of the Dockerfile: its instructions, those of the stages it is built FROM first."""
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM "):
            base, _, name = line.removeprefix("FROM ").partition(" AS ")
            current = [*stages.get(base, []), line]
            stages[name] = current
        elif line and not line.startswith("#"):
            current.append(line)
    return stages


def test_only_the_sandbox_service_runs_an_image_with_the_sandboxes() -> None:
    # given the Dockerfile's stages and the image each service builds
    stages = _dockerfile_stages()
    services = _compose()["services"]
    targets = {name: s["build"]["target"] for name, s in services.items() if "build" in s}
    assert set(targets) >= {"worker-events", "worker-acd", "worker-cegid-loop", "beat", "dashboard", "sandbox"}

    # then every service but the sandbox runs an image in which nothing of sandbox/ is copied or installed
    for name, target in targets.items():
        installs_sandbox = any("sandbox" in line for line in stages[target] if line.startswith(("COPY", "RUN")))
        assert installs_sandbox == (name == "sandbox"), f"{name} builds {target}"
        assert stages[target][-1] == "USER nobody"
    # and a plain `docker build .` (the last stage) gives the product image
    assert list(stages)[-1] == targets["worker-acd"]
