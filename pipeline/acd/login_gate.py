"""One login at a time per ACD API code, and never a password ACD already refused.

ACD locks an API code for ten minutes after five failed logins in a row. Many workers on many machines
may need a token at the same moment; without this gate, a changed password would make each of them try
once and lock the firm out. The gate is a lock shared through Redis, and a refused password is remembered
(as a keyed fingerprint, never in clear) until the client file is connected again.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

from pipeline.acd.client import AcdCredentials, LoginGate
from pipeline.acd.errors import AUTHENTICATION_HINT, AccountLocked, AuthenticationFailed
from pipeline.config import settings
from pipeline.secrets import fingerprint
from pipeline.stepkit import deferred_while_busy
from pipeline.store import Store

REFUSED_TTL_SECONDS = 30 * 24 * 3600


def _key(creds: AcdCredentials) -> str:
    return hashlib.sha256("|".join(creds.key).encode()).hexdigest()[:16]


def login_gate(store: Store, creds: AcdCredentials) -> LoginGate:
    """The gate every pipeline login to this server and API code goes through."""

    @contextlib.contextmanager
    def gate() -> Iterator[None]:
        timeout = settings().http_timeout_seconds
        # a login and the session opened right after it: two calls, each up to the timeout
        lock = store.locks.hold(f"acd-login:{_key(creds)}", ttl_seconds=2 * timeout + 10, wait_seconds=timeout + 5)
        with deferred_while_busy(lock, "another worker is logging in to this ACD server"):
            if store.acd.refused_password(_key(creds)) == fingerprint(creds.password):
                raise AuthenticationFailed(
                    f"ACD refused API code {creds.api_code!r} with this password earlier; no new login is tried "
                    "until the client file is connected again",
                    status=401,
                    code="authentificationInvalide",
                    hint=AUTHENTICATION_HINT,
                )
            try:
                yield
            except (AuthenticationFailed, AccountLocked):
                store.acd.refuse_password(_key(creds), fingerprint(creds.password), REFUSED_TTL_SECONDS)
                raise

    return gate


def forget_refusal(store: Store, creds: AcdCredentials) -> None:
    """A login succeeded by hand (``connect``): let the workers log in again."""
    store.acd.forget_refusal(_key(creds))
