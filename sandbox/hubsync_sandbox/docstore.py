"""A document store sandbox: where the hub fetches the supporting documents of an entry.

``GET /docs/{doc_id}`` answers the document with ``Content-Length`` and ``Content-Type``; a query string
(``?token=…``) is accepted and ignored, an unknown document is a 404. Documents can be held in memory
(``put``), read from disk (``put_file``), or generated on the fly (``put_generated``: deterministic bytes of
any size, never built whole in memory). Bodies are always streamed in chunks. ``snapshot`` and ``restore`` carry
the documents (their bytes in base64, a generated one as its size and seed) through a JSON file.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import random
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from hubsync_sandbox.faults import Fault, FaultSwitch, parse_faults
from hubsync_sandbox.http import (
    CHUNK_BYTES,
    Request,
    Response,
    Router,
    json_response,
    text_response,
)

PDF_HEADER = b"%PDF-1.4\n"
_PATTERN_BYTES = 64 * 1024


@dataclass
class _Document:
    doc_id: str
    content_type: str
    filename: str | None
    size: int
    sha256: str
    data: bytes | None = None
    path: Path | None = None
    generated_seed: int | None = None
    owned_path: bool = False

    def chunks(self) -> Iterator[bytes]:
        if self.data is not None:
            for start in range(0, len(self.data), CHUNK_BYTES):
                yield self.data[start : start + CHUNK_BYTES]
        elif self.path is not None:
            with self.path.open("rb") as handle:
                while chunk := handle.read(CHUNK_BYTES):
                    yield chunk
        else:
            yield from generated_chunks(self.size, self.generated_seed or 0)


def generated_chunks(size: int, seed: int) -> Iterator[bytes]:
    """``size`` deterministic bytes starting with ``%PDF-1.4``, in chunks, from one small pattern."""
    pattern = random.Random(seed).randbytes(_PATTERN_BYTES)
    sent = 0
    index = 0
    while sent < size:
        # Stamp each chunk with its index so that no two chunks are the same bytes.
        chunk = PDF_HEADER + pattern[len(PDF_HEADER) :] if index == 0 else index.to_bytes(8, "big") + pattern[8:]
        chunk = chunk[: size - sent]
        sent += len(chunk)
        index += 1
        yield chunk


def _digest(chunks: Iterable[bytes]) -> tuple[int, str]:
    hasher = hashlib.sha256()
    size = 0
    for chunk in chunks:
        hasher.update(chunk)
        size += len(chunk)
    return size, hasher.hexdigest()


class DocStore:
    """The document store sandbox app, mounted under ``/docs``."""

    def __init__(self, seed: int = 0) -> None:
        self._docs: dict[str, _Document] = {}
        self._hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._seed = seed
        self._faults = FaultSwitch(random.Random(seed))
        self._tmpdir: Path | None = None
        self.base_url = "/docs"
        self._router = Router()
        self._router.add("GET", "/{doc_id}", self._serve)

    # -- Python API ------------------------------------------------------------------------------

    def bind_url(self, base_url: str) -> None:
        """Tell the store where it is served (the server does this), so that ``url`` is absolute."""
        self.base_url = base_url.rstrip("/")

    def url(self, doc_id: str) -> str:
        """The URL the hub fetches ``doc_id`` from."""
        return f"{self.base_url}/{quote(doc_id, safe='')}"

    def put(
        self, doc_id: str, data: bytes, content_type: str = "application/pdf", filename: str | None = None
    ) -> dict[str, Any]:
        """Serve ``data`` (held in memory) as ``doc_id``; returns ``{"url", "size", "sha256"}``."""
        size, sha256 = _digest([data])
        return self._store(_Document(doc_id, content_type, filename, size, sha256, data=bytes(data)))

    def put_file(
        self,
        doc_id: str,
        path: str | os.PathLike[str],
        content_type: str = "application/pdf",
        filename: str | None = None,
    ) -> dict[str, Any]:
        """Serve the file at ``path``, streamed from disk at each request."""
        file_path = Path(path)
        with file_path.open("rb") as handle:
            size, sha256 = _digest(iter(lambda: handle.read(CHUNK_BYTES), b""))
        return self._store(_Document(doc_id, content_type, filename or file_path.name, size, sha256, path=file_path))

    def put_generated(
        self,
        doc_id: str,
        size: int,
        content_type: str = "application/pdf",
        filename: str | None = None,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """Serve ``size`` deterministic bytes starting with ``%PDF-1.4``; nothing is held in memory."""
        if size < 0:
            raise ValueError("size must be non-negative")
        doc_seed = seed if seed is not None else int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8])
        _size, sha256 = _digest(generated_chunks(size, doc_seed))
        return self._store(_Document(doc_id, content_type, filename, size, sha256, generated_seed=doc_seed))

    def put_stream(
        self,
        doc_id: str,
        chunks: Iterable[bytes],
        content_type: str = "application/octet-stream",
        filename: str | None = None,
    ) -> dict[str, Any]:
        """Store a streamed body (spooled to a private temporary file) and serve it as ``doc_id``."""
        with self._lock:
            if self._tmpdir is None:
                self._tmpdir = Path(tempfile.mkdtemp(prefix="hubsync-docstore-"))
            tmpdir = self._tmpdir
        handle = tempfile.NamedTemporaryFile(dir=tmpdir, delete=False)  # noqa: SIM115 - kept for serving
        hasher = hashlib.sha256()
        size = 0
        with handle:
            for chunk in chunks:
                hasher.update(chunk)
                size += len(chunk)
                handle.write(chunk)
        document = _Document(
            doc_id, content_type, filename, size, hasher.hexdigest(), path=Path(handle.name), owned_path=True
        )
        return self._store(document)

    def _store(self, document: _Document) -> dict[str, Any]:
        with self._lock:
            previous = self._docs.get(document.doc_id)
            self._docs[document.doc_id] = document
        if previous is not None:
            _discard(previous)
        return {"url": self.url(document.doc_id), "size": document.size, "sha256": document.sha256}

    def remove(self, doc_id: str) -> None:
        """Stop serving ``doc_id`` (it answers 404 afterwards)."""
        with self._lock:
            document = self._docs.pop(doc_id, None)
        if document is not None:
            _discard(document)

    def info(self, doc_id: str) -> dict[str, Any]:
        """``{"url","size","sha256","content_type","filename","hits"}`` of a stored document."""
        with self._lock:
            document = self._docs[doc_id]
            hits = self._hits[doc_id]
        return {
            "url": self.url(doc_id),
            "size": document.size,
            "sha256": document.sha256,
            "content_type": document.content_type,
            "filename": document.filename,
            "hits": hits,
        }

    def doc_ids(self) -> list[str]:
        """The ids of the stored documents."""
        with self._lock:
            return sorted(self._docs)

    def hits(self, doc_id: str) -> int:
        """How many requests arrived for ``doc_id`` (faulted ones included)."""
        with self._lock:
            return self._hits[doc_id]

    def snapshot(self) -> dict[str, Any]:
        """Every document as JSON-ready data for ``restore``: id, type, file name, and its bytes in base64 (a
        generated one: its size and seed)."""
        with self._lock:
            documents = list(self._docs.values())
        out = []
        for document in documents:
            item: dict[str, Any] = {
                "id": document.doc_id,
                "content_type": document.content_type,
                "filename": document.filename,
                "sha256": document.sha256,
            }
            if document.data is None and document.path is None:
                item |= {"size": document.size, "generated_seed": document.generated_seed}
            else:
                item["base64"] = base64.b64encode(b"".join(document.chunks())).decode("ascii")
            out.append(item)
        return {"documents": out}

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Serve the documents of ``snapshot`` (besides any already stored); raises ``ValueError`` when one's bytes
        no longer match the SHA-256 it was saved with."""
        for item in snapshot["documents"]:
            if "base64" in item:
                info = self.put(item["id"], base64.b64decode(item["base64"]), item["content_type"], item["filename"])
            else:
                info = self.put_generated(
                    item["id"], int(item["size"]), item["content_type"], item["filename"], item["generated_seed"]
                )
            if info["sha256"] != item["sha256"]:
                raise ValueError(f"document {item['id']} restored with other bytes than it was saved with")

    def set_fault(self, fault: Fault) -> None:
        """Activate ``fault`` after those already active (``route`` matches the path after ``/docs``)."""
        self._faults.add(fault)

    def clear_faults(self) -> None:
        """Deactivate every fault."""
        self._faults.clear()

    def faults(self) -> list[Fault]:
        """The active faults."""
        return self._faults.active()

    def reset(self) -> None:
        """Back to an empty store: no documents, hits or faults."""
        with self._lock:
            documents = list(self._docs.values())
            self._docs.clear()
            self._hits.clear()
            tmpdir, self._tmpdir = self._tmpdir, None
        self._faults = FaultSwitch(random.Random(self._seed))
        for document in documents:
            _discard(document)
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)

    # -- HTTP ------------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Answer a request under ``/docs``."""
        with self._lock:
            self._hits[unquote(request.path.lstrip("/"))] += 1
        fault = self._faults.take(request.method, request.path)
        return self._faults.respond(fault, lambda: self._router.handle(request))

    def _serve(self, request: Request) -> Response:
        with self._lock:
            document = self._docs.get(request.params["doc_id"])
        if document is None:
            return text_response("document not found\n", 404)
        headers = {"Content-Type": document.content_type, "Cache-Control": "no-store"}
        if document.filename:
            headers["Content-Disposition"] = _disposition(document.filename)
        return Response(200, document.chunks(), headers, content_length=document.size)

    def admin_router(self) -> Router:
        """Admin routes, mounted by the server under ``/_sandbox/docs``."""
        router = Router()
        router.add("GET", "/", self._admin_list)
        router.add("POST", "/faults", self._admin_add_faults)
        router.add("DELETE", "/faults", self._admin_clear_faults)
        router.add("GET", "/faults", lambda request: json_response([f.to_dict() for f in self.faults()]))
        router.add("POST", "/{doc_id}", self._admin_put)
        router.add("GET", "/{doc_id}", self._admin_info)
        router.add("DELETE", "/{doc_id}", self._admin_remove)
        return router

    def _admin_list(self, request: Request) -> Response:
        return json_response({doc_id: self.info(doc_id) for doc_id in self.doc_ids()})

    def _admin_add_faults(self, request: Request) -> Response:
        for fault in parse_faults(request):
            self.set_fault(fault)
        return json_response({"faults": [f.to_dict() for f in self.faults()]})

    def _admin_clear_faults(self, request: Request) -> Response:
        self.clear_faults()
        return json_response({"faults": []})

    def _admin_put(self, request: Request) -> Response:
        content_type = request.header("Content-Type") or "application/octet-stream"
        result = self.put_stream(
            request.params["doc_id"], request.iter_body(), content_type, request.header("X-Filename")
        )
        return json_response(result, 201)

    def _admin_info(self, request: Request) -> Response:
        try:
            return json_response(self.info(request.params["doc_id"]))
        except KeyError:
            return json_response({"error": "unknown document"}, 404)

    def _admin_remove(self, request: Request) -> Response:
        self.remove(request.params["doc_id"])
        return json_response({"ok": True})


def _disposition(filename: str) -> str:
    ascii_name = filename.encode("ascii", "replace").decode("ascii").replace('"', "_").replace("?", "_")
    return f"inline; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _discard(document: _Document) -> None:
    if document.owned_path and document.path is not None:
        with contextlib.suppress(OSError):
            document.path.unlink()


__all__ = ["PDF_HEADER", "DocStore", "generated_chunks"]
