"""Nobody gets in: after a small batch (ACD and Cegid Loop, dead letters, a post and a deposit dropped after
commit), no ACD password, Cegid Loop secret or subscription key, or live ACD token is anywhere an attacker or a
curious operator could read it — every Redis key and value of every type, every broker message still queued
(bodies decoded), the worker's log file, and the pages of the operators' dashboard; nor is a document URL's
signed token in the log or the pages."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from hubsync_sandbox import Fault
from hubsync_sandbox.acd import demo_acd_firms
from hubsync_sandbox.cegid import DEMO_API_KEY, DEMO_API_SECRET, DEMO_SUBSCRIPTION_KEY
from hubsync_sandbox.samples import document_ref, sample_entry, sample_event, tiny_pdf
from pipeline.secrets import unseal
from tests.conftest import Hub

pytestmark = pytest.mark.integration
ACD_FIRMS = {"dupont": "DUPONT01", "leroy": "LEROY01"}
DOC_TOKEN = "d0cT0ken-Signed-9f8e7d"  # a signed document URL's query: the worker needs it, nobody may read it


def _secrets(hub: Hub) -> dict[str, str]:
    """Every secret that must never show: ACD passwords, the Cegid secret and keys, the ACD tokens issued."""
    found = {f"ACD password of {f.name}": p for f in demo_acd_firms() for p in f.api_users.values()}
    found["Cegid Loop API secret"] = DEMO_API_SECRET
    found["Cegid Loop x-apikey"] = f"{DEMO_API_KEY}:{DEMO_API_SECRET}"
    found["Cegid Loop subscription key"] = DEMO_SUBSCRIPTION_KEY
    for firm in ACD_FIRMS:
        for token in hub.sandbox.acd._firm(firm).tokens:  # the sandbox's live tokens
            found[f"ACD token of {firm} {token[:4]}…"] = token
    return found


def _decoded(raw: bytes) -> Iterator[bytes]:
    """The value itself and, for a broker message, its base64 body decoded."""
    yield raw
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return
    if isinstance(message, list) and message:  # the unacked hash keeps [message, exchange, routing key]
        message = message[0]
    if isinstance(message, dict) and isinstance(message.get("body"), str):
        body = message["body"]
        if (message.get("properties") or {}).get("body_encoding") == "base64":
            yield base64.b64decode(body)
        else:
            yield body.encode()


def _redis_values(url: str) -> Iterator[tuple[str, bytes]]:
    """Every key name and every value of every type, as bytes."""
    r = redis.Redis.from_url(url)
    try:
        for key in r.scan_iter(count=1000):
            name = key.decode(errors="replace")
            yield f"key name {name}", key
            kind = r.type(key).decode()
            if kind == "string":
                values = [r.get(key) or b""]
            elif kind == "hash":
                values = [b for pair in r.hgetall(key).items() for b in pair]
            elif kind == "list":
                values = r.lrange(key, 0, -1)
            elif kind == "set":
                values = list(r.smembers(key))
            elif kind == "zset":
                values = [m for m, _ in r.zrange(key, 0, -1, withscores=True)]
            elif kind == "stream":
                values = [b for _, fields in r.xrange(key) for pair in fields.items() for b in pair]
            else:
                values = []
            for value in values:
                for n, form in enumerate(_decoded(value)):
                    yield (name if n == 0 else f"message body in {name}"), form
    finally:
        r.close()


def _leaks(secrets: dict[str, str], places: Iterator[tuple[str, bytes]]) -> list[str]:
    needles = {what: value.encode() for what, value in secrets.items()}
    return sorted({f"{what} in {where}" for where, data in places for what, n in needles.items() if n in data})


def _batch(hub: Hub) -> tuple[str, list[str]]:
    """A client file on ACD and Cegid Loop; entries with documents, one dead-lettered, one post dropped."""

    cf = hub.cf("secure")
    hub.connect_acd(cf, firm="leroy", dossier="LEROY01")
    dossier = f"SEC{hub.run}".upper()
    hub.connect_loop(cf, dossier, "Client secure")
    hub.sandbox.acd.set_fault("leroy", Fault(mode="drop_after_commit", route="compta/ecriture", count=1))
    ids = []
    for n in range(5):
        entry = sample_entry(("purchase", "sale", "expense_report", "bank_transaction")[n % 4], 300 + n)
        entry["id"] = f"ent_sec_{n}_{hub.run}"
        data = tiny_pdf(f"secure {n}")
        doc_id = f"doc_sec_{n}_{hub.run}"
        info = hub.sandbox.docs.put(doc_id, data, content_type="application/pdf", filename=f"s{n}.pdf")
        docs = [document_ref(doc_id, f"{info['url']}?token={DOC_TOKEN}", data, "receipt", f"s{n}.pdf")]
        if n == 4:
            entry["lines"][0]["account"] = "699999"  # dead-lettered at map: shows on the dashboard
        hub.emit(sample_event(cf, entry, documents=docs))
        ids.append(entry["id"])
    return cf, ids


def test_no_password_secret_or_token_in_redis_messages_logs_or_dashboard(hub: Hub, worker: Any) -> None:
    # given a small batch through ACD (one post dropped after commit, one entry dead-lettered) and Cegid Loop
    cf, ids = _batch(hub)
    in_flight = list(_redis_values(hub.env["HUBSYNC_REDIS_URL"]))  # while messages are still queued
    hub.wait_states(cf, ids)
    from tests.conftest import run_cli

    loop = hub.sandbox.app("cegid")
    loop.set_fault(Fault(mode="drop_after_commit", route="storeDocument", count=1))  # a Cegid dead letter too
    try:
        exported = run_cli(hub.env, "export", "cegid-loop", "--client-file", cf, "--wait", "--timeout", "60", "--json")
    finally:
        loop.clear_faults()
    assert exported.returncode == 1 and "need a look" in exported.stderr, exported.stderr  # the dropped deposit
    counts = json.loads(exported.stdout)["counts"]
    assert counts["exported"] >= 1 and counts["outcome_unknown"] == 1, counts
    secrets = _secrets(hub)
    assert any(what.startswith("ACD token") for what in secrets), "the batch should have logged in to ACD"
    # when every place they could leak to is read
    settled = list(_redis_values(hub.env["HUBSYNC_REDIS_URL"]))
    log_path = os.readlink(f"/proc/{worker.pid}/fd/1")
    with open(log_path, "rb") as fh:
        log = fh.read()
    # then none of them is there (and the scan did read queued messages' bodies)
    assert any(where.startswith("message body") for where, _ in in_flight)
    assert _leaks(secrets, iter(in_flight + settled)) == []
    # (a document's URL is kept in Redis, token included, since the worker fetches it; never in a log or a page)
    readable = {**secrets, "document URL token": DOC_TOKEN}
    assert _leaks(readable, iter([(f"worker log {log_path}", log)])) == []
    assert b"dl_" in log or b"succeeded" in log  # the log is the worker's, and it has content
    # and the dashboard's pages show none of them either
    assert _leaks(readable, _dashboard_pages(hub, cf)) == []


def _dashboard_pages(hub: Hub, cf: str) -> Iterator[tuple[str, bytes]]:
    from pipeline.dashboard.app import Wiring, create_app
    from pipeline.dashboard.auth import make_entry, parse_users

    app = create_app(
        Wiring(
            store=lambda: hub.store,
            users=parse_users(make_entry("sec", "viewer", "viewer-password-1")),
            enqueue=lambda *args: None,
            ingest=lambda store, raw: "",
        ),
        secret_key="test-secret-key",
    )
    client = app.test_client()
    with client.session_transaction() as session:
        session.update(user="sec", role="viewer", csrf="x")
    pages = ["/", "/health", "/audit", "/?status=closed"]
    pages += [f"/dead-letters/{d.id}" for d in hub.store.dead_letters.all() if d.client_file_id == cf]
    assert len(pages) > 4, "the batch should have left a dead letter to show"
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, (page, response.status_code)
        yield f"dashboard page {page}", response.data


def test_stored_connections_hold_no_clear_password_only_a_sealed_one(hub: Hub) -> None:
    # given client files connected to ACD with each firm's password
    for firm, dossier in ACD_FIRMS.items():
        cf = hub.cf(f"sealed_{firm}")
        hub.connect_acd(cf, firm=firm, dossier=dossier)
        password = next(f for f in demo_acd_firms() if f.name == firm).api_users["QONTO"]
        # when the stored connection hash is read as it sits in Redis
        raw = hub.store.r.hgetall(f"hubsync:conn:{cf}:acd")
        # then no field holds the password, and the sealed one opens only with the operator's key
        assert raw and all(password not in f"{k}{v}" for k, v in raw.items())
        assert raw["secret"].startswith("gAAAA")  # a Fernet token
        assert unseal(raw["secret"]).reveal() == password
