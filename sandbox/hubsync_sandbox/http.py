"""A small threaded HTTP/1.1 server framework for the sandboxes, on the standard library only.

The pieces:

- ``Request`` / ``Response``: what an app reads and returns. Request bodies are read lazily, so an app can
  refuse a large upload from its headers before reading a byte of it; response bodies may be an iterable of
  chunks (streamed, never built whole in memory).
- ``Router``: method + path patterns with ``{name}`` parameters (``{name:path}`` takes the rest of the path),
  and ``mount(prefix, app)`` to nest apps; ``ignore_case=True`` matches paths as IIS does, whatever their case.
  Anything with ``handle(request) -> Response`` is an app.
- ``ConnectionAbort``: raised by an app to drop the connection without a response (the client sees a reset),
  which is how sandboxes play a server that is off or that dies after committing.
- ``HttpServer``: ``ThreadingHTTPServer`` with keep-alive, daemon threads, ``start()`` in a background thread
  or ``serve_forever()`` in the foreground; port 0 picks a free port.

Request lines are logged without their query string: document URLs carry tokens there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote

logger = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
JSON_BODY_MAX_BYTES = 8 * 1024 * 1024
DRAIN_MAX_BYTES = 256 * 1024 * 1024
IDLE_TIMEOUT_SECONDS = 60.0


class ConnectionAbort(Exception):
    """Raised by an app: drop the connection with a reset and no response."""


class HttpError(Exception):
    """Raised by an app to answer ``response`` at once (a router turns it into the response)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class BadBody(ValueError):
    """The request body is not what the route reads (bad JSON, bad chunked framing, too large)."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


class _BodyReader:
    """Reads one request body (Content-Length or chunked) from the connection, never past its end."""

    def __init__(self, rfile: Any, headers: Message) -> None:
        self._rfile = rfile
        self._chunked = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
        length = headers.get("Content-Length")
        self.content_length: int | None = None
        if not self._chunked and length is not None:
            try:
                self.content_length = max(int(length), 0)
            except ValueError:
                self.content_length = 0
        self._remaining = self.content_length or 0
        self._chunk_left = 0
        self._done = not self._chunked and self._remaining == 0
        self.bytes_read = 0

    @property
    def finished(self) -> bool:
        """True once the whole body has been read."""
        return self._done

    def read(self, size: int = CHUNK_BYTES) -> bytes:
        """Up to ``size`` bytes of the body; ``b""`` at its end."""
        if self._done:
            return b""
        data = self._read_chunked(size) if self._chunked else self._read_plain(size)
        self.bytes_read += len(data)
        return data

    def _read_plain(self, size: int) -> bytes:
        data = self._rfile.read(min(size, self._remaining))
        if not data:
            raise BadBody("the connection closed before the end of the body")
        self._remaining -= len(data)
        if self._remaining == 0:
            self._done = True
        return bytes(data)

    def _read_chunked(self, size: int) -> bytes:
        if self._chunk_left == 0:
            line = self._rfile.readline(1024)
            try:
                self._chunk_left = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise BadBody("bad chunked framing") from exc
            if self._chunk_left == 0:
                while self._rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                self._done = True
                return b""
        data = self._rfile.read(min(size, self._chunk_left))
        if not data:
            raise BadBody("the connection closed before the end of the body")
        self._chunk_left -= len(data)
        if self._chunk_left == 0:
            self._rfile.readline(1024)
        return bytes(data)

    def drain(self, max_bytes: int) -> bool:
        """Read and discard the rest of the body; False when more than ``max_bytes`` was left."""
        discarded = 0
        while not self._done:
            chunk = self.read(CHUNK_BYTES)
            discarded += len(chunk)
            if discarded > max_bytes:
                return False
        return True


class _Connection(Protocol):
    def abort(self) -> None: ...


@dataclass
class Request:
    """One HTTP request as an app sees it; ``path`` is relative to the app's mount point."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: _BodyReader
    mount_path: str = ""
    params: dict[str, str] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)

    def header(self, name: str, default: str | None = None) -> str | None:
        """A request header (case-insensitive)."""
        value = self.headers.get(name)
        return default if value is None else str(value)

    def query_value(self, name: str) -> str | None:
        """The first value of a query parameter, or None."""
        values = self.query.get(name)
        return values[0] if values else None

    @property
    def content_length(self) -> int | None:
        """The declared body length (None for a chunked body)."""
        return self.body.content_length

    def iter_body(self, chunk_size: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The body in chunks, read from the socket as they are consumed."""
        while True:
            chunk = self.body.read(chunk_size)
            if not chunk:
                return
            yield chunk

    def read_body(self, max_bytes: int = JSON_BODY_MAX_BYTES) -> bytes:
        """The whole body; raises ``BadBody(too_large=True)`` past ``max_bytes``."""
        if self.content_length is not None and self.content_length > max_bytes:
            raise BadBody(f"body over {max_bytes} bytes", too_large=True)
        parts: list[bytes] = []
        size = 0
        for chunk in self.iter_body():
            size += len(chunk)
            if size > max_bytes:
                raise BadBody(f"body over {max_bytes} bytes", too_large=True)
            parts.append(chunk)
        return b"".join(parts)

    def json(self) -> Any:
        """The body parsed as JSON, numbers with a fraction as ``Decimal``; raises ``BadBody``."""
        return parse_json(self.read_body())

    def sub(self, path: str, consumed: str, params: Mapping[str, str] | None = None) -> Request:
        """The same request as seen by an app mounted at ``consumed``."""
        return dataclasses.replace(
            self,
            path=path or "/",
            mount_path=self.mount_path + consumed,
            params={**self.params, **(params or {})},
        )


@dataclass
class Response:
    """What an app answers; ``body`` may be an iterable of chunks (give ``content_length`` then)."""

    status: int = 200
    body: bytes | Iterable[bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_length: int | None = None
    # Send the headers and this many body bytes, then reset the connection (a download cut short).
    abort_after_bytes: int | None = None

    def length(self) -> int | None:
        """The body length when known."""
        if isinstance(self.body, bytes):
            return len(self.body)
        return self.content_length


class App(Protocol):
    """Anything that answers requests."""

    def handle(self, request: Request) -> Response: ...


Handler = Callable[[Request], Response]


# -- JSON ----------------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(data: bytes) -> Any:
    """JSON with fractional numbers as ``Decimal`` (never float); raises ``BadBody``."""
    try:
        return json.loads(data.decode("utf-8"), parse_float=Decimal, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadBody(f"invalid JSON: {exc}") from exc


def _encode(value: Any, out: list[str]) -> None:
    # A hand-rolled walk so that a Decimal is written with exactly its digits ("100.10" stays "100.10").
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("a non-finite Decimal is not JSON")
        out.append(str(value))
    elif isinstance(value, dict):
        out.append("{")
        for index, (key, item) in enumerate(value.items()):
            if index:
                out.append(", ")
            out.append(json.dumps(str(key), ensure_ascii=False))
            out.append(": ")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(", ")
            _encode(item, out)
        out.append("]")
    elif isinstance(value, set | frozenset):
        _encode(sorted(value), out)
    else:
        out.append(json.dumps(value, ensure_ascii=False))


def dumps(value: Any) -> bytes:
    """JSON bytes (UTF-8) of ``value``, writing ``Decimal`` values as numbers with their exact digits."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out).encode("utf-8")


def json_response(value: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON response."""
    return Response(
        status=status,
        body=dumps(value),
        headers={"Content-Type": "application/json; charset=utf-8", **(headers or {})},
    )


def text_response(text: str, status: int = 200, content_type: str = "text/plain; charset=utf-8") -> Response:
    """A text response."""
    return Response(status=status, body=text.encode("utf-8"), headers={"Content-Type": content_type})


def html_response(status: int, title: str | None = None, detail: str = "") -> Response:
    """A bare HTML page like a web server's own error pages (no JSON envelope)."""
    phrase = title or _reason(status)
    page = (
        f"<!DOCTYPE html>\n<html><head><title>{status} {phrase}</title></head>\n"
        f"<body><h1>{phrase}</h1><p>{detail}</p><hr><address>Microsoft-IIS/10.0</address></body></html>\n"
    )
    return text_response(page, status, "text/html; charset=utf-8")


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# -- routing -------------------------------------------------------------------------------------

_PARAM = re.compile(r"\{(\w+)(?::(path))?\}")


def _compile(pattern: str) -> str:
    regex: list[str] = []
    last = 0
    for match in _PARAM.finditer(pattern):
        regex.append(re.escape(pattern[last : match.start()]))
        regex.append(f"(?P<{match.group(1)}>.+)" if match.group(2) else f"(?P<{match.group(1)}>[^/]+)")
        last = match.end()
    regex.append(re.escape(pattern[last:]))
    return "".join(regex)


def not_found_html(request: Request) -> Response:
    """The default answer for an unknown path: a plain web-server 404."""
    return html_response(404)


def method_not_allowed_html(request: Request, allowed: list[str]) -> Response:
    """The default answer for a known path with the wrong method: 405 with ``Allow``."""
    response = html_response(405)
    response.headers["Allow"] = ", ".join(allowed)
    return response


class Router:
    """Routes by method and path pattern, and dispatches path prefixes to mounted apps."""

    def __init__(
        self,
        *,
        not_found: Handler = not_found_html,
        method_not_allowed: Callable[[Request, list[str]], Response] = method_not_allowed_html,
        ignore_case: bool = False,
    ) -> None:
        self._flags = re.IGNORECASE if ignore_case else 0
        self._routes: list[tuple[re.Pattern[str], dict[str, Handler]]] = []
        self._by_pattern: dict[str, dict[str, Handler]] = {}
        self._mounts: list[tuple[str, re.Pattern[str], App]] = []
        self._not_found = not_found
        self._method_not_allowed = method_not_allowed

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        """Route ``method pattern`` to ``handler``; patterns match in the order they were added."""
        handlers = self._by_pattern.get(pattern)
        if handlers is None:
            handlers = self._by_pattern[pattern] = {}
            self._routes.append((re.compile(f"^{_compile(pattern)}$", self._flags), handlers))
        handlers[method.upper()] = handler

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        """Decorator form of ``add``."""

        def decorate(handler: Handler) -> Handler:
            self.add(method, pattern, handler)
            return handler

        return decorate

    def mount(self, prefix: str, app: App) -> None:
        """Send every path under ``prefix`` (which may hold ``{params}``) to ``app``, prefix stripped."""
        prefix = "/" + prefix.strip("/")
        regex = re.compile(f"^(?P<_prefix>{_compile(prefix)})(?P<_rest>/.*)?$", self._flags)
        self._mounts.append((prefix, regex, app))
        self._mounts.sort(key=lambda item: -len(item[0]))

    def handle(self, request: Request) -> Response:
        """Answer ``request`` from the first matching route or mount."""
        try:
            return self._dispatch(request)
        except HttpError as exc:
            return exc.response

    def _dispatch(self, request: Request) -> Response:
        allowed: list[str] = []
        method = request.method.upper()
        for regex, handlers in self._routes:
            match = regex.match(request.path)
            if match is None:
                continue
            handler = handlers.get(method) or (handlers.get("GET") if method == "HEAD" else None)
            if handler is None:
                allowed.extend(m for m in handlers if m not in allowed)
                continue
            request.params = {**request.params, **{k: unquote(v) for k, v in match.groupdict().items()}}
            return handler(request)
        if allowed:
            return self._method_not_allowed(request, allowed)
        for _prefix, regex, app in self._mounts:
            match = regex.match(request.path)
            if match is None:
                continue
            params = {k: unquote(v) for k, v in match.groupdict().items() if not k.startswith("_")}
            return app.handle(request.sub(match.group("_rest") or "/", match.group("_prefix"), params))
        return self._not_found(request)


# -- the server ----------------------------------------------------------------------------------


def reset_socket(sock: socket.socket) -> None:
    """Close ``sock`` so that the peer sees a reset (RST), not an orderly end of stream."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


_QUERY = re.compile(r"\?[^\s'\"]*")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hubsync-sandbox"
    sys_version = ""
    timeout = IDLE_TIMEOUT_SECONDS
    # Headers and body go out in separate writes; with Nagle on, each response waits for a delayed ACK.
    disable_nagle_algorithm = True
    server: _ThreadingServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.untrack(self.connection)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = getattr(self, "path", "").split("?", 1)[0]
        logger.debug("%s %s %s", getattr(self, "command", "-"), path, code)

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib's own messages may quote a raw request line, whose query can carry a document token.
        logger.debug("sandbox http: %s", _QUERY.sub("?[redacted]", format % args))

    def abort(self) -> None:
        """Reset the connection now, with no response."""
        self.close_connection = True
        # The buffered reader holds a reference on the socket; drop it so that close() really closes.
        with contextlib.suppress(OSError, ValueError):
            self.rfile.close()
        reset_socket(self.connection)

    def _dispatch(self) -> None:
        raw_path, _, query = self.path.partition("?")
        body = _BodyReader(self.rfile, self.headers)
        request = Request(
            method=self.command,
            path=raw_path or "/",
            query=parse_qs(query, keep_blank_values=True),
            headers=self.headers,
            body=body,
        )
        try:
            response = self.server.app.handle(request)
        except ConnectionAbort:
            self.abort()
            return
        except BadBody as exc:
            response = json_response({"error": str(exc)}, 413 if exc.too_large else 400)
        except Exception:
            logger.exception("sandbox app failed on %s %s", self.command, raw_path)
            response = html_response(500)
        try:
            self._send(response, head=self.command == "HEAD")
        except ConnectionAbort:
            self.abort()
            return
        except OSError:
            self.close_connection = True
            return
        try:
            if not body.drain(DRAIN_MAX_BYTES):
                self.close_connection = True
        except (BadBody, OSError):
            self.close_connection = True

    def _send(self, response: Response, *, head: bool) -> None:
        self.send_response(response.status)
        headers = dict(response.headers)
        length = response.length()
        chunked = length is None and not head
        if length is not None:
            headers["Content-Length"] = str(length)
        elif chunked:
            headers["Transfer-Encoding"] = "chunked"
        headers.setdefault("Content-Type", "application/octet-stream")
        if self.close_connection:
            headers["Connection"] = "close"
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if head:
            return
        budget = response.abort_after_bytes
        chunks = [response.body] if isinstance(response.body, bytes) else response.body
        for chunk in chunks:
            if not chunk:
                continue
            if budget is not None:
                chunk = chunk[:budget]
                budget -= len(chunk)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            if budget is not None and budget <= 0:
                raise ConnectionAbort
        if budget is not None:
            raise ConnectionAbort
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch


class _ThreadingServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: App) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, sock: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(sock)

    def untrack(self, sock: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(sock)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("sandbox connection from %s ended with an error", client_address, exc_info=True)


class HttpServer:
    """Serves one app on ``host:port`` (port 0 picks a free port); bound and listening from construction."""

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _ThreadingServer((host, port), app)
        self._thread: threading.Thread | None = None
        self._serving = threading.Event()
        self.host = host
        self.port: int = self._server.server_address[1]

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:54321``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Serve in a background daemon thread; returns at once (the socket already listens)."""
        if self._thread is not None:
            return
        self._serving.set()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="sandbox-http", daemon=True
        )
        self._thread.start()
        logger.info("sandbox listening on %s", self.url)

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted or ``stop()`` from another thread."""
        logger.info("sandbox listening on %s", self.url)
        self._serving.set()
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self._serving.clear()
            self._server.server_close()
            self._server.close_connections()

    def stop(self) -> None:
        """Stop serving, close the listening socket and every open connection."""
        if self._serving.is_set():
            self._serving.clear()
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
        self._server.close_connections()
