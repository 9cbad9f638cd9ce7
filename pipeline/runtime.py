"""Per-process resources: one store connection pool and one HTTP client per provider, made on first use.

Worker processes call ``reset()`` after a fork so that no socket is shared between processes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Protocol

import httpx

from pipeline.config import settings
from pipeline.store import Store

log = logging.getLogger(__name__)

# httpx logs every request at INFO with its whole URL, and a supporting document's URL often carries a signed
# query (``?token=…``) that lets anybody fetch a customer's invoice: at a worker's INFO level it would reach the
# logs. Those lines say nothing the records do not, so only httpx's warnings are kept.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)

_lock = threading.Lock()
_store: Store | None = None
_http: dict[str, httpx.Client] = {}


class Waker(Protocol):
    """Start a record's chain at a step, after ``countdown`` seconds (the Celery glue's ``enqueue``)."""

    def __call__(
        self, provider: str, record_id: str, generation: int, step: str, *, countdown: float | None = None
    ) -> None: ...


_waker: Waker | None = None
_trust_connections = 0.0


def store() -> Store:
    """This process's store."""
    global _store
    with _lock:
        if _store is None:
            _store = Store.from_url()
            _store.connections.trust_seconds = _trust_connections
        return _store


def keep_connections(seconds: float) -> None:
    """Let this process's store keep a ready connection it read for ``seconds`` (workers: every step reads
    its client file's connection; a one-shot command reads what is there now)."""
    global _trust_connections
    with _lock:
        _trust_connections = seconds
        if _store is not None:
            _store.connections.trust_seconds = seconds


def http(name: str) -> httpx.Client:
    """This process's pooled HTTP client for one provider (``acd``, ``docs``, ``cegid_loop``)."""
    with _lock:
        client = _http.get(name)
        if client is None:
            s = settings()
            client = httpx.Client(
                timeout=httpx.Timeout(s.http_timeout_seconds, connect=s.connect_timeout_seconds),
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30.0),
                follow_redirects=False,
                headers={"User-Agent": "hubsync/0.1"},
            )
            _http[name] = client
        return client


def set_waker(enqueue: Waker | None) -> None:
    """How this process starts a step of another record's chain (set by the Celery glue when it loads; unset
    elsewhere)."""
    global _waker
    _waker = enqueue


def wake(provider: str, record_id: str, generation: int, step: str, countdown: float | None = None) -> bool:
    """Publish a step of a record's chain from inside another record's step (a dossier's FEC read waking the
    entries it could not settle); False where no waker is set (outside a worker: the resume sweep catches up)."""
    if _waker is None:
        log.debug("no waker in this process: %s %s left to the resume sweep", step, record_id)
        return False
    _waker(provider, record_id, generation, step, countdown=countdown)
    return True


def reset() -> None:
    """Forget every resource (after a fork, or in tests)."""
    global _store
    with _lock:
        _store = None
        for client in _http.values():
            with contextlib.suppress(OSError, RuntimeError):  # a socket from the parent may be gone
                client.close()
        _http.clear()
