"""A store written by an earlier version keeps working after an upgrade.

``tests/data/upgrade/`` holds a Redis dump made by ``make_dump.py`` with the code of the commit its manifest names
(a real worker, beat and the command line against the sandboxes), and the sandboxes' state at that moment. Each
test here loads that RDB into a private redis-server, stands the sandboxes up again on the same address (every
URL the store keeps points there), runs a worker of today's code with the same secret key, and looks as an
operator would: ``hubsync status``, ``entry``, ``dlq``, ``export``, ``reconcile``, and what ACD and Cegid Loop hold.
The store's Python API may change; its keys, packed records, counters and messages must not.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data" / "upgrade"
# The test key the dump's passwords, secrets and tokens are sealed with (never a deployment's).
SECRET_KEY = "W-cv14bG-thYKkgWuaVNasUSIJBlvoXhKwtWQXqbsjE="
ACK_IN_LABEL = re.compile(r"\(#([A-Z0-9]{4})#\)$")
WAIT_SECONDS = 90.0
# Longer than a chain's countdowns here: a post started by mistake would have landed by then.
QUIET_SECONDS = 3.0


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / "manifest.json").read_text(encoding="utf-8"))
    assert data["secret_key_sha256"] == hashlib.sha256(SECRET_KEY.encode()).hexdigest(), (
        "the dump's secrets are sealed with another key than this test's SECRET_KEY"
    )
    return data


class Upgraded:
    """The dump stood up again with today's code: its Redis, the sandboxes, the command line, a worker."""

    def __init__(self, manifest: dict[str, Any], redis_url: str, sandbox: Any, home: Path) -> None:
        self.manifest = manifest
        self.sandbox = sandbox
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("HUBSYNC_")}
        self.env = {
            **clean,
            "HUBSYNC_REDIS_URL": redis_url,
            "HUBSYNC_HOME": str(home),
            "HUBSYNC_SECRET_KEY": SECRET_KEY,
            "HUBSYNC_SPOOL_DIR": str(home / "spool"),
            "HUBSYNC_DOCUMENT_HOSTS": f"{manifest['sandbox']['host']}:{manifest['sandbox']['port']}",
            # the timings the dump was made with (short retries and FEC intervals)
            **manifest["settings"],
        }
        self.processes: list[subprocess.Popen[bytes]] = []

    # -- the command line ----------------------------------------------------------------------------

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``hubsync ARGS`` as an operator would."""
        return subprocess.run(
            [sys.executable, "-m", "pipeline.cli", *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=180,
        )

    def json(self, *args: str) -> Any:
        """``hubsync ARGS --json``, which must succeed."""
        done = self.cli(*args, "--json")
        assert done.returncode == 0, f"hubsync {' '.join(args)}: {done.stdout}{done.stderr}"
        return json.loads(done.stdout)

    def entry(self, entry_id: str, provider: str = "acd") -> dict[str, Any]:
        """What ``hubsync entry`` says of an entry with one provider."""
        (found,) = [p for p in self.json("entry", entry_id)["providers"] if p["provider"] == provider]
        return found

    def emit(self, *events: dict[str, Any]) -> None:
        """Publish events with ``hubsync emit``."""
        done = self.cli("emit", "-", stdin="".join(json.dumps(e) + "\n" for e in events))
        assert done.returncode == 0, done.stdout + done.stderr

    def wait(self, check: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS) -> None:
        """Poll until ``check`` holds."""
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.3)

    def wait_entry(self, entry_id: str, state: str = "confirmed") -> dict[str, Any]:
        """Wait until ``hubsync entry`` shows the entry's ACD record in ``state`` (or dead); returns it."""
        seen: dict[str, Any] = {}

        def settled() -> bool:
            done = self.cli("entry", entry_id, "--json")
            if done.returncode != 0:
                return False
            seen.update(next(p for p in json.loads(done.stdout)["providers"] if p["provider"] == "acd"))
            return seen["state"] in (state, "dead")

        self.wait(settled, f"{entry_id} to be {state}")
        assert seen["state"] == state, seen
        return seen

    def start_worker(self) -> None:
        """A real ``hubsync worker`` of today's code on the three queues."""
        from hubsync_sandbox.demo import start_worker, wait_ready

        log = self.home / "worker.log"
        worker = start_worker(self.env, log, queues="events,acd,cegid_loop")
        self.processes.append(worker)
        wait_ready([(worker, log)], timeout=60)

    def start_beat(self, **settings: str) -> None:
        """A real ``hubsync beat`` of today's code, with some settings of its own."""
        log = (self.home / "beat.log").open("ab")
        command = [sys.executable, "-m", "pipeline.cli", "beat", "-l", "INFO"]
        self.processes.append(subprocess.Popen(command, env={**self.env, **settings}, stdout=log, stderr=log))

    def stop(self) -> None:
        """Stop the processes started (SIGTERM, then SIGKILL)."""
        for proc in self.processes:
            proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()

    # -- what ACD and Cegid Loop hold ----------------------------------------------------------------

    def place(self, client_file: str) -> tuple[str, str]:
        """The ACD (firm, dossier) a client file of the dump is connected to."""
        target = self.manifest["acd"][client_file]
        return target["firm"], target["dossier"]

    def dossiers(self) -> list[tuple[str, str]]:
        """Every (firm, dossier) of the ACD sandbox."""
        acd = self.sandbox.acd
        return [(firm, code) for firm in acd.firm_names() for code in acd.firms[firm].dossiers]

    def acks(self, firm: str, dossier: str) -> Counter[str]:
        """How many entries of an ACD dossier carry each ACK code."""
        codes: Counter[str] = Counter()
        for stored in self.sandbox.acd.entries(firm, dossier):
            found = {m.group(1) for line in stored["LignesEcriture"] if (m := ACK_IN_LABEL.search(line["Libelle"]))}
            assert len(found) == 1, stored
            codes.update(found)
        return codes

    def ecriture_num(self, place: tuple[str, str], ack: str) -> str:
        """ACD's number of the one entry of a dossier that carries this ACK code."""
        (stored,) = [
            e for e in self.sandbox.acd.entries(*place) if e["LignesEcriture"][0]["Libelle"].endswith(ack + "#)")
        ]
        return str(stored["EcritureNum"])

    def where(self, ack: str) -> list[tuple[str, str]]:
        """Every dossier holding an entry with this ACK code, once per entry."""
        return [place for place in self.dossiers() for _ in range(self.acks(*place)[ack])]

    def ged_names(self, firm: str, dossier: str) -> list[str]:
        """The names of the documents in an ACD dossier's GED."""
        return [d["NomFichier"] for d in self.sandbox.acd.documents(firm, dossier)]

    def loop_deposits(self) -> list[dict[str, Any]]:
        """What Cegid Loop received into the Loop client file's dossier."""
        deposits: list[dict[str, Any]] = self.sandbox.app("cegid").deposits(self.manifest["loop"]["dossier"])
        return deposits

    # -- what must hold after anything -------------------------------------------------------------------

    def assert_nothing_twice_and_counters_true(self) -> None:
        """No ACD dossier holds an entry twice, reconcile agrees, and the counters are what a recount finds."""
        for place in self.dossiers():
            assert [ack for ack, n in self.acks(*place).items() if n > 1] == [], place
        reconciled = self.cli("reconcile", "--json")
        assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
        for result in json.loads(reconciled.stdout)["client_files"]:
            if result["provider"] == "acd":
                assert result["missing"] == result["duplicated"] == result["unknown"] == [], result
        counted = self.json("status")["providers"]
        assert self.json("status", "--recount")["providers"] == counted


def _sandbox(manifest: dict[str, Any]) -> Any:
    """The sandboxes on the dump's address, holding what they held when it was made."""
    from hubsync_sandbox import SandboxServer
    from hubsync_sandbox.acd import AcdSandbox, demo_acd_firms
    from hubsync_sandbox.cegid import CegidLoopSandbox
    from hubsync_sandbox.docstore import DocStore

    host, port = manifest["sandbox"]["host"], manifest["sandbox"]["port"]
    try:
        server = SandboxServer(acd=AcdSandbox(demo_acd_firms()), docs=DocStore(), host=host, port=port)
    except OSError as exc:
        pytest.fail(
            f"cannot listen on {host}:{port}, the address every URL in the dump points at ({exc}); on Linux every "
            "127.x address is loopback: free that port (another run of this test?) and run again"
        )
    server.mount("cegid", CegidLoopSandbox())
    server.restore(json.loads((DATA / "sandbox.json").read_text(encoding="utf-8")))
    server.start()
    return server


@pytest.fixture
def upgraded(manifest: dict[str, Any], tmp_path: Path) -> Iterator[Upgraded]:
    """The dump loaded into a private redis-server, the sandboxes restored, no worker yet."""
    from hubsync_sandbox.embedded import EmbeddedRedis

    sandbox = _sandbox(manifest)
    (tmp_path / "redis").mkdir()
    # redis-server loads dump.rdb from its directory at start, whatever its save settings
    shutil.copyfile(DATA / "store.rdb", tmp_path / "redis" / "dump.rdb")
    server = EmbeddedRedis(directory=tmp_path / "redis")
    try:
        try:
            server.start()
        except RuntimeError as exc:
            pytest.fail(f"redis-server did not load the dump (written by Redis {manifest['redis_version']}): {exc}")
        deployment = Upgraded(manifest, server.url, sandbox, tmp_path / "home")
        try:
            yield deployment
        finally:
            deployment.stop()
    finally:
        sandbox.stop()
        server.stop()


@pytest.fixture
def running(upgraded: Upgraded) -> Upgraded:
    """The dump with a worker of today's code, once it has synced the event the old code left in the queue."""
    upgraded.start_worker()
    upgraded.wait_entry(upgraded.manifest["queued_event"]["entry_id"])
    return upgraded


def _new_event(deployment: Upgraded, template: dict[str, Any], n: int) -> dict[str, Any]:
    """A new entry modelled on one delivered before the dump, with a document of its own in the document store."""
    event = json.loads(json.dumps(template))
    entry = event["entry"]
    entry["id"] = f"{entry['id']}_after_upgrade_{n}"
    entry["label"] = f"{entry['label'][:30]} après mise à jour {n}"
    event["event_id"] = f"evt_{event['client_file_id']}_{entry['id']}"
    for doc in event["documents"]:
        with urllib.request.urlopen(doc["url"], timeout=10) as answer:
            data = answer.read() + f"\n% entry {entry['id']}\n".encode()
        doc["id"] = f"{doc['id']}_after_upgrade_{n}"
        info = deployment.sandbox.docs.put(doc["id"], data, content_type=doc["content_type"], filename=doc["filename"])
        doc.update(url=f"{info['url']}?token=after{n}", size=info["size"], sha256=info["sha256"])
    return event


def test_the_old_store_reads_as_it_was_written_and_a_recount_finds_the_same(upgraded: Upgraded) -> None:
    manifest = upgraded.manifest
    # when an operator looks at the store the old code wrote, before any worker of the new code runs
    status = upgraded.json("status")
    # then the counters say what they said, and reading every record finds the same
    assert status["providers"] == manifest["status"]["providers"]
    assert status["events"] == manifest["status"]["events"]
    assert status["dead_letters_open"] == manifest["status"]["dead_letters_open"] == 2
    assert {job["name"]: job["outcome"] for job in status["scheduled"]} == manifest["scheduled"]
    recounted = upgraded.json("status", "--recount")
    assert recounted["providers"] == manifest["status"]["providers"]
    assert recounted["dead_letters_open"] == 2
    # and each entry reads as it was left, trimmed ones from their packed form
    for entry_id, was in manifest["entries"].items():
        shown = upgraded.entry(entry_id)
        assert (shown["client_file_id"], shown["state"]) == (was["client_file"], was["state"]), entry_id
        assert (shown["ack"], shown["provider_id"]) == (f"(#{was['ack']}#)", was["ecriture_num"]), entry_id
        assert shown["trimmed"] is was["trimmed"] and shown["event_id"] == was["event_id"], entry_id
        assert (shown["history"] == []) is was["trimmed"], entry_id
        assert was["ack"] in manifest["ack_codes"][was["client_file"]], entry_id
    for doc_id, was in manifest["loop"]["deposited"].items():
        shown = upgraded.entry(doc_id, provider="cegid_loop")
        assert shown["state"] == "exported" and shown["provider_id"] == was["loop_document_id"]
    # and the dead letters wait as they did
    dead = manifest["dead_letters"]
    listed = {dl["id"]: dl for dl in upgraded.json("dlq", "list")}
    assert set(listed) == {dead["open_unknown_account"]["id"], dead["open_invalid_event"]["id"]}
    assert listed[dead["open_unknown_account"]["id"]]["error_class"] == "UnknownAccount"
    assert listed[dead["open_invalid_event"]["id"]]["event_id"] == dead["open_invalid_event"]["event_id"]
    # and the dashboard's audit trail and dead-letter page show the replay and the discard made before the dump
    from pipeline.dashboard import queries
    from pipeline.store import Store

    store = Store.from_url(upgraded.env["HUBSYNC_REDIS_URL"])
    lines, total = queries.audit_page(store)
    assert total == 2 and [(line["dead_letter"], line["action"]) for line in lines] == [
        (dead["discarded"]["id"], "discard"),
        (dead["replayed"]["id"], "replay"),
    ]
    page = queries.detail(store, dead["discarded"]["id"])
    assert page is not None and page.dl.status == "discarded" and page.audit[-1]["reason"] == lines[0]["reason"]
    # and reconcile, with new ACD tokens (the dump's are sealed with this key but ACD restarted), finds every
    # confirmed entry once in its dossier and the Loop ledger as it was
    reconciled = upgraded.cli("reconcile", "--json")
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    results = {(r["provider"], r["client_file_id"]): r for r in json.loads(reconciled.stdout)["client_files"]}
    for cf in manifest["acd"]:
        confirmed = manifest["status"]["providers"]["acd"][cf]["confirmed"]
        assert results[("acd", cf)]["landed"] == confirmed and results[("acd", cf)]["duplicated"] == []
    loop = results[("cegid_loop", manifest["loop"]["client_file"])]
    assert (loop["deposited"], loop["pending"]) == (
        len(manifest["loop"]["deposited"]),
        len(manifest["loop"]["pending"]),
    )


def test_the_event_the_old_code_left_in_the_queue_lands_once(upgraded: Upgraded) -> None:
    manifest = upgraded.manifest
    queued = manifest["queued_event"]
    firm, dossier = upgraded.place(queued["client_file"])
    entries_before = len(upgraded.sandbox.acd.entries(firm, dossier))
    # when a worker of today's code starts on the store
    upgraded.start_worker()
    # then it consumes the message the old code published, and the entry lands once, in its dossier
    code = upgraded.wait_entry(queued["entry_id"])["ack"][2:-2]
    assert upgraded.where(code) == [(firm, dossier)]
    assert code not in manifest["ack_codes"][queued["client_file"]]
    assert len(upgraded.sandbox.acd.entries(firm, dossier)) == entries_before + 1
    assert sum(queued["entry_id"] in name for name in upgraded.ged_names(firm, dossier)) == 1
    assert upgraded.json("status")["events"]["events_received"] == manifest["status"]["events"]["events_received"] + 1
    upgraded.assert_nothing_twice_and_counters_true()


def test_old_entries_delivered_again_or_validated_again_post_nothing(running: Upgraded) -> None:
    manifest = running.manifest
    full, trimmed = manifest["events"]["full"], manifest["events"]["trimmed"]
    held = {place: running.acks(*place) for place in running.dossiers()}
    ged = {place: running.ged_names(*place) for place in running.dossiers()}
    duplicates = running.json("status")["events"].get("events_duplicate", 0)
    # when an event synced before the upgrade is delivered again, and a trimmed entry is validated again
    again = {**trimmed, "event_id": f"{trimmed['event_id']}_validated_again"}
    running.emit(full, again)
    running.wait(
        lambda: (
            running.json("status")["events"].get("events_duplicate", 0) == duplicates + 1
            and "validated again" in running.entry(trimmed["entry"]["id"])["note"]
        ),
        "the redelivery and the re-validation to be ingested",
    )
    time.sleep(QUIET_SECONDS)
    # then nothing reached ACD, and both entries still say confirmed with their ACK codes
    assert {place: running.acks(*place) for place in running.dossiers()} == held
    assert {place: running.ged_names(*place) for place in running.dossiers()} == ged
    for event in (full, trimmed):
        was = manifest["entries"][event["entry"]["id"]]
        shown = running.entry(event["entry"]["id"])
        assert shown["state"] == "confirmed" and shown["ack"] == f"(#{was['ack']}#)"
    running.assert_nothing_twice_and_counters_true()


def test_new_entries_get_fresh_ack_codes_and_land_once_each_in_its_own_dossier(running: Upgraded) -> None:
    manifest = running.manifest
    # given one new entry in each dossier of the dump, modelled on entries synced before the upgrade
    events = [_new_event(running, template, 1) for template in manifest["events"]["templates"].values()]
    # when they are emitted
    running.emit(*events)
    # then each is confirmed with an ACK code the dossier never gave before, and lands once, in its own dossier
    for event in events:
        cf = event["client_file_id"]
        shown = running.wait_entry(event["entry"]["id"])
        code = shown["ack"][2:-2]
        assert code not in manifest["ack_codes"][cf], (cf, code)
        place = running.place(cf)
        assert running.where(code) == [place], (cf, code)
        assert running.ecriture_num(place, code) == shown["provider_id"]
        assert sum(event["entry"]["id"] in name for name in running.ged_names(*place)) == 1
    running.assert_nothing_twice_and_counters_true()


def test_the_dead_letter_fixed_after_the_upgrade_lands_once_and_the_discarded_one_stays_closed(
    running: Upgraded,
) -> None:
    manifest = running.manifest
    open_dl, discarded = manifest["dead_letters"]["open_unknown_account"], manifest["dead_letters"]["discarded"]
    fix = open_dl["fix"]
    place = (fix["firm"], fix["dossier"])
    ged_before = running.ged_names(*place)
    # given the account the entry needs, added in ACD after the upgrade
    running.sandbox.acd.add_account(fix["firm"], fix["dossier"], fix["kind"], fix["code"], "Cotisations")
    # when the operator replays the dead letter the old code wrote
    replayed = running.cli("dlq", "replay", open_dl["id"])
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    # then the entry lands once, with its document uploaded before the upgrade and not again
    shown = running.wait_entry(open_dl["entry_id"])
    code = shown["ack"][2:-2]
    assert running.where(code) == [place]
    assert code in manifest["ack_codes"][open_dl["client_file"]]  # allocated before the upgrade, kept
    assert running.ged_names(*place) == ged_before
    assert sum(open_dl["entry_id"] in name for name in ged_before) == 1
    # and the discarded dead letter stays closed: replaying it is refused, nothing of it reaches ACD
    again = running.cli("dlq", "replay", discarded["id"])
    assert again.returncode == 1 and "discarded, not open" in again.stderr
    was = running.entry(discarded["entry_id"])
    assert was["state"] == "dead" and running.where(was["ack"][2:-2] if was["ack"] else "----") == []
    listed = [dl["id"] for dl in running.json("dlq", "list")]
    assert listed == [manifest["dead_letters"]["open_invalid_event"]["id"]]
    running.assert_nothing_twice_and_counters_true()


def test_the_loop_export_deposits_the_pending_documents_once_and_the_deposited_ones_not_again(
    running: Upgraded,
) -> None:
    loop = running.manifest["loop"]
    before = running.loop_deposits()
    pending_sha = {doc_id: running.sandbox.docs.info(doc_id)["sha256"] for doc_id in loop["pending"]}
    # when the operator runs the Loop export after the upgrade
    exported = running.json("export", "cegid-loop", "--client-file", loop["client_file"], "--wait", "--timeout", "90")
    # then the documents pending before the upgrade are deposited, each once, and those deposited before not again
    assert exported["documents"] == len(loop["pending"]) and exported["counts"]["exported"] == len(loop["pending"])
    deposits = running.loop_deposits()
    assert deposits[: len(before)] == before
    assert sorted(d["sha256"] for d in deposits[len(before) :]) == sorted(pending_sha.values())
    assert [sha for sha, n in Counter(d["sha256"] for d in deposits).items() if n > 1] == []
    for doc_id in loop["pending"]:
        shown = running.entry(doc_id, provider="cegid_loop")
        assert shown["state"] == "exported" and shown["provider_id"] in {d["documentId"] for d in deposits}
    # and an export run again finds nothing to send
    again = running.json("export", "cegid-loop", "--client-file", loop["client_file"], "--wait", "--timeout", "90")
    assert again["documents"] == 0 and running.loop_deposits() == deposits
    reconciled = running.json("reconcile", "--client-file", loop["client_file"])
    (ledger,) = [r for r in reconciled["client_files"] if r["provider"] == "cegid_loop"]
    assert (ledger["deposited"], ledger["pending"]) == (len(deposits), 0)
    running.assert_nothing_twice_and_counters_true()


def test_a_beat_of_today_takes_over_the_schedule_the_old_one_kept(running: Upgraded) -> None:
    manifest = running.manifest
    deposits = running.loop_deposits()
    # given the schedule and the jobs' last runs the old beat kept in Redis
    started = time.time()
    # when a beat of today's code starts on it, with its interval jobs due at once
    running.start_beat(HUBSYNC_RETENTION_INTERVAL_SECONDS="2", HUBSYNC_REFERENCE_REFRESH_SECONDS="3")

    def ran() -> bool:
        status = running.json("status")
        jobs = {job["name"]: job for job in status["scheduled"]}
        return status["beat_lock_seconds_left"] is not None and all(
            (jobs[name]["last_started"] or 0) >= started and jobs[name]["outcome"] == "ok"
            for name in ("retention-trim", "acd-refresh-reference")
        )

    # then it takes the scheduler's lock and sends them, and a worker runs each to its end
    running.wait(ran, "beat to send retention and the reference refresh, and a worker to run them")
    assert {job["name"] for job in running.json("status")["scheduled"]} == set(manifest["scheduled"])
    # and whatever it sent (the 20:00 UTC export, if one fell due since the dump) put nothing in twice
    running.processes[-1].terminate()
    running.processes[-1].wait(15)
    now = running.loop_deposits()
    assert now[: len(deposits)] == deposits
    assert [sha for sha, n in Counter(d["sha256"] for d in now).items() if n > 1] == []
    running.assert_nothing_twice_and_counters_true()
