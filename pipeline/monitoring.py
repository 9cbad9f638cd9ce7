"""``hubsync flower``: Flower on the pipeline's Redis, never without authentication.

Flower shows what the workers report in their task events (``hubsync worker -E``). The chain tasks carry
only record ids and ``hubsync.ingest_event`` is published with a masked ``argsrepr`` (see
``pipeline.redact.event_argsrepr``), so no secret or document token reaches Flower's pages.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

BASIC_AUTH_ENV = "HUBSYNC_FLOWER_BASIC_AUTH"
MIN_PASSWORD_CHARS = 10


class FlowerConfigError(ValueError):
    """Flower would start without (good) authentication."""


def check_basic_auth(spec: str) -> list[str]:
    """The ``user:password`` pairs of ``HUBSYNC_FLOWER_BASIC_AUTH``; raises unless every one is usable."""
    pairs = [item.strip() for item in spec.split(",") if item.strip()]
    if not pairs:
        raise FlowerConfigError(f"set {BASIC_AUTH_ENV}=user:password: Flower never runs without authentication")
    for number, pair in enumerate(pairs, start=1):
        user, _, password = pair.partition(":")
        if not user or not password:
            raise FlowerConfigError(f"{BASIC_AUTH_ENV} entry {number} is not user:password")
        if len(password) < MIN_PASSWORD_CHARS:
            raise FlowerConfigError(f"{BASIC_AUTH_ENV} entry {number}: use a password of {MIN_PASSWORD_CHARS}+ chars")
    return pairs


def _show_every_pipeline_queue() -> None:
    """Make the broker tab list every queue in ``task_queues``, not only those some worker consumes now."""
    from flower.views import BaseHandler

    original = BaseHandler.get_active_queue_names
    if getattr(original, "_hubsync", False):
        return

    def queue_names(self: Any) -> list[str]:
        names = set(original(self))
        names |= {q.name for q in self.capp.conf.task_queues or () if q.name}
        return sorted(names)

    queue_names._hubsync = True  # type: ignore[attr-defined]
    BaseHandler.get_active_queue_names = queue_names


def run_flower(start: Callable[[list[str]], None], address: str, port: int, url_prefix: str = "") -> None:
    """Start Flower on the pipeline's Celery app (``start`` runs a Celery program on it: ``pipeline.dispatch``);
    credentials go through the environment, not argv."""
    pairs = check_basic_auth(os.environ.get(BASIC_AUTH_ENV, ""))
    os.environ["FLOWER_BASIC_AUTH"] = ",".join(pairs)
    os.environ.pop("FLOWER_UNAUTHENTICATED_API", None)
    _show_every_pipeline_queue()
    argv = ["flower", f"--address={address}", f"--port={port}"]
    if url_prefix:
        argv.append(f"--url_prefix={url_prefix}")
    start(argv)
