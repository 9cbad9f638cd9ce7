"""The error tree every provider's errors hang from.

Every failure the pipeline meets is one of three kinds, and the kind alone decides what happens next::

    HubsyncError                 kind        what happens
    ├── TransientError           transient   retried with capped, jittered backoff inside the retry window
    │   ├── ServerConsideredDown transient   the circuit breaker holds calls to a server that keeps failing
    │   ├── Deferred             transient   not a failure: run again shortly (lock held, index lag)
    │   ├── OutcomeUnknown       transient   a write may have landed: looked up before it is sent again
    │   ├── RateLimited          transient   429: the server shed the request, honours Retry-After
    │   └── MalformedResponse    transient   an answer that is not the contract's (HTML, broken JSON)
    ├── PermanentError           permanent   dead-lettered at once: the input breaks a rule
    │   ├── DocumentTooLarge     permanent   a file over the provider's size limit
    │   └── UnexpectedAnswer     permanent   an answer the contract does not allow
    └── CustomerActionError      customer    dead-lettered at once: somebody must fix a setting first
        └── AuthenticationFailed customer    the provider refused the hub's credentials

Each class carries the HTTP status and provider error code when there is one, and a ``hint`` written for
the accountant or operator who reads the dead letter. The classes under the three kinds that every provider
meets are defined here once; each provider's error module draws them in its own tree and gives them its own
hints (``HINTS``, applied by its error table with ``provider_hint``, or ``hint=`` at a raise).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import TypeVar


class ErrorKind(StrEnum):
    """What a failure calls for."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"
    CUSTOMER = "customer"


class HubsyncError(Exception):
    """Base of every error the pipeline classifies."""

    kind: ErrorKind = ErrorKind.PERMANENT
    default_hint: str = ""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        hint: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.hint = hint if hint is not None else self.default_hint
        self.retry_after = retry_after

    @property
    def error_class(self) -> str:
        """The class name operators filter on."""
        return type(self).__name__

    def to_dict(self) -> dict[str, object]:
        """A JSON-safe description, for records and dead letters."""
        return {
            "error_class": self.error_class,
            "kind": str(self.kind),
            "message": self.message,
            "status": self.status,
            "code": self.code,
            "hint": self.hint,
        }


class TransientError(HubsyncError):
    """Worth retrying: the other side is off, overloaded or slow."""

    kind = ErrorKind.TRANSIENT
    default_hint = "Retried automatically; nothing to do unless it lasts."


class OutcomeUnknown(TransientError):
    """A write was sent and no answer came back: it may have landed."""

    default_hint = "The hub looks the entry up before it sends it again; nothing to do."


class ServerConsideredDown(TransientError):
    """Calls are held back because the server failed repeatedly; a probe will tell when it is back."""

    default_hint = "The server looks off; entries wait and leave as soon as a probe succeeds."


class Deferred(TransientError):
    """Not a failure: the step must simply run a little later (a lock is held, an index is catching up)."""


class PermanentError(HubsyncError):
    """The input breaks a rule; retrying cannot help."""

    kind = ErrorKind.PERMANENT
    default_hint = "Correct the entry in the hub, validate it again, or replay once the cause is fixed."


class CustomerActionError(HubsyncError):
    """A setting outside the hub must change (password, sharing, rights)."""

    kind = ErrorKind.CUSTOMER
    default_hint = "Fix the setting named in the message, then replay."


class RetryWindowExhausted(TransientError):
    """A transient failure lasted longer than the configured retry window."""

    default_hint = (
        "The server kept failing for longer than the retry window. Check that it is on and reachable, then replay."
    )


class InvalidEvent(PermanentError):
    """An ``entry.validated`` event that breaks the contract."""

    default_hint = "Fix the event at its source (or the JSON line) and emit it again; replay re-checks it."


class NoConnection(CustomerActionError):
    """The event's client file has no provider connected."""

    default_hint = "Connect the client file to a provider (hubsync connect …), then replay."


class RateLimited(TransientError):
    """The server sheds load (429); ``retry_after`` is the wait it asked for."""


class MalformedResponse(TransientError):
    """The answer is not what the contract describes (an HTML page, broken JSON, a missing envelope)."""


class DocumentTooLarge(PermanentError):
    """The provider refuses a file over its size limit."""

    default_hint = "The provider refuses documents this large: attach a smaller scan in the hub and validate again."


class UnexpectedAnswer(PermanentError):
    """An answer the contract does not allow."""


class AuthenticationFailed(CustomerActionError):
    """The provider refused the hub's credentials."""

    default_hint = "Check the credentials the provider gave the hub, connect the client file again, then replay."


E = TypeVar("E", bound=HubsyncError)


def provider_hint(error: E, hints: Mapping[type[HubsyncError], str]) -> E:
    """``error`` with its provider's hint for its class, unless it was raised with a hint of its own."""
    hint = hints.get(type(error))
    if hint is not None and error.hint == type(error).default_hint:
        error.hint = hint
    return error
