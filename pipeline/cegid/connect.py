"""Connecting a client file to a Cegid Loop dossier, and keeping its "Qonto" partner folder.

``connect`` checks access (explaining a 401 or a 403), makes sure the partner folder exists, creating it
once, and stores the connection with the API secret and the subscription key sealed.

When the folder disappears later (somebody deleted it in Loop), the next export recreates it before it
deposits anything (``ensure_folder``, also called by a deposit that meets a 404), and says so in the
connection's status message, which ``hubsync status`` shows; documents exported before stay wherever Loop
keeps them (there is no delete route) and are not deposited again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline import runtime
from pipeline.cegid.client import FOLDER_NAME, LoopClient, LoopCredentials
from pipeline.cegid.errors import AuthenticationFailed, DossierAccessDenied, FolderExists, MalformedResponse
from pipeline.errors import Deferred, NoConnection
from pipeline.secrets import Secret, seal, unseal
from pipeline.store import Connection, LockBusy, Store

PROVIDER = "cegid_loop"
FOLDER_LOCK_TTL_SECONDS = 60.0


@dataclass
class ConnectReport:
    """What connect found, for the operator."""

    client_file_id: str
    dossier: str
    name: str = ""
    folder_id: str = ""
    folder_created: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON form for ``--json``."""
        return {
            "client_file_id": self.client_file_id,
            "dossier": self.dossier,
            "name": self.name,
            "folder": FOLDER_NAME,
            "folder_id": self.folder_id,
            "folder_created": self.folder_created,
        }


@dataclass
class LoopContext:
    """What a step needs to talk to one client file's Cegid Loop dossier."""

    store: Store
    client: LoopClient
    client_file_id: str
    dossier: str
    folder_id: str


def _client(creds: LoopCredentials) -> LoopClient:
    return LoopClient(runtime.http(PROVIDER), creds)


def context(store: Store, client_file_id: str) -> LoopContext:
    """Build the context of a client file's Cegid Loop connection, without any network call."""
    conn = store.connection(client_file_id, PROVIDER)
    if conn is None:
        raise NoConnection(f"client file {client_file_id} has no Cegid Loop connection")
    p = conn.params
    creds = LoopCredentials(
        url=p["url"],
        subscription_key=unseal(p["subscription_key"]),
        api_key=p["api_key"],
        api_secret=unseal(conn.sealed_secret),
        domain=p["domain"],
    )
    return LoopContext(store, _client(creds), client_file_id, p["dossier"], str(p.get("folder_id", "")))


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _find_or_create_folder(client: LoopClient, dossier: str) -> tuple[str, bool]:
    """The id of the dossier's "Qonto" partner folder, created when missing; True when this call created it."""
    for folder in client.partner_folders(dossier):
        if folder.get("nom") == FOLDER_NAME and folder.get("id"):
            return str(folder["id"]), False
    try:
        return str(client.create_partner_folder(dossier, FOLDER_NAME)["id"]), True
    except FolderExists:
        pass  # created meanwhile (another hub process, or by hand): adopt it
    for folder in client.partner_folders(dossier):
        if folder.get("nom") == FOLDER_NAME and folder.get("id"):
            return str(folder["id"]), False
    raise MalformedResponse(f"Cegid Loop says a folder {FOLDER_NAME!r} exists but does not list it")


def connect(
    store: Store,
    client_file_id: str,
    url: str,
    dossier: str,
    domain: str,
    api_key: str,
    api_secret: Secret,
    subscription_key: Secret,
) -> ConnectReport:
    """Check access to the dossier, make sure the partner folder exists, and store the connection."""
    creds = LoopCredentials(
        url=url.rstrip("/"), subscription_key=subscription_key, api_key=api_key, api_secret=api_secret, domain=domain
    )
    client = _client(creds)
    report = ConnectReport(client_file_id=client_file_id, dossier=dossier)
    try:
        info = client.dossier(dossier)
    except AuthenticationFailed as exc:
        raise AuthenticationFailed(
            f"Cegid Loop refused the API key {api_key!r} or its secret (or the subscription key): wrong key or secret",
            status=exc.status,
        ) from exc
    except DossierAccessDenied as exc:
        raise DossierAccessDenied(
            f"the API key {api_key!r} has no access to dossier {dossier}: Qonto is not declared in the dossier's "
            "Loop Hub",
            status=exc.status,
        ) from exc
    report.name = str(info.get("nom") or "")
    folder_id, created = _find_or_create_folder(client, dossier)
    report.folder_id, report.folder_created = folder_id, created
    store.save_connection(
        Connection(
            provider=PROVIDER,
            client_file_id=client_file_id,
            params={
                "url": creds.url,
                "dossier": dossier,
                "domain": domain,
                "api_key": api_key,
                "subscription_key": seal(subscription_key),
                "folder_id": folder_id,
                "folder_name": FOLDER_NAME,
            },
            sealed_secret=seal(api_secret),
            status="ready",
            status_message=f"partner folder {FOLDER_NAME} {'created' if created else 'found'} ({folder_id})",
        )
    )
    return report


def ensure_folder(ctx: LoopContext) -> tuple[str, bool]:
    """Make sure the connection's partner folder still exists, recreating it once if it disappeared.

    Returns the folder id and True when it changed; the change is written to the connection and its
    status message, so every later step and ``hubsync status`` see it.
    """
    store = ctx.store
    try:
        with store.lock(f"cegid_loop:folder:{ctx.client_file_id}", FOLDER_LOCK_TTL_SECONDS, wait_seconds=30):
            conn = store.connection(ctx.client_file_id, PROVIDER)
            if conn is None:
                raise NoConnection(f"client file {ctx.client_file_id} has no Cegid Loop connection")
            current = str(conn.params.get("folder_id", ""))
            listed = {str(f.get("id")) for f in ctx.client.partner_folders(ctx.dossier)}
            if current and current in listed:
                changed = current != ctx.folder_id
                ctx.folder_id = current
                return current, changed
            folder_id, created = _find_or_create_folder(ctx.client, ctx.dossier)
            conn.params["folder_id"] = folder_id
            conn.params["folder_replaced_at"] = _stamp()
            conn.status_message = (
                f"partner folder {FOLDER_NAME} ({current or 'none'}) had disappeared from Cegid Loop; "
                f"{'recreated' if created else 'found another'} on {_stamp()} ({folder_id}); documents exported "
                "before it disappeared are not deposited again"
            )
            store.save_connection(conn)
            ctx.folder_id = folder_id
            return folder_id, True
    except LockBusy as exc:
        raise Deferred("another worker is checking the partner folder", retry_after=2.0) from exc
