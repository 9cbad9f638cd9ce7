"""Cegid Loop errors, and the one table that sorts every answer into them (``loop_errors``).

::

    HubsyncError
    ├── TransientError                 retried, with backoff that honours Retry-After
    │   ├── LoopUnavailable            503; a request that never went out whole (refused or cut connection,
    │   │                              DNS, connect or pool timeout); 408; any 5xx on a read
    │   ├── RateLimited *              429: the gateway did not take the request
    │   ├── LoopTimeout                a read that got no answer in time (a read changes nothing)
    │   ├── MalformedResponse *        a read answered with something that is not the contract's JSON
    │   └── SpoolUnreadable            the spooled file could not be read while sending (fetched again)
    ├── PermanentError                 dead-lettered at once: the document breaks a rule
    │   ├── DocumentTooLarge *         over 50,000,000 bytes (checked before sending; 413)
    │   ├── UnsupportedFileType        415 from a gateway that checks types (the deposit step skips it)
    │   ├── DepositRefused             400 or another 4xx on a deposit: refused, nothing stored
    │   └── UnexpectedAnswer *         an answer the contract does not allow
    └── CustomerActionError            dead-lettered at once: somebody outside the hub must act
        ├── AuthenticationFailed *     401: wrong subscription key, API key or API secret
        ├── DossierAccessDenied        403: the API key is not linked to the dossier
        ├── UnknownDossier             no journal for the code: Loop would swallow every deposit
        ├── RouteNotFound              404 on a route: the URL is not Cegid Loop's API base
        └── DepositOutcomeUnknown      the deposit went out and its answer was lost: Loop may or may not
                                       hold it and cannot be asked, so only an operator may send it again

    * shared with the other providers (``pipeline.errors``), importable from here, with Loop's hints (``HINTS``)

Sent or not sent decides everything for a deposit, because Loop has no idempotency and no route that lists
what it holds: a request that never went out whole (the client knows when the last byte of the body left)
is retried like any outage, and 429 and 503 are the gateway saying it did not take it. Once the whole body
went out, a read timeout or a cut connection is ``DepositOutcomeUnknown``, and so are 500, 502 and 504: the
gateway answers 502 and 504 when the service behind it failed or was too slow *after* it forwarded the
request, and a 500 may come from a failure after the document was stored, so a second deposit could be a
second document in PIA — that is, an entry twice in the client's journals once PIA pre-fills them. A dead
letter costs an operator one look at PIA; a silent second copy costs the client's books.
"""

from __future__ import annotations

import httpx

from pipeline.errors import AuthenticationFailed as AuthenticationFailed
from pipeline.errors import CustomerActionError, HubsyncError, PermanentError, TransientError, provider_hint
from pipeline.errors import DocumentTooLarge as DocumentTooLarge
from pipeline.errors import MalformedResponse as MalformedResponse
from pipeline.errors import RateLimited as RateLimited
from pipeline.errors import UnexpectedAnswer as UnexpectedAnswer
from pipeline.http import Failure, Sent

MESSAGE_MAX_CHARS = 300
AUTHENTICATION_HINT = (
    "Check the API key and API secret in the administrator's account in CegidLife (and "
    "HUBSYNC_CEGID_SUBSCRIPTION_KEY, the hub's subscription key), run `hubsync connect cegid-loop` again, "
    "then replay."
)
TOO_LARGE_HINT = (
    "Cegid Loop takes documents up to 50,000,000 bytes: attach a smaller scan in the hub and validate the "
    "entry again, or discard this dead letter."
)
HINTS: dict[type[HubsyncError], str] = {AuthenticationFailed: AUTHENTICATION_HINT, DocumentTooLarge: TOO_LARGE_HINT}
"""Loop's hints for the shared classes: the table gives them to what it sorts; a raise elsewhere passes one."""


class LoopUnavailable(TransientError):
    """Cegid Loop is in maintenance (503), failing, or unreachable; the request did not get through."""

    default_hint = "Cegid Loop is unavailable; the hub keeps retrying. Nothing to do unless it lasts."


class LoopTimeout(TransientError):
    """Cegid Loop took too long to answer a read."""


class SpoolUnreadable(TransientError):
    """The document's spool file could not be read while it was being sent."""

    default_hint = "The hub fetches the document again and retries; nothing to do unless it lasts."


class UnsupportedFileType(PermanentError):
    """The file is not JPEG, PNG or PDF by its content."""

    default_hint = "Only JPEG, PNG and PDF files are exported to Cegid Loop; this one is skipped."


class DepositRefused(PermanentError):
    """Cegid Loop refused the deposit request (400 or another 4xx): nothing was stored."""

    default_hint = (
        "Cegid Loop refused the request itself (its message is above); nothing was stored. Report it with this "
        "dead letter; replay once the cause is fixed."
    )


class DossierAccessDenied(CustomerActionError):
    """The API key is valid but not linked to the dossier (403)."""

    default_hint = (
        "In CegidLife the firm administrator must give the API key access to this dossier, and in Loop Hub the "
        "hub must be declared for it (Type: Partenaire, Application, API Key, Email prestataire: see "
        "`hubsync connect cegid-loop`); then run `hubsync connect cegid-loop` again and replay."
    )


class UnknownDossier(CustomerActionError):
    """Cegid Loop has no dossier of that code for this key: a deposit there would be lost silently."""

    default_hint = (
        "Check the code dossier (the client's accounting file code) in Cegid Loop and run "
        "`hubsync connect cegid-loop` again with the right one; documents wait until then."
    )


class RouteNotFound(CustomerActionError):
    """A route answered 404: the connection's URL is not Cegid Loop's API base."""

    default_hint = (
        "Check the --url of `hubsync connect cegid-loop` (default https://api.cegid.com/loop-api-publiques), "
        "connect again, then replay."
    )


class DepositOutcomeUnknown(CustomerActionError):
    """A deposit went out whole and its answer was lost: Loop may or may not hold the document."""

    default_hint = (
        "Cegid Loop cannot be asked what it holds. Look for the file named above in the dossier's PIA deposit in "
        "Cegid Loop: if it is there, discard this dead letter (`hubsync dlq discard ID --reason 'in PIA'`: the "
        "document then counts as exported); if it is not, replay it (`hubsync dlq replay ID`) to send it again."
    )


def answer_message(failure: Failure) -> str:
    """The message an error answer carries, word for word (JSON ``message``, or a plain-text body), capped."""
    raw = failure.body
    body = failure.data()
    if isinstance(body, dict):
        for name in ("message", "Message", "error", "title", "detail"):
            value = body.get(name)
            if isinstance(value, str) and value.strip():
                return value.strip()[:MESSAGE_MAX_CHARS]
        return ""
    if isinstance(body, str):
        return body.strip()[:MESSAGE_MAX_CHARS]
    kind = failure.headers.get("Content-Type", "")
    if kind.startswith("text/plain") or (not kind and raw[:1] not in (b"<", b"")):
        return raw.decode("utf-8", "replace").strip()[:MESSAGE_MAX_CHARS]
    return ""


def dossier_is_unknown(message: str) -> bool:
    """True for Loop's own sentence for a code it does not know (``Le dossier X n'existe pas…``)."""
    text = message.lower().replace("\u2019", "'")  # a typographic apostrophe reads the same
    return "dossier" in text and ("n'existe pas" in text or "inexistant" in text)


def loop_errors(failure: Failure) -> HubsyncError:
    """Loop's error table: an answer by its status (a deposit is a ``write``), a transport failure by how much
    of the request left; with Loop's hints."""
    sort = _transport if failure.exception is not None else _answer
    return provider_hint(sort(failure), HINTS)


def _answer(failure: Failure) -> HubsyncError:
    status = failure.status or 0
    deposit = failure.write
    message = answer_message(failure)
    detail = f"Cegid Loop answered {status}" + (f" ({message})" if message else "") + f" on {failure.path}"
    if status == 401:
        return AuthenticationFailed(f"{detail}: wrong key or secret", status=status)
    if status == 403:
        return DossierAccessDenied(detail, status=status)
    if dossier_is_unknown(message) and status >= 400 and not (deposit and status >= 500):
        return UnknownDossier(detail, status=status)
    if status == 404:
        return RouteNotFound(detail, status=status)
    if status == 413:
        return DocumentTooLarge(detail, status=status)
    if status == 415:
        return UnsupportedFileType(detail, status=status)
    if status == 429:
        return RateLimited(detail, status=status, retry_after=failure.retry_after)
    if status == 503:
        return LoopUnavailable(detail, status=status, retry_after=failure.retry_after)
    if status == 408:
        # The server gave up reading the request: it stored nothing.
        return LoopUnavailable(detail, status=status, retry_after=failure.retry_after)
    if status >= 500:
        if deposit:
            return DepositOutcomeUnknown(
                f"{detail}, after the whole document was sent: the gateway or the service may have stored it",
                status=status,
            )
        return LoopUnavailable(detail, status=status, retry_after=failure.retry_after)
    if deposit and 400 <= status < 500:
        return DepositRefused(detail, status=status)
    return UnexpectedAnswer(detail, status=status)


def _transport(failure: Failure) -> HubsyncError:
    # A read changes nothing, so every failure of one is retried; a deposit by whether its body went out whole.
    name, where = type(failure.exception).__name__, failure.path
    if failure.sent is Sent.NOTHING:
        nothing = "; nothing was sent" if failure.write else ""
        return LoopUnavailable(f"cannot reach Cegid Loop ({name}) on {where}{nothing}")
    if not failure.write:
        if isinstance(failure.exception, httpx.TimeoutException):
            return LoopTimeout(f"Cegid Loop took too long to answer on {where}")
        return LoopUnavailable(f"the connection to Cegid Loop broke ({name}) on {where}")
    if failure.sent is Sent.PART:
        return LoopUnavailable(
            f"the connection to Cegid Loop broke while the document was being sent ({name}) on "
            f"{where}; it never went out whole, so Loop cannot have stored it"
        )
    timed_out = isinstance(failure.exception, httpx.TimeoutException)
    what = "no answer came in time" if timed_out else "the connection was cut"
    return DepositOutcomeUnknown(f"the document went out whole, then {what} ({name}) on {where}")
