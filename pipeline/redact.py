"""Hiding secrets in what operators see: events and errors on the dashboard, task arguments in Flower.

An ``entry.validated`` event carries no password, but its document URLs often carry a signed query
(``?token=…``, ``X-Amz-Signature=…``) that lets anybody fetch a customer's invoice. So every value under
a key that names a secret is replaced, and every URL found in any string keeps its scheme, host and path
but loses its credentials and the values of its query.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

MASK = "[secure]"
SECRET_KEY_PATTERN = re.compile(
    r"pass(word|wd)?|secret|token|api[_-]?key|authori[sz]ation|signature|credential|cookie|session|private",
    re.IGNORECASE,
)
URL_PATTERN = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]+")
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.:@-]")
ID_MAX_CHARS = 80


def mask_url(url: str) -> str:
    """The URL with its user info and every query value (and fragment) replaced by ``[secure]``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return MASK
    netloc = host if port is None else f"{host}:{port}"
    if parts.username or parts.password:
        netloc = f"{MASK}@{netloc}"
    query = "&".join(f"{name}={MASK}" for name, _ in parse_qsl(parts.query, keep_blank_values=True))
    if parts.query and not query:
        query = MASK
    fragment = MASK if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def mask_text(text: str) -> str:
    """A string with every URL in it masked."""
    return URL_PATTERN.sub(lambda m: mask_url(m.group(0)), text)


def mask(value: Any) -> Any:
    """A copy of a JSON-like value with secret-named keys and URL tokens masked."""
    if isinstance(value, dict):
        return {
            key: (MASK if value[key] not in (None, "") and SECRET_KEY_PATTERN.search(str(key)) else mask(value[key]))
            for key in value
        }
    if isinstance(value, list | tuple):
        return [mask(item) for item in value]
    if isinstance(value, str):
        return mask_text(value)
    return value


def safe_id(value: Any) -> str:
    """An identifier cut to a sane length and stripped of anything but id characters."""
    text = _ID_UNSAFE.sub("", str(value))[:ID_MAX_CHARS]
    return text or "?"


def event_argsrepr(event: Any) -> str:
    """What Flower and the worker logs show for ``hubsync.ingest_event``'s argument: ids, never the event."""
    if not isinstance(event, dict):
        return f"(event: a {type(event).__name__}, not a JSON object)"
    return f"(event {safe_id(event.get('event_id', '?'))} for {safe_id(event.get('client_file_id', '?'))})"
