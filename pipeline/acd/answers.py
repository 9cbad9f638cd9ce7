"""Reading ACD's answers the tolerant way: property names in any case, extra fields ignored, booleans and
numbers as real servers spell them, the error envelope wherever it comes (HTTP 200 or 400). The JSON itself is
read by ``pipeline.http.parse_json`` (a byte-order mark tolerated, None for anything that is not JSON).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pipeline.http import parse_json

SESSION_NOT_OPEN = "pas initialis"
"""Part of ``La connexion à la base du dossier n'est pas initialisée !``: the token has no open dossier."""

_TAGS = re.compile(r"<[^>]+>")
_SPACES = re.compile(r"\s+")
TEXT_KEPT_CHARS = 500


def ci_get(obj: Any, name: str, default: Any = None) -> Any:
    """``obj[name]`` with the property name matched case-insensitively (``Id``, ``id``, ``ID``)."""
    if not isinstance(obj, Mapping):
        return default
    if name in obj:
        return obj[name]
    folded = name.casefold()
    for key, value in obj.items():
        if isinstance(key, str) and key.casefold() == folded:
            return value
    return default


def as_bool(value: Any) -> bool:
    """A boolean however the server wrote it (``true``, ``"true"``, ``1``, ``"Oui"``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        return value.strip().casefold() in ("true", "1", "oui", "yes", "o", "vrai")
    return False


def as_int(value: Any) -> int | None:
    """An integer id however the server wrote it (``12``, ``"12"``), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def envelope(body: Any) -> tuple[int | None, list[tuple[str, str]]]:
    """``(codeRetour, [(erreur, description), …])`` of ACD's envelope; ``(None, [])`` when there is none."""
    if not isinstance(body, Mapping):
        return None, []
    raw_code = ci_get(body, "codeRetour")
    errors_raw = ci_get(body, "listeErreurs")
    if raw_code is None and errors_raw is None:
        return None, []
    code = as_int(raw_code) if not isinstance(raw_code, bool) else int(raw_code)
    errors: list[tuple[str, str]] = []
    if isinstance(errors_raw, list):
        for item in errors_raw:
            if isinstance(item, Mapping):
                key = ci_get(item, "erreur")
                text = ci_get(item, "description")
                errors.append((str(key) if key is not None else "", str(text) if text is not None else ""))
            elif isinstance(item, str):
                errors.append(("", item))
    return code, errors


def plain_text(content: bytes, limit: int = TEXT_KEPT_CHARS) -> str:
    """A body as one line of text for a message: a French sentence as it is, an HTML page without its tags."""
    text = content.decode("utf-8-sig", "replace")
    looks_html = "<html" in text[:500].lower() or "<!doctype" in text[:500].lower()
    if looks_html:
        title = re.search(r"<title>(.*?)</title>", text, re.I | re.S)
        text = "an HTML page" + (f" ({_SPACES.sub(' ', title.group(1)).strip()})" if title else "")
    else:
        body = parse_json(content)
        if isinstance(body, Mapping):
            message = ci_get(body, "Message") or ci_get(body, "ExceptionMessage")
            if isinstance(message, str):
                text = message
        text = _SPACES.sub(" ", _TAGS.sub(" ", text)).strip()
    return text if len(text) <= limit else text[:limit] + "…"


def items(body: Any, *wrappers: str) -> list[dict[str, Any]] | None:
    """The objects of an array answer, or of an object wrapping one (``{"Arborescences": […]}``); None when
    the answer is neither."""
    if isinstance(body, Mapping):
        for name in wrappers:
            inner = ci_get(body, name)
            if isinstance(inner, list):
                body = inner
                break
        else:
            return None
    if not isinstance(body, list):
        return None
    return [dict(item) for item in body if isinstance(item, Mapping)]
