"""The send loop every provider's client goes through (``pipeline.http``), against ``httpx.MockTransport`` and
one loopback server: Retry-After in both forms, capped reads, how much of a request left before each transport
failure, the status check and JSON read tolerantly or strictly."""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.errors import HubsyncError, MalformedResponse
from pipeline.http import ERROR_BODY_MAX_BYTES, Failure, FileBody, Sender, Sent, retry_after

MB = 1024 * 1024


class Sorted(HubsyncError):
    """What the recording table raises: the failure it was handed."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(f"sorted {failure.status}")
        self.failure = failure


def sender(handler: Any, *, auth: httpx.Auth | None = None) -> Sender:
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return Sender(http, name="Test", errors=Sorted, base="https://api.test/v1", auth=auth)


def failure_of(api: Sender, method: str = "GET", route: str = "/x", **kwargs: Any) -> Failure:
    with pytest.raises(Sorted) as caught:
        api.call(method, route, **kwargs)
    return caught.value.failure


class Endless(httpx.SyncByteStream):
    """A body the server would go on sending for ``total`` bytes; counts what was actually pulled."""

    def __init__(self, total: int = 50 * MB, chunk: int = 16 * 1024, then: Exception | None = None) -> None:
        self.total, self.chunk, self.then = total, chunk, then
        self.pulled = 0
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        while self.pulled < self.total:
            self.pulled += self.chunk
            yield b"x" * self.chunk
        if self.then is not None:
            raise self.then

    def close(self) -> None:
        self.closed = True


# -- Retry-After -------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "seconds"), [("7", 7.0), (" 120 ", 120.0), ("0", 0.0), ("1.5", 1.5)])
def test_retry_after_in_delay_seconds_is_read_as_it_is(raw: str, seconds: float) -> None:
    assert retry_after({"Retry-After": raw}) == seconds


@pytest.mark.parametrize(
    "when",
    ["Thu, 19 Nov 2026 20:00:30 GMT", "Thursday, 19-Nov-26 20:00:30 GMT", "Thu Nov 19 20:00:30 2026"],
    ids=["imf-fixdate", "rfc850", "asctime"],
)
def test_retry_after_as_an_http_date_in_any_form_counts_from_the_answers_own_date(when: str) -> None:
    # given a server whose clock says 20:00:00 asking to come back at 20:00:30, and a worker whose clock is off
    headers = {"Retry-After": when, "Date": "Thu, 19 Nov 2026 20:00:00 GMT"}
    # then the wait is the 30 seconds the server meant, whatever the worker's clock
    assert retry_after(headers, now=datetime(2026, 11, 19, 23, 0, tzinfo=UTC)) == 30.0


def test_retry_after_date_without_a_date_header_counts_from_now() -> None:
    now = datetime(2026, 11, 19, 20, 0, 0, tzinfo=UTC)
    assert retry_after({"Retry-After": "Thu, 19 Nov 2026 20:01:00 GMT"}, now=now) == 60.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "Thu, 19 Nov 2026 19:59:00 GMT", "Date": "Thu, 19 Nov 2026 20:00:00 GMT"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "-5"}, None),
        ({}, None),
    ],
    ids=["past-date", "garbage", "negative", "absent"],
)
def test_retry_after_in_the_past_waits_nothing_and_garbage_or_none_gives_no_wait(
    headers: dict[str, str], expected: float | None
) -> None:
    assert retry_after(headers) == expected


def test_a_429_reaches_the_error_table_with_its_wait_in_either_form() -> None:
    dated = {"Retry-After": "Thu, 19 Nov 2026 20:00:45 GMT", "Date": "Thu, 19 Nov 2026 20:00:00 GMT"}
    for headers, wait in (({"Retry-After": "12"}, 12.0), (dated, 45.0)):
        failure = failure_of(sender(lambda request, h=headers: httpx.Response(429, headers=h)))
        assert (failure.status, failure.retry_after) == (429, wait)


# -- the status check and JSON ---------------------------------------------------------------------


def test_an_answer_outside_ok_goes_to_the_error_table_with_status_headers_body_and_write() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json={"message": "déjà là"}, headers={"X-Id": "7"})

    failure = failure_of(sender(handler), "POST", "/things", write=True, json={"a": 1})
    assert failure.status == 409 and failure.headers["X-Id"] == "7"
    assert failure.data() == {"message": "déjà là"} and failure.write and failure.exception is None
    assert failure.path == "/v1/things"


def test_statuses_in_ok_are_answers_and_ok_none_takes_every_status() -> None:
    api = sender(lambda request: httpx.Response(503, text="busy"))
    assert api.call("GET", "/x", ok=None).status_code == 503
    assert sender(lambda request: httpx.Response(201, json={"Id": 4})).call("GET", "/x", ok=(200, 201)).json() == {
        "Id": 4
    }


def test_json_is_read_through_a_byte_order_mark_and_garbage_is_malformed() -> None:
    bom = sender(lambda request: httpx.Response(200, content=b'\xef\xbb\xbf{"codeRetour": 1}'))
    assert bom.call("GET", "/x").json() == {"codeRetour": 1}
    page = sender(lambda request: httpx.Response(200, content=b"<html><title>Login</title></html>"))
    answer = page.call("GET", "/x")
    assert answer.data() is None
    with pytest.raises(MalformedResponse) as caught:
        answer.json()
    assert caught.value.message == "Test answered 200 with a body that is not JSON on /v1/x"


# -- capped reads ----------------------------------------------------------------------------------


def test_an_endless_error_body_is_read_only_up_to_the_cap() -> None:
    body = Endless()
    failure = failure_of(sender(lambda request: httpx.Response(500, stream=body)))
    # then the table saw the cap's worth, and the loop stopped pulling from the server right there
    assert len(failure.body) == ERROR_BODY_MAX_BYTES
    assert body.pulled <= ERROR_BODY_MAX_BYTES + body.chunk and body.closed


class ReloginOnce(httpx.Auth):
    """Like ACD's auth: reads every answer's body, and on a 401 logs in again and repeats the call once."""

    requires_response_body = True

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield request
        if response.status_code == 401:
            yield httpx.Request("POST", "https://api.test/v1/login")
            yield request


def test_bodies_an_auth_flow_reads_before_it_logs_in_again_are_capped_too() -> None:
    # given a 401, a 200 to the login and then a 500, each with an endless body, behind an auth that reads them
    statuses = [401, 200, 500]
    served: list[Endless] = []

    def serve(request: httpx.Request) -> httpx.Response:
        body = Endless()
        served.append(body)
        return httpx.Response(statuses[len(served) - 1], stream=body)

    # when the call goes through the re-login
    failure = failure_of(sender(serve, auth=ReloginOnce()))
    # then no body, the ones the flow read included, was pulled past the cap
    assert failure.status == 500 and len(failure.body) == ERROR_BODY_MAX_BYTES
    assert len(served) == 3
    assert all(b.pulled <= ERROR_BODY_MAX_BYTES + b.chunk for b in served)


def test_an_answer_in_ok_is_read_whole_unless_the_call_caps_it() -> None:
    whole = sender(lambda request: httpx.Response(200, stream=Endless(total=2 * MB))).call("GET", "/fec")
    assert len(whole.content) == 2 * MB and not whole.cut
    capped = sender(lambda request: httpx.Response(200, stream=Endless(total=2 * MB)))
    answer = capped.call("GET", "/x", max_bytes=4096)
    assert len(answer.content) == 4096 and answer.cut


def test_a_body_cut_after_the_status_line_is_kept_in_part_only_when_the_call_says_so() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Endless(total=3 * 16 * 1024, then=httpx.ReadError("reset")))

    # a deposit: once the status line is in the outcome is known, the part read is kept
    answer = sender(broken).call("POST", "/store", write=True, partial_ok=True)
    assert answer.status_code == 200 and answer.cut and len(answer.content) == 3 * 16 * 1024
    # any other call: a transport failure after the whole request went out
    failure = failure_of(sender(broken), "POST", "/post", write=True)
    assert isinstance(failure.exception, httpx.ReadError) and failure.sent is Sent.WHOLE and failure.write


def test_a_stream_call_hands_the_body_over_unread_and_sorts_a_break_while_reading_it() -> None:
    api = sender(lambda request: httpx.Response(200, stream=Endless(total=32 * 1024, then=httpx.ReadError("x"))))
    with pytest.raises(Sorted) as caught, api.stream("GET", "/doc") as response:
        for _ in response.iter_bytes():
            pass
    assert caught.value.failure.sent is Sent.WHOLE and isinstance(caught.value.__cause__, httpx.ReadError)


# -- transport failures ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc_type", "sent"),
    [
        (httpx.ConnectError, Sent.NOTHING),
        (httpx.ConnectTimeout, Sent.NOTHING),
        (httpx.PoolTimeout, Sent.NOTHING),
        (httpx.UnsupportedProtocol, Sent.NOTHING),
        (httpx.WriteError, Sent.PART),
        (httpx.WriteTimeout, Sent.PART),
        (httpx.ReadTimeout, Sent.WHOLE),
        (httpx.ReadError, Sent.WHOLE),
        (httpx.RemoteProtocolError, Sent.WHOLE),
    ],
)
def test_each_transport_failure_says_how_much_of_the_request_left(
    exc_type: type[httpx.TransportError], sent: Sent
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type("boom", request=request)

    with pytest.raises(Sorted) as caught:
        sender(handler).call("POST", "/compta/ecriture", write=True, json={})
    failure = caught.value.failure
    assert failure.sent is sent and failure.write and failure.status is None
    assert isinstance(failure.exception, exc_type) and caught.value.__cause__ is failure.exception
    assert failure.path == "/v1/compta/ecriture"


class PartReader(httpx.BaseTransport):
    """Reads ``chunks`` chunks of the request body (all of it when None), then the connection breaks."""

    def __init__(self, chunks: int | None) -> None:
        self.chunks = chunks

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for n, _ in enumerate(request.stream, start=1):  # type: ignore[arg-type]
            if self.chunks is not None and n >= self.chunks:
                break
        raise httpx.RemoteProtocolError("peer closed", request=request)


@pytest.mark.parametrize(("chunks", "sent"), [(2, Sent.PART), (None, Sent.WHOLE)], ids=["cut-midway", "all-out"])
def test_a_file_body_says_exactly_whether_its_last_byte_left(tmp_path: Path, chunks: int | None, sent: Sent) -> None:
    path = tmp_path / "scan.pdf"
    path.write_bytes(b"%PDF-1.4\n" + b"z" * 300_000)
    api = Sender(httpx.Client(transport=PartReader(chunks)), name="Test", errors=Sorted)
    body = FileBody(path)
    with pytest.raises(Sorted) as caught:
        api.call("POST", "https://api.test/store", write=True, content=body)
    assert caught.value.failure.sent is sent and body.complete is (sent is Sent.WHOLE)


# -- over a real socket ----------------------------------------------------------------------------


class _Flood(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response_only(502)  # no Date of its own: the one below is the server's clock
        self.send_header("Content-Type", "text/html")
        self.send_header("Retry-After", "Thu, 19 Nov 2026 20:00:09 GMT")
        self.send_header("Date", "Thu, 19 Nov 2026 20:00:00 GMT")
        self.end_headers()
        try:
            for _ in range(200):  # 20 MB of error page, unless the client hangs up first
                self.wfile.write(b"<p>" + b"e" * (100 * 1024 - 7) + b"</p>\n")
        except OSError:
            pass

    def log_message(self, *args: Any) -> None:
        pass


def test_over_a_socket_a_flood_of_error_page_is_cut_at_the_cap() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flood)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = Sender(
            httpx.Client(timeout=10), name="Test", errors=Sorted, base=f"http://127.0.0.1:{server.server_port}"
        )
        with pytest.raises(Sorted) as caught:
            api.call("GET", "/busy")
    finally:
        server.shutdown()
        server.server_close()
    failure = caught.value.failure
    assert failure.status == 502 and len(failure.body) == ERROR_BODY_MAX_BYTES and failure.retry_after == 9.0
