"""Fixtures with the real parts: a private redis-server, the sandboxes over loopback, a real worker process.

Nothing here mocks Redis or Celery. The Redis is started by the tests on a free port (never the machine's
shared one) so the suite can flush and inspect it freely.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from hubsync_sandbox.embedded import EmbeddedRedis
from pipeline import runtime
from pipeline.config import reset_settings
from pipeline.secrets import generate_key
from pipeline.store import Store

ROOT = Path(__file__).resolve().parents[1]
SHARED_DOCUMENTS = ROOT.parent / "shared" / "data" / "documents"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(directory=tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def db_url(redis_server: EmbeddedRedis, db: int) -> str:
    """The URL of database ``db`` of the tests' private Redis."""
    return f"{redis_server.url.rsplit('/', 1)[0]}/{db}"


@contextlib.contextmanager
def flushed_store(redis_server: EmbeddedRedis, db: int) -> Iterator[Store]:
    """A store on database ``db`` of the tests' private Redis, empty when given and emptied after."""
    client = redis.Redis.from_url(db_url(redis_server, db), decode_responses=True)
    client.flushdb()
    try:
        yield Store(client)
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Any]:
    from hubsync_sandbox import SandboxServer
    from hubsync_sandbox.acd import AcdSandbox, demo_acd_firms
    from hubsync_sandbox.docstore import DocStore

    server = SandboxServer(acd=AcdSandbox(demo_acd_firms()), docs=DocStore(), host="127.0.0.1", port=0)
    from hubsync_sandbox.cegid import CegidLoopSandbox

    server.mount("cegid", CegidLoopSandbox())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def hub_env(
    redis_server: EmbeddedRedis, sandbox: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("home")
    env = {
        "HUBSYNC_REDIS_URL": redis_server.url,
        "HUBSYNC_HOME": str(home),
        "HUBSYNC_SECRET_KEY": generate_key(),
        "HUBSYNC_SPOOL_DIR": str(home / "spool"),
        "HUBSYNC_DOCUMENT_HOSTS": sandbox.url.split("://", 1)[1],
        "HUBSYNC_RETRY_BASE_SECONDS": "0.2",
        "HUBSYNC_RETRY_MAX_SECONDS": "2",
        "HUBSYNC_RETRY_WINDOW_SECONDS": "120",
        "HUBSYNC_BREAKER_THRESHOLD": "3",
        "HUBSYNC_BREAKER_COOLDOWN_SECONDS": "1",
        "HUBSYNC_CONFIRM_WINDOW_SECONDS": "30",
        "HUBSYNC_HTTP_TIMEOUT_SECONDS": "5",
        # the sandbox answers a slow post after the client's timeout in one test (9 s); 120 s on a real server
        "HUBSYNC_ACD_SERVER_REQUEST_TIMEOUT_SECONDS": "12",
        "HUBSYNC_ACD_FEC_MIN_INTERVAL_SECONDS": "1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    reset_settings()
    runtime.reset()
    yield {**os.environ, **env}
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    reset_settings()
    runtime.reset()


@pytest.fixture(scope="session")
def worker(hub_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
    """A real `hubsync worker` process on the events, acd and cegid_loop queues."""
    from hubsync_sandbox.demo import start_worker, wait_ready

    log = tmp_path_factory.mktemp("worker") / "worker.log"
    proc = start_worker(hub_env, log, queues="events,acd,cegid_loop")
    wait_ready([(proc, log)], timeout=60)
    yield proc
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def run_cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `hubsync ARGS` as a separate process, as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


class Hub:
    """What a test does with the running pipeline: connect files, emit events, wait, look."""

    def __init__(self, env: dict[str, str], sandbox: Any) -> None:
        self.env = env
        self.sandbox = sandbox
        self.run = uuid.uuid4().hex[:6]
        self.store = runtime.store()

    def cf(self, name: str) -> str:
        """A client file id unique to this test."""
        return f"cf_{name}_{self.run}"

    def connect_acd(self, client_file: str, firm: str = "dupont", dossier: str | None = None) -> None:
        from hubsync_sandbox.acd import demo_acd_firms
        from pipeline.acd.connect import connect
        from pipeline.secrets import Secret

        seed = demo_acd_firms()
        firm_seed = next(f for f in seed if f.name == firm) if isinstance(seed, list) else seed[firm]
        password = next(iter(firm_seed.api_users.values()))
        connect(
            self.store,
            client_file,
            self.sandbox.acd_url(firm),
            firm_seed.cnx,
            "QONTO",
            dossier or next(iter(firm_seed.dossiers)),
            Secret(password),
        )

    def connect_loop(self, client_file: str, dossier: str, title: str = "Client") -> None:
        """Connect ``client_file`` to a new Cegid Loop sandbox dossier of its own (its deposits are its own)."""
        from hubsync_sandbox.cegid import DEMO_API_KEY, DEMO_API_SECRET, DEMO_DOMAIN, DEMO_SUBSCRIPTION_KEY
        from pipeline.cegid.connect import connect
        from pipeline.secrets import Secret

        self.sandbox.app("cegid").add_dossier(dossier, title, api_keys=[DEMO_API_KEY])
        connect(
            self.store,
            client_file,
            self.sandbox.app_url("cegid"),
            dossier,
            DEMO_DOMAIN,
            DEMO_API_KEY,
            Secret(DEMO_API_SECRET),
            Secret(DEMO_SUBSCRIPTION_KEY),
        )

    def emit(self, event: dict[str, Any]) -> None:
        from tasks.ingest import publish_event

        publish_event(event)

    def record(self, client_file: str, entry_id: str) -> Any:
        return self.store.records.get(f"acd:{client_file}:{entry_id}")

    def wait(self, predicate: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.2)

    def wait_states(
        self,
        client_file: str,
        entry_ids: list[str],
        states: tuple[str, ...] = ("confirmed", "dead"),
        timeout: float = 90,
    ) -> dict[str, Any]:
        """Wait until every entry's record is in one of ``states``; return the records."""

        def done() -> bool:
            recs = [self.record(client_file, e) for e in entry_ids]
            return all(r is not None and r.state in states for r in recs)

        try:
            self.wait(done, timeout, f"{entry_ids} in {states}")
        except AssertionError:
            recs = {
                e: (r.state, r.step, r.last_error) if (r := self.record(client_file, e)) else None for e in entry_ids
            }
            raise AssertionError(f"entries not settled: {json.dumps(recs, default=str)[:3000]}") from None
        return {e: self.record(client_file, e) for e in entry_ids}

    def acd_entries_with(self, firm: str, dossier: str, ack: str) -> list[dict[str, Any]]:
        """Entries stored in the ACD sandbox whose lines carry this ACK code."""
        tag = f"(#{ack}#)"
        return [
            e
            for e in self.sandbox.acd.entries(firm, dossier)
            if any(str(line.get("Libelle", "")).endswith(tag) for line in e.get("LignesEcriture", []))
        ]


@pytest.fixture
def hub(hub_env: dict[str, str], sandbox: Any, worker: Any) -> Iterator[Hub]:
    sandbox.acd.clear_faults()
    sandbox.docs.clear_faults()
    yield Hub(hub_env, sandbox)
    sandbox.acd.clear_faults()
    sandbox.docs.clear_faults()


@pytest.fixture
def more_workers(hub: Hub, tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Two more `hubsync worker` processes beside the session's (three in all), each with its own threads."""
    from hubsync_sandbox.demo import start_worker, wait_ready

    procs, logs = [], []
    for n in range(2):
        log = tmp_path / f"worker{n}.log"
        procs.append(start_worker({**hub.env}, log, concurrency=8))
        logs.append(log)
    wait_ready(list(zip(procs, logs, strict=True)), timeout=60)
    yield procs
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
