"""A streamed ``multipart/form-data`` upload as the sandboxes receive it (ACD's GED, Cegid Loop's deposit):
the ``file`` part is hashed and counted, never kept whole; small fields and the file's first bytes are kept."""

from __future__ import annotations

import hashlib
from typing import Any

try:
    from python_multipart.multipart import parse_options_header
except ImportError:  # python-multipart before 0.0.13
    from multipart.multipart import parse_options_header  # type: ignore[no-redef]


class StreamedUpload:
    """Callbacks for a streaming multipart parser: hashes the ``file`` part, keeps its first ``head_bytes``
    bytes and the other fields up to ``field_max_bytes`` each."""

    def __init__(self, field_max_bytes: int = 1024, head_bytes: int = 0) -> None:
        self.field_max_bytes = field_max_bytes
        self.head_bytes = head_bytes
        self.fields: dict[str, bytes] = {}
        self.filename: str | None = None
        self.file_parts = 0
        self.size = 0
        self.head = bytearray()
        self.hasher = hashlib.sha256()
        self.ended = False
        self._headers: dict[bytes, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._name: str | None = None

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._name = None

    def _header_end(self) -> None:
        self._headers[bytes(self._field).strip().lower()] = bytes(self._value).strip()
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        _disposition, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = params.get(b"name", b"").decode("utf-8", "replace")
        if self._name == "file":
            self.file_parts += 1
            raw = params.get(b"filename")
            self.filename = raw.decode("utf-8", "replace") if raw else None
        elif self._name:
            self.fields.setdefault(self._name, b"")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._name == "file":
            piece = memoryview(data)[start:end]  # no copy: uploads can be tens of megabytes
            self.hasher.update(piece)
            self.size += end - start
            if len(self.head) < self.head_bytes:
                self.head.extend(piece[: self.head_bytes - len(self.head)])
        elif self._name and len(self.fields[self._name]) < self.field_max_bytes:
            self.fields[self._name] += data[start:end]

    def _end(self) -> None:
        self.ended = True
