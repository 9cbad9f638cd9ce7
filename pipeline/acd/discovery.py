"""Finding a firm's API from what the accountant typed (the browser address, or the API address itself).

Real servers put the API under different roots (``/iSuiteExpert/api``, ``/CNX/api``, ``/cnx/api``, a path
prefix in front), and the browser address is not always one of them. The candidates are derived from the
address typed, in order, and each is probed with the login call: the first one that answers the login with
JSON (200 with a ``UUID``, or ACD's JSON 401 envelope) is the API. Anything else (HTML, a 404, a redirect to
a login page, since redirects are never followed) means "not here". A JSON refusal of the password stops
the probe at once: a wrong password costs exactly one failed login, and it is never tried again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from pipeline.acd.answers import ci_get, envelope, parse_json
from pipeline.acd.errors import (
    AccountLocked,
    AuthenticationFailed,
    NotAnISuiteServer,
    ServerUnavailable,
    error_from_exception,
)
from pipeline.secrets import Secret

API_VERSION = "/v1"
LOGIN_ROUTE = "/v1/authentification"


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


def token_of(response: httpx.Response) -> str | None:
    """The ``UUID`` of a successful login answer, or None."""
    if response.status_code != 200:
        return None
    token = ci_get(parse_json(response.content), "UUID")
    return token if isinstance(token, str) and token.strip() else None


def refusal(response: httpx.Response, api_base: str, api_code: str) -> AuthenticationFailed | AccountLocked | None:
    """ACD's JSON refusal of a login, as the error to raise; None when the answer is not a JSON refusal."""
    if response.status_code >= 500:
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
    )


@dataclass
class Found:
    """The API base that answered, the token its login gave, and why the candidates before it were passed."""

    api_base: str
    token: str
    passed: list[tuple[str, str]] = field(default_factory=list)


def _why_not(response: httpx.Response) -> str:
    kind = response.headers.get("Content-Type", "").split(";")[0] or "no content type"
    if 300 <= response.status_code < 400:
        return f"redirect {response.status_code} to {response.headers.get('Location', '?')}"
    return f"{response.status_code} {kind}"


def discover(http: httpx.Client, url: str, cnx: str, api_code: str, password: Secret) -> Found:
    """Probe the candidates with the login call; the first JSON answer wins. Raises ``AuthenticationFailed``
    or ``AccountLocked`` (after one failed login, naming the base that refused), ``ServerUnavailable``
    when the host cannot be reached, ``NotAnISuiteServer`` when no candidate answers like ACD."""
    passed: list[tuple[str, str]] = []
    for base in candidates(url, cnx):
        try:
            response = http.send(login_request(base, cnx, api_code, password, http.timeout), follow_redirects=False)
        except httpx.HTTPError as exc:
            error = error_from_exception(exc)
            if isinstance(error, ServerUnavailable):
                raise ServerUnavailable(f"cannot reach {base}: {error.message}") from exc
            raise error from exc
        token = token_of(response)
        if token is not None:
            return Found(base, token, passed)
        refused = refusal(response, base, api_code)
        if refused is not None:
            raise refused
        passed.append((base, _why_not(response)))
    tried = "; ".join(f"{base} ({why})" for base, why in passed)
    raise NotAnISuiteServer(f"no ACD i-Suite API answered the login at any of: {tried}")
