"""``hubsync status``: per provider and client file, the records in each state; every connection with its
server; the scheduled jobs, late ones flagged."""

from __future__ import annotations

import click

from pipeline import schedule
from pipeline.config import settings
from pipeline.console import age, emit_json, open_store, when
from pipeline.views import STATE_ORDER, connection, state_counts


def _late(seconds: float) -> str:
    return f"LATE by {age(seconds)}"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option(
    "--recount",
    is_flag=True,
    help="First rebuild the state counters by reading every record (expensive: repair only).",
)
def status(as_json: bool, recount: bool) -> None:
    """Per provider and client file: entries received, posted, confirmed, waiting, dead-lettered; scheduled jobs.

    Reads counters kept up to date as states change, so it costs the same whatever the history. A scheduled
    job that is late is flagged LATE (and named on standard error).
    """
    store = open_store()
    if recount:
        store.recount()
    groups = state_counts(store)
    connections = [connection(store, conn) for conn in store.connections.all()]
    dead = store.dead_letters.open_count()
    beat_schedule, lock_key = schedule.beat_config()
    jobs = schedule.jobs(store, beat_schedule)
    lock = schedule.beat_lock(store, lock_key)
    counters = store.events.counters()
    doc = {
        "providers": groups,
        "connections": connections,
        "events": counters,
        "dead_letters_open": dead,
        "scheduled": [j.to_dict() for j in jobs],
        "beat_lock_seconds_left": lock,
        "retention": {"history_days": settings().history_days, "backlog": store.retention.settled_backlog()},
    }
    if as_json:
        emit_json(doc)
    else:
        click.echo(
            f"events: {counters.get('events_received', 0)} received, {counters.get('events_duplicate', 0)} "
            f"duplicate, {counters.get('events_refused', 0)} refused; open dead letters: {dead}"
        )
        header = f"{'provider':<11}{'client file':<24}" + "".join(f"{s:>14}" for s in STATE_ORDER)
        click.echo(header)
        for provider, files in sorted(groups.items()):
            for client_file, counts in sorted(files.items()):
                click.echo(f"{provider:<11}{client_file:<24}" + "".join(f"{counts.get(s, 0):>14}" for s in STATE_ORDER))
        for item in connections:
            server = item.get("server", {})
            extra = f", server {server.get('state')}" if server else ""
            if "reference_age_seconds" in item:
                old = item["reference_age_seconds"]
                extra += ", no reference data yet" if old is None else f", reference data {age(old)} old"
            since = item["connected_age_seconds"]
            extra += "" if since is None else f", connected {age(since)} ago"
            note = f" ({item['message']})" if item["message"] else ""
            click.echo(f"connection {item['provider']} {item['client_file_id']}: {item['status']}{extra}{note}")
        beat_state = "no beat holds the scheduler lock" if lock is None else "a beat holds the scheduler lock"
        click.echo(f"scheduled jobs ({beat_state}):")
        for job in jobs:
            last = "never ran" if job.last_started is None else f"last {when(job.last_started)} {job.outcome}"
            if job.outcome == "failed" and job.detail:
                last += f" ({job.detail})"
            flag = f"  {_late(job.late_seconds)}" if job.late else ""
            click.echo(f"  {job.name:<26}{last}; next due {when(job.next_due)}{flag}")
    for job in jobs:
        if job.late:
            click.echo(
                f"hubsync: scheduled job {job.name} is late: due {when(job.next_due)}, "
                f"{_late(job.late_seconds).lower()} (is a `hubsync beat` running, and a worker on its queue?)",
                err=True,
            )


COMMANDS = (status,)
