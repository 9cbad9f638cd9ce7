"""Supporting documents: fetched streamed, checked, kept in a spool by content hash, renamed uniquely.

A document is never held whole in memory nor put in a broker message: it is streamed to a spool file
named by its SHA-256, which any later step reuses when it runs on the same machine and fetches again
(checking the same hash) when it runs on another.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import socket
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from pipeline.errors import CustomerActionError, HubsyncError, PermanentError, TransientError
from pipeline.http import Failure, Sender

CHUNK_BYTES = 64 * 1024


class DocumentHostNotAllowed(CustomerActionError):
    """The document URL points at a host the operator did not allow (or at an internal address)."""

    default_hint = (
        "Only hosts listed in HUBSYNC_DOCUMENT_HOSTS are fetched. Add the hub's document host there if it is "
        "legitimate, then replay; never allow internal addresses."
    )


class DocumentUnavailable(PermanentError):
    """The document store answered that the document does not exist (or refused it)."""

    default_hint = "The supporting document cannot be fetched from the hub: re-attach it and validate again."


class DocumentMismatch(PermanentError):
    """The fetched bytes do not match the size or SHA-256 the event announced."""

    default_hint = "The document changed or was cut in transit; re-attach it in the hub and validate again."


class DocumentTooBig(PermanentError):
    """Larger than the configured limit."""

    default_hint = "The document is larger than the limit (HUBSYNC_DOCUMENT_MAX_BYTES); attach a smaller scan."


class DocumentStoreUnavailable(TransientError):
    """The document store is off, slow or failing."""


@dataclass(frozen=True)
class Fetched:
    """A document in the spool."""

    path: Path
    size: int
    sha256: str
    content_type: str


def sniff_type(head: bytes) -> str | None:
    """The real type of a file from its first bytes: JPEG, PNG or PDF, else None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:1024].lstrip(b"\x00\t\n\r\x0c ").startswith(b"%PDF-"):
        return "application/pdf"
    return None


EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "application/pdf": "pdf"}


def _is_internal(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast or ip.is_unspecified


def check_url(url: str, allowed_hosts: tuple[str, ...], allow_private: bool) -> None:
    """Refuse a document URL unless its host (or host:port) is allowed and it resolves outside internal ranges.

    An explicitly allowed IP literal is trusted as written; a host name must not resolve to an internal
    address unless ``allow_private`` (a deployment whose document store sits on a private network).
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise DocumentHostNotAllowed(f"document URL scheme or host not allowed: {parts.scheme}://{host}")
    try:
        port = parts.port
    except ValueError as exc:
        raise DocumentHostNotAllowed(f"document URL has an invalid port: {parts.netloc}") from exc
    hostport = f"{host}:{port}" if port else host
    if host not in allowed_hosts and hostport not in allowed_hosts:
        raise DocumentHostNotAllowed(f"document host {hostport!r} is not in HUBSYNC_DOCUMENT_HOSTS")
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise DocumentStoreUnavailable(f"cannot resolve the document host {host!r}") from exc
    for info in infos:
        if _is_internal(str(info[4][0])):
            raise DocumentHostNotAllowed(f"document host {host!r} resolves to an internal address")


def fetch(
    http: httpx.Client,
    url: str,
    spool_dir: Path,
    *,
    max_bytes: int,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    limit_setting: str = "HUBSYNC_DOCUMENT_MAX_BYTES",
) -> Fetched:
    """Stream a document into the spool and check it; idempotent (a spooled copy with the hash is reused).

    ``limit_setting`` names the setting ``max_bytes`` comes from, for the hint of a document over it."""
    too_big_hint = f"The document is larger than the limit ({limit_setting}); attach a smaller scan."
    if expected_sha256:
        cached = spool_dir / expected_sha256
        if cached.exists() and (expected_size is None or cached.stat().st_size == expected_size):
            with cached.open("rb") as fh:
                kind = sniff_type(fh.read(1024)) or "application/octet-stream"
            return Fetched(cached, cached.stat().st_size, expected_sha256, kind)
    spool_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    head = b""
    fd, tmp_name = tempfile.mkstemp(dir=spool_dir, prefix=".part-")
    tmp = Path(tmp_name)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            Sender(http, name="the document store", errors=store_errors).stream("GET", url) as response,
        ):
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise DocumentTooBig(
                    f"the document has {int(declared)} bytes, over the {max_bytes} limit", hint=too_big_hint
                )
            for chunk in response.iter_bytes(CHUNK_BYTES):
                size += len(chunk)
                if size > max_bytes:
                    raise DocumentTooBig(f"the document is over the {max_bytes}-byte limit", hint=too_big_hint)
                if len(head) < 1024:
                    head += chunk[: 1024 - len(head)]
                digest.update(chunk)
                out.write(chunk)
        sha = digest.hexdigest()
        if expected_size is not None and size != expected_size:
            raise DocumentMismatch(f"the document has {size} bytes, the event announced {expected_size}")
        if expected_sha256 is not None and sha != expected_sha256:
            raise DocumentMismatch("the document's SHA-256 differs from the one the event announced")
        final = spool_dir / sha
        os.replace(tmp, final)
        return Fetched(final, size, sha, sniff_type(head) or "application/octet-stream")
    finally:
        tmp.unlink(missing_ok=True)


def store_errors(failure: Failure) -> HubsyncError:
    """The document store's error table: an outage or a load-shedding answer waits; any other answer (a redirect,
    never followed, included) means the document cannot be had."""
    where = _safe_url(str(failure.url))
    if failure.exception is not None:
        return DocumentStoreUnavailable(f"fetching {where} failed ({type(failure.exception).__name__})")
    status = failure.status or 0
    if status == 429 or status >= 500:
        return DocumentStoreUnavailable(
            f"the document store answered {status}", status=status, retry_after=failure.retry_after
        )
    return DocumentUnavailable(f"the document store answered {status} for {where}", status=status)


def _safe_url(url: str) -> str:
    """A URL without its query string (document URLs often carry access tokens)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _slug(value: str, limit: int) -> str:
    ascii_value = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    return _UNSAFE.sub("-", ascii_value).strip("-.")[:limit] or "x"


def unique_name(ack: str, entry_id: str, doc_id: str, sha256: str, filename: str, content_type: str) -> str:
    """The document's name in the provider: unique per entry, document and content, the same on every retry."""
    ext = EXTENSIONS.get(content_type)
    if ext is None:
        suffix = Path(filename).suffix.lstrip(".")
        ext = _slug(suffix, 8).lower() if suffix else "bin"
    return f"{ack}-{_slug(entry_id, 40)}-{_slug(doc_id, 40)}-{sha256[:10]}.{ext}"
