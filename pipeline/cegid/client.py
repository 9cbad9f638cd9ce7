"""The Cegid Loop client: exactly the routes and shapes of the Cegid Loop contract (version 2), nothing more.

Two routes: ``GET /journal`` (the only way to tell a real dossier from a code Loop would silently accept)
and ``POST /storeDocument`` (the raw file as the body, streamed from the spool). One ``httpx.Client`` per
worker process serves every firm. The API secret and the subscription key are ``Secret`` values: they go
into request headers and nowhere else (not in reprs, logs or task messages); the firm's domain is not sent
at all (no public route uses it), it only names the partner e-mail sent as ``uploadAuthor``. Both routes go
through the shared send loop (``pipeline.http``) with Loop's auth and error table.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from pipeline.cegid.errors import DepositOutcomeUnknown, MalformedResponse, SpoolUnreadable, loop_errors
from pipeline.http import FileBody, Sender, parse_json
from pipeline.secrets import Secret

DEFAULT_URL = "https://api.cegid.com/loop-api-publiques"
DEPOSIT_MAX_BYTES = 50_000_000
ANSWER_MAX_BYTES = 4096
ANSWER_READ_MAX_BYTES = 64 * 1024
UPLOAD_MODE = "API"
_ID_KEYS = ("documentid", "id", "objectid", "uid", "guid", "documentuid", "iddocument")
_ID_NEST = ("document", "data", "result", "value", "item")
_PLAIN_ID = re.compile(r"^[A-Za-z0-9_.:{}-]{1,100}$")


@dataclass(frozen=True)
class LoopCredentials:
    """Where and as whom the hub talks to Cegid Loop; the secret and subscription key stay ``Secret``."""

    url: str
    subscription_key: Secret
    api_key: str
    api_secret: Secret

    def __repr__(self) -> str:
        return f"LoopCredentials(url={self.url!r}, api_key={self.api_key!r}, [secure])"


class LoopAuth(httpx.Auth):
    """Adds ``Ocp-Apim-Subscription-Key`` and ``x-apikey: key:secret`` to every request."""

    def __init__(self, creds: LoopCredentials) -> None:
        self.creds = creds

    def __repr__(self) -> str:
        return f"LoopAuth(api_key={self.creds.api_key!r}, secret=[secure])"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Ocp-Apim-Subscription-Key"] = self.creds.subscription_key.reveal()
        request.headers["x-apikey"] = f"{self.creds.api_key}:{self.creds.api_secret.reveal()}"
        yield request


@dataclass(frozen=True)
class Deposited:
    """Loop's answer to a deposit it took: the document id found in it (if any) and the raw answer, capped."""

    status: int
    document_id: str | None
    answer: str
    answer_truncated: bool
    sent_bytes: int


class LoopClient:
    """The routes of the Cegid Loop contract, raising the error tree of ``pipeline.cegid.errors``."""

    def __init__(self, http: httpx.Client, creds: LoopCredentials) -> None:
        self.http = http
        self.creds = creds
        self.auth = LoopAuth(creds)
        self.base = creds.url.rstrip("/")
        self.api = Sender(http, name="Cegid Loop", errors=loop_errors, base=self.base, auth=self.auth)

    def __repr__(self) -> str:
        return f"LoopClient(url={self.base!r}, api_key={self.creds.api_key!r})"

    def journals(self, code: str, take: int = 1, skip: int = 0) -> list[dict[str, Any]]:
        """``GET /journal?codeDossier=``: the dossier's journals (an unknown code answers an empty array)."""
        params: dict[str, Any] = {"codeDossier": code, "take": take, "skip": skip}
        body = self.api.call("GET", "/journal", params=params).json()
        if isinstance(body, dict):  # tolerate an envelope around the array
            body = next(
                (v for k, v in body.items() if k.lower() in ("value", "data", "items") and isinstance(v, list)), body
            )
        if not isinstance(body, list):
            raise MalformedResponse("Cegid Loop answered /journal with something other than an array")
        return [item for item in body if isinstance(item, dict)]

    def store_document(
        self,
        context: str,
        filename: str,
        path: Path,
        content_type: str,
        *,
        transaction: str | None = None,
        upload_author: str | None = None,
    ) -> Deposited:
        """``POST /storeDocument``: deposit the spool file at ``path`` into the dossier's PIA, streamed.

        Raises ``DepositOutcomeUnknown`` when the whole file went out and no definitive answer came back;
        any other error means Loop did not take it.
        """
        size = path.stat().st_size
        params = {"context": context, "filename": filename, "uploadMode": UPLOAD_MODE}
        if transaction:
            params["transaction"] = transaction
        if upload_author:
            params["uploadAuthor"] = upload_author
        body = FileBody(path)
        headers = {"Content-Type": content_type, "Content-Length": str(size)}
        try:
            # Once the status line is in, the outcome is known even if the body is then cut short.
            answer = self.api.call(
                "POST",
                "/storeDocument",
                write=True,
                ok=range(200, 300),
                params=params,
                content=body,
                headers=headers,
                max_bytes=ANSWER_READ_MAX_BYTES,
                partial_ok=True,
            )
        except OSError as exc:  # the spool file itself, read while sending
            if body.complete:
                raise DepositOutcomeUnknown(f"reading the answer failed ({type(exc).__name__})") from exc
            raise SpoolUnreadable(f"the spool file could not be read while sending ({exc.strerror})") from exc
        content = answer.content
        return Deposited(
            status=answer.status_code,
            document_id=document_id(content),
            answer=content[:ANSWER_MAX_BYTES].decode("utf-8", "replace"),
            answer_truncated=answer.cut or len(content) > ANSWER_MAX_BYTES,
            sent_bytes=body.sent,
        )


def document_id(content: bytes) -> str | None:
    """The document id in a deposit's answer, whatever its case or shape (``documentId``, ``id``, nested)."""
    return _find_id(parse_json(content), 0)


def _find_id(value: Any, depth: int) -> str | None:
    if depth > 3:
        return None
    if isinstance(value, str):
        return value if depth == 0 and _PLAIN_ID.match(value) else None
    if isinstance(value, list):
        return _find_id(value[0], depth + 1) if len(value) == 1 else None
    if not isinstance(value, dict):
        return None
    lowered = {str(k).lower(): v for k, v in value.items()}
    for key in _ID_KEYS:
        found = lowered.get(key)
        if isinstance(found, str | int) and not isinstance(found, bool) and str(found).strip():
            return str(found).strip()
    for key in _ID_NEST:
        if key in lowered:
            nested = _find_id(lowered[key], depth + 1)
            if nested:
                return nested
    return None
