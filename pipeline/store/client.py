"""The Redis connection the store's rooms share, and the Lua scripts they run, loaded once from ``lua/``."""

from __future__ import annotations

from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script

from pipeline.config import settings

Redis = Any
"""A ``redis.Redis`` made with ``decode_responses=True`` (redis-py's annotations do not model it: every reply
here is a str)."""


def connect(url: str | None = None) -> Redis:
    """A client for the store at ``url`` (default: ``HUBSYNC_REDIS_URL``)."""
    return redis.Redis.from_url(url or settings().redis_url, decode_responses=True)


def lua(name: str, **constants: str) -> str:
    """The text of ``lua/<name>.lua`` with each ``__NAME__`` replaced by its constant."""
    text = resources.files("pipeline.store").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
    for key, value in constants.items():
        text = text.replace(f"__{key}__", value)
    return text


def script(client: Redis, *names: str, **constants: str) -> Script:
    """A script made of the ``lua/`` files ``names`` (in order), registered on ``client`` (sent by its digest,
    loaded into Redis on first use and again after a restart or a failover)."""
    registered: Script = client.register_script("\n".join(lua(name, **constants) for name in names))
    return registered
