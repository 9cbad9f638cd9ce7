"""Fault switches shared by every sandbox: make a provider's server misbehave on purpose.

A ``Fault`` says what goes wrong (``mode``), on which requests (``route``, ``method``), how often
(``probability``, drawn from the sandbox's seeded ``random.Random`` so runs are reproducible) and for how
long (``count`` matching requests, or until cleared). A ``FaultSwitch`` holds the active faults of one
server in order; the first one that matches a request and wins its draw applies, and its count goes down.

Modes:

- ``off``: the server is off; the connection is reset with no response.
- ``status``: answer ``status`` (default 503) with an HTML or JSON error page, without doing the work.
- ``rate_limit``: 429 with ``Retry-After: retry_after`` (default 1).
- ``slow``: sleep ``delay_seconds`` (default 1), then answer normally.
- ``drop_after_commit``: do the work (commit the entry, store the document), then reset the connection.
- ``garbage``: 200 with a body that is not what the route promises (rotating: invalid JSON, a JSON object
  without the envelope, an HTML error page).
- ``truncate``: do the work, send the headers and half of the body, then reset (a download cut short).
- ``gateway``: the reverse proxy in front of a server that is off: 502 with an HTML page saying so.
- ``backup``: the server's database is away (a backup): 500 with a plain-text sentence, no work done.
- ``error_after_commit``: do the work, then answer 500 with a plain-text sentence (the outcome is unknown).
- ``session_lost``: the app forgets the caller's server-side session, then answers normally (apps without
  sessions: no effect).

``text`` replaces the body text of ``gateway``, ``backup`` and ``error_after_commit``; a switch's ``texts``
give each of those modes the words of the server it plays (the ACD sandbox's are French).
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from hubsync_sandbox.http import (
    ConnectionAbort,
    HttpError,
    Request,
    Response,
    html_response,
    json_response,
    text_response,
)

FAULT_MODES = (
    "off", "status", "rate_limit", "slow", "drop_after_commit", "garbage", "truncate",
    "gateway", "backup", "error_after_commit", "session_lost",
)  # fmt: skip
DEFAULT_FAULT_TEXTS = {
    "gateway": "Bad Gateway: the remote server returned an error",
    "backup": "The database server is temporarily unreachable",
    "error_after_commit": "An error has occurred.",
}
DEFAULT_FAULT_STATUS = 503
DEFAULT_RETRY_AFTER_SECONDS = 1
DEFAULT_DELAY_SECONDS = 1.0

_GARBAGE: tuple[Response, ...] = (
    Response(
        200,
        b'{"codeRetour": 1, "description": "OK", "listeErreurs": [',
        {"Content-Type": "application/json; charset=utf-8"},
    ),
    Response(200, b'{"Message": "OK", "Data": null}', {"Content-Type": "application/json; charset=utf-8"}),
    Response(
        200,
        b"<!DOCTYPE html>\n<html><head><title>Erreur</title></head><body><h1>Erreur serveur</h1>"
        b"<p>Le service est momentan\xc3\xa9ment indisponible.</p></body></html>\n",
        {"Content-Type": "text/html; charset=utf-8"},
    ),
)


@dataclass
class Fault:
    """One way a sandboxed server misbehaves; JSON round-trippable with ``to_dict`` / ``from_dict``."""

    mode: str
    count: int | None = None
    route: str | None = None
    status: int | None = None
    retry_after: int | None = None
    delay_seconds: float | None = None
    probability: float = 1.0
    method: str | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {self.mode!r}; one of {', '.join(FAULT_MODES)}")
        if self.count is not None and (not _is_int(self.count) or self.count < 1):
            raise ValueError("count must be a positive integer or null")
        if self.status is not None and (not _is_int(self.status) or not 100 <= self.status <= 599):
            raise ValueError("status must be an HTTP status code")
        if self.retry_after is not None and (not _is_int(self.retry_after) or self.retry_after < 0):
            raise ValueError("retry_after must be a non-negative integer")
        if self.delay_seconds is not None and (not _is_number(self.delay_seconds) or self.delay_seconds < 0):
            raise ValueError("delay_seconds must be a non-negative number")
        if not _is_number(self.probability) or not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        if self.route is not None and not isinstance(self.route, str):
            raise ValueError("route must be a string")
        if self.text is not None and not isinstance(self.text, str):
            raise ValueError("text must be a string")
        if self.method is not None:
            if not isinstance(self.method, str):
                raise ValueError("method must be a string")
            self.method = self.method.upper()

    def to_dict(self) -> dict[str, Any]:
        """The fault as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        """Build a fault from a dict such as ``to_dict`` gives; raises ``ValueError`` on anything unknown."""
        if not isinstance(data, Mapping):
            raise ValueError("a fault is a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        if "mode" not in data:
            raise ValueError("a fault needs a mode")
        values = dict(data)
        if values.get("delay_seconds") is not None and _is_number(values["delay_seconds"]):
            values["delay_seconds"] = float(values["delay_seconds"])
        if values.get("probability") is not None and _is_number(values["probability"]):
            values["probability"] = float(values["probability"])
        elif "probability" in values and values["probability"] is None:
            values["probability"] = 1.0
        return cls(**values)

    def matches(self, method: str, path: str, *, ignore_case: bool = False, exact: bool = False) -> bool:
        """True when this fault applies to ``method path``.

        By default ``route`` is a substring of the path that must end where a path segment ends, so
        ``compta/ecriture`` hits ``/api/v1/compta/ecriture`` but not ``/api/v1/compta/ecritures``.
        With ``exact`` the path is a route name (``ged/documents``) and ``route`` must be that name (a leading
        ``/``, ``api/`` or ``v1/`` aside), or end with ``/`` and begin it: ``ged/documents`` does not hit
        ``ged/documents/filtrer``, ``ged/`` hits both.
        """
        if self.method is not None and self.method != method.upper():
            return False
        if not self.route:
            return True
        route = self.route.casefold() if ignore_case else self.route
        if ignore_case:
            path = path.casefold()
        if exact:
            return _route_name(route) == _route_name(path) or (
                route.endswith("/") and _route_name(path).startswith(_route_name(route) + "/")
            )
        start = path.find(route)
        while start != -1:
            end = start + len(route)
            if end == len(path) or path[end] in "/?" or route.endswith("/"):
                return True
            start = path.find(route, start + 1)
        return False


def _route_name(route: str) -> str:
    name = route.strip("/")
    for prefix in ("api/", "v1/"):
        if name.casefold().startswith(prefix):
            name = name[len(prefix) :]
    return name


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class FaultSwitch:
    """The active faults of one server, in order, thread-safe.

    ``texts`` gives the body of the ``gateway``, ``backup`` and ``error_after_commit`` answers;
    ``ignore_case`` matches fault routes whatever the case of the path (servers on IIS); ``exact_routes``
    matches them as whole route names (see ``Fault.matches``).
    """

    def __init__(
        self,
        rng: random.Random | None = None,
        *,
        texts: Mapping[str, str] | None = None,
        ignore_case: bool = False,
        exact_routes: bool = False,
    ) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._rng = rng or random.Random(0)
        self._garbage_served = 0
        self._texts = {**DEFAULT_FAULT_TEXTS, **(texts or {})}
        self._ignore_case = ignore_case
        self._exact_routes = exact_routes

    def add(self, fault: Fault) -> None:
        """Activate ``fault`` after the ones already active (a copy is kept: its count runs down)."""
        with self._lock:
            self._faults.append(dataclasses.replace(fault))

    def clear(self) -> None:
        """Deactivate every fault."""
        with self._lock:
            self._faults.clear()
            self._garbage_served = 0

    def active(self) -> list[Fault]:
        """Copies of the active faults, with their remaining counts."""
        with self._lock:
            return [dataclasses.replace(fault) for fault in self._faults]

    def take(self, method: str, path: str) -> Fault | None:
        """The fault that applies to this request, if any, counting it as used."""
        with self._lock:
            for fault in self._faults:
                if not fault.matches(method, path, ignore_case=self._ignore_case, exact=self._exact_routes):
                    continue
                if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                    continue
                applied = dataclasses.replace(fault)
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                return applied
        return None

    def respond(self, fault: Fault | None, handle: Callable[[], Response]) -> Response:
        """Answer a request under ``fault``; ``handle`` does the real work when the fault lets it run.

        Raises ``ConnectionAbort`` when the connection must be reset without a response.
        """
        if fault is None:
            return handle()
        if fault.mode == "off":
            raise ConnectionAbort
        if fault.mode == "status":
            return error_page(fault.status or DEFAULT_FAULT_STATUS, fault.retry_after)
        if fault.mode == "rate_limit":
            retry_after = DEFAULT_RETRY_AFTER_SECONDS if fault.retry_after is None else fault.retry_after
            return json_response(
                {"Message": "Trop de requêtes, réessayez plus tard."},
                429,
                {"Retry-After": str(retry_after)},
            )
        if fault.mode == "slow":
            time.sleep(DEFAULT_DELAY_SECONDS if fault.delay_seconds is None else fault.delay_seconds)
            return handle()
        if fault.mode == "drop_after_commit":
            handle()
            raise ConnectionAbort
        if fault.mode == "garbage":
            with self._lock:
                sample = _GARBAGE[self._garbage_served % len(_GARBAGE)]
                self._garbage_served += 1
            return dataclasses.replace(sample, headers=dict(sample.headers))
        if fault.mode == "truncate":
            response = handle()
            length = response.length()
            response.abort_after_bytes = max((length or 2) // 2, 1)
            return response
        if fault.mode == "gateway":
            return html_response(502, "Bad Gateway", fault.text or self._texts["gateway"])
        if fault.mode == "backup":
            return text_response(fault.text or self._texts["backup"], 500)
        if fault.mode == "error_after_commit":
            handle()
            return text_response(fault.text or self._texts["error_after_commit"], 500)
        if fault.mode == "session_lost":
            return handle()
        raise AssertionError(f"unhandled fault mode {fault.mode}")  # pragma: no cover


def error_page(status: int, retry_after: int | None = None) -> Response:
    """What a broken server or its reverse proxy answers: HTML for gateway errors, JSON otherwise."""
    if status in (502, 503, 504):
        response = html_response(status, detail="The server is temporarily unable to service your request.")
    else:
        response = json_response({"Message": "An error has occurred."}, status)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def parse_faults(request: Request) -> list[Fault]:
    """One fault object or a list of them from an admin request body; 400 on anything else."""
    try:
        body = request.json()
        items = body if isinstance(body, list) else [body]
        return [Fault.from_dict(_plain_numbers(item)) for item in items]
    except (ValueError, TypeError) as exc:
        raise HttpError(json_response({"error": str(exc)}, 400)) from exc


def _plain_numbers(item: Any) -> Any:
    # Admin JSON is parsed with Decimal fractions; a fault's numbers are plain floats.
    if isinstance(item, dict):
        return {key: float(value) if isinstance(value, Decimal) else value for key, value in item.items()}
    return item
