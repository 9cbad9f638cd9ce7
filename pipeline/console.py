"""What every ``hubsync`` command shares, the provider's own commands included: a one-line failure on standard
error, one JSON document on standard output, the store (reachable, or a clear failure), secrets read from the
environment or standard input, and what to do after a command failed.

Every command reads its settings from ``HUBSYNC_*`` variables, exits 0 on success and non-zero with a one-line
reason on standard error otherwise; ``--json`` prints one JSON document and nothing else.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from typing import Any, NoReturn

import click
import redis

from pipeline import dispatch, runtime
from pipeline.config import settings
from pipeline.errors import ErrorKind, HubsyncError
from pipeline.store import Store


def fail(message: str, code: int = 1) -> NoReturn:
    """Exit with a one-line reason on standard error."""
    click.echo(f"hubsync: {message}", err=True)
    sys.exit(code)


def emit_json(value: Any) -> None:
    """Print one JSON document on standard output."""
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def open_store() -> Store:
    """This process's store, once Redis answers; a clear failure when it does not."""
    store = runtime.store()
    try:
        store.ping()
    except (redis.RedisError, OSError) as exc:
        fail(f"cannot reach Redis at {safe_redis_url()} ({type(exc).__name__}); set HUBSYNC_REDIS_URL")
    return store


def safe_redis_url() -> str:
    """``HUBSYNC_REDIS_URL`` with its password hidden."""
    url = settings().redis_url
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://[secure]@{rest.split('@', 1)[1]}"
    return url


def broker() -> dispatch.Dispatch:
    """The message broker (starting chains, publishing events, running Celery programs)."""
    try:
        return dispatch.load()
    except dispatch.NoDispatch as exc:
        fail(str(exc))


def read_secret(env_name: str, from_stdin: bool, what: str) -> str:
    """A secret from the environment, or from standard input with ``--<what>-stdin``; fails when there is none."""
    value = sys.stdin.readline().rstrip("\r\n") if from_stdin else os.environ.get(env_name, "")
    if not value:
        fail(f"no {what}: set {env_name} or pass it on standard input with --{what.replace(' ', '-')}-stdin")
    return value


def hint(exc: HubsyncError, again: str) -> str:
    """What to do after a command failed: a transient error's default hint says the hub retries, which is true
    of a chain's steps but not of a command an operator ran, so it says what to run instead (a hint written
    for the command itself is kept)."""
    if exc.kind is ErrorKind.TRANSIENT and exc.hint == type(exc).default_hint:
        return f"Nothing retries this command: {again}."
    return exc.hint


def age(seconds: float) -> str:
    """A duration as operators read it (``45s``, ``12 min``, ``3.5 h``)."""
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def when(ts: float | None) -> str:
    """A timestamp as operators read it (UTC), or ``-``."""
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
