"""Supporting documents: type sniffing, the URL allow-list, streamed fetching into the spool, unique names."""

from __future__ import annotations

import hashlib
import re
import socket
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubsync_sandbox.samples import tiny_pdf, tiny_png
from pipeline import documents
from pipeline.documents import (
    DocumentHostNotAllowed,
    DocumentMismatch,
    DocumentStoreUnavailable,
    DocumentTooBig,
    DocumentUnavailable,
    check_url,
    fetch,
    sniff_type,
    unique_name,
)
from pipeline.errors import ErrorKind

PDF = tiny_pdf("facture EDF février")
PNG = tiny_png()
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + bytes(range(256)) * 4
URL = "https://docs.hub.example/doc_551"
HOSTS = ("docs.hub.example",)
SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class DocStore:
    """Serves canned answers and counts requests."""

    def __init__(self, respond) -> None:
        self.respond = respond
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.respond(request)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))


def serving(data: bytes, status: int = 200, headers: dict | None = None) -> DocStore:
    return DocStore(lambda request: httpx.Response(status, content=data, headers=headers))


def streaming(chunks: list[bytes]) -> DocStore:
    """Serves ``chunks`` without a Content-Length, as a chunked stream."""

    def body() -> Iterator[bytes]:
        yield from chunks

    return DocStore(lambda request: httpx.Response(200, content=body()))


def spool_files(spool) -> list[str]:
    return sorted(p.name for p in spool.iterdir()) if spool.exists() else []


# -- sniff_type ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (JPEG, "image/jpeg"),
        (PNG, "image/png"),
        (PDF, "application/pdf"),
        (b"\r\n \t%PDF-1.7\n...", "application/pdf"),
        (b"this is plain text, saved as facture.pdf", None),
        (b"%PDF", None),
        (b"<html><body>Not found</body></html>", None),
        (b"", None),
        (b"\x89PNG\r\n", None),
    ],
    ids=["jpeg", "png", "pdf", "pdf-after-blank", "text", "pdf-without-dash", "html", "empty", "truncated-png"],
)
def test_sniff_type_reads_the_magic_bytes_not_the_name(head, expected):
    # given the first bytes of a file

    # when its type is sniffed
    kind = sniff_type(head)

    # then only real JPEG, PNG and PDF signatures are recognised
    assert kind == expected


# -- check_url -------------------------------------------------------------------------------------


def resolves_to(monkeypatch, *addresses: str) -> list[str]:
    """Make every host name resolve to ``addresses``; returns the names asked for."""
    asked: list[str] = []

    def getaddrinfo(host, port, *args, **kwargs):
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    monkeypatch.setattr(documents.socket, "getaddrinfo", getaddrinfo)
    return asked


def test_allowed_host_resolving_to_a_public_address_is_accepted(monkeypatch):
    # given an allowed host name that resolves to a public address
    asked = resolves_to(monkeypatch, "93.184.216.34")

    # when its URL is checked, then it passes, after a real resolution of that host
    assert check_url(URL, HOSTS, allow_private=False) is None
    assert asked == ["docs.hub.example"]


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/doc_551",
        "https://docs.hub.example.evil.example/doc",
        "https://docs.hub.example@evil.example/doc",
        "https://hub.example/doc",
        "http://169.254.169.254/latest/meta-data/",
    ],
    ids=["other-host", "suffix-trick", "userinfo-trick", "parent-domain", "metadata-ip"],
)
def test_host_not_in_the_allow_list_is_refused(url, monkeypatch):
    # given URLs whose real host is not the allowed one
    resolves_to(monkeypatch, "93.184.216.34")

    # when they are checked
    with pytest.raises(DocumentHostNotAllowed) as info:
        check_url(url, HOSTS, allow_private=False)

    # then they are refused, for a customer (operator) to fix, never retried
    assert "HUBSYNC_DOCUMENT_HOSTS" in info.value.message
    assert info.value.kind is ErrorKind.CUSTOMER


@pytest.mark.parametrize(
    "url",
    ["ftp://docs.hub.example/doc", "file:///etc/passwd", "gopher://docs.hub.example/", "docs.hub.example/doc"],
    ids=["ftp", "file", "gopher", "no-scheme"],
)
def test_non_http_scheme_is_refused(url):
    # given a URL with another scheme (or none)

    # when it is checked, then it is refused
    with pytest.raises(DocumentHostNotAllowed, match="scheme or host not allowed"):
        check_url(url, HOSTS, allow_private=False)


def test_allowed_host_name_resolving_to_loopback_is_refused():
    # given "localhost" allowed by name (it resolves to 127.0.0.1)
    hosts = ("localhost",)

    # when a URL on it is checked
    with pytest.raises(DocumentHostNotAllowed) as info:
        check_url("http://localhost:8080/doc", hosts, allow_private=False)

    # then it is refused because of where it resolves
    assert "internal address" in info.value.message


def test_allowed_host_name_resolving_to_loopback_is_accepted_when_private_is_allowed():
    # given "localhost" allowed by name in a deployment whose document store is on a private network

    # when a URL on it is checked with allow_private, then it passes
    assert check_url("http://localhost:8080/doc", ("localhost",), allow_private=True) is None


@pytest.mark.parametrize("address", ["10.0.0.5", "192.168.1.20", "172.16.3.4", "169.254.169.254", "::1", "fd00::1"])
def test_allowed_host_name_resolving_to_a_private_address_is_refused(address, monkeypatch):
    # given an allowed host name whose DNS answer points inside the network
    resolves_to(monkeypatch, "93.184.216.34", address)

    # when its URL is checked, then it is refused even if another address is public
    with pytest.raises(DocumentHostNotAllowed, match="internal address"):
        check_url(URL, HOSTS, allow_private=False)


def test_host_that_does_not_resolve_is_a_transient_store_outage(monkeypatch):
    # given an allowed host whose name does not resolve right now
    def getaddrinfo(*args, **kwargs):
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(documents.socket, "getaddrinfo", getaddrinfo)

    # when its URL is checked, then it is a transient failure
    with pytest.raises(DocumentStoreUnavailable):
        check_url(URL, HOSTS, allow_private=False)


def test_explicitly_allowed_ip_literal_with_port_is_accepted():
    # given an IP literal and port allowed as written (a document store on loopback, e.g. a sandbox)
    hosts = ("127.0.0.1:8765",)

    # when a URL on it is checked without allow_private, then it passes
    assert check_url("http://127.0.0.1:8765/doc_551?token=x", hosts, allow_private=False) is None


def test_ip_literal_allowed_on_one_port_is_refused_on_another():
    # given an IP literal allowed with port 8765 only
    hosts = ("127.0.0.1:8765",)

    # when a URL on another port is checked, then it is refused
    with pytest.raises(DocumentHostNotAllowed):
        check_url("http://127.0.0.1:22/", hosts, allow_private=False)


def test_host_match_ignores_case(monkeypatch):
    # given an allowed host written in lower case, resolving to a public address
    resolves_to(monkeypatch, "93.184.216.34")

    # when a URL spelling it in capitals is checked, then it matches (host names are case-insensitive)
    assert check_url("https://DOCS.Hub.Example/doc_551", HOSTS, allow_private=False) is None


def test_url_with_an_out_of_range_port_is_refused():
    # given an allowed host with an impossible port
    url = "https://docs.hub.example:99999/doc_551"

    # when it is checked, then it is refused as not allowed
    with pytest.raises(DocumentHostNotAllowed):
        check_url(url, HOSTS, allow_private=False)


# -- fetch -----------------------------------------------------------------------------------------


def test_fetch_streams_the_document_into_the_spool_named_by_its_hash(tmp_path):
    # given a document store serving a PDF
    store = serving(PDF)

    # when it is fetched with its announced size and hash
    fetched = fetch(store.client(), URL, tmp_path, max_bytes=10_000, expected_size=len(PDF), expected_sha256=sha(PDF))

    # then the bytes are in the spool under their SHA-256, with their real type, and nothing else is left
    assert fetched.path == tmp_path / sha(PDF)
    assert fetched.path.read_bytes() == PDF
    assert (fetched.size, fetched.sha256, fetched.content_type) == (len(PDF), sha(PDF), "application/pdf")
    assert spool_files(tmp_path) == [sha(PDF)]
    assert [str(r.url) for r in store.requests] == [URL]


def test_fetch_without_announced_hash_computes_it(tmp_path):
    # given a PNG served in small chunks without Content-Length, and no size nor hash announced
    store = streaming([PNG[i : i + 7] for i in range(0, len(PNG), 7)])

    # when it is fetched
    fetched = fetch(store.client(), URL, tmp_path / "spool", max_bytes=10_000)

    # then the spool directory is created and the file is kept under its computed hash
    assert fetched.sha256 == sha(PNG)
    assert fetched.path.read_bytes() == PNG
    assert fetched.content_type == "image/png"


def test_fetched_bytes_of_unknown_type_are_octet_stream(tmp_path):
    # given a store serving text with a .pdf name
    store = serving(b"not really a pdf")

    # when it is fetched
    fetched = fetch(store.client(), "https://docs.hub.example/facture.pdf", tmp_path, max_bytes=10_000)

    # then its type is not trusted from the name
    assert fetched.content_type == "application/octet-stream"


def test_hash_mismatch_is_refused_and_leaves_nothing(tmp_path):
    # given a store serving other bytes than the event announced
    store = serving(PDF)

    # when it is fetched
    with pytest.raises(DocumentMismatch) as info:
        fetch(store.client(), URL, tmp_path, max_bytes=10_000, expected_sha256=sha(b"the original scan"))

    # then it is refused for good, and no partial or final file is left in the spool
    assert "SHA-256" in info.value.message
    assert info.value.kind is ErrorKind.PERMANENT
    assert spool_files(tmp_path) == []


def test_size_mismatch_is_refused_and_leaves_nothing(tmp_path):
    # given a store serving a document cut short
    store = serving(PDF[:-10])

    # when it is fetched with the full size announced
    with pytest.raises(DocumentMismatch) as info:
        fetch(store.client(), URL, tmp_path, max_bytes=10_000, expected_size=len(PDF))

    # then it is refused, naming both sizes
    assert f"{len(PDF) - 10} bytes" in info.value.message
    assert str(len(PDF)) in info.value.message
    assert spool_files(tmp_path) == []


@pytest.mark.parametrize("status", [404, 410, 401, 403, 302])
def test_missing_document_is_unavailable(status, tmp_path):
    # given a store that does not have (or will not give) the document, or redirects elsewhere
    store = serving(b"", status=status, headers={"Location": "http://169.254.169.254/"})

    # when it is fetched
    with pytest.raises(DocumentUnavailable) as info:
        fetch(store.client(), URL, tmp_path, max_bytes=10_000)

    # then it is a permanent refusal naming the status, the redirect not followed
    assert info.value.status == status
    assert len(store.requests) == 1
    assert spool_files(tmp_path) == []


def test_error_message_does_not_leak_the_url_token(tmp_path):
    # given a document URL carrying an access token, and a store that answers 404
    store = serving(b"", status=404)

    # when it is fetched
    with pytest.raises(DocumentUnavailable) as info:
        fetch(store.client(), URL + "?token=SeCrEtToKeN", tmp_path, max_bytes=10_000)

    # then the message names the document without its query string
    assert URL in info.value.message
    assert "SeCrEtToKeN" not in info.value.message


@pytest.mark.parametrize("status", [503, 500, 502, 429])
def test_store_failing_is_a_transient_outage(status, tmp_path):
    # given a store that is off or shedding load, asking to wait 7 seconds
    store = serving(b"busy", status=status, headers={"Retry-After": "7"})

    # when a document is fetched
    with pytest.raises(DocumentStoreUnavailable) as info:
        fetch(store.client(), URL, tmp_path, max_bytes=10_000)

    # then it is transient, carrying the wait
    assert info.value.status == status
    assert info.value.retry_after == 7.0
    assert info.value.kind is ErrorKind.TRANSIENT
    assert spool_files(tmp_path) == []


def test_transport_failure_is_a_transient_outage(tmp_path):
    # given a store whose connection drops
    def drop(request):
        raise httpx.RemoteProtocolError("peer closed connection", request=request)

    store = DocStore(drop)

    # when a document is fetched
    with pytest.raises(DocumentStoreUnavailable) as info:
        fetch(store.client(), URL, tmp_path, max_bytes=10_000)

    # then it is transient and chained to the transport error
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)
    assert spool_files(tmp_path) == []


def test_document_over_max_bytes_while_streaming_is_too_big_and_leaves_nothing(tmp_path):
    # given a store streaming 3 chunks of 4 KiB without Content-Length
    store = streaming([b"x" * 4096] * 3)

    # when it is fetched with a 10 000-byte limit
    with pytest.raises(DocumentTooBig) as info:
        fetch(store.client(), URL, tmp_path, max_bytes=10_000)

    # then it is refused and the partial file is gone
    assert "10000-byte limit" in info.value.message
    assert spool_files(tmp_path) == []


def test_document_declared_over_max_bytes_is_refused_before_reading(tmp_path):
    # given a store announcing a Content-Length over the limit
    store = serving(b"x" * 20_000)

    # when it is fetched with a 10 000-byte limit
    with pytest.raises(DocumentTooBig) as info:
        fetch(store.client(), URL, tmp_path, max_bytes=10_000)

    # then it is refused naming the declared size, nothing spooled
    assert "20000 bytes" in info.value.message
    assert spool_files(tmp_path) == []


def test_document_of_exactly_max_bytes_is_accepted(tmp_path):
    # given a document exactly at the limit, streamed
    data = b"y" * 10_000
    store = streaming([data[:6000], data[6000:]])

    # when it is fetched with that limit, then it is kept
    fetched = fetch(store.client(), URL, tmp_path, max_bytes=10_000)
    assert fetched.size == 10_000


def test_second_fetch_with_known_hash_reuses_the_spooled_file(tmp_path):
    # given a document already fetched once
    store = serving(PDF)
    first = fetch(store.client(), URL, tmp_path, max_bytes=10_000, expected_sha256=sha(PDF))

    # when it is fetched again with the same hash (a retried step on the same machine)
    again = fetch(store.client(), URL, tmp_path, max_bytes=10_000, expected_size=len(PDF), expected_sha256=sha(PDF))

    # then the spooled copy is reused without a second request
    assert again == first
    assert len(store.requests) == 1


def test_spooled_file_of_the_wrong_size_is_fetched_again(tmp_path):
    # given a spool file under the right name but truncated (a disk filled up, say)
    (tmp_path / sha(PDF)).write_bytes(PDF[:100])
    store = serving(PDF)

    # when the document is fetched with its size and hash
    fetched = fetch(store.client(), URL, tmp_path, max_bytes=10_000, expected_size=len(PDF), expected_sha256=sha(PDF))

    # then it is fetched again and the spool holds the whole file
    assert len(store.requests) == 1
    assert fetched.path.read_bytes() == PDF


# -- unique_name -----------------------------------------------------------------------------------


def test_unique_name_is_built_from_ack_entry_document_and_hash():
    # given a PDF attached to entry ent_8842

    # when its unique name is made
    name = unique_name("K7QZ", "ent_8842", "doc_551", sha(PDF), "facture orange nov.pdf", "application/pdf")

    # then it reads ACK-entry-document-hash.extension
    assert name == f"K7QZ-ent_8842-doc_551-{sha(PDF)[:10]}.pdf"


def test_unique_name_is_the_same_on_every_retry():
    # given the same document twice
    args = ("K7QZ", "ent_8842", "doc_551", sha(PNG), "photo.png", "image/png")

    # when its name is made twice, then both are equal
    assert unique_name(*args) == unique_name(*args)


def test_unique_name_differs_when_the_content_differs():
    # given the same document id re-attached with other bytes
    before = unique_name("K7QZ", "ent_8842", "doc_551", sha(PDF), "facture.pdf", "application/pdf")

    # when its name is made with the new hash
    after = unique_name("K7QZ", "ent_8842", "doc_551", sha(PNG), "facture.pdf", "application/pdf")

    # then the names differ (the GED refuses a second file of the same name)
    assert before != after


def test_unique_name_differs_between_documents_and_entries():
    # given two documents of one entry, and one document of another entry, all with the same bytes
    names = {
        unique_name("K7QZ", "ent_1", "doc_1", sha(PDF), "a.pdf", "application/pdf"),
        unique_name("K7QZ", "ent_1", "doc_2", sha(PDF), "a.pdf", "application/pdf"),
        unique_name("AB12", "ent_2", "doc_1", sha(PDF), "a.pdf", "application/pdf"),
    }

    # then all three names are distinct
    assert len(names) == 3


@pytest.mark.parametrize(
    ("filename", "content_type", "extension"),
    [
        ("photo.jpeg", "image/jpeg", "jpg"),
        ("facture.txt", "application/pdf", "pdf"),
        ("scan.TIFF", "image/tiff", "tiff"),
        ("facture", "application/octet-stream", "bin"),
        ("../../etc/passwd", "application/octet-stream", "bin"),
        ("a.p/h\\p", "application/octet-stream", "bin"),
        ("doc.p\u00e9f", "application/octet-stream", "pef"),
        ("x.<script>", "application/octet-stream", "script"),
        ("x.verylongextension", "application/octet-stream", "verylong"),
    ],
)
def test_unique_name_extension_comes_from_the_real_type_then_a_cleaned_suffix(filename, content_type, extension):
    # given documents whose sniffed type may be unknown

    # when their unique name is made
    name = unique_name("K7QZ", "ent_1", "doc_1", "a" * 64, filename, content_type)

    # then the extension is the known type's, else the file's own suffix made safe, else "bin"
    assert name == f"K7QZ-ent_1-doc_1-aaaaaaaaaa.{extension}"


@given(
    entry_id=st.text(max_size=200),
    doc_id=st.text(max_size=200),
    filename=st.text(max_size=300),
    content_type=st.sampled_from(["application/pdf", "image/png", "image/jpeg", "application/octet-stream", ""]),
    digest=st.binary(min_size=1, max_size=64).map(sha),
)
def test_unique_name_has_only_safe_characters_even_for_hostile_input(entry_id, doc_id, filename, content_type, digest):
    # given any entry id, document id and file name (paths, NULs, accents, emoji, RTL marks...)

    # when a unique name is made
    name = unique_name("K7QZ", entry_id, doc_id, digest, filename, content_type)

    # then it uses only [A-Za-z0-9_.-], starts with the ACK code, ends with the hash and an extension
    assert SAFE_NAME.fullmatch(name)
    assert name.startswith("K7QZ-")
    assert f"-{digest[:10]}." in name
    assert len(name) <= 120
