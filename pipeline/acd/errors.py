"""ACD i-Suite Expert errors, and the one table that sorts every answer into them (``AcdErrors``).

::

    HubsyncError
    ├── TransientError
    │   ├── ServerUnavailable        refused connection, reset, 502/503, a .NET 500 on a read (text kept)
    │   ├── ServerConsideredDown     the circuit breaker holds calls to a server that keeps failing
    │   ├── SessionNotOpen           "La connexion à la base du dossier n'est pas initialisée !" after a reopen
    │   ├── RateLimited *            429, honours Retry-After (seconds or a date)
    │   ├── AcdTimeout               a read timed out
    │   ├── MalformedResponse *      an answer that is not the contract's (HTML page, broken JSON, no envelope)
    │   ├── FecUnavailable           the FEC of a needed year cannot be read (periodeMultiExercice)
    │   ├── NotYetConfirmed          posted, not yet found in the FEC
    │   └── OutcomeUnknown
    │       ├── PostOutcomeUnknown   an entry post got no definitive answer: look it up in the FEC first
    │       └── UploadOutcomeUnknown a GED upload got no definitive answer: look it up by its name first
    ├── PermanentError
    │   ├── EntryRefused             ACD refused the entry; an unknown key keeps its key and French text
    │   │   ├── UnknownJournal, UnbalancedEntry, UnknownAccount, InactiveAccount, AnalyticSplitMissing,
    │   │   └── InvoiceNumberManagementOff, FiscalYearClosed, OutsideFiscalYears, LabelTooLong, InvalidEntryData
    │   ├── AcdRefused               a refusal outside entries (an unknown key, a 400 with a French text)
    │   ├── PostKeepsFailing         every post failed without landing, again and again
    │   ├── SubsidiaryCodeInvalid    a subsidiary code without the F…/C… prefix its kind needs
    │   ├── SubsidiaryCodeTooLong    a subsidiary code over 13 characters
    │   ├── DocumentTooLarge *       413 from the GED
    │   └── UnexpectedAnswer *       an answer the contract does not allow
    └── CustomerActionError
        ├── AuthenticationFailed *   wrong API code, password or CNX (authentificationInvalide)
        ├── AccountLocked            compteBloque: five failed logins lock the API code for ten minutes
        ├── DossierNotShared         403 on a dossier call: the dossier is not shared in i-Suite
        ├── DossierNotFound          404 "Dossier introuvable en comptabilité"
        ├── GedAccessDenied          403 on a GED route: DMS rights; or a filing-plan folder out of reach
        └── NotAnISuiteServer        no API answers at the address typed

    * shared with the other providers (``pipeline.errors``), importable from here, with ACD's hints (``HINTS``)
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from pipeline.acd.answers import SESSION_NOT_OPEN, envelope, plain_text
from pipeline.errors import AuthenticationFailed as AuthenticationFailed
from pipeline.errors import (
    CustomerActionError,
    HubsyncError,
    OutcomeUnknown,
    PermanentError,
    TransientError,
    provider_hint,
)
from pipeline.errors import DocumentTooLarge as DocumentTooLarge
from pipeline.errors import MalformedResponse as MalformedResponse
from pipeline.errors import RateLimited as RateLimited
from pipeline.errors import UnexpectedAnswer as UnexpectedAnswer
from pipeline.http import Failure, Sent

AUTHENTICATION_HINT = (
    "Check the API code and password created in ACD (Administration > i-Suite Expert Tools > API Access "
    "Management) and the CNX code, run `hubsync connect acd` again with the right ones, then replay."
)
GED_TOO_LARGE_HINT = "The ACD GED refuses files this large: attach a smaller scan and validate again."
HINTS: dict[type[HubsyncError], str] = {
    AuthenticationFailed: AUTHENTICATION_HINT,
    DocumentTooLarge: GED_TOO_LARGE_HINT,
}
"""ACD's hints for the shared classes: the table gives them to what it sorts; a raise elsewhere passes one."""


class ServerUnavailable(TransientError):
    """The firm's ACD server does not answer, or answers 5xx."""

    default_hint = "The firm's ACD server is off or failing. The hub keeps retrying; make sure the server stays on."


class SessionNotOpen(TransientError):
    """The token has no dossier open, even after the session was opened again."""

    default_hint = "ACD lost the dossier session; the hub opens it again and retries."


class AcdTimeout(TransientError):
    """The server took too long to answer a read."""


class FecUnavailable(TransientError):
    """The FEC of a fiscal year the hub needs cannot be read."""

    default_hint = (
        "ACD does not give the FEC of the entry's fiscal year (is the fiscal year defined in ACD?). The hub "
        "refreshes the dossier's fiscal years and tries again; it never posts again before it could look."
    )


class NotYetConfirmed(TransientError):
    """The posted entry is not yet in the FEC."""

    default_hint = "ACD writes new entries into the FEC asynchronously; the hub looks again shortly."


class PostOutcomeUnknown(OutcomeUnknown):
    """The post of an entry got no definitive answer."""


class UploadOutcomeUnknown(OutcomeUnknown):
    """A GED upload got no definitive answer."""

    default_hint = "The hub looks the document up by its unique name before it sends it again; nothing to do."


class EntryRefused(PermanentError):
    """ACD refused the entry (``codeRetour`` 0, whatever the HTTP status)."""

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


class InactiveAccount(EntryRefused):
    """An account marked ``CptInactif`` in ACD: it exists, no entry may use it."""

    default_hint = (
        "The account is inactive in ACD: reactivate it in the ACD file, or validate the entry on another account; "
        "then replay."
    )


class AnalyticSplitMissing(EntryRefused):
    """analytiqueCleRepartitionInexistante: a line on an analytic account without a split."""

    default_hint = (
        "The account has analytics turned on in ACD and the entry gave no analytic split. Add the split (sections "
        "and amounts) to the entry in the hub and validate it again, or give the account an automatic split key "
        "in ACD and replay."
    )


class LabelTooLong(EntryRefused):
    """libelleTropLong."""


class InvoiceNumberManagementOff(EntryRefused):
    """Invoice number on a journal whose ``NumeroFacture`` is false."""

    default_hint = (
        "Turn invoice-number management on in ACD: File > Settings > Entry > Invoice Number Management = YES; "
        "then replay."
    )


class FiscalYearClosed(EntryRefused):
    """exerciceCloture."""

    default_hint = "The entry's month belongs to a closed fiscal year in ACD: reopen it or date the entry later."


class OutsideFiscalYears(EntryRefused):
    """The entry's date is in no fiscal year of the dossier (periodeMultiExercice)."""

    default_hint = (
        "Create the fiscal year in the ACD file (or correct the entry's date), then replay; `hubsync refresh` "
        "reads the fiscal years again."
    )


class InvalidEntryData(EntryRefused):
    """donneesInvalides."""


class AcdRefused(PermanentError):
    """ACD refused a call with a reason the hub does not know; its key and French text are kept as they came."""

    default_hint = (
        "ACD gave a reason the hub does not know: read ACD's own words in the message, fix what it names in ACD or "
        "in the entry, then replay. Report the key if it keeps coming."
    )


class PostKeepsFailing(PermanentError):
    """The entry was posted again and again, every time without landing (looked up in the FEC in between)."""

    default_hint = (
        "ACD failed every time it was sent this entry, and the FEC shows it never landed. Read ACD's last answer "
        "in the message (often a French .NET error about the entry's data), fix the cause, then replay."
    )


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


class AccountLocked(CustomerActionError):
    """Too many failed logins: the API code is locked for ten minutes."""

    default_hint = (
        "ACD locked the API code after repeated wrong passwords. Wait ten minutes, connect again with the "
        "right password (`hubsync connect acd`), then replay."
    )


SHARING_CHECKLIST = (
    "Share the dossier in ACD: open the dossier's accounting, menu i-Suite Expert > Sharing Management, check every "
    "box so that the status at the top reads ACTIVE and the button at the bottom reads Deactivate; and do not "
    "restrict the API access with 'Define used files' (Administration > i-Suite Expert Tools > API Access "
    "Management)."
)


class DossierNotShared(CustomerActionError):
    """The dossier is not shared in i-Suite (403 on its first dossier call)."""

    default_hint = SHARING_CHECKLIST + " Then replay."


class DossierNotFound(CustomerActionError):
    """The dossier code is unknown to this server."""

    default_hint = "Check the dossier code of the client file (`hubsync connect acd --dossier …`), then replay."


class GedAccessDenied(CustomerActionError):
    """The API user's GED (DMS) rights do not reach the target folder."""

    default_hint = (
        "The ACD API user may not write to that GED folder (the journal's filing plan, or the root): a restriction "
        "set by the firm, or a section visible only for another kind of dossier. Ask ACD support to grant the "
        "rights (or change the journal's filing plan), run `hubsync refresh`, then replay."
    )


class NotAnISuiteServer(CustomerActionError):
    """No i-Suite Expert API answers at the address typed."""

    default_hint = (
        "Check the i-Suite URL (the address in the browser when logged into i-Suite, e.g. "
        "https://cabinet.fr/iSuiteExpert, or the API address ending in /api) and the CNX code (usually CNX or "
        "CNX followed by a number: DIA > Administration > i-Suite Expert Tools > i-Suite Expert settings)."
    )


BUSINESS_ERRORS: dict[str, type[HubsyncError]] = {
    "journalInexistant": UnknownJournal,
    "ecritureDesequilibree": UnbalancedEntry,
    "compteInexistant": UnknownAccount,
    "analytiqueCleRepartitionInexistante": AnalyticSplitMissing,
    "exerciceCloture": FiscalYearClosed,
    "periodeMultiExercice": OutsideFiscalYears,
    "libelleTropLong": LabelTooLong,
    "numeroFactureNonActive": InvoiceNumberManagementOff,
    "donneesInvalides": InvalidEntryData,
    "codeTiersInvalide": SubsidiaryCodeInvalid,
    "codeTiersTropLong": SubsidiaryCodeTooLong,
    "authentificationInvalide": AuthenticationFailed,
    "compteBloque": AccountLocked,
    "compteVerrouille": AccountLocked,
    "dossierIntrouvable": DossierNotFound,
}
BUSINESS_ERRORS_FOLDED = {key.casefold(): cls for key, cls in BUSINESS_ERRORS.items()}


def is_session_lost(status: int, body: bytes) -> bool:
    """ACD's answer to a dossier call on a token with no dossier open."""
    return status >= 500 and SESSION_NOT_OPEN in body.decode("utf-8", "replace")


@dataclass(frozen=True)
class AcdErrors:
    """ACD's error table: the envelope first (whatever the HTTP status), then the status; a transport failure
    by how much of the request left.

    ``ged``: a GED route (403 means rights, not sharing; an unanswered write is an upload); ``entry``: the entry
    post (an unknown refusal is ``EntryRefused``). A failure's ``write`` says the call may have changed something:
    a 5xx or a lost answer then hides a possible commit."""

    ged: bool = False
    entry: bool = False

    def __call__(self, failure: Failure) -> HubsyncError:
        """The error ``failure`` is, with ACD's hints."""
        sort = self._transport if failure.exception is not None else self._answer
        return provider_hint(sort(failure), HINTS)

    def _unknown(self) -> type[OutcomeUnknown]:
        return UploadOutcomeUnknown if self.ged else PostOutcomeUnknown

    def _answer(self, failure: Failure) -> HubsyncError:
        status = failure.status or 0
        write, ged, entry = failure.write, self.ged, self.entry
        code_retour, errors = envelope(failure.data())
        route = failure.path
        key = errors[0][0] if errors else ""
        words = "; ".join(f"{k}: {t}" if k else t for k, t in errors) if errors else plain_text(failure.body)
        detail = f"ACD answered {status} on {route}" + (f": {words}" if words else "")
        retry_after = failure.retry_after
        if status == 429:
            return RateLimited(detail, status=status, code=key or None, retry_after=retry_after)
        known = BUSINESS_ERRORS_FOLDED.get(key.casefold()) if key else None
        if known is not None and status < 500:
            return known(detail, status=status, code=key)
        if errors and status < 500 and status not in (401, 403, 404, 413):
            cls: type[HubsyncError] = EntryRefused if entry else AcdRefused
            return cls(detail, status=status, code=key or None, hint=_unknown_hint(key, cls))
        if status >= 500:
            if is_session_lost(status, failure.body):
                return SessionNotOpen(detail, status=status)
            if write and status != 503:
                # Only 503 says the request never ran; a 500 (a .NET failure, the database lost) or a gateway
                # error may come after the server committed the write: look it up before writing again.
                return self._unknown()(detail, status=status, code=key or None, retry_after=retry_after)
            return ServerUnavailable(detail, status=status, code=key or None, retry_after=retry_after)
        if status == 403:
            return (GedAccessDenied if ged else DossierNotShared)(detail, status=status, code=key or None)
        if status == 413:
            return DocumentTooLarge(detail, status=status, code=key or None)
        if status == 404:
            lowered = words.casefold()
            if "dossier" in lowered and "introuvable" in lowered:
                return DossierNotFound(detail, status=status, code=key or None)
            if ged and ("plan de classement" in lowered or "arborescence" in lowered):
                return GedAccessDenied(detail, status=status, code=key or None)
            return NotAnISuiteServer(detail, status=status)
        if status == 401:
            return ServerUnavailable(f"{detail} (after a fresh login)", status=status, code=key or None)
        if status in (200, 201):
            if write and code_retour is None:
                return self._unknown()(f"ACD answered {status} without its envelope on {route}", status=status)
            return MalformedResponse(f"ACD answered {status} with a body that is not the expected JSON on {route}")
        if status == 400 and not errors:
            cls = EntryRefused if entry else AcdRefused
            return cls(detail, status=status, hint=_unknown_hint("", cls))
        if status == 408:
            return AcdTimeout(detail, status=status)
        if status == 409 and ged:
            return UnexpectedAnswer(detail, status=status, code=key or "documentExisteDeja")
        return UnexpectedAnswer(detail, status=status, code=key or None)

    def _transport(self, failure: Failure) -> HubsyncError:
        # Before the request went out it is a plain outage; after, a write's outcome is unknown.
        exc, where = failure.exception, failure.path
        name = type(exc).__name__
        if failure.sent is Sent.NOTHING:
            return ServerUnavailable(f"cannot reach the ACD server ({name}) on {where}")
        if failure.write:
            return self._unknown()(f"the ACD server did not answer ({name}) on {where}")
        if isinstance(exc, httpx.TimeoutException):
            return AcdTimeout(f"the ACD server took too long to answer on {where}")
        return ServerUnavailable(f"the connection to the ACD server broke ({name}) on {where}")


def _unknown_hint(key: str, cls: type[HubsyncError]) -> str:
    what = f"a reason the hub does not know ({key})" if key else "a reason the hub does not know"
    if cls is EntryRefused:
        return (
            f"ACD refused the entry with {what}: read ACD's own words in the message, correct the entry in the hub or "
            "the ACD file, then replay."
        )
    return AcdRefused.default_hint.replace("a reason the hub does not know", what)


PLAIN = AcdErrors()
"""The table for every call but GED routes and the entry post."""
GED = AcdErrors(ged=True)
ENTRY = AcdErrors(entry=True)
