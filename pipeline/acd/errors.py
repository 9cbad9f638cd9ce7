"""ACD i-Suite Expert errors, and the one table that sorts every answer into them.

::

    HubsyncError
    ├── TransientError
    │   ├── ServerUnavailable        refused connection, reset, 5xx (the firm's server is off or failing)
    │   ├── ServerConsideredDown     the circuit breaker holds calls to a server that keeps failing
    │   ├── RateLimited              429, honours Retry-After
    │   ├── AcdTimeout               a read timed out
    │   ├── MalformedResponse        an answer that is not the contract's JSON (HTML page, broken JSON)
    │   ├── NotYetConfirmed          posted, not yet found by its ACK code (indexing lag)
    │   └── OutcomeUnknown
    │       └── PostOutcomeUnknown   an entry post got no definitive answer: look it up before posting again
    ├── PermanentError
    │   ├── EntryRefused             a business error of POST ecriture (one subclass per ACD code)
    │   │   ├── UnknownJournal, UnbalancedEntry, UnknownAccount, LabelTooLong,
    │   │   └── InvoiceNumberManagementOff, FiscalYearClosed, InvalidEntryData
    │   ├── SubsidiaryCodeInvalid    a subsidiary code without the F…/C… prefix its kind needs
    │   ├── SubsidiaryCodeTooLong    a subsidiary code over 13 characters
    │   ├── DocumentTooLarge         413 from the GED
    │   └── UnexpectedAnswer         an answer the contract does not allow
    └── CustomerActionError
        ├── AuthenticationFailed     wrong API code or password
        ├── AccountLocked            five failed logins: ACD locks the API code for ten minutes
        ├── DossierNotShared         403: the dossier is not shared in i-Suite
        ├── DossierNotFound          404 dossierIntrouvable
        ├── GedAccessDenied          403 on a GED upload: DMS rights
        └── NotAnISuiteServer        the URL or CNX code does not answer like an i-Suite server
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from pipeline.errors import (
    CustomerActionError,
    HubsyncError,
    OutcomeUnknown,
    PermanentError,
    TransientError,
)


class ServerUnavailable(TransientError):
    """The firm's ACD server does not answer, or answers 5xx."""

    default_hint = "The firm's ACD server is off or failing. The hub keeps retrying; make sure the server stays on."


class RateLimited(TransientError):
    """The server sheds load (429)."""


class AcdTimeout(TransientError):
    """The server took too long to answer a read."""


class MalformedResponse(TransientError):
    """The answer is not the JSON the contract describes."""


class NotYetConfirmed(TransientError):
    """The posted entry is not yet findable by its ACK code."""

    default_hint = "ACD indexes new entries asynchronously; the hub looks again shortly."


class PostOutcomeUnknown(OutcomeUnknown):
    """The post of an entry got no definitive answer."""


class EntryRefused(PermanentError):
    """ACD refused the entry (HTTP 200, codeRetour 0)."""

    default_hint = "Correct the entry (or the ACD file) as the message says, then replay."


class UnknownJournal(EntryRefused):
    """journalInexistant."""

    default_hint = "Create the journal in the ACD file, or validate the entry on an existing journal; then replay."


class UnbalancedEntry(EntryRefused):
    """ecritureDesequilibree."""

    default_hint = "Debits and credits must be equal: correct the entry in the hub and validate it again."


class UnknownAccount(EntryRefused):
    """compteInexistant."""

    default_hint = "Add the account to the ACD chart of accounts (or fix the entry's account), then replay."


class LabelTooLong(EntryRefused):
    """libelleTropLong."""


class InvoiceNumberManagementOff(EntryRefused):
    """numeroFactureNonActive."""

    default_hint = (
        "Turn invoice-number management on in ACD: File > Settings > Entry > Invoice Number Management = YES; "
        "then replay."
    )


class FiscalYearClosed(EntryRefused):
    """exerciceCloture."""

    default_hint = "The entry's month belongs to a closed fiscal year in ACD: reopen it or date the entry later."


class InvalidEntryData(EntryRefused):
    """donneesInvalides."""


class SubsidiaryCodeInvalid(PermanentError):
    """A supplier code must start with F, a client code with C."""

    default_hint = (
        "Subsidiary codes start with F for a supplier and C for a client: fix the counterparty code in the hub "
        "and validate the entry again."
    )


class SubsidiaryCodeTooLong(PermanentError):
    """ACD subsidiary codes have at most 13 characters."""

    default_hint = (
        "ACD subsidiary codes have at most 13 characters (longer ones are refused, never cut): shorten the "
        "counterparty code in the hub and validate the entry again."
    )


class DocumentTooLarge(PermanentError):
    """The GED refuses files over 25 MiB."""

    default_hint = "The ACD GED takes files up to 25 MiB: attach a smaller scan and validate again."


class UnexpectedAnswer(PermanentError):
    """An answer the contract does not allow."""


class AuthenticationFailed(CustomerActionError):
    """Wrong API code or password."""

    default_hint = (
        "Check the API code and password created in ACD (Administration > i-Suite Expert Tools > API Access "
        "Management), run `hubsync connect acd` again with the right ones, then replay."
    )


class AccountLocked(CustomerActionError):
    """Too many failed logins: the API code is locked for ten minutes."""

    default_hint = (
        "ACD locked the API code after repeated wrong passwords. Wait ten minutes, connect again with the "
        "right password (`hubsync connect acd`), then replay."
    )


class DossierNotShared(CustomerActionError):
    """The dossier is not shared in i-Suite (403)."""

    default_hint = (
        "Share the dossier in ACD: open its accounting, i-Suite Expert > Sharing Management, check every box "
        "so the status reads ACTIVE; then replay."
    )


class DossierNotFound(CustomerActionError):
    """The dossier code is unknown to this server."""

    default_hint = "Check the dossier code of the client file (`hubsync connect acd --dossier …`), then replay."


class GedAccessDenied(CustomerActionError):
    """The API user's GED (DMS) rights do not reach the target folder."""

    default_hint = (
        "The ACD API user may not write to that GED section: a restriction set by the firm, or a section "
        "visible only for another kind of dossier. Ask ACD support to grant the rights, then replay."
    )


class NotAnISuiteServer(CustomerActionError):
    """The URL or CNX code does not lead to an i-Suite Expert server."""

    default_hint = (
        "Check the i-Suite URL (the prefix of the address in the browser when logged into i-Suite, ending in "
        "/iSuiteExpert) and the CNX code (usually CNX or CNX followed by a number)."
    )


BUSINESS_ERRORS: dict[str, type[HubsyncError]] = {
    "journalInexistant": UnknownJournal,
    "ecritureDesequilibree": UnbalancedEntry,
    "compteInexistant": UnknownAccount,
    "libelleTropLong": LabelTooLong,
    "numeroFactureNonActive": InvoiceNumberManagementOff,
    "exerciceCloture": FiscalYearClosed,
    "donneesInvalides": InvalidEntryData,
    "codeTiersInvalide": SubsidiaryCodeInvalid,
    "codeTiersTropLong": SubsidiaryCodeTooLong,
    "authentificationInvalide": AuthenticationFailed,
    "compteVerrouille": AccountLocked,
    "dossierIntrouvable": DossierNotFound,
}


def envelope_errors(body: Any) -> list[dict[str, str]]:
    """The ``listeErreurs`` of an envelope, or an empty list."""
    if isinstance(body, dict) and isinstance(body.get("listeErreurs"), list):
        return [e for e in body["listeErreurs"] if isinstance(e, dict)]
    return []


def _json(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


def error_from_response(response: httpx.Response, *, write: bool = False, ged: bool = False) -> HubsyncError:
    """Sort an answer that is not a success into the error tree."""
    status = response.status_code
    body = _json(response)
    errors = envelope_errors(body)
    code = errors[0].get("erreur") if errors else None
    text = errors[0].get("description") if errors else None
    route = response.request.url.path if response.request is not None else ""
    detail = f"ACD answered {status}" + (f" {code}: {text}" if code else "") + f" on {route}"
    if status == 429:
        return RateLimited(detail, status=status, code=code, retry_after=_retry_after(response))
    if status >= 500:
        if write and status not in (502, 503):
            # 502/503 mean the firm's server is off (the contract); any other 5xx, a gateway timeout
            # above all, can hide a write the server committed: look it up before writing again.
            return PostOutcomeUnknown(detail, status=status, code=code, retry_after=_retry_after(response))
        return ServerUnavailable(detail, status=status, code=code, retry_after=_retry_after(response))
    if status == 403:
        cls: type[HubsyncError] = GedAccessDenied if ged else DossierNotShared
        return cls(detail, status=status, code=code)
    if status == 413:
        return DocumentTooLarge(detail, status=status, code=code)
    if code in BUSINESS_ERRORS:
        return BUSINESS_ERRORS[code](detail, status=status, code=code)
    if status == 404 and not errors:
        return NotAnISuiteServer(detail, status=status)
    if status == 200 and body is not None and not errors and write:
        return PostOutcomeUnknown(f"ACD answered 200 without its envelope on {route}", status=status)
    if body is None or (status == 200 and not errors):
        if write:
            return PostOutcomeUnknown(f"ACD answered {status} with a body that is not JSON on {route}", status=status)
        return MalformedResponse(f"ACD answered {status} with a body that is not the expected JSON on {route}")
    if status in (401, 408):
        return ServerUnavailable(detail, status=status, code=code)
    return UnexpectedAnswer(detail, status=status, code=code)


def error_from_exception(exc: httpx.HTTPError, *, write: bool = False) -> HubsyncError:
    """Sort a transport failure: before the request went out it is a plain outage; after, a write is unknown."""
    where = str(exc.request.url.path) if _has_request(exc) else "ACD"
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return ServerUnavailable(f"cannot reach the ACD server ({type(exc).__name__}) on {where}")
    if write:
        return PostOutcomeUnknown(f"the ACD server did not answer ({type(exc).__name__}) on {where}")
    if isinstance(exc, httpx.TimeoutException):
        return AcdTimeout(f"the ACD server took too long to answer on {where}")
    return ServerUnavailable(f"the connection to the ACD server broke ({type(exc).__name__}) on {where}")


def _has_request(exc: httpx.HTTPError) -> bool:
    try:
        exc.request  # noqa: B018 - raises RuntimeError when the error has no request
    except RuntimeError:
        return False
    return True
