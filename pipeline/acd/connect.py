"""Connecting a client file to an ACD dossier: check every step of the firm's setup, then keep the
connection (password sealed) and the dossier's subsidiary accounts."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from pipeline import runtime
from pipeline.acd.client import TOKENS, AcdClient, AcdCredentials
from pipeline.acd.errors import DossierNotFound, DossierNotShared
from pipeline.acd.login_gate import forget_refusal
from pipeline.secrets import Secret, seal
from pipeline.store import Connection, P, Store

PROVIDER = "acd"


@dataclass
class ConnectReport:
    """What connect found, for the operator."""

    client_file_id: str
    dossier: str
    title: str = ""
    journals: list[dict[str, Any]] = field(default_factory=list)
    general_accounts: int = 0
    client_accounts: int = 0
    supplier_accounts: int = 0
    warnings: list[str] = field(default_factory=list)
    ready: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON form for ``--json``."""
        return {
            "client_file_id": self.client_file_id,
            "dossier": self.dossier,
            "title": self.title,
            "journals": [j.get("Code") for j in self.journals],
            "general_accounts": self.general_accounts,
            "client_accounts": self.client_accounts,
            "supplier_accounts": self.supplier_accounts,
            "warnings": self.warnings,
            "ready": self.ready,
        }


def dossier_scope(url: str, dossier: str) -> str:
    """The identity of an ACD dossier (server + code), in which ACK and subsidiary codes are unique."""
    return hashlib.sha256(f"{url.rstrip('/')}|{dossier}".encode()).hexdigest()[:16]


def connect(
    store: Store,
    client_file_id: str,
    url: str,
    cnx: str,
    api_code: str,
    dossier: str,
    password: Secret,
    ged_folder: int = 0,
) -> ConnectReport:
    """Log in, check the dossier and its reference data, and store the connection. Raises the ACD error tree."""
    creds = AcdCredentials(url=url.rstrip("/"), cnx=cnx, api_code=api_code, password=password)
    client = AcdClient(runtime.http(PROVIDER), creds, TOKENS)
    client.login()
    forget_refusal(store, creds)
    report = ConnectReport(client_file_id=client_file_id, dossier=dossier)
    listed = {d.get("Id"): d for d in client.dossiers()}
    info = listed.get(dossier)
    if info is None:
        raise DossierNotFound(
            f"dossier {dossier} is not among the firm's dossiers ({', '.join(sorted(map(str, listed))) or 'none'})"
        )
    report.title = str(info.get("Titre") or "")
    if info.get("PartageISuite") is False:
        raise DossierNotShared(f"dossier {dossier} is not shared in i-Suite", status=403, code="droitsInsuffisants")
    report.journals = client.journals(dossier)
    report.general_accounts = len(client.accounts(dossier, "generaux"))
    clients = client.accounts(dossier, "clients")
    suppliers = client.accounts(dossier, "fournisseurs")
    report.client_accounts, report.supplier_accounts = len(clients), len(suppliers)
    if report.general_accounts == 0:
        report.warnings.append(
            "the chart of accounts is empty: finish it in ACD before syncing entries (see the ACD checklist)"
        )
        report.ready = False
    store.save_connection(
        Connection(
            provider=PROVIDER,
            client_file_id=client_file_id,
            params={"url": creds.url, "cnx": cnx, "api_code": api_code, "dossier": dossier, "ged_folder": ged_folder},
            sealed_secret=seal(password),
            status="ready" if report.ready else "incomplete",
            status_message="; ".join(report.warnings),
        )
    )
    codes = [str(a.get("Code")) for a in clients + suppliers if a.get("Code")]
    if codes:
        store.r.sadd(f"{P}:ref:acd:{dossier_scope(creds.url, dossier)}:tiers", *codes)
    return report
