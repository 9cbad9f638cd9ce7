"""``python -m bench.cegid_deposit``: large documents through the Cegid Loop chain, and the worker's memory.

A private redis-server, the document store and the Cegid Loop sandbox on loopback, one real ``hubsync
worker`` (threads); for each size, one supplier invoice is fetched, checked, named and deposited with
``storeDocument`` (the body streamed from the spool), after a small document that warms the worker up. It
prints the time from the export to the ledger entry, what Loop received, and the worker's peak RSS growth
(``VmHWM`` after a reset, against the RSS before). It measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.__main__ import peak_rss, reset_peak
from hubsync_sandbox.embedded import EmbeddedRedis
from hubsync_sandbox.samples import sample_entry, sample_event
from pipeline import runtime
from pipeline.config import reset_settings
from pipeline.secrets import Secret, generate_key

MB = 1024 * 1024


def rss(pid: int) -> int:
    """The process's resident set size now (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main(argv: list[str] | None = None) -> None:
    """Run the measurement and print one line per document size."""
    parser = argparse.ArgumentParser(prog="python -m bench.cegid_deposit", description=__doc__)
    parser.add_argument("--sizes", default="1000000,45000000", help="document sizes in bytes, comma-separated")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    from hubsync_sandbox import SandboxServer
    from hubsync_sandbox.cegid_demo import LoopServer
    from hubsync_sandbox.demo import start_worker, wait_ready
    from hubsync_sandbox.docstore import DocStore

    tmp = Path(tempfile.mkdtemp(prefix="hubsync-cegid-bench-"))
    redis = EmbeddedRedis(directory=tmp / "redis").start()
    docs = SandboxServer(docs=DocStore(), host="127.0.0.1", port=0)
    docs.start()
    loop = LoopServer()
    loop.up()
    env = {
        **os.environ,
        "HUBSYNC_REDIS_URL": redis.url,
        "HUBSYNC_HOME": str(tmp / "home"),
        "HUBSYNC_SECRET_KEY": generate_key(),
        "HUBSYNC_SPOOL_DIR": str(tmp / "spool"),
        "HUBSYNC_DOCUMENT_HOSTS": docs.url.split("://", 1)[1],
        "HUBSYNC_HTTP_TIMEOUT_SECONDS": "120",
    }
    os.environ.update(env)
    reset_settings()
    runtime.reset()
    worker = start_worker(env, tmp / "worker.log", queues="events,cegid_loop", concurrency=4)
    try:
        wait_ready([(worker, tmp / "worker.log")])
        for line in measure(docs, loop, worker.pid, sizes, args.timeout):
            print(line, flush=True)
    finally:
        worker.terminate()
        worker.wait(30)
        loop.down()
        docs.stop()
        redis.stop()


def measure(docs: Any, loop: Any, pid: int, sizes: list[int], timeout: float) -> list[str]:
    """One deposit per size; a line of figures each."""
    from hubsync_sandbox.cegid import DEMO_API_KEY, DEMO_API_SECRET, DEMO_DOMAIN, DEMO_SUBSCRIPTION_KEY
    from pipeline.cegid.connect import connect
    from pipeline.cegid.export import pending, run_export
    from tasks.chains import enqueue
    from tasks.ingest import publish_event

    store = runtime.store()
    run = uuid.uuid4().hex[:6]
    cf = f"cf_bench_{run}"
    connect(
        store, cf, loop.app_url, "DUPONT01", DEMO_DOMAIN, DEMO_API_KEY, Secret(DEMO_API_SECRET),
        Secret(DEMO_SUBSCRIPTION_KEY),
    )  # fmt: skip
    out = []
    # The first document of a fresh worker pays for imports and connection pools: it is not reported.
    for n, size in enumerate([10_000, *sizes]):
        doc_id = f"doc_big_{size}_{run}"
        info = docs.docs.put_generated(doc_id, size, filename="big.pdf")
        entry = sample_entry("purchase", 1)
        entry["id"] = f"ent_big_{size}_{run}"
        doc = {
            "id": doc_id,
            "url": f"{docs.docs.url(doc_id)}?token=big",
            "filename": "big.pdf",
            "content_type": "application/pdf",
            "size": size,
            "sha256": info["sha256"],
            "kind": "supplier_invoice",
        }
        publish_event(sample_event(cf, entry, event_id=f"evt_big_{size}_{run}", documents=[doc]))
        rid = f"cegid_loop:{cf}:{doc_id}"
        deadline = time.monotonic() + timeout
        while rid not in pending(store, cf) and time.monotonic() < deadline:
            time.sleep(0.1)
        reset_peak(pid)
        before = rss(pid)
        started = time.monotonic()
        run_export(store, cf, enqueue)
        while (
            store.records.fields(rid, "state")[0] not in ("exported", "skipped", "dead") and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        took = time.monotonic() - started
        growth = peak_rss(pid) - before
        rec = store.records.get(rid)
        received = [d for d in loop.sandbox.deposits("DUPONT01") if d["sha256"] == info["sha256"]]
        same = bool(received) and received[0]["size"] == size
        if n == 0:
            continue
        out.append(
            f"{size:>11,} bytes: {rec.state if rec else '?'} in {took:.1f} s (fetch, check, name, deposit); Loop "
            f"received {len(received)} copy, bytes and sha256 {'identical' if same else 'DIFFERENT'}; worker peak "
            f"RSS growth {growth / MB:.1f} MB (RSS before {before / MB:.0f} MB)"
        )
    return out


if __name__ == "__main__":
    main()
