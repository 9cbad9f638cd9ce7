"""Connecting a client file to a Cegid Loop dossier, and what the firm must then do by hand in Loop Hub.

``connect`` checks the key and the dossier code with a read (``GET /journal?codeDossier=&take=1``): Loop's
deposit route accepts any code and loses every document sent to a wrong one, so a code without journals (a
real dossier always has some) is refused, and so is a dossier the key does not reach (403). It then stores
the connection with the API secret and the subscription key sealed, and the partner e-mail built from the
firm's domain, which every deposit sends as ``uploadAuthor``. No public route creates, lists or checks the
partner folder: the firm declares the hub in Loop Hub, Loop creates the folder within hours, and if it has
not after 24 hours the firm disconnects and connects again. ``LoopHubSteps`` is that text, with the values.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from pipeline import runtime
from pipeline.cegid.client import DEFAULT_URL, LoopClient, LoopCredentials
from pipeline.cegid.errors import AuthenticationFailed, DossierAccessDenied, UnknownDossier
from pipeline.errors import CustomerActionError, NoConnection
from pipeline.secrets import Secret, seal, unseal
from pipeline.store import Connection, Store, now

PROVIDER = "cegid_loop"
CLI_NAME = "cegid-loop"
DEFAULT_PARTNER_LOCAL_PART = "qonto"
DEFAULT_APPLICATION_NAME = "Qonto"
PARTNER_DOMAIN_SUFFIX = ".onmicrosoft.com"
FOLDER_PATIENCE_HOURS = 24
_DOMAIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_LOCAL_PART = re.compile(r"^[A-Za-z0-9._+-]{1,64}$")


class InvalidSetting(CustomerActionError):
    """A connection setting that cannot be right (a domain with spaces, an empty code)."""


def partner_local_part() -> str:
    """The partner e-mail's local part: ``HUBSYNC_CEGID_PARTNER_LOCAL_PART``, default ``qonto``."""
    return os.environ.get("HUBSYNC_CEGID_PARTNER_LOCAL_PART") or DEFAULT_PARTNER_LOCAL_PART


def application_name() -> str:
    """The application name the firm types in Loop Hub: ``HUBSYNC_CEGID_APPLICATION_NAME``, default ``Qonto``."""
    return os.environ.get("HUBSYNC_CEGID_APPLICATION_NAME") or DEFAULT_APPLICATION_NAME


def partner_email(domain: str, local_part: str) -> str:
    """``<local-part>@<domain>.onmicrosoft.com``, the address the firm declares in Loop Hub."""
    return f"{local_part}@{domain}{PARTNER_DOMAIN_SUFFIX}"


def normalise_domain(domain: str) -> str:
    """The firm's Loop domain as a bare name (``cabinet-dupont``), refusing what cannot be one."""
    value = domain.strip().lower().removesuffix(PARTNER_DOMAIN_SUFFIX)
    if not _DOMAIN.match(value):
        raise InvalidSetting(
            f"{domain!r} is not a Loop domain: give the firm's domain as Cegid Loop shows it (letters, digits "
            "and hyphens, e.g. cabinet-dupont)",
            hint="Find the firm's domain in Cegid Loop and run `hubsync connect cegid-loop` again with --domain.",
        )
    return value


@dataclass
class LoopHubSteps:
    """What the firm types in Loop Hub by hand, and what to do if the partner folder does not appear."""

    client_file_id: str
    dossier: str
    domain: str
    api_key: str
    application: str
    partner_email: str
    url: str

    def lines(self) -> list[str]:
        """The steps as the firm reads them, with the exact values."""
        url = "" if self.url == DEFAULT_URL else f" --url {self.url}"
        again = (
            f"hubsync connect {CLI_NAME} --client-file {self.client_file_id}{url} --dossier {self.dossier} "
            f"--domain {self.domain} --api-key {self.api_key}"
        )
        return [
            "Now declare the hub in Cegid Loop, in Loop Hub (by hand: no API does it), with exactly:",
            "  Type:               Partenaire",
            f"  Application:        {self.application}",
            f"  API Key:            {self.api_key}, with the API secret generated with it in CegidLife",
            f"  Email prestataire:  {self.partner_email}",
            "Cegid Loop then creates the partner folder in the firm's Loop account by itself, within a few hours.",
            f"If it has not appeared {FOLDER_PATIENCE_HOURS} hours after the declaration, disconnect and connect "
            "again:",
            f"  hubsync disconnect {CLI_NAME} --client-file {self.client_file_id}",
            f"  {again}",
        ]


@dataclass
class ConnectReport:
    """What connect checked and stored, for the operator."""

    client_file_id: str
    dossier: str
    journals: list[dict[str, Any]] = field(default_factory=list)
    steps: LoopHubSteps | None = None
    connected_at: float = 0.0

    def lines(self) -> list[str]:
        """What ``hubsync connect cegid-loop`` prints: what was checked, then the Loop Hub steps."""
        journals = ", ".join(f"{j['code']} {j['libelle']}" for j in self.journals)
        return [
            f"Connected {self.client_file_id} to Cegid Loop dossier {self.dossier}: the key reads it "
            f"(journal {journals}).",
            "",
            *(self.steps.lines() if self.steps is not None else []),
            "",
            "Documents are exported every day at 20:00 UTC (or now: "
            f"hubsync export {CLI_NAME} --client-file {self.client_file_id}).",
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON form for ``--json`` (no secret: the API key is not one, the secret and subscription key are)."""
        steps = self.steps
        return {
            "client_file_id": self.client_file_id,
            "dossier": self.dossier,
            "journals": self.journals,
            "connected_at": self.connected_at,
            "loop_hub": None
            if steps is None
            else {
                "type": "Partenaire",
                "application": steps.application,
                "api_key": steps.api_key,
                "email_prestataire": steps.partner_email,
            },
            "instructions": steps.lines() if steps is not None else [],
        }


@dataclass
class LoopContext:
    """What a step needs to talk to one client file's Cegid Loop dossier."""

    store: Store
    client: LoopClient
    client_file_id: str
    dossier: str
    partner_email: str


def _client(creds: LoopCredentials) -> LoopClient:
    return LoopClient(runtime.http(PROVIDER), creds)


def context(store: Store, client_file_id: str) -> LoopContext:
    """Build the context of a client file's Cegid Loop connection, without any network call."""
    conn = store.connections.get(client_file_id, PROVIDER)
    if conn is None:
        raise NoConnection(
            f"client file {client_file_id} has no Cegid Loop connection",
            hint="Connect it (`hubsync connect cegid-loop`), then replay; its documents wait until then.",
        )
    p = conn.params
    creds = LoopCredentials(
        url=p["url"],
        subscription_key=unseal(p["subscription_key"]),
        api_key=p["api_key"],
        api_secret=unseal(conn.sealed_secret),
    )
    return LoopContext(store, _client(creds), client_file_id, p["dossier"], str(p.get("partner_email") or ""))


def check_dossier(client: LoopClient, dossier: str, api_key: str, steps: LoopHubSteps | None = None) -> list[Any]:
    """Read one journal of the dossier: the only public way to know that Loop would not swallow a deposit."""
    hub = (
        f" (Type: Partenaire, Application: {steps.application}, API Key: {api_key}, Email prestataire: "
        f"{steps.partner_email})"
        if steps is not None
        else ""
    )
    try:
        journals = client.journals(dossier, take=1)
    except AuthenticationFailed as exc:
        raise AuthenticationFailed(
            f"the API key {api_key!r}, its secret or the subscription key was refused — {exc.message}",
            status=exc.status,
            hint=exc.hint,
        ) from exc
    except DossierAccessDenied as exc:
        raise DossierAccessDenied(
            f"the API key {api_key!r} is not linked to dossier {dossier} — {exc.message}",
            status=exc.status,
            hint=(
                "In CegidLife, the firm administrator gives the API key access to this dossier; in Loop Hub the "
                f"hub is declared for it{hub}. Then run `hubsync connect cegid-loop` again."
            ),
        ) from exc
    except UnknownDossier as exc:
        raise _unknown(dossier, exc.message) from exc
    if not journals:
        raise _unknown(dossier, "GET /journal answered no journal, and a real dossier always has some")
    return journals


def _unknown(dossier: str, why: str) -> UnknownDossier:
    return UnknownDossier(
        f"Cegid Loop knows no dossier {dossier!r} for this key ({why}). Refused: Loop's deposit route accepts any "
        "code, and every document sent to an unknown one would be lost silently"
    )


def connect(
    store: Store,
    client_file_id: str,
    url: str,
    dossier: str,
    domain: str,
    api_key: str,
    api_secret: Secret,
    subscription_key: Secret,
    *,
    local_part: str | None = None,
    application: str | None = None,
) -> ConnectReport:
    """Check the key and the dossier code with a read, then store the connection (nothing is stored on refusal)."""
    dossier = dossier.strip()
    if not dossier:
        raise InvalidSetting("the code dossier is empty", hint="Give the client's code dossier in Cegid Loop.")
    bare_domain = normalise_domain(domain)
    local = local_part or partner_local_part()
    if not _LOCAL_PART.match(local):
        raise InvalidSetting(f"HUBSYNC_CEGID_PARTNER_LOCAL_PART {local!r} cannot start an e-mail address")
    steps = LoopHubSteps(
        client_file_id=client_file_id,
        dossier=dossier,
        domain=bare_domain,
        api_key=api_key,
        application=application or application_name(),
        partner_email=partner_email(bare_domain, local),
        url=url.rstrip("/"),
    )
    creds = LoopCredentials(url=steps.url, subscription_key=subscription_key, api_key=api_key, api_secret=api_secret)
    journals = check_dossier(_client(creds), dossier, api_key, steps)
    stamp = now()
    store.connections.save(
        Connection(
            provider=PROVIDER,
            client_file_id=client_file_id,
            params={
                "url": steps.url,
                "dossier": dossier,
                "domain": bare_domain,
                "api_key": api_key,
                "subscription_key": seal(subscription_key),
                "partner_email": steps.partner_email,
                "application": steps.application,
                "connected_at": stamp,
            },
            sealed_secret=seal(api_secret),
            status="ready",
            status_message=(
                f"declare {steps.application} in Loop Hub with Email prestataire {steps.partner_email}; the "
                f"partner folder appears within hours; if not after {FOLDER_PATIENCE_HOURS} h, disconnect and "
                "connect again"
            ),
        )
    )
    shown = [{"code": j.get("code"), "libelle": j.get("libelle")} for j in journals]
    return ConnectReport(client_file_id, dossier, shown, steps, stamp)


@dataclass
class Disconnected:
    """What ``disconnect`` removed and what it kept."""

    client_file_id: str
    dossier: str
    connected_at: float
    records: int
    pending: int

    def lines(self) -> list[str]:
        """What the operator reads."""
        return [
            f"Disconnected {self.client_file_id} from Cegid Loop dossier {self.dossier}.",
            "  removed: the connection (URL, dossier, API key, partner e-mail) with its sealed API secret and "
            "subscription key",
            f"  kept: {self.records} document record(s) and their history, the deposit ledger included"
            + (
                f"; {self.pending} document(s) still wait for an export and leave with the next connection"
                if self.pending
                else ""
            ),
            f"  in Loop Hub, the declaration stays until the firm removes it; connect again with `hubsync connect "
            f"{CLI_NAME}`",
        ]


def disconnect(store: Store, client_file_id: str) -> Disconnected | None:
    """Remove a client file's Cegid Loop connection, keeping its records; None when there was none."""
    conn = store.connections.delete(client_file_id, PROVIDER)
    if conn is None:
        return None
    return Disconnected(
        client_file_id=client_file_id,
        dossier=str(conn.params.get("dossier", "")),
        connected_at=float(conn.params.get("connected_at") or conn.created_at),
        records=len(store.records.ids(PROVIDER, client_file_id)),
        pending=len(store.loop.pending(client_file_id)),
    )
