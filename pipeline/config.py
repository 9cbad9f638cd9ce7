"""Settings, read once from ``HUBSYNC_*`` environment variables (documented in the README)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.retry import RetryPolicy


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from exc


def _list(name: str) -> tuple[str, ...]:
    return tuple(part.strip().lower() for part in os.environ.get(name, "").split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    """Everything the pipeline reads from its environment."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    home: Path = field(default_factory=lambda: Path.home() / ".local" / "share" / "hubsync")
    spool_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "hubsync-spool")
    document_hosts: tuple[str, ...] = ()
    document_allow_private: bool = False
    document_max_bytes: int = 20 * 1024 * 1024
    cegid_document_max_bytes: int = 50_000_000
    http_timeout_seconds: float = 30.0
    connect_timeout_seconds: float = 5.0
    acd_index_lag_seconds: float = 2.0
    acd_server_request_timeout_seconds: float = 120.0
    confirm_window_seconds: float = 120.0
    acd_fec_timeout_seconds: float = 120.0
    acd_fec_min_interval_seconds: float = 10.0
    acd_fec_reads_per_server: int = 2
    acd_token_ttl_seconds: float = 50 * 60.0
    acd_token_idle_seconds: float = 13 * 60.0
    acd_max_reposts: int = 5
    breaker_threshold: int = 5
    breaker_cooldown_seconds: float = 15.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    event_ttl_seconds: int = 90 * 24 * 3600
    history_days: float = 30.0
    stall_seconds: float = 4500.0
    resume_interval_seconds: float = 60.0

    @classmethod
    def from_env(cls) -> Settings:
        """Read the environment; unset variables keep their defaults."""
        env = os.environ
        defaults = cls()
        visibility = _float("HUBSYNC_VISIBILITY_TIMEOUT_SECONDS", 3600.0)
        return cls(
            redis_url=env.get("HUBSYNC_REDIS_URL", defaults.redis_url),
            home=Path(env["HUBSYNC_HOME"]) if env.get("HUBSYNC_HOME") else defaults.home,
            spool_dir=Path(env["HUBSYNC_SPOOL_DIR"]) if env.get("HUBSYNC_SPOOL_DIR") else defaults.spool_dir,
            document_hosts=_list("HUBSYNC_DOCUMENT_HOSTS"),
            document_allow_private=env.get("HUBSYNC_DOCUMENT_ALLOW_PRIVATE", "") in ("1", "true", "yes"),
            document_max_bytes=int(_float("HUBSYNC_DOCUMENT_MAX_BYTES", defaults.document_max_bytes)),
            cegid_document_max_bytes=int(_float("HUBSYNC_CEGID_DOCUMENT_MAX_BYTES", defaults.cegid_document_max_bytes)),
            http_timeout_seconds=_float("HUBSYNC_HTTP_TIMEOUT_SECONDS", defaults.http_timeout_seconds),
            connect_timeout_seconds=_float("HUBSYNC_CONNECT_TIMEOUT_SECONDS", defaults.connect_timeout_seconds),
            acd_index_lag_seconds=_float("HUBSYNC_ACD_INDEX_LAG_SECONDS", defaults.acd_index_lag_seconds),
            acd_server_request_timeout_seconds=_float(
                "HUBSYNC_ACD_SERVER_REQUEST_TIMEOUT_SECONDS", defaults.acd_server_request_timeout_seconds
            ),
            confirm_window_seconds=_float("HUBSYNC_CONFIRM_WINDOW_SECONDS", defaults.confirm_window_seconds),
            acd_fec_timeout_seconds=_float("HUBSYNC_ACD_FEC_TIMEOUT_SECONDS", defaults.acd_fec_timeout_seconds),
            acd_fec_min_interval_seconds=_float(
                "HUBSYNC_ACD_FEC_MIN_INTERVAL_SECONDS", defaults.acd_fec_min_interval_seconds
            ),
            acd_fec_reads_per_server=int(_float("HUBSYNC_ACD_FEC_READS_PER_SERVER", defaults.acd_fec_reads_per_server)),
            acd_token_ttl_seconds=_float("HUBSYNC_ACD_TOKEN_TTL_SECONDS", defaults.acd_token_ttl_seconds),
            acd_token_idle_seconds=_float("HUBSYNC_ACD_TOKEN_IDLE_SECONDS", defaults.acd_token_idle_seconds),
            acd_max_reposts=int(_float("HUBSYNC_ACD_MAX_REPOSTS", defaults.acd_max_reposts)),
            breaker_threshold=int(_float("HUBSYNC_BREAKER_THRESHOLD", defaults.breaker_threshold)),
            breaker_cooldown_seconds=_float("HUBSYNC_BREAKER_COOLDOWN_SECONDS", defaults.breaker_cooldown_seconds),
            history_days=_float("HUBSYNC_HISTORY_DAYS", defaults.history_days),
            # a stalled record is resumed only once kombu would have restored a message a dead worker held
            stall_seconds=_float("HUBSYNC_STALL_SECONDS", max(60.0, visibility * 1.25)),
            resume_interval_seconds=_float("HUBSYNC_RESUME_INTERVAL_SECONDS", defaults.resume_interval_seconds),
            retry=RetryPolicy(
                base_seconds=_float("HUBSYNC_RETRY_BASE_SECONDS", 2.0),
                max_seconds=_float("HUBSYNC_RETRY_MAX_SECONDS", 300.0),
                window_seconds=_float("HUBSYNC_RETRY_WINDOW_SECONDS", 24 * 3600.0),
                visibility_timeout_seconds=visibility,
            ),
        )


_settings: Settings | None = None


def settings() -> Settings:
    """The process-wide settings, read on first use."""
    global _settings
    if _settings is None:
        _settings = Settings.from_env()
    return _settings


def reset_settings() -> None:
    """Forget cached settings (tests, and the CLI after it changes the environment)."""
    global _settings
    _settings = None
