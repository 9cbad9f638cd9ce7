"""Finding a firm's API from what the accountant typed (the browser address, or the API address itself).

Real servers put the API under different roots (``/iSuiteExpert/api``, ``/CNX/api``, ``/cnx/api``, a path
prefix in front), and the browser address is not always one of them. The candidates are derived from the
address typed, in order, and each is probed with the login call: the first one that answers the login with
JSON (200 with a ``UUID``, or ACD's JSON 401 envelope) is the API. Anything else (HTML, a 404, a redirect to
a login page, since redirects are never followed) means "not here". A JSON refusal of the password stops
the probe at once: a wrong password costs exactly one failed login, and it is never tried again.

A busy or failing server is not a wrong address: a 429, 502, 503 or 504 is asked again at the same base after
the wait its ``Retry-After`` gives (a few tries, a few seconds in all), and when no base answered the login
while one of them answered 429 or 5xx, the server is reported unavailable (try again later), not absent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from pipeline.acd.answers import ci_get, envelope
from pipeline.acd.errors import AUTHENTICATION_HINT, PLAIN, AccountLocked, NotAnISuiteServer, ServerUnavailable
from pipeline.errors import AuthenticationFailed, ErrorKind, HubsyncError
from pipeline.http import ERROR_BODY_MAX_BYTES, Answer, Sender, parse_json, retry_after
from pipeline.secrets import Secret

API_VERSION = "/v1"
LOGIN_ROUTE = "/v1/authentification"

BUSY_STATUSES = (429, 502, 503, 504)
"""Answers of a server that sheds load or whose back end is off: asked again at the same base."""
BUSY_TRIES_PER_BASE = 3
BUSY_WAIT_SECONDS = 1.0
"""The wait before asking again when the answer gives no ``Retry-After``."""
BUSY_WAIT_MAX_SECONDS = 5.0
"""A longer ``Retry-After`` is not waited for: connect stops and says when to try again."""
BUSY_BUDGET_SECONDS = 10.0
"""All the waiting one discovery may do."""
UNAVAILABLE_HINT = (
    "The firm's ACD server is busy or off right now; this says nothing against the URL or the CNX code. Run "
    "`hubsync connect acd` again in a few minutes; if it keeps failing, ask the firm whether its i-Suite server "
    "is on and reachable."
)


def normalise_url(url: str) -> str:
    """What was typed, with a scheme, without query, fragment or trailing slash (``…/api/v1`` becomes ``…/api``)."""
    text = url.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    path = parts.path.rstrip("/")
    if path.casefold().endswith("/api/v1"):
        path = path[: -len("/v1")]
    return f"{parts.scheme}://{parts.netloc}{path}"


def candidates(url: str, cnx: str) -> list[str]:
    """The API bases to probe, in order, deduplicated case-insensitively (the servers run on IIS)."""
    typed = normalise_url(url)
    parts = urlsplit(typed)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path
    cnx = cnx.strip().strip("/")
    out: list[str] = []
    if path.casefold().endswith("/api"):
        out.append(typed)
    out.append(f"{typed}/api")
    if path.count("/") >= 2:
        # a deployment under a path prefix: the typed address's parent, e.g. …/prefix/iSuiteExpert → …/prefix
        parent = origin + path.rsplit("/", 1)[0]
        if cnx:
            out.append(f"{parent}/{cnx}/api")
        out.append(f"{parent}/api")
    if cnx:
        out.append(f"{origin}/{cnx}/api")
    out.append(f"{origin}/iSuiteExpert/api")
    seen: set[str] = set()
    unique = []
    for base in out:
        if base.casefold() not in seen:
            seen.add(base.casefold())
            unique.append(base)
    return unique


def login_request(
    api_base: str, cnx: str, api_code: str, password: Secret, timeout: httpx.Timeout | None = None
) -> httpx.Request:
    """The login call (``POST {base}/v1/authentification``), with the client's timeouts."""
    return httpx.Request(
        "POST",
        f"{api_base}{LOGIN_ROUTE}",
        headers={"CNX": cnx},
        json={"Identifiant": api_code, "MotDePasse": password.reveal(), "CNX": cnx},
        extensions={"timeout": (timeout or httpx.Timeout(30.0)).as_dict()},
    )


class Reply(Protocol):
    """What the login's answer is read from: an ``httpx.Response`` in the auth flow, an ``Answer`` in discovery."""

    @property
    def status_code(self) -> int: ...

    @property
    def content(self) -> bytes: ...


def token_of(response: Reply) -> str | None:
    """The ``UUID`` of a successful login answer, or None."""
    if response.status_code != 200:
        return None
    token = ci_get(parse_json(response.content), "UUID")
    return token if isinstance(token, str) and token.strip() else None


def refusal(response: Reply, api_base: str, api_code: str) -> AuthenticationFailed | AccountLocked | None:
    """ACD's JSON refusal of a login, as the error to raise; None when the answer is not a JSON refusal (a 429
    or 5xx is never one, whatever its body: the password was not judged)."""
    if response.status_code >= 500 or response.status_code == 429:
        return None
    code, errors = envelope(parse_json(response.content))
    if not errors and code != 0:
        return None
    key, text = errors[0] if errors else ("", "")
    words = f"{key}: {text}" if key else text
    locked = key.casefold() in ("comptebloque", "compteverrouille") or "bloqu" in text.casefold()
    if locked or response.status_code == 423:
        return AccountLocked(
            f"ACD at {api_base} has locked API code {api_code!r} after repeated failed logins ({words})",
            status=response.status_code,
            code=key or "compteBloque",
        )
    return AuthenticationFailed(
        f"ACD at {api_base} refused the login of API code {api_code!r} ({words or 'no reason given'}); "
        "it is not tried again",
        status=response.status_code,
        code=key or "authentificationInvalide",
        hint=AUTHENTICATION_HINT,
    )


@dataclass
class Found:
    """The API base that answered, the token its login gave, and why the candidates before it were passed."""

    api_base: str
    token: str
    passed: list[tuple[str, str]] = field(default_factory=list)


def _why_not(answer: Answer) -> str:
    kind = answer.headers.get("Content-Type", "").split(";")[0] or "no content type"
    if 300 <= answer.status_code < 400:
        return f"redirect {answer.status_code} to {answer.headers.get('Location', '?')}"
    wait = retry_after(answer.headers)
    return f"{answer.status_code} {kind}" + (f", Retry-After {wait:g}s" if wait is not None else "")


def _is_busy(answer: Answer) -> bool:
    return answer.status_code == 429 or answer.status_code >= 500


def _probe(api: Sender, base: str, cnx: str, api_code: str, password: Secret) -> Answer:
    request = login_request(base, cnx, api_code, password, api.http.timeout)
    try:
        # every status is an answer here: only the body says whether this base is the API
        return api.send(request, ok=None, max_bytes=ERROR_BODY_MAX_BYTES)
    except HubsyncError as error:
        if error.kind is ErrorKind.TRANSIENT:
            raise ServerUnavailable(
                f"cannot reach {base}: {error.message}", hint=UNAVAILABLE_HINT, retry_after=error.retry_after
            ) from error
        raise


def discover(
    http: httpx.Client,
    url: str,
    cnx: str,
    api_code: str,
    password: Secret,
    sleep: Callable[[float], None] = time.sleep,
) -> Found:
    """Probe the candidates with the login call; the first JSON answer wins. Raises ``AuthenticationFailed``
    or ``AccountLocked`` (after one failed login, naming the base that refused), ``ServerUnavailable``
    when the host cannot be reached or a base answered busy (429, 5xx) and none answered the login,
    ``NotAnISuiteServer`` when no candidate answers like ACD."""
    api = Sender(http, name="ACD", errors=PLAIN)
    passed: list[tuple[str, str]] = []
    busy: list[tuple[str, int]] = []
    waited = 0.0
    for base in candidates(url, cnx):
        answer = _probe(api, base, cnx, api_code, password)
        for _ in range(BUSY_TRIES_PER_BASE - 1):
            if answer.status_code not in BUSY_STATUSES:
                break
            wait = retry_after(answer.headers)
            wait = BUSY_WAIT_SECONDS if wait is None else wait
            if wait > BUSY_WAIT_MAX_SECONDS or waited + wait > BUSY_BUDGET_SECONDS:
                break
            sleep(wait)
            waited += wait
            answer = _probe(api, base, cnx, api_code, password)
        token = token_of(answer)
        if token is not None:
            return Found(base, token, passed)
        refused = refusal(answer, base, api_code)
        if refused is not None:
            raise refused
        passed.append((base, _why_not(answer)))
        if _is_busy(answer):
            busy.append((base, answer.status_code))
    tried = "; ".join(f"{base} ({why})" for base, why in passed)
    if busy:
        raise ServerUnavailable(
            f"the ACD server at {busy[0][0]} is busy or off (it answered {busy[0][1]}"
            + (f", still after {waited:g}s of asking again" if waited else "")
            + f"), and no API answered the login; tried: {tried}",
            status=busy[0][1],
            hint=UNAVAILABLE_HINT,
        )
    raise NotAnISuiteServer(f"no ACD i-Suite API answered the login at any of: {tried}")
