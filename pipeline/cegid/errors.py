"""Cegid Loop errors, and the one table that sorts every answer into them.

::

    HubsyncError
    ├── TransientError
    │   ├── LoopUnavailable          503 (maintenance), other 5xx on a read, refused or reset connection
    │   ├── RateLimited              429, honours Retry-After
    │   ├── LoopTimeout              a read timed out
    │   ├── MalformedResponse        an answer that is not the contract's JSON
    │   ├── NotYetListed             deposited, not yet found again in the partner folder
    │   └── OutcomeUnknown
    │       └── DepositOutcomeUnknown a deposit got no definitive answer: look it up by name before sending again
    ├── PermanentError
    │   ├── DocumentTooLarge         413: over 20 MiB
    │   ├── UnsupportedFileType      415: not JPEG, PNG or PDF (the deposit step marks the document skipped)
    │   ├── DocumentExists           409 on a deposit: a document of that name is in the folder (looked up)
    │   ├── FolderExists             409 on a folder creation: adopted by name
    │   └── UnexpectedAnswer         an answer the contract does not allow
    └── CustomerActionError
        ├── AuthenticationFailed     401: wrong subscription key, API key or secret
        ├── DossierAccessDenied      403: Qonto is not declared in Loop Hub for the dossier
        └── DossierNotFound          404: unknown dossier code (or partner folder)

``UnsupportedFileType``, ``DocumentExists`` and ``FolderExists`` are answers the steps handle themselves;
they only reach a dead letter if a step forgets to.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from pipeline.errors import CustomerActionError, HubsyncError, OutcomeUnknown, PermanentError, TransientError

LOOP_HUB_FIELDS = (
    "Type: Partenaire, Application: Qonto, API Key: the Cegid Loop API key and secret, "
    "Email prestataire: the address given by Qonto for the firm's domain"
)


class LoopUnavailable(TransientError):
    """Cegid Loop is in maintenance (503), failing, or unreachable."""

    default_hint = "Cegid Loop is unavailable; the hub keeps retrying. Nothing to do unless it lasts."


class RateLimited(TransientError):
    """Cegid Loop sheds load (429)."""


class LoopTimeout(TransientError):
    """Cegid Loop took too long to answer a read."""


class MalformedResponse(TransientError):
    """The answer is not the JSON the contract describes."""


class NotYetListed(TransientError):
    """The deposited document does not show in its partner folder yet."""

    default_hint = "Cegid Loop lists new documents shortly after the deposit; the hub looks again."


class DepositOutcomeUnknown(OutcomeUnknown):
    """A deposit got no definitive answer: it may be in the folder."""

    default_hint = "The hub looks the document up by name in the partner folder before it deposits again."


class DocumentTooLarge(PermanentError):
    """Cegid Loop refuses files over 20 MiB (413)."""

    default_hint = "Cegid Loop takes documents up to 20 MiB: attach a smaller scan in the hub, then replay."


class UnsupportedFileType(PermanentError):
    """Cegid Loop refused the file's content: not JPEG, PNG or PDF (415)."""

    default_hint = "Only JPEG, PNG and PDF files are exported to Cegid Loop; this one is skipped."


class DocumentExists(PermanentError):
    """A document of that file name is already in the partner folder (409)."""


class FolderExists(PermanentError):
    """A partner folder of that name already exists (409)."""


class UnexpectedAnswer(PermanentError):
    """An answer the contract does not allow."""


class AuthenticationFailed(CustomerActionError):
    """Cegid Loop refused the subscription key, the API key or the API secret (401)."""

    default_hint = (
        "Wrong key or secret: check the API key and API secret in the administrator's account in CegidLife "
        "(and HUBSYNC_CEGID_SUBSCRIPTION_KEY), run `hubsync connect cegid-loop` again, then replay."
    )


class DossierAccessDenied(CustomerActionError):
    """The API key is not linked to the dossier: Qonto is not declared in Loop Hub for it (403)."""

    default_hint = (
        f"In Cegid Loop, declare Qonto in the Loop Hub of this dossier ({LOOP_HUB_FIELDS}); "
        "then run `hubsync connect cegid-loop` again and replay."
    )


class DossierNotFound(CustomerActionError):
    """Cegid Loop does not know the dossier code in this domain (404)."""

    default_hint = (
        "Check the code dossier and the domain of the firm in Cegid Loop, run `hubsync connect cegid-loop` "
        "again with the right ones, then replay."
    )


def _json(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None


def retry_after(response: httpx.Response) -> float | None:
    """The ``Retry-After`` seconds of an answer, when it gives a number."""
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


def error_from_response(response: httpx.Response, *, write: bool = False) -> HubsyncError:
    """Sort an answer that is not a success into the error tree (``write``: the answer to a deposit)."""
    status = response.status_code
    body = _json(response)
    message = body.get("message") if isinstance(body, dict) else None
    route = response.request.url.path if response.request is not None else ""
    detail = f"Cegid Loop answered {status}" + (f" ({message})" if message else "") + f" on {route}"
    if status == 401:
        return AuthenticationFailed(f"{detail}: wrong key or secret", status=status)
    if status == 403:
        return DossierAccessDenied(
            f"{detail}: the API key has no access to the dossier; fill in the Loop Hub fields {LOOP_HUB_FIELDS}",
            status=status,
        )
    if status == 404:
        return DossierNotFound(detail, status=status)
    if status == 409:
        cls: type[HubsyncError] = DocumentExists if write else FolderExists
        return cls(detail, status=status)
    if status == 413:
        return DocumentTooLarge(detail, status=status)
    if status == 415:
        return UnsupportedFileType(detail, status=status)
    if status == 429:
        return RateLimited(detail, status=status, retry_after=retry_after(response))
    if status == 503:
        return LoopUnavailable(detail, status=status, retry_after=retry_after(response))
    if status >= 500:
        if write:
            # Anything but 503 (maintenance, nothing done) may hide a deposit Loop committed.
            return DepositOutcomeUnknown(detail, status=status, retry_after=retry_after(response))
        return LoopUnavailable(detail, status=status, retry_after=retry_after(response))
    if status == 408:
        return LoopTimeout(detail, status=status)
    return UnexpectedAnswer(detail, status=status)


def error_from_exception(exc: httpx.HTTPError, *, write: bool = False) -> HubsyncError:
    """Sort a transport failure: before the request went out it is an outage; after, a deposit is unknown."""
    where = _where(exc)
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return LoopUnavailable(f"cannot reach Cegid Loop ({type(exc).__name__}) on {where}")
    if write:
        return DepositOutcomeUnknown(f"Cegid Loop did not answer the deposit ({type(exc).__name__}) on {where}")
    if isinstance(exc, httpx.TimeoutException):
        return LoopTimeout(f"Cegid Loop took too long to answer on {where}")
    return LoopUnavailable(f"the connection to Cegid Loop broke ({type(exc).__name__}) on {where}")


def _where(exc: httpx.HTTPError) -> str:
    try:
        return str(exc.request.url.path)
    except RuntimeError:
        return "Cegid Loop"
