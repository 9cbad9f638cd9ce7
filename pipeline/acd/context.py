"""What a step needs to talk to one client file's ACD dossier: its connection's credentials (password
unsealed), a client bound to the dossier (its own token, its own session, the login gate every worker shares)
and the circuit breaker of the firm's server. Built without any network call."""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pipeline import runtime
from pipeline.acd.client import AcdClient, AcdCredentials
from pipeline.acd.errors import (
    AUTHENTICATION_HINT,
    AcdTimeout,
    AuthenticationFailed,
    MalformedResponse,
    PostOutcomeUnknown,
    ServerUnavailable,
    UploadOutcomeUnknown,
)
from pipeline.acd.login_gate import login_gate
from pipeline.acd.tokens import TokenStore
from pipeline.breaker import Breaker
from pipeline.config import settings
from pipeline.errors import HubsyncError, NoConnection
from pipeline.secrets import unseal
from pipeline.store import Store

PROVIDER = "acd"
T = TypeVar("T")
BREAKER_ERRORS = (ServerUnavailable, AcdTimeout, MalformedResponse, PostOutcomeUnknown, UploadOutcomeUnknown)


def dossier_scope(server: str, dossier: str) -> str:
    """The identity of an ACD dossier (server + code), in which ACK and subsidiary codes are unique."""
    return hashlib.sha256(f"{server.rstrip('/')}|{dossier}".encode()).hexdigest()[:16]


@dataclass
class AcdContext:
    """What a step needs to talk to one client file's ACD dossier."""

    store: Store
    client: AcdClient
    dossier: str
    scope: str
    api_base: str
    ged_folder: int
    breaker: Breaker

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ACD through the firm's circuit breaker."""
        self.breaker.before_call()
        try:
            result = fn(*args, **kwargs)
        except BREAKER_ERRORS:
            self.breaker.failure()
            raise
        except HubsyncError:
            self.breaker.success()
            raise
        self.breaker.success()
        return result

    def fetch_fec(self, year: int) -> str:
        """Read the dossier's FEC of ``year`` (with the long FEC timeout)."""
        return self.call(self.client.fec, year, settings().acd_fec_timeout_seconds)


def api_base_of(params: dict[str, Any]) -> str:
    """The API base a connection speaks to (connections made before discovery used ``{url}/api``)."""
    base = params.get("api_base") or str(params.get("url", "")).rstrip("/") + "/api"
    return str(base).rstrip("/")


def scope_of(params: dict[str, Any]) -> str:
    """The dossier scope of a connection: kept from its first connect, so ACK codes stay unique in the dossier."""
    return str(params.get("scope") or dossier_scope(str(params.get("url", "")), str(params.get("dossier", ""))))


def breaker_name(params: dict[str, Any]) -> str:
    """The circuit breaker of the firm's server."""
    return f"acd:{api_base_of(params).casefold()}"


_TOKENS: weakref.WeakKeyDictionary[Store, TokenStore] = weakref.WeakKeyDictionary()


def tokens(store: Store) -> TokenStore:
    """This process's view of the shared tokens (one per store, so its copies live as long as the process)."""
    found = _TOKENS.get(store)
    if found is None:
        found = _TOKENS.setdefault(store, TokenStore(store))
    return found


def credentials(store: Store, client_file_id: str) -> tuple[AcdCredentials, dict[str, Any]]:
    """A client file's ACD credentials (password unsealed) and connection parameters."""
    conn = store.connections.get(client_file_id, PROVIDER)
    if conn is None:
        raise NoConnection(f"client file {client_file_id} has no ACD connection")
    if conn.status == "auth_failed":
        raise AuthenticationFailed(
            f"ACD refused the credentials of client file {client_file_id} earlier ({conn.status_message}); "
            "no new login is tried until it is connected again",
            hint=AUTHENTICATION_HINT,
        )
    p = conn.params
    creds = AcdCredentials(
        api_base=api_base_of(p), cnx=p["cnx"], api_code=p["api_code"], password=unseal(conn.sealed_secret)
    )
    return creds, p


def context(store: Store, client_file_id: str) -> AcdContext:
    """Build the context of a client file's ACD connection, without any network call."""
    creds, p = credentials(store, client_file_id)
    s = settings()
    dossier = str(p["dossier"])
    return AcdContext(
        store=store,
        client=AcdClient(runtime.http(PROVIDER), creds, dossier, tokens(store), gate=login_gate(store, creds)),
        dossier=dossier,
        scope=scope_of(p),
        api_base=creds.api_base,
        ged_folder=int(p.get("ged_folder", 0)),
        breaker=Breaker(
            store,
            breaker_name(p),
            threshold=s.breaker_threshold,
            cooldown_seconds=s.breaker_cooldown_seconds,
            probe_ttl_seconds=s.http_timeout_seconds + 5,
        ),
    )
