"""One loopback HTTP server hosting every sandbox app under its own prefix, plus an admin API.

Layout (one port):

- ``/acd/{firm}/...``: the ACD i-Suite sandbox (``hubsync_sandbox.acd.AcdSandbox``): the browser's login page
  at ``/acd/{firm}/iSuiteExpert``, the API under the firm's own root (``/acd/{firm}/CNX/api/v1/...``, or
  ``/acd/{firm}/api/v1/...``: ``acd_api_url``);
- ``/docs/{doc_id}``: the document store (``hubsync_sandbox.docstore.DocStore``);
- ``/_sandbox/...``: the admin API, so that another process can flip fault switches and read state:
  ``GET health``, ``POST reset``, and each app's own admin routes under ``/_sandbox/{name}/...``.

Another sandbox is one ``mount(name, app)`` away: the app answers ``/{name}/...``; if it has an
``admin_router()`` its admin routes appear under ``/_sandbox/{name}``; if it has ``reset()``, ``POST
/_sandbox/reset`` calls it; if it has ``bind_url(base_url)``, it is told its public URL; if it has ``snapshot()``
and ``restore(data)``, ``snapshot`` and ``restore`` carry its state (keyed by its name) through a JSON file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import quote

from hubsync_sandbox.docstore import DocStore
from hubsync_sandbox.http import App, HttpServer, Request, Response, Router, json_response

if TYPE_CHECKING:
    from hubsync_sandbox.acd import AcdSandbox

logger = logging.getLogger(__name__)


@runtime_checkable
class _HasAdmin(Protocol):
    def admin_router(self) -> Router: ...


@runtime_checkable
class _Resettable(Protocol):
    def reset(self) -> None: ...


@runtime_checkable
class _Bindable(Protocol):
    def bind_url(self, base_url: str) -> None: ...


@runtime_checkable
class _Snapshots(Protocol):
    def snapshot(self) -> dict[str, Any]: ...

    def restore(self, snapshot: dict[str, Any]) -> None: ...


class SandboxServer:
    """Every sandbox on one loopback port: ACD firms, the document store, and the admin API."""

    def __init__(
        self,
        acd: AcdSandbox | None = None,
        docs: DocStore | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        apps: Mapping[str, App] | None = None,
    ) -> None:
        if acd is None:
            from hubsync_sandbox.acd import AcdSandbox, demo_acd_firms

            acd = AcdSandbox(demo_acd_firms())
        self._apps: dict[str, App] = {}
        self._root = Router()
        self._admin = Router()
        self._admin.add("GET", "/health", lambda request: json_response({"ok": True}))
        self._admin.add("POST", "/reset", self._reset)
        self._root.mount("/_sandbox", self._admin)
        self._http = HttpServer(self._root, host, port)
        self._acd = acd
        self._docs = docs if docs is not None else DocStore()
        self.mount("acd", self._acd)
        self.mount("docs", self._docs)
        for name, app in (apps or {}).items():
            self.mount(name, app)

    # -- apps ------------------------------------------------------------------------------------

    def mount(self, name: str, app: App) -> None:
        """Serve ``app`` under ``/{name}`` (and its admin routes under ``/_sandbox/{name}``)."""
        name = name.strip("/")
        if name in self._apps or name == "_sandbox":
            raise ValueError(f"a sandbox app is already mounted at /{name}")
        self._apps[name] = app
        self._root.mount(f"/{name}", app)
        if isinstance(app, _HasAdmin):
            self._admin.mount(f"/{name}", app.admin_router())
        if isinstance(app, _Bindable):
            app.bind_url(f"{self.url}/{name}")

    def app(self, name: str) -> App:
        """The app mounted under ``/{name}``."""
        return self._apps[name]

    @property
    def acd(self) -> AcdSandbox:
        """The ACD sandbox."""
        return self._acd

    @property
    def docs(self) -> DocStore:
        """The document store."""
        return self._docs

    def reset(self) -> None:
        """Every app back to its seed state."""
        for app in self._apps.values():
            if isinstance(app, _Resettable):
                app.reset()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """The state of every app that can save it, by app name, JSON-ready (for ``restore``)."""
        return {name: app.snapshot() for name, app in self._apps.items() if isinstance(app, _Snapshots)}

    def restore(self, snapshot: Mapping[str, dict[str, Any]]) -> None:
        """Give each app the state ``snapshot`` saved for it; raises ``KeyError`` for an app not mounted here."""
        for name, saved in snapshot.items():
            app = self._apps.get(name)
            if not isinstance(app, _Snapshots):
                raise KeyError(f"no sandbox app that can restore a snapshot is mounted at /{name}")
            app.restore(saved)

    def _reset(self, request: Request) -> Response:
        self.reset()
        return json_response({"ok": True})

    # -- URLs ------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server's base URL, e.g. ``http://127.0.0.1:54321``."""
        return self._http.url

    @property
    def host(self) -> str:
        """The interface the server listens on."""
        return self._http.host

    @property
    def port(self) -> int:
        """The port the server listens on (the one picked when 0 was asked)."""
        return self._http.port

    def acd_url(self, firm: str) -> str:
        """The i-Suite URL of a sandboxed firm as an accountant sees it in the browser (not the API)."""
        return f"{self.url}{self._acd.browser_path(firm)}"

    def acd_api_url(self, firm: str) -> str:
        """The API base URL of a sandboxed firm (routes add ``/v1/...``), e.g. ``http://…/acd/dupont/CNX/api``."""
        return f"{self.url}{self._acd.api_base(firm)}"

    def docs_url(self, doc_id: str) -> str:
        """The URL of a document in the document store."""
        return f"{self.url}/docs/{quote(doc_id, safe='')}"

    def app_url(self, name: str) -> str:
        """The base URL of the app mounted under ``/{name}``."""
        return f"{self.url}/{name.strip('/')}"

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Serve in a background thread; the socket is already listening when this returns."""
        self._http.start()

    def serve_forever(self) -> None:
        """Serve in the calling thread (the ``hubsync sandbox`` command); Ctrl-C stops it."""
        self._http.serve_forever()

    def stop(self) -> None:
        """Stop serving and close every connection."""
        self._http.stop()

    def __enter__(self) -> SandboxServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SandboxServer(url={self.url!r}, apps={sorted(self._apps)})"
