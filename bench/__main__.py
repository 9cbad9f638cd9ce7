"""``python -m bench``: the pipeline measured beside a raw Celery 5-step chain, on this machine, in one run.

Every measurement builds its own world (``hubsync_sandbox.bed.Bed``: a private redis-server, the ACD sandbox and the
document store on loopback, real worker processes) so one cannot disturb the next. It prints a table as it
goes, then writes ``<out>/bench.json`` and ``<out>/bench.png``. It measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from bench import raw
from hubsync_sandbox.bed import FIRMS, Bed, percentile
from hubsync_sandbox.demo import wait_ready
from hubsync_sandbox.samples import DOCUMENT_KIND, document_ref, sample_entry, sample_event, tiny_pdf
from pipeline.secrets import generate_key

ROOT = Path(__file__).resolve().parent.parent
KINDS = tuple(DOCUMENT_KIND)  # purchase, sale, expense_report: the kinds that carry a supporting document
MB = 1024 * 1024
EVENTS_CONCURRENCY = 4  # as compose.yaml's worker-events
GED_LIMIT_MB = 19  # the largest whole number of MB under the ACD GED's 20 MiB limit (acd-api.md)
TOKEN_SCALE = 60.0  # the token measurement runs an hour of ACD token life in a minute


# -- output --------------------------------------------------------------------------------------------


def say(text: str) -> None:
    """One line of the report (standard output)."""
    print(text, flush=True)


class Progress:
    """A one-line progress display on standard error, redrawn at most twice a second."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.started = label, total, time.monotonic()
        self.tty = sys.stderr.isatty()
        self.drawn = 0.0 if self.tty else self.started  # a log file gets a line every 10 s, not one at once

    def update(self, done: int, extra: str = "") -> None:
        """Redraw with ``done`` of ``total``."""
        t = time.monotonic()
        if t - self.drawn < (0.5 if self.tty else 10.0):
            return
        self.drawn = t
        elapsed = t - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        line = f"  {self.label}: {done}/{self.total}  {rate:6.1f}/s  {elapsed:5.0f}s {extra}"
        sys.stderr.write(("\r" + line.ljust(100)) if self.tty else line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        """End the line."""
        if self.tty:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def fmt_spread(s: dict[str, float], unit: str = "/s") -> str:
    """``median unit (min-max, n runs)``."""
    return f"{s['median']:.1f}{unit} ({s['min']:.1f}-{s['max']:.1f}, {int(s['runs'])} runs)"


# -- processes -----------------------------------------------------------------------------------------


def rss_bytes(pids: list[int]) -> int:
    """Resident memory of the processes and their children."""
    total = 0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            total += proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
        except psutil.NoSuchProcess:
            continue
    return total


def reset_peak(pid: int) -> None:
    """Reset the process's peak-RSS mark (Linux: /proc/PID/clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss(pid: int) -> int:
    """The process's peak RSS since the last reset (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def stop(procs: list[Any]) -> None:
    """Warm-stop worker processes (SIGTERM, then SIGKILL after 20 s)."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextmanager
def bed(args: argparse.Namespace, name: str, env: dict[str, str] | None = None) -> Iterator[Bed]:
    """A fresh world for one measurement, connected to the three demo firms; torn down afterwards."""
    world = Bed(Path(tempfile.mkdtemp(prefix=f"hubsync-bench-{name}-")), env=env, report=None)
    try:
        world.connect_firms()
        yield world
    finally:
        world.stop()


def start_pipeline(world: Bed, args: argparse.Namespace) -> list[Any]:
    """The pipeline's workers as deployed (compose.yaml): ``args.workers`` on the acd queue with the pool and
    concurrency given, and one small worker for the events queue.

    Not one worker on both queues: Redis serves priority 0 of every queue before the next priority of any,
    so the upstream's events (sent without a priority, hence 0) would go before every ACD step but the last
    two, and no chain would get past its fetch until the whole events backlog was ingested.
    """
    procs = world.start_workers(1, EVENTS_CONCURRENCY, "events", args.pool)
    return procs + world.start_workers(args.workers, args.concurrency, "acd", args.pool)


def start_raw(world: Bed, args: argparse.Namespace) -> list[Any]:
    """Raw-chain workers with the same pool, concurrency and Celery settings as the pipeline's."""
    started = []
    for i in range(args.workers):
        log = world.tmp / f"raw{i}.log"
        world.logs.append(log)
        cmd = [sys.executable, "-m", "celery", "-A", "bench.raw", "worker", "-Q", raw.QUEUE, "-n", f"raw{i}@%h"]
        cmd += ["-P", args.pool, "-c", str(args.concurrency), "-l", "INFO", "--without-gossip", "--without-mingle"]
        proc = subprocess.Popen(cmd, env=world.env, cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT)
        started.append((proc, log))
    wait_ready(started)
    return [proc for proc, _ in started]


# -- events --------------------------------------------------------------------------------------------


def make_events(world: Bed, count: int, tag: str, weights: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """``count`` entry events, each with one real (small) PDF served by the document store, spread over the
    firms by ``weights`` (even by default)."""
    files = {firm: world.cf_of(firm) for firm in FIRMS}
    order = _spread(count, weights or {firm: 1.0 for firm in FIRMS})
    events = []
    for n in range(count):
        firm = order[n]
        kind = KINDS[n % len(KINDS)]
        entry = sample_entry(kind, n)
        entry["id"] = f"ent_{tag}_{n}_{world.run}"
        data = tiny_pdf(f"{tag} {n} {world.run}")
        doc_id = f"doc_{tag}_{n}_{world.run}"
        info = world.sandbox.docs.put(doc_id, data, content_type="application/pdf", filename=f"p{n}.pdf")
        doc = document_ref(doc_id, f"{info['url']}?token=tk{n}", data, DOCUMENT_KIND[kind], f"p{n}.pdf")
        events.append(sample_event(files[firm], entry, event_id=f"evt_{tag}_{n}_{world.run}", documents=[doc]))
    return events


def _spread(count: int, weights: dict[str, float]) -> list[str]:
    """Firms in an interleaved order whose shares follow ``weights``."""
    total = sum(weights.values())
    credit = dict.fromkeys(weights, 0.0)
    out = []
    for _ in range(count):
        for firm, w in weights.items():
            credit[firm] += w / total
        firm = max(credit, key=lambda f: credit[f])
        credit[firm] -= 1.0
        out.append(firm)
    return out


def rid(event: dict[str, Any]) -> str:
    """The ACD record id of an event's entry."""
    return f"acd:{event['client_file_id']}:{event['entry']['id']}"


def publish(world: Bed, events: list[dict[str, Any]], rate: float | None = None) -> dict[str, float]:
    """Send events to the ``events`` queue (as fast as possible, or at ``rate`` per second); returns each entry's
    send time."""
    from pipeline.redact import event_argsrepr

    app = world.publisher()
    sent: dict[str, float] = {}
    start = time.time()
    progress = Progress("emitting", len(events))
    with app.connection_for_write() as conn:
        for i, event in enumerate(events):
            if rate:
                delay = start + i / rate - time.time()
                if delay > 0:
                    time.sleep(delay)
            sent[rid(event)] = time.time()
            app.send_task(
                "hubsync.ingest_event", args=[event], queue="events", connection=conn, argsrepr=event_argsrepr(event)
            )
            progress.update(i + 1)
    progress.close()
    return sent


def fields(world: Bed, rids: list[str], *names: str) -> list[list[str | None]]:
    """``names`` of each record, read in pipelined chunks."""
    return world.store.records.fields_of_many(rids, *names)


def wait_confirmed(world: Bed, rids: list[str], timeout: float, label: str, quiet: bool = False) -> dict[str, float]:
    """Wait until every record is confirmed (or dead); returns confirmed_at per record."""
    done: dict[str, float] = {}
    dead: set[str] = set()
    pending = list(rids)
    progress = Progress(label, len(rids))
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        still = []
        for r, (state, at) in zip(pending, fields(world, pending, "state", "confirmed_at"), strict=True):
            if state == "confirmed" and at:
                done[r] = float(at)
            elif state == "dead":
                dead.add(r)
            else:
                still.append(r)
        pending = still
        progress.update(len(done) + len(dead), f"dead {len(dead)}")
        if pending:
            time.sleep(0.25)
    progress.close()
    if (pending or dead) and not quiet:
        say(f"  !! {len(pending)} not confirmed after {timeout:.0f}s, {len(dead)} dead-lettered")
    return done


def latencies(
    sent: dict[str, float], confirmed: dict[str, float], only: Callable[[str], bool] | None = None
) -> dict[str, float]:
    """p50/p95/p99/max of send → confirmed, in seconds."""
    values = [confirmed[r] - sent[r] for r in confirmed if r in sent and (only is None or only(r))]
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values),
    }


def fmt_lat(lat: dict[str, float]) -> str:
    """``p50 … p95 … p99 … max …`` in seconds."""
    if not lat.get("count"):
        return "no data"
    return f"p50 {lat['p50']:.2f}s  p95 {lat['p95']:.2f}s  p99 {lat['p99']:.2f}s  max {lat['max']:.2f}s"


# -- measurements --------------------------------------------------------------------------------------


def measure_raw(args: argparse.Namespace) -> dict[str, Any]:
    """The ceiling: raw 5-step no-op chains per second, same workers settings."""
    rates = []
    with bed(args, "raw") as world:
        procs = start_raw(world, args)
        try:
            app = world.publisher()
            for run in range(args.repeats):
                tag = f"r{run}"
                start = time.time()
                raw.send_chains(app, args.raw_chains, tag)
                progress = Progress("raw chains", args.raw_chains)
                deadline = time.monotonic() + 600
                while (n := world.store.r.hlen(raw.DONE_KEY)) < args.raw_chains * (run + 1):
                    progress.update(n - args.raw_chains * run)
                    if time.monotonic() > deadline:
                        raise RuntimeError("raw chains did not finish in 600 s")
                    time.sleep(0.05)
                progress.close()
                stamps = [float(v) for k, v in world.store.r.hgetall(raw.DONE_KEY).items() if k.startswith(tag + "-")]
                rates.append(args.raw_chains / (max(stamps) - start))
        finally:
            stop(procs)
    result = spread(rates)
    say(f"raw Celery 5-step chain    {fmt_spread(result, ' chains/s')}")
    return result


def measure_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    """Burst throughput (events → confirmed in ACD), then latency at half of it, then one firm's outage."""
    out: dict[str, Any] = {}
    # the hub's own document limit raised above the large document, so that ACD's GED (20 MiB, by contract)
    # is what refuses it, after the fetch
    with bed(args, "pipeline", env={"HUBSYNC_DOCUMENT_MAX_BYTES": str((args.big_mb + 8) * MB)}) as world:
        procs = start_pipeline(world, args)
        try:
            rates, posted_rates, bursts, fec = [], [], [], []
            for run in range(args.repeats):
                events = make_events(world, args.entries, f"b{run}")
                before = world.acd_counts()
                sent = publish(world, events)
                confirmed = wait_confirmed(world, list(sent), args.timeout, "pipeline burst")
                posted = [float(p) for (p,) in fields(world, list(confirmed), "posted_at") if p]
                rates.append(len(confirmed) / (max(confirmed.values()) - min(sent.values())))
                posted_rates.append(len(posted) / (max(posted) - min(sent.values())))
                bursts.append(latencies(sent, confirmed))
                fec.append((world.acd_counts()["fec_requests"] - before["fec_requests"]) / max(1, len(confirmed)))
            out["throughput"] = spread(rates)
            out["posted_throughput"] = spread(posted_rates)
            out["burst_latency"] = bursts
            out["burst_fec_per_confirmed"] = spread(fec)
            say(f"pipeline (events→confirmed) {fmt_spread(out['throughput'], ' entries/s')}")
            say(f"  events→posted            {fmt_spread(out['posted_throughput'], ' entries/s')}")
            say(f"  burst of {args.entries}: {fmt_lat(bursts[-1])}; FEC reads per confirmed entry {fec[-1]:.3f}")
            half = out["throughput"]["median"] / 2
            out["half_rate"] = half
            weights = {"dupont": 0.45, "martin": 0.45, "leroy": 0.10}
            count = max(20, int(half * args.steady_seconds))
            others = {world.cf_of("dupont"), world.cf_of("martin")}

            def is_other(r: str) -> bool:
                return r.split(":")[1] in others

            events = make_events(world, count, "steady", weights)
            before = world.acd_counts()
            sent = publish(world, events, rate=half)
            confirmed = wait_confirmed(world, list(sent), args.timeout, "steady load")
            reads = world.acd_counts()["fec_requests"] - before["fec_requests"]
            out["steady"] = latencies(sent, confirmed)
            out["steady_others"] = latencies(sent, confirmed, is_other)
            out["steady_fec_per_confirmed"] = reads / max(1, len(confirmed))
            say(
                f"steady at half ({half:.1f}/s, {count} entries): {fmt_lat(out['steady'])}; "
                f"{reads} FEC reads, {out['steady_fec_per_confirmed']:.3f} per confirmed entry"
            )
            from hubsync_sandbox import Fault

            world.sandbox.acd.set_fault("leroy", Fault(mode="off"))
            events = make_events(world, count, "outage", weights)
            sent = publish(world, events, rate=half)
            other_rids = [r for r in sent if is_other(r)]
            confirmed = wait_confirmed(world, other_rids, args.timeout, "outage, other firms")
            out["outage_others"] = latencies(sent, confirmed)
            world.sandbox.acd.clear_faults("leroy")
            leroy = [r for r in sent if not is_other(r)]
            landed = wait_confirmed(world, leroy, args.timeout, "leroy back")
            out["outage_leroy_landed_after"] = {"entries": len(leroy), "confirmed": len(landed)}
            base, during = out["steady_others"].get("p99", 0.0), out["outage_others"].get("p99", 0.0)
            say(
                f"one firm off (10% of traffic): other firms p99 {during:.2f}s vs {base:.2f}s normal "
                f"({(during / base - 1) * 100 if base else 0:+.0f}%); leroy's {len(landed)}/{len(leroy)} landed "
                "once its server came back"
            )
            out["big_documents"] = [
                measure_big_document(world, procs, args, size_mb) for size_mb in sorted({GED_LIMIT_MB, args.big_mb})
            ]
        finally:
            stop(procs)
    return out


def measure_big_document(world: Bed, procs: list[Any], args: argparse.Namespace, size_mb: int) -> dict[str, Any]:
    """One entry with a large PDF through fetch and GED upload: the workers' peak RSS growth. Over 20 MiB the
    GED refuses it (413) and the entry is dead-lettered as DocumentTooLarge."""
    size = size_mb * MB
    tag = f"big{size_mb}"
    pids = [proc.pid for proc in procs]
    pids += [child.pid for pid in pids for child in psutil.Process(pid).children(recursive=True)]  # prefork
    for pid in pids:
        reset_peak(pid)
    before = {pid: psutil.Process(pid).memory_info().rss for pid in pids}
    entry = sample_entry("purchase", 1)
    entry["id"] = f"ent_{tag}_{world.run}"
    doc_id = f"doc_{tag}_{world.run}"
    info = world.sandbox.docs.put_generated(doc_id, size, filename="big.pdf")
    doc = {
        "id": doc_id,
        "url": f"{world.sandbox.docs.url(doc_id)}?token=big",
        "filename": "big.pdf",
        "content_type": "application/pdf",
        "size": size,
        "sha256": info["sha256"],
        "kind": "supplier_invoice",
    }
    event = sample_event(world.cf_of("dupont"), entry, event_id=f"evt_{tag}_{world.run}", documents=[doc])
    publish(world, [event])
    confirmed = wait_confirmed(world, [rid(event)], args.timeout, f"{size_mb} MB document", quiet=True)
    growth = max(peak_rss(pid) - before[pid] for pid in before)
    rec = world.store.records.get(rid(event))
    fetched = bool(rec and rec.docs.get(doc_id, {}).get("sha256"))
    outcome = "landed" if confirmed else f"dead-lettered: {(rec.last_error or {}).get('error_class') if rec else '?'}"
    result = {
        "size_mb": size_mb,
        "fetched": fetched,
        "outcome": outcome,
        "peak_rss_growth_mb": growth / MB,
    }
    say(f"{size_mb} MB document: fetched {fetched}, {outcome}; worker peak RSS growth {growth / MB:.1f} MB")
    return result


def measure_tokens(args: argparse.Namespace) -> dict[str, Any]:
    """Logins per dossier-hour and FEC reads per confirmed entry under a steady load, with ACD's token clock run
    ``TOKEN_SCALE`` times faster (tokens live 60 s instead of 60 min, die after 15 s idle instead of 15 min; the
    hub's own TTL and idle limit scaled the same way): four dossiers, two of them under one API code, three acd
    worker processes. Then every server restarts and a short burst follows: the logins that restart cost."""
    targets = (("dupont", "DUPONT01"), ("dupont", "DUPONT04"), ("martin", "MARTIN01"), ("leroy", "LEROY01"))
    env = {
        "HUBSYNC_ACD_TOKEN_TTL_SECONDS": str(50 * 60 / TOKEN_SCALE),
        "HUBSYNC_ACD_TOKEN_IDLE_SECONDS": str(13 * 60 / TOKEN_SCALE),
    }
    world = Bed(Path(tempfile.mkdtemp(prefix="hubsync-bench-tokens-")), env=env, report=None)
    try:
        world.sandbox.acd.token_lifetime_seconds = 60 * 60 / TOKEN_SCALE
        world.sandbox.acd.token_idle_seconds = 15 * 60 / TOKEN_SCALE
        world.connect_firms(targets)
        procs = world.start_workers(1, EVENTS_CONCURRENCY, "events", args.pool)
        procs += world.start_workers(3, args.concurrency, "acd", args.pool)
        files = list(world.client_files)

        def events(count: int, tag: str) -> list[dict[str, Any]]:
            out = []
            for n in range(count):
                entry = sample_entry(("purchase", "sale", "bank_transaction", "expense_report")[n % 4], n)
                entry["id"] = f"ent_{tag}_{n}_{world.run}"
                out.append(sample_event(files[n % len(files)], entry, event_id=f"evt_{tag}_{n}_{world.run}"))
            return out

        try:
            count = int(args.token_rate * args.token_seconds)
            before = world.acd_counts()
            sent = publish(world, events(count, "tok"), rate=args.token_rate)
            confirmed = wait_confirmed(world, list(sent), args.timeout, "token load")
            after = world.acd_counts()
            elapsed = max(confirmed.values(), default=time.time()) - min(sent.values())
            for firm in ("dupont", "martin", "leroy"):
                world.sandbox.acd.restart(firm)
            burst = publish(world, events(4 * len(files), "torestart"))
            wait_confirmed(world, list(burst), args.timeout, "after the restart")
            restarted = world.acd_counts()
        finally:
            stop(procs)
    finally:
        world.stop()
    dossiers = len(targets)
    hours = elapsed * TOKEN_SCALE / 3600
    logins = after["logins"] - before["logins"]
    reads = after["fec_requests"] - before["fec_requests"]
    result = {
        "dossiers": dossiers,
        "acd_worker_processes": 3,
        "seconds": elapsed,
        "token_hours": hours,
        "entries": count,
        "confirmed": len(confirmed),
        "logins": logins,
        "logins_per_dossier_hour": logins / dossiers / hours if hours else None,
        "session_opens": after["session_opens"] - before["session_opens"],
        "fec_reads": reads,
        "fec_per_confirmed": reads / max(1, len(confirmed)),
        "restart_logins": restarted["logins"] - after["logins"],
    }
    say(
        f"tokens: {count} entries at {args.token_rate:.0f}/s over {dossiers} dossiers (2 under one API code), "
        f"3 acd workers, {hours:.2f} token-hours (ACD's clock x{TOKEN_SCALE:.0f}): {logins} logins = "
        f"{result['logins_per_dossier_hour']:.2f} per dossier-hour; {reads} FEC reads = "
        f"{result['fec_per_confirmed']:.3f} per confirmed entry; a restart of every server then cost "
        f"{result['restart_logins']} logins for {dossiers} dossiers"
    )
    return result


def measure_backlog(args: argparse.Namespace, backlog: int) -> dict[str, Any]:
    """``backlog`` events queued before any worker runs; then the workers drain for a fixed window."""
    with bed(args, f"backlog{backlog}") as world:
        r = world.store.r
        mem0 = int(r.info("memory")["used_memory"])
        events = make_events(world, backlog, f"q{backlog}")
        t0 = time.time()
        sent = publish(world, events)
        emit_rate = backlog / (time.time() - t0)
        del events
        per_event = (int(r.info("memory")["used_memory"]) - mem0) / backlog
        procs = start_pipeline(world, args)
        r.config_resetstat()
        rss_start = rss_bytes([p.pid for p in procs])
        posted = world.sandbox.acd.entries
        samples: list[tuple[float, int]] = []
        start = time.time()
        progress = Progress(f"backlog {backlog}", backlog)
        try:
            while time.time() - start < args.window:
                n = sum(len(posted(firm, dossier)) for firm, dossier in FIRMS.items())
                samples.append((time.time(), n))
                progress.update(n)
                if n >= backlog:
                    break
                time.sleep(0.5)
            rss_end = rss_bytes([p.pid for p in procs])
            stats = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in r.info("commandstats").items()}
            calls = sum(stats.values())
        finally:
            progress.close()
            stop(procs)
        rate = _steady_rate(samples, backlog)
        first = next((t - start for t, n in samples if n > 0), None)
        rids = list(sent)
        rows = fields(world, rids, "state", "created_at", "confirmed_at")
        lat = [float(c) - float(a) for state, a, c in rows if state == "confirmed" and a and c]
        chain_latency: dict[str, float] = {"count": len(lat)}
        if lat:
            chain_latency.update(p50=percentile(lat, 50), p95=percentile(lat, 95), p99=percentile(lat, 99))
        result: dict[str, Any] = {
            "backlog": backlog,
            "emit_rate": emit_rate,
            "throughput": rate,
            "first_post_seconds": first,
            "confirmed_in_window": len(lat),
            "window_seconds": samples[-1][0] - start if samples else 0.0,
            "redis_bytes_per_pending_event": per_event,
            "worker_rss_start_mb": rss_start / MB,
            "worker_rss_end_mb": rss_end / MB,
            "redis_commands_per_confirmed": calls / len(lat) if lat else None,
            "redis_commands": dict(sorted(stats.items(), key=lambda kv: -kv[1])),
            "chain_latency": chain_latency,
        }
    say(
        f"backlog {backlog:>6}: {rate:6.1f} entries/s (first in ACD after "
        f"{'-' if first is None else f'{first:.0f}s'}), worker RSS {rss_start / MB:.0f}→{rss_end / MB:.0f} MB, "
        f"Redis {per_event:,.0f} B per pending event (emitted at {emit_rate:,.0f}/s), "
        f"ingest→confirmed {fmt_lat({**chain_latency, 'max': max(lat) if lat else 0.0})}"
    )
    return result


def _steady_rate(samples: list[tuple[float, int]], total: int) -> float:
    """Entries per second between 5% and 95% of what the window reached (the ramp-up and tail left out)."""
    if len(samples) < 2 or samples[-1][1] == 0:
        return 0.0
    top = samples[-1][1]
    lo = next(s for s in samples if s[1] >= top * 0.05)
    hi = next(s for s in samples if s[1] >= top * 0.95)
    if hi[0] <= lo[0]:
        hi = samples[-1]
    return (hi[1] - lo[1]) / (hi[0] - lo[0]) if hi[0] > lo[0] else 0.0


# -- chart ---------------------------------------------------------------------------------------------


def chart(doc: dict[str, Any], path: Path) -> None:
    """Throughput and chain latency against backlog, with the raw ceiling and the burst throughput."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc.get("backlogs", [])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    if rows:
        xs = [r["backlog"] for r in rows]
        left.plot(xs, [r["throughput"] for r in rows], "o-", label="pipeline at backlog")
        for key, label, style in (("p50", "p50", "o-"), ("p99", "p99", "s--")):
            ys = [r["chain_latency"].get(key, float("nan")) for r in rows]
            right.plot(xs, ys, style, label=f"ingest→confirmed {label}")
        for ax in (left, right):
            ax.set_xscale("log")
            ax.set_xlabel("events queued before the workers start")
    if "raw" in doc:
        left.axhline(doc["raw"]["median"], color="grey", linestyle=":", label="raw 5-step chain (ceiling)")
    if "pipeline" in doc:
        left.axhline(doc["pipeline"]["throughput"]["median"], color="green", linestyle="--", label="pipeline burst")
    left.set_ylabel("per second")
    left.set_title("throughput")
    right.set_ylabel("seconds")
    right.set_title("latency")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    conf = doc["settings"]
    fig.suptitle(f"hubsync bench: {conf['workers']} x {conf['pool']} -c{conf['concurrency']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- main ----------------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure the pipeline beside a raw Celery 5-step chain on this machine (prints, asserts nothing).",
    )
    p.add_argument("--workers", type=int, default=2, help="acd worker processes, beside one events worker (default 2)")
    p.add_argument("--concurrency", type=int, default=16, help="per acd worker (default 16)")
    p.add_argument("--pool", default="threads", choices=["threads", "prefork", "solo"], help="(default threads)")
    p.add_argument("--repeats", type=int, default=3, help="runs of the raw and burst measurements (default 3)")
    p.add_argument("--entries", type=int, default=600, help="entries per pipeline burst (default 600)")
    p.add_argument("--raw-chains", type=int, default=2000, help="chains per raw run (default 2000)")
    p.add_argument("--steady-seconds", type=float, default=20.0, help="length of the steady and outage loads")
    p.add_argument("--backlogs", default="1000,10000,100000", help="comma-separated backlog sizes ('' to skip)")
    p.add_argument("--window", type=float, default=45.0, help="seconds the workers drain each backlog")
    p.add_argument("--big-mb", type=int, default=50, help="size of the large document (default 50 MB)")
    p.add_argument("--timeout", type=float, default=600.0, help="give up waiting for a batch after this")
    p.add_argument(
        "--token-seconds",
        type=float,
        default=120.0,
        help="length of the token measurement (default 120: 2 token-hours)",
    )
    p.add_argument("--token-rate", type=float, default=10.0, help="entries per second in it (default 10)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out", help="where bench.json and bench.png go")
    p.add_argument(
        "--quick", action="store_true", help="small numbers, to check the bench itself (about three minutes)"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.entries, args.raw_chains, args.steady_seconds = 1, 150, 400, 8.0
        args.backlogs, args.window = "500,2000", 15.0
        args.token_seconds = 60.0
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every measurement, print the table, write JSON and PNG."""
    args = parse(argv)
    os.environ.setdefault("HUBSYNC_SECRET_KEY", generate_key())
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(args, k) for k in ("workers", "concurrency", "pool", "repeats", "entries", "window")}
    doc: dict[str, Any] = {"settings": settings, "machine": {"cpus": os.cpu_count()}, "started": time.time()}
    say(f"hubsync bench: {args.workers} worker(s) x {args.pool} -c{args.concurrency}, {os.cpu_count()} CPUs")
    doc["raw"] = measure_raw(args)
    doc["pipeline"] = measure_pipeline(args)
    doc["ratio"] = doc["pipeline"]["throughput"]["median"] / doc["raw"]["median"]
    doc["posted_ratio"] = doc["pipeline"]["posted_throughput"]["median"] / doc["raw"]["median"]
    say(f"ratio pipeline / raw: {doc['ratio']:.2f} (events→confirmed), {doc['posted_ratio']:.2f} (events→posted)")
    doc["tokens"] = measure_tokens(args)
    doc["backlogs"] = [measure_backlog(args, int(b)) for b in args.backlogs.split(",") if b.strip()]
    doc["seconds"] = time.time() - doc["started"]
    (args.out / "bench.json").write_text(json.dumps(doc, indent=2))
    chart(doc, args.out / "bench.png")
    say(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.png'} ({doc['seconds']:.0f}s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
