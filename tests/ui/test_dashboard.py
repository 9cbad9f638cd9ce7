"""The operators' dashboard in a real headless Chromium, against a real worker, Redis and the ACD sandbox."""

from __future__ import annotations

import os
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hubsync_sandbox.samples import document_ref, sample_entry, sample_event, tiny_pdf
from tests.conftest import ROOT, Hub
from tests.ui.conftest import login

pytestmark = pytest.mark.integration
FIRM, DOSSIER = "dupont", "DUPONT01"
DOC_TOKEN = "s3cr3t-doc-t0ken"


def _unknown_account(hub: Hub, n: int) -> str:
    return f"68{int(hub.run, 16) % 100:02d}{n:02d}"


def _dead_entry(hub: Hub, cf: str, n: int, account: str, with_document: bool = False) -> dict[str, Any]:
    """Emit an entry whose account is not in the ACD chart: it is dead-lettered as UnknownAccount."""
    entry = sample_entry("bank_transaction", n)
    entry["id"] = f"{entry['id']}_{hub.run}"
    entry["lines"][0]["account"] = account
    documents = []
    if with_document:
        doc_id = f"doc_ui_{n}_{hub.run}"
        data = tiny_pdf(f"ui {n}")
        info = hub.sandbox.docs.put(doc_id, data, content_type="application/pdf", filename="receipt.pdf")
        documents.append(document_ref(doc_id, f"{info['url']}?token={DOC_TOKEN}", data, "receipt", "receipt.pdf"))
    event = sample_event(cf, entry, documents=documents)
    hub.emit(event)
    return entry


def _dead_letters_of(hub: Hub, cf: str) -> list[Any]:
    return [d for d in hub.store.dead_letters.all("acd") if d.client_file_id == cf]


def _wait_dead(hub: Hub, cf: str, entries: list[dict[str, Any]]) -> None:
    records = hub.wait_states(cf, [e["id"] for e in entries])
    for rec in records.values():
        assert rec.state == "dead" and rec.last_error["error_class"] == "UnknownAccount", rec.last_error


def _filter(page: Any, **fields: str) -> None:
    form = page.get_by_role("search")
    for name, value in fields.items():
        control = form.locator(f"[name={name}]")
        if control.evaluate("el => el.tagName") == "SELECT":
            control.select_option(value)
        else:
            control.fill(value)
    form.get_by_role("button", name="Filter").click()
    page.wait_for_load_state()


def _rows(page: Any) -> list[str]:
    return page.locator("[data-testid=letters] tr[data-dead-letter]").evaluate_all(
        "rows => rows.map(r => r.dataset.deadLetter)"
    )


def test_operator_filters_opens_and_replays_a_dead_letter_until_it_is_confirmed_in_acd(
    hub: Hub, dashboard: str, page: Any
) -> None:
    # given two client files with dead letters, one of them an entry with an account missing from ACD
    cf, other = hub.cf("uione"), hub.cf("uiother")
    hub.connect_acd(cf)
    hub.connect_acd(other)
    account = _unknown_account(hub, 1)
    target = _dead_entry(hub, cf, 501, account, with_document=True)
    noise = _dead_entry(hub, other, 502, _unknown_account(hub, 2))
    _wait_dead(hub, cf, [target])
    _wait_dead(hub, other, [noise])
    (dl,) = _dead_letters_of(hub, cf)

    # when the operator logs in and filters by client file, error class and a search on the entry id
    login(page, dashboard, "alice")
    _filter(page, client_file=cf, error_class="UnknownAccount")
    assert _rows(page) == [dl.id]
    _filter(page, client_file="", q=target["id"])
    assert _rows(page) == [dl.id]

    # then the dead letter's page explains it, with the document URL's token masked
    page.get_by_role("link", name=dl.id).click()
    assert page.get_by_test_id("error-class").inner_text() == "UnknownAccount"
    assert page.get_by_test_id("step").inner_text() == dl.step
    assert "chart of accounts" in page.get_by_test_id("hint").inner_text()
    assert "UnknownAccount" in page.get_by_test_id("attempts").inner_text()
    event_text = page.get_by_test_id("event").inner_text()
    assert target["id"] in event_text and "token=[secure]" in event_text
    assert DOC_TOKEN not in page.content()
    assert page.get_by_test_id("state-acd").inner_text() == "dead"
    flower = page.get_by_role("link", name="the failed step's tasks")
    assert flower.get_attribute("href").startswith("http://flower.example.test:5555/tasks?name=hubsync.acd.")

    # when the accountant adds the account in ACD and the operator replays from the browser
    hub.sandbox.acd.add_account(FIRM, DOSSIER, "generaux", account, "Compte ajouté")
    page.get_by_role("button", name=re.compile(r"^Replay from ")).click()

    # then the replay is confirmed on the page, audited under the operator's name, and the entry lands once
    assert "replayed by alice" in page.get_by_role("status").inner_text()
    assert page.get_by_test_id("status").inner_text() == "replayed"
    audit = page.get_by_test_id("audit").inner_text()
    assert "alice" in audit and "replay" in audit
    rec = hub.wait_states(cf, [target["id"]], states=("confirmed",))[target["id"]]
    assert len(hub.acd_entries_with(FIRM, DOSSIER, rec.ack)) == 1
    page.reload()
    assert page.get_by_test_id("state-acd").inner_text() == "confirmed"
    assert page.get_by_role("button", name=re.compile(r"^Replay from ")).count() == 0
    # and the health page shows the client file's last success, and the other file's open dead letter
    page.get_by_role("link", name="Health").click()
    mine = page.locator(f"[data-testid=health] tr[data-client-file={cf}]").inner_text()
    assert "ready" in mine and "DUPONT01" in mine and re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", mine)
    theirs = page.locator(f"[data-testid=health] tr[data-client-file={other}]").inner_text()
    assert theirs.split("\t")[-2].strip() == "1", theirs
    assert page.get_by_test_id("depth-acd").inner_text().isdigit()


def test_bulk_replay_of_a_filter_clears_every_matching_dead_letter_in_one_action(
    hub: Hub, dashboard: str, page: Any, tmp_path: Path
) -> None:
    # given N dead letters in one client file (one missing account), another cause in the same client file
    # and the same cause in another client file
    n = 6
    cf, other = hub.cf("uibulk"), hub.cf("uikeep")
    hub.connect_acd(cf)
    hub.connect_acd(other)
    account = _unknown_account(hub, 3)
    entries = [_dead_entry(hub, cf, 510 + i, account, with_document=i == 0) for i in range(n)]
    bad_code = sample_entry("purchase", 520)
    bad_code["id"] = f"{bad_code['id']}_{hub.run}"
    bad_code["lines"][2]["counterparty"] = {"kind": "supplier", "code": "FSUPPLIERTOOLONG", "name": "Too Long"}
    hub.emit(sample_event(cf, bad_code))
    kept = _dead_entry(hub, other, 530, _unknown_account(hub, 4))
    _wait_dead(hub, cf, entries)
    _wait_dead(hub, other, [kept])
    assert hub.wait_states(cf, [bad_code["id"]])[bad_code["id"]].state == "dead"
    assert len(_dead_letters_of(hub, cf)) == n + 1

    login(page, dashboard, "alice")
    _filter(page, provider="acd", client_file=cf)
    assert len(_rows(page)) == n + 1
    assert page.get_by_test_id("groups").locator("tbody tr").count() == 2
    _screenshot(page, tmp_path)
    _filter(page, error_class="UnknownAccount")
    assert len(_rows(page)) == n

    # when the cause is fixed and the operator replays everything matching the filter, in one click
    hub.sandbox.acd.add_account(FIRM, DOSSIER, "generaux", account, "Compte ajouté")
    page.get_by_role("button", name=f"Replay all {n} matching").click()

    # then all N are replayed in that one action, the filter shows none left, the other file's stays open
    assert f"{n} replayed" in page.get_by_role("status").inner_text()
    assert _rows(page) == []
    assert [d.error_class for d in _dead_letters_of(hub, cf)] == ["SubsidiaryCodeTooLong"]
    assert len(_dead_letters_of(hub, other)) == 1
    records = hub.wait_states(cf, [e["id"] for e in entries], states=("confirmed",))
    for rec in records.values():
        assert len(hub.acd_entries_with(FIRM, DOSSIER, rec.ack)) == 1
    page.goto(f"{dashboard}/audit")
    assert page.get_by_test_id("audit").inner_text().count("alice") >= n


def _screenshot(page: Any, tmp_path: Path) -> None:
    """The README's picture: the list filtered on one client file (copied to docs/ when asked)."""
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000
    if os.environ.get("HUBSYNC_UPDATE_SCREENSHOT") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shot, ROOT / "docs" / "dashboard.png")


def test_viewer_sees_no_replay_button_and_a_forged_replay_is_refused(hub: Hub, dashboard: str, page: Any) -> None:
    # given a dead letter and a read-only user
    cf = hub.cf("uiview")
    hub.connect_acd(cf)
    entry = _dead_entry(hub, cf, 540, _unknown_account(hub, 5))
    _wait_dead(hub, cf, [entry])
    (dl,) = _dead_letters_of(hub, cf)
    login(page, dashboard, "victor")

    # then the list and the dead letter's page offer no replay or discard
    _filter(page, client_file=cf)
    assert _rows(page) == [dl.id]
    assert page.get_by_role("button", name=re.compile("Replay")).count() == 0
    page.get_by_role("link", name=dl.id).click()
    assert page.get_by_role("button", name=re.compile("Replay|Discard")).count() == 0

    # and a replay forged with the viewer's own valid session and CSRF token is refused
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    for path in (f"/dead-letters/{dl.id}/replay", "/replay-matching", f"/dead-letters/{dl.id}/discard"):
        response = page.request.post(
            f"{dashboard}{path}",
            form={"csrf_token": token, "client_file": cf, "reason": "forged"},
            headers={"Origin": dashboard},
            max_redirects=0,
        )
        assert response.status == 403, path
    assert hub.store.dead_letters.get(dl.id).status == "open"
    assert hub.store.dead_letters.get(dl.id).audit == []


class _Attacker(BaseHTTPRequestHandler):
    """Another site whose page posts a replay form to the dashboard as soon as it loads."""

    target = ""

    def do_GET(self) -> None:
        body = (
            "<!doctype html><html><body>"
            f'<form id="f" method="post" action="{self.target}"><input name="csrf_token" value="guessed"></form>'
            '<script>document.getElementById("f").submit()</script></body></html>'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return


def test_cross_site_post_is_refused(hub: Hub, dashboard: str, page: Any) -> None:
    # given a dead letter and an operator logged in to the dashboard in this browser
    cf = hub.cf("uicsrf")
    hub.connect_acd(cf)
    entry = _dead_entry(hub, cf, 550, _unknown_account(hub, 6))
    _wait_dead(hub, cf, [entry])
    (dl,) = _dead_letters_of(hub, cf)
    login(page, dashboard, "alice")
    page.goto(f"{dashboard}/dead-letters/{dl.id}")
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    replay_url = f"{dashboard}/dead-letters/{dl.id}/replay"

    # when POSTs arrive without the token, with a wrong one, or with the right one from a foreign origin
    refused = [
        page.request.post(replay_url, form={}, max_redirects=0),
        page.request.post(replay_url, form={"csrf_token": "wrong"}, max_redirects=0),
        page.request.post(
            replay_url, form={"csrf_token": token}, headers={"Origin": "https://evil.example"}, max_redirects=0
        ),
        page.request.post(
            replay_url, form={"csrf_token": token}, headers={"Sec-Fetch-Site": "cross-site"}, max_redirects=0
        ),
    ]
    # and a page on another site submits a replay form in the operator's browser
    _Attacker.target = replay_url
    attacker = ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    try:
        with page.expect_response(replay_url) as caught:
            page.goto(f"http://localhost:{attacker.server_address[1]}/")
        browser_post = caught.value
    finally:
        attacker.shutdown()

    # then every one is refused and the dead letter is untouched
    assert [r.status for r in refused] == [403, 403, 403, 403]
    assert browser_post.status == 403
    assert hub.store.dead_letters.get(dl.id).status == "open"
    # and the operator's own form still works
    page.goto(f"{dashboard}/dead-letters/{dl.id}")
    page.get_by_role("textbox", name="reason").fill("entered by hand in ACD")
    page.get_by_role("button", name="Discard").click()
    assert "discarded by alice" in page.get_by_role("status").inner_text()
    assert hub.store.dead_letters.get(dl.id).audit[-1]["reason"] == "entered by hand in ACD"


def test_login_is_required_and_replay_selected_replays_only_the_ticked_rows(
    hub: Hub, dashboard: str, page: Any
) -> None:
    # given three dead letters of one client file
    cf = hub.cf("uisel")
    hub.connect_acd(cf)
    account = _unknown_account(hub, 7)
    entries = [_dead_entry(hub, cf, 560 + i, account) for i in range(3)]
    _wait_dead(hub, cf, entries)
    letters = {d.entry_id: d.id for d in _dead_letters_of(hub, cf)}

    # then nothing is shown before logging in, and a wrong password is refused
    page.goto(f"{dashboard}/dead-letters/{letters[entries[0]['id']]}")
    assert page.get_by_role("button", name="Log in").is_visible()
    assert entries[0]["id"] not in page.content()
    page.get_by_label("User name").fill("alice")
    page.get_by_label("Password").fill("not-her-password")
    page.get_by_role("button", name="Log in").click()
    assert "Wrong user name or password" in page.get_by_role("alert").inner_text()

    # when the operator logs in, ticks two rows and replays the selection
    login(page, dashboard, "alice")
    _filter(page, client_file=cf)
    hub.sandbox.acd.add_account(FIRM, DOSSIER, "generaux", account, "Compte ajouté")
    chosen = [letters[entries[0]["id"]], letters[entries[2]["id"]]]
    for dl_id in chosen:
        page.get_by_label(f"select {dl_id}").check()
    page.get_by_role("button", name="Replay selected").click()

    # then exactly those two are replayed and land; the third stays open
    assert "2 replayed" in page.get_by_role("status").inner_text()
    assert _rows(page) == [letters[entries[1]["id"]]]
    records = hub.wait_states(cf, [entries[0]["id"], entries[2]["id"]], states=("confirmed",))
    assert all(len(hub.acd_entries_with(FIRM, DOSSIER, r.ack)) == 1 for r in records.values())
    assert hub.store.dead_letters.get(letters[entries[1]["id"]]).status == "open"
