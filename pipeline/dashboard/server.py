"""``hubsync dashboard``: wire the app to the pipeline from ``HUBSYNC_*`` settings and serve it."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Flask

from pipeline import runtime
from pipeline.dashboard.app import Wiring, create_app
from pipeline.dashboard.auth import parse_users
from pipeline.ingest import ingest
from pipeline.providers import Enqueue
from pipeline.secrets import Secret, fingerprint

SERVER_THREADS = 8


def session_key() -> str:
    """``HUBSYNC_DASHBOARD_SECRET_KEY``, or a key derived from ``HUBSYNC_SECRET_KEY`` (stable across restarts)."""
    explicit = os.environ.get("HUBSYNC_DASHBOARD_SECRET_KEY", "")
    if explicit:
        return explicit
    return fingerprint(Secret("hubsync dashboard session cookies"))


def app_from_env(enqueue: Enqueue) -> Flask:
    """The dashboard wired to this process's store and to the broker through ``enqueue``; raises ``UsersError``
    without users."""

    def ingest_summary(store: Any, raw: Any) -> str:
        return ingest(store, raw, enqueue).summary()

    origins = tuple(o.strip().rstrip("/") for o in os.environ.get("HUBSYNC_DASHBOARD_ORIGIN", "").split(",") if o)
    wiring = Wiring(
        store=runtime.store,
        users=parse_users(os.environ.get("HUBSYNC_DASHBOARD_USERS", "")),
        enqueue=enqueue,
        ingest=ingest_summary,
        flower_url=os.environ.get("HUBSYNC_FLOWER_URL", "").strip(),
        allowed_origins=origins,
    )
    secure = os.environ.get("HUBSYNC_DASHBOARD_SECURE_COOKIES", "") in ("1", "true", "yes")
    return create_app(wiring, session_key(), secure_cookies=secure)


def serve(app: Flask, host: str, port: int) -> None:
    """Serve the app with Tornado (already there for Flower), running requests on a small thread pool."""
    import asyncio

    from tornado.httpserver import HTTPServer
    from tornado.wsgi import WSGIContainer

    async def main() -> None:
        container = WSGIContainer(app, executor=ThreadPoolExecutor(SERVER_THREADS))
        server = HTTPServer(container)
        server.listen(port, address=host)
        await asyncio.Event().wait()

    asyncio.run(main())
