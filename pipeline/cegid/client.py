"""The Cegid Loop client: exactly the routes and shapes of the Cegid Loop contract, nothing more.

One ``httpx.Client`` per worker process serves every firm. The API secret and the subscription key are
``Secret`` values: they go into request headers and nowhere else (not in reprs, logs or task messages).
"""

from __future__ import annotations

import json
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from pipeline.cegid.errors import (
    DepositOutcomeUnknown,
    MalformedResponse,
    error_from_exception,
    error_from_response,
)
from pipeline.errors import HubsyncError
from pipeline.secrets import Secret

DEFAULT_URL = "https://api.cegid.com/loop-api-publiques"
PAGE_MAX = 100
FOLDER_NAME = "Qonto"


@dataclass(frozen=True)
class LoopCredentials:
    """Where and as whom the hub talks to Cegid Loop; the secret and subscription key stay ``Secret``."""

    url: str
    subscription_key: Secret
    api_key: str
    api_secret: Secret
    domain: str

    def __repr__(self) -> str:
        return f"LoopCredentials(url={self.url!r}, api_key={self.api_key!r}, domain={self.domain!r}, [secure])"


class LoopAuth(httpx.Auth):
    """Adds ``Ocp-Apim-Subscription-Key``, ``x-apikey: key:secret`` and ``x-loop-domain`` to every request."""

    def __init__(self, creds: LoopCredentials) -> None:
        self.creds = creds

    def __repr__(self) -> str:
        return f"LoopAuth(api_key={self.creds.api_key!r}, secret=[secure])"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Ocp-Apim-Subscription-Key"] = self.creds.subscription_key.reveal()
        request.headers["x-apikey"] = f"{self.creds.api_key}:{self.creds.api_secret.reveal()}"
        request.headers["x-loop-domain"] = self.creds.domain
        yield request


class LoopClient:
    """The routes of the Cegid Loop contract, raising the error tree of ``pipeline.cegid.errors``."""

    def __init__(self, http: httpx.Client, creds: LoopCredentials) -> None:
        self.http = http
        self.creds = creds
        self.auth = LoopAuth(creds)
        self.base = creds.url.rstrip("/")

    def __repr__(self) -> str:
        return f"LoopClient(url={self.base!r}, api_key={self.creds.api_key!r})"

    # -- plumbing --------------------------------------------------------------------------------

    def _send(
        self, method: str, route: str, *, write: bool = False, ok: tuple[int, ...] = (200,), **kwargs: Any
    ) -> httpx.Response:
        try:
            response = self.http.request(method, f"{self.base}{route}", auth=self.auth, **kwargs)
        except HubsyncError:
            raise
        except httpx.HTTPError as exc:
            raise error_from_exception(exc, write=write) from exc
        if response.status_code not in ok:
            raise error_from_response(response, write=write)
        return response

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return json.loads(response.content)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedResponse(
                f"Cegid Loop answered {response.status_code} with a body that is not JSON on "
                f"{response.request.url.path}"
            ) from exc

    # -- routes ----------------------------------------------------------------------------------

    def dossier(self, code: str) -> dict[str, Any]:
        """``{"codeDossier", "nom", "domaine"}`` of a dossier (checks access)."""
        body = self._json(self._send("GET", f"/dossiers/{_seg(code)}"))
        if not isinstance(body, dict):
            raise MalformedResponse("Cegid Loop answered the dossier route with something other than an object")
        return body

    def partner_folders(self, code: str) -> list[dict[str, Any]]:
        """The dossier's partner folders: ``[{"id", "nom", "creeLe"}]``."""
        body = self._json(self._send("GET", f"/pia/dossiers/{_seg(code)}/dossiers-partenaires"))
        if not isinstance(body, list):
            raise MalformedResponse("Cegid Loop answered dossiers-partenaires with something other than an array")
        return [item for item in body if isinstance(item, dict)]

    def create_partner_folder(self, code: str, name: str = FOLDER_NAME) -> dict[str, Any]:
        """Create a partner folder; ``FolderExists`` when one of that name exists."""
        route = f"/pia/dossiers/{_seg(code)}/dossiers-partenaires"
        body = self._json(self._send("POST", route, ok=(200, 201), json={"nom": name}))
        if not isinstance(body, dict) or not body.get("id"):
            raise MalformedResponse("Cegid Loop created the partner folder but gave no id")
        return body

    def deposit(
        self, code: str, metadonnees: dict[str, Any], name: str, path: Path, content_type: str
    ) -> dict[str, Any]:
        """Deposit a file into PIA (multipart ``file`` + ``metadonnees``); streamed from ``path``."""
        with path.open("rb") as fh:
            response = self._send(
                "POST",
                f"/pia/dossiers/{_seg(code)}/documents",
                write=True,
                ok=(200, 201),
                files={
                    "file": (name, fh, content_type),
                    "metadonnees": (None, json.dumps(metadonnees, ensure_ascii=False), "application/json"),
                },
            )
        try:
            body = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict) or not body.get("id"):
            # Accepted, but no id: it may be in the folder; the deposit step looks it up by name.
            raise DepositOutcomeUnknown("Cegid Loop accepted the deposit but gave no document id")
        return body

    def list_documents(
        self, code: str, folder_id: str, name: str | None = None, skip: int = 0, take: int = PAGE_MAX
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of a partner folder's documents and the total count (``take`` at most 100)."""
        params: dict[str, Any] = {"dossierPartenaireId": folder_id, "skip": skip, "take": min(take, PAGE_MAX)}
        if name is not None:
            params["nom"] = name
        body = self._json(self._send("GET", f"/pia/dossiers/{_seg(code)}/documents", params=params))
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise MalformedResponse("Cegid Loop answered the document listing without its data array")
        total = body.get("total")
        data = [item for item in body["data"] if isinstance(item, dict)]
        return data, total if isinstance(total, int) else len(data)

    def find_documents(self, code: str, folder_id: str, name: str) -> list[dict[str, Any]]:
        """Every document of that exact name in the partner folder, across pages."""
        found: list[dict[str, Any]] = []
        skip = 0
        while True:
            page, total = self.list_documents(code, folder_id, name=name, skip=skip)
            found.extend(item for item in page if item.get("nom") == name)
            skip += len(page)
            if not page or skip >= total:
                return found


def _seg(value: str) -> str:
    return quote(value, safe="")
