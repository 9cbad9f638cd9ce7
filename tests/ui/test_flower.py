"""`hubsync flower` for real: a Flower process on the test Redis, a worker sending task events, basic auth."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hubsync_sandbox.embedded import free_port
from hubsync_sandbox.samples import document_ref, sample_entry, sample_event, tiny_pdf
from tests.conftest import Hub, run_cli
from tests.ui.conftest import stop, wait_http

pytestmark = pytest.mark.integration
FLOWER_USER, FLOWER_PASSWORD = "ops", "flower-pass-4711"
ACD_PASSWORD = "dupont-secret"  # the demo firm's API password, sealed in Redis by `connect`
DOC_TOKEN = "flower-d0c-t0ken"


@pytest.fixture
def events_worker(hub_env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A second real worker, started with -E so that it sends task events."""
    log = tmp_path / "worker-e.log"
    node = f"hubsync-flowertest-{tmp_path.name[-6:]}@%h"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "worker", "-Q", "events,acd", "-c", "4", "-E", "-n", node],
            env=hub_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while b"ready." not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError(f"worker -E did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    yield proc
    stop(proc)


@pytest.fixture
def flower(hub_env: dict[str, str], events_worker: Any, tmp_path: Path) -> Iterator[str]:
    """`hubsync flower` on a free port with basic auth; yields its base URL."""
    port = free_port()
    log = tmp_path / "flower.log"
    env = {**hub_env, "HUBSYNC_FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{FLOWER_PASSWORD}"}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "flower", "--address", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthcheck", proc, log, timeout=60)
        yield base
    finally:
        stop(proc)


def test_flower_refuses_to_start_without_basic_auth(hub_env: dict[str, str]) -> None:
    env = {k: v for k, v in hub_env.items() if k != "HUBSYNC_FLOWER_BASIC_AUTH"}
    result = run_cli(env, "flower", "--port", str(free_port()))
    assert result.returncode != 0
    assert "HUBSYNC_FLOWER_BASIC_AUTH" in result.stderr
    weak = run_cli({**env, "HUBSYNC_FLOWER_BASIC_AUTH": "ops:short"}, "flower", "--port", str(free_port()))
    assert weak.returncode != 0


def test_flower_lists_the_pipeline_tasks_behind_auth_and_serves_no_secret(hub: Hub, flower: str) -> None:
    # given a client file connected with its ACD password, and events whose document URLs carry a token
    cf = hub.cf("flower")
    hub.connect_acd(cf)
    entries: list[dict[str, Any]] = []

    def emit_one() -> None:
        n = len(entries)
        entry = sample_entry("bank_transaction", 600 + n)
        entry["id"] = f"{entry['id']}_{hub.run}"
        doc_id = f"doc_flower_{n}_{hub.run}"
        data = tiny_pdf(f"flower {n}")
        info = hub.sandbox.docs.put(doc_id, data, content_type="application/pdf", filename="r.pdf")
        doc = document_ref(doc_id, f"{info['url']}?token={DOC_TOKEN}", data, "receipt", "r.pdf")
        hub.emit(sample_event(cf, entry, documents=[doc]))
        entries.append(entry)

    auth = (FLOWER_USER, FLOWER_PASSWORD)
    wanted = {
        "hubsync.ingest_event",
        "hubsync.acd.fetch_document",
        "hubsync.acd.rename_document",
        "hubsync.acd.map_entry",
        "hubsync.acd.post_entry",
        "hubsync.acd.confirm_ack",
    }
    # when entries flow and the operator asks Flower for its tasks, with the password (the shared worker
    # sends events only once Flower's periodic enable_events reaches it, so a chain may have to run again)
    deadline = time.monotonic() + 90
    while True:
        emit_one()
        hub.wait_states(cf, [entries[-1]["id"]], states=("confirmed",))
        time.sleep(1)
        tasks = httpx.get(f"{flower}/api/tasks", auth=auth, timeout=10).json()
        mine = {t["name"] for t in tasks.values() if cf in str(t.get("args"))}
        if wanted <= mine or time.monotonic() > deadline:
            break
    records = {e["id"]: hub.record(cf, e["id"]) for e in entries}

    # then it lists the pipeline's tasks by their names, the ingest task showing ids, not the event
    assert wanted <= mine, mine
    named = [(t.get("name") or "", str(t.get("args"))) for t in tasks.values() if cf in str(t.get("args"))]
    ingest_args = {args for name, args in named if name == "hubsync.ingest_event"}
    # (each task went to whichever worker took it first; the shared one sends events only once Flower asks)
    assert ingest_args and ingest_args <= {f"(event evt_{cf}_{e['id']} for {cf})" for e in entries}
    chain_args = {args for name, args in named if name.startswith("hubsync.acd.")}
    assert chain_args and {a.strip("()[]") for a in chain_args} <= {f"'{rec.id}', 0" for rec in records.values()}

    # and the broker tab shows every queue of the pipeline
    broker = httpx.get(f"{flower}/broker", auth=auth, timeout=10)
    assert broker.status_code == 200
    for queue in ("events", "acd", "cegid_loop"):
        assert f">{queue}<" in broker.text.replace(" ", "").replace("\n", ""), queue

    # and nothing it serves holds the ACD password or a document token
    task_id = next(iter(tasks))
    served = [
        httpx.get(f"{flower}{path}", auth=auth, timeout=10)
        for path in (
            "/",
            "/tasks",
            "/broker",
            "/workers",
            f"/task/{task_id}",
            f"/api/task/info/{task_id}",
            "/api/tasks",
        )
    ]
    served.append(
        httpx.get(
            f"{flower}/tasks/datatable",
            params={"draw": 1, "start": 0, "length": 1000, "order[0][column]": 0, "columns[0][data]": "name"},
            auth=auth,
            timeout=10,
        )
    )
    assert all(r.status_code == 200 for r in served), [(r.url, r.status_code) for r in served]
    for response in served:
        assert ACD_PASSWORD not in response.text, response.url
        assert DOC_TOKEN not in response.text, response.url
    assert any(cf in r.text for r in served)

    # and anonymous or wrong-password requests are refused
    for path in ("/", "/tasks", "/api/tasks", "/broker"):
        assert httpx.get(f"{flower}{path}", timeout=10).status_code == 401, path
        assert httpx.get(f"{flower}{path}", auth=(FLOWER_USER, "wrong-password"), timeout=10).status_code == 401
