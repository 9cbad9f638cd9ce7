"""The one send loop every provider's client goes through: a request out, an answer or a classified error back.

A provider brings its base URL, its ``httpx.Auth`` and its error table, a function from a ``Failure`` to a
``HubsyncError``; the loop does the rest the same way for every provider:

* **Transport failures** are told apart by how much of the request left (``Sent``). ``NOTHING``: the
  connection was refused, the name did not resolve, the connect or pool wait timed out; the server saw nothing.
  ``PART``: the request started out and broke before its last byte, so the server cannot hold the whole body.
  ``WHOLE``: it left whole (or may have) and no answer came; a write may have been acted on. A body handed over
  as a ``FileBody`` says exactly when its last byte left; any other body is judged by the exception.
* **The status check**: an answer outside ``ok`` goes to the error table with its status, headers and body.
* **Capped reads**: every answer of a call, the ones an auth flow reads before it logs in again included, is read
  through a cap: ``ERROR_BODY_MAX_BYTES`` for an answer outside ``ok``, the call's ``max_bytes`` (none by
  default) for one inside; a server cannot make a worker hold an unbounded error page.
* **JSON** read tolerantly (``Answer.data``: None for garbage) or strictly (``Answer.json``: ``MalformedResponse``).
* **Retry-After** read as delay-seconds or as an HTTP date (RFC 9110 §10.2.3), on every failure (``Failure``).

One ``httpx.Client`` per provider per process (``pipeline.runtime``) carries the connections; a ``Sender`` is
only the loop's settings for one provider (and, for ACD, one dossier's auth), cheap to make.
"""

from __future__ import annotations

import json as jsonlib
import re
from collections.abc import Callable, Collection, Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx

from pipeline.errors import HubsyncError, MalformedResponse

ERROR_BODY_MAX_BYTES = 64 * 1024
"""The most of an error answer's body ever read: enough for any envelope, French sentence or error page title."""
CHUNK_BYTES = 64 * 1024

NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
"""Failures before a connection carried any byte of the request."""
_PARTLY_SENT = (httpx.WriteError, httpx.WriteTimeout)
_DELAY_SECONDS = re.compile(r"\d+(?:\.\d+)?")

Status = Collection[int]


class Sent(StrEnum):
    """How much of a request left before its transport failed."""

    NOTHING = "nothing"
    PART = "part"
    WHOLE = "whole"


def parse_json(content: bytes) -> Any:
    """The decoded JSON of a body, or None when it is not JSON (an HTML page, a French sentence, nothing)."""
    if not content:
        return None
    try:
        return jsonlib.loads(content.decode("utf-8-sig"))
    except (ValueError, UnicodeDecodeError):
        return None


def http_date(text: str) -> datetime | None:
    """An HTTP date in any of the three forms RFC 9110 makes recipients accept, as an aware UTC datetime."""
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    # the asctime form carries no zone: HTTP dates are always GMT
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """The seconds an answer's ``Retry-After`` asks to wait (delay-seconds or an HTTP date), None without one.

    A date is measured from the answer's own ``Date`` when it has one (the server's clock against itself, so a
    worker whose clock drifts still waits what was asked), else from ``now`` (the current time by default)."""
    raw = headers.get("Retry-After")
    if raw is None:
        return None
    raw = raw.strip()
    if _DELAY_SECONDS.fullmatch(raw):
        return float(raw)
    moment = http_date(raw)
    if moment is None:
        return None
    reference = http_date(headers.get("Date") or "") or now or datetime.now(UTC)
    return max(0.0, (moment - reference).total_seconds())


@dataclass(frozen=True)
class Failure:
    """One call that did not end in an answer the caller takes: what a provider's error table sorts.

    Either an answer outside ``ok`` (``status``, ``headers``, ``body`` read capped) or a transport failure
    (``exception``, and ``sent``: how much of the request left before it)."""

    url: httpx.URL
    write: bool = False
    status: int | None = None
    headers: httpx.Headers = field(default_factory=httpx.Headers)
    body: bytes = b""
    exception: httpx.HTTPError | None = None
    sent: Sent = Sent.WHOLE

    @classmethod
    def of(cls, response: httpx.Response, *, write: bool = False) -> Failure:
        """The failure an answer is, its body read capped (an auth flow sorting an answer it got)."""
        body, _ = read_capped(response, ERROR_BODY_MAX_BYTES, partial_ok=True)
        return cls(response.request.url, write, response.status_code, response.headers, body)

    @property
    def path(self) -> str:
        """The path the call went to (never the query: it may carry tokens)."""
        return self.url.path

    @property
    def retry_after(self) -> float | None:
        """The wait the answer asked for, in seconds."""
        return retry_after(self.headers)

    def data(self) -> Any:
        """The body's JSON, or None when it is not JSON."""
        return parse_json(self.body)


ErrorTable = Callable[[Failure], HubsyncError]
"""A provider's error table: sorts a failure into its error tree (a pure function of the failure)."""


@dataclass(frozen=True)
class Answer:
    """An answer the call takes (its status in ``ok``): status, headers and the body, read whole or capped."""

    status_code: int
    headers: httpx.Headers
    content: bytes
    url: httpx.URL
    provider: str
    write: bool = False
    cut: bool = False

    def data(self) -> Any:
        """The body's JSON, or None when it is not JSON."""
        return parse_json(self.content)

    def json(self) -> Any:
        """The body's JSON; ``MalformedResponse`` when it is not JSON."""
        body = self.data()
        if body is None:
            raise MalformedResponse(
                f"{self.provider} answered {self.status_code} with a body that is not JSON on {self.url.path}",
                status=self.status_code,
            )
        return body

    def failure(self, *, write: bool | None = None) -> Failure:
        """This answer as a failure for the error table (a success status whose body says otherwise)."""
        return Failure(
            self.url,
            self.write if write is None else write,
            self.status_code,
            self.headers,
            self.content[:ERROR_BODY_MAX_BYTES],
        )


class FileBody:
    """A file as a request body, read in chunks while httpx sends it (never whole in memory).

    ``complete`` turns true only once the last chunk has been handed to the connection and the next one was
    asked for: before that, the server cannot hold the whole file, so a failure means "not sent whole"."""

    def __init__(self, path: Path, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.path = path
        self.chunk_bytes = chunk_bytes
        self.sent = 0
        self.complete = False

    def __iter__(self) -> Iterator[bytes]:
        with self.path.open("rb") as fh:
            while chunk := fh.read(self.chunk_bytes):
                yield chunk
                self.sent += len(chunk)
        self.complete = True


def sent_before(exc: httpx.HTTPError, body: FileBody | None = None) -> Sent:
    """How much of a request left before ``exc``: exact for a ``FileBody``, else judged by the exception (an
    exception that could come before or after the last byte counts as after: a write is then looked up, never
    blindly repeated)."""
    if isinstance(exc, NEVER_SENT):
        return Sent.NOTHING
    if body is not None:
        return Sent.WHOLE if body.complete else Sent.PART
    return Sent.PART if isinstance(exc, _PARTLY_SENT) else Sent.WHOLE


class _CappedStream(httpx.SyncByteStream):
    """A response body that yields at most ``limit`` bytes, then stops and closes the connection's stream."""

    def __init__(self, inner: httpx.SyncByteStream, limit: int) -> None:
        self.inner = inner
        self.limit = limit
        self.cut = False

    def __iter__(self) -> Iterator[bytes]:
        left = self.limit
        for chunk in self.inner:
            if len(chunk) > left:
                self.cut = True
                if left:
                    yield chunk[:left]
                return
            left -= len(chunk)
            yield chunk

    def close(self) -> None:
        self.inner.close()


class _Capping(httpx.Auth):
    """A provider's auth whose flow sees every answer already capped, so that whatever reads a body (httpx for
    an auth that needs it, the flow itself, then the loop) reads at most the cap. An answer to the call's own
    request gets the call's cap; one to a request the flow made itself (a login, a session) the error cap, which
    any such small answer fits."""

    def __init__(self, inner: httpx.Auth, limit: Callable[[int], int | None]) -> None:
        self.inner = inner
        self.limit = limit

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        own = request
        flow = self.inner.sync_auth_flow(request)
        try:
            request = next(flow)
            while True:
                response = yield request
                cap = self.limit(response.status_code) if request is own else ERROR_BODY_MAX_BYTES
                stream = response.stream
                if cap is not None and not response.is_stream_consumed and isinstance(stream, httpx.SyncByteStream):
                    response.stream = _CappedStream(stream, cap)
                try:
                    request = flow.send(response)
                except StopIteration:
                    return
        finally:
            flow.close()


def read_capped(response: httpx.Response, limit: int | None, *, partial_ok: bool = False) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of an answer's body, and whether it was cut (capped, or, with ``partial_ok``, its
    connection broke part way: the part read is kept instead of raising)."""
    parts: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_bytes():
            if limit is not None and size + len(chunk) > limit:
                parts.append(chunk[: limit - size])
                return b"".join(parts), True
            parts.append(chunk)
            size += len(chunk)
    except httpx.HTTPError:
        if not partial_ok:
            raise
        return b"".join(parts), True
    stream = response.stream
    return b"".join(parts), isinstance(stream, _CappedStream) and stream.cut


class Sender:
    """The send loop for one provider: ``base`` + route, ``auth`` on every request, ``errors`` sorting failures.

    ``write``: the call may change something (the table decides what an unanswered write means); ``ok``: the
    statuses the caller takes (None: every status); ``errors``: a table for this call instead of the provider's."""

    def __init__(
        self,
        http: httpx.Client,
        *,
        name: str,
        errors: ErrorTable,
        base: str = "",
        auth: httpx.Auth | None = None,
    ) -> None:
        self.http = http
        self.name = name
        self.errors = errors
        self.base = base
        self.auth = auth if auth is not None else httpx.Auth()

    def __repr__(self) -> str:
        return f"Sender(name={self.name!r}, base={self.base!r}, auth={self.auth!r})"

    def call(
        self,
        method: str,
        route: str,
        *,
        write: bool = False,
        ok: Status | None = (200,),
        errors: ErrorTable | None = None,
        max_bytes: int | None = None,
        partial_ok: bool = False,
        timeout: httpx.Timeout | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | FileBody | None = None,
        data: Mapping[str, Any] | None = None,
        files: Mapping[str, Any] | None = None,
    ) -> Answer:
        """Send one request to ``base + route`` and read its answer (``max_bytes`` caps an answer in ``ok``;
        ``partial_ok`` keeps the part of it read when the connection breaks once the status line is in)."""
        request = self._build(
            method, route, timeout, params=params, headers=headers, json=json, content=content, data=data, files=files
        )
        body = content if isinstance(content, FileBody) else None
        return self.send(
            request, write=write, ok=ok, errors=errors, max_bytes=max_bytes, partial_ok=partial_ok, body=body
        )

    def send(
        self,
        request: httpx.Request,
        *,
        write: bool = False,
        ok: Status | None = (200,),
        errors: ErrorTable | None = None,
        max_bytes: int | None = None,
        partial_ok: bool = False,
        body: FileBody | None = None,
    ) -> Answer:
        """Send a request built elsewhere (a login shared with an auth flow) and read its answer."""
        with self._exchange(request, write, ok, errors, max_bytes, body) as response:
            content, cut = read_capped(response, max_bytes, partial_ok=partial_ok)
            return Answer(response.status_code, response.headers, content, request.url, self.name, write, cut)

    @contextmanager
    def stream(
        self, method: str, route: str, *, ok: Status = (200,), errors: ErrorTable | None = None
    ) -> Iterator[httpx.Response]:
        """An answer in ``ok`` left unread, to stream its body; a transport failure while reading it is sorted by
        the error table like any other."""
        request = self._build(method, route)
        with self._exchange(request, False, ok, errors, None, None) as response:
            yield response

    def _build(self, method: str, route: str, timeout: httpx.Timeout | None = None, **parts: Any) -> httpx.Request:
        wait = timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT
        return self.http.build_request(method, self.base + route, timeout=wait, **parts)

    @contextmanager
    def _exchange(
        self,
        request: httpx.Request,
        write: bool,
        ok: Status | None,
        errors: ErrorTable | None,
        max_bytes: int | None,
        body: FileBody | None,
    ) -> Iterator[httpx.Response]:
        table = errors or self.errors

        def limit(status: int) -> int | None:
            return max_bytes if ok is None or status in ok else ERROR_BODY_MAX_BYTES

        try:
            response = self.http.send(request, auth=_Capping(self.auth, limit), stream=True, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise table(Failure(request.url, write, exception=exc, sent=sent_before(exc, body))) from exc
        try:
            if ok is not None and response.status_code not in ok:
                raise table(Failure.of(response, write=write))
            yield response
        except httpx.HTTPError as exc:
            # the status line was in: the request went out whole, its answer broke off
            raise table(Failure(request.url, write, exception=exc, sent=Sent.WHOLE)) from exc
        finally:
            response.close()
