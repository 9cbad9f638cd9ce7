"""Running the pipeline: ``hubsync worker``, ``beat``, ``flower``, ``dashboard`` (and ``dashboard-user``),
``retention`` and ``resume-stalled``."""

from __future__ import annotations

import contextlib
import os
import sys

import click

from pipeline.config import settings
from pipeline.console import broker, emit_json, fail, open_store
from pipeline.monitoring import FlowerConfigError, check_basic_auth, run_flower
from pipeline.queues import pipeline_queues
from pipeline.registry import PROVIDERS
from pipeline.resume import resume_stalled
from pipeline.retention import run as retention_run


@click.command()
@click.option(
    "-Q", "--queues", default=",".join(pipeline_queues()), show_default=True, help="Comma-separated queues to consume."
)
@click.option(
    "-c", "--concurrency", type=int, default=None, help="Processes or threads (default: 16 threads, else cores)."
)
@click.option(
    "-P",
    "--pool",
    type=click.Choice(["prefork", "threads", "solo", "gevent"]),
    default="threads",
    show_default=True,
    help="Execution pool; HTTP-bound steps do well on threads.",
)
@click.option("-n", "--name", default=None, help="Worker node name (default: hubsync-<queues>@<host>).")
@click.option("-E", "--events", "task_events", is_flag=True, help="Send task events (needed by Flower).")
@click.option("-l", "--loglevel", default="INFO", show_default=True)
def worker(queues: str, concurrency: int | None, pool: str, name: str | None, task_events: bool, loglevel: str) -> None:
    """Run a Celery worker on the pipeline's queues."""
    argv = ["worker", "-Q", queues, "-P", pool, "-l", loglevel, "--without-gossip", "--without-mingle"]
    if concurrency is None and pool == "threads":
        concurrency = 16  # steps wait on remote servers: threads, not cores, bound throughput
    if concurrency:
        argv += ["-c", str(concurrency)]
    argv += ["-n", name or f"hubsync-{queues.replace(',', '-')}@%h"]
    if task_events:
        argv.append("-E")
    broker().start(argv)


@click.command()
@click.option("-s", "--schedule-file", default=None, hidden=True, help="Ignored: the schedule lives in Redis.")
@click.option("-l", "--loglevel", default="INFO", show_default=True)
def beat(schedule_file: str | None, loglevel: str) -> None:
    """Run the scheduler (celeryconfig.beat_schedule): ACD reference-data refreshes, the daily Cegid Loop export
    at 20:00 UTC, retention.

    Run two or more for safety: the schedule and each job's last run live in Redis and a lock there lets one
    beat send at a time; if it dies, another takes over within HUBSYNC_BEAT_LOCK_SECONDS (default 60) and
    sends what fell due meanwhile. The tasks it sends run on the workers of their queues.
    """
    broker().start(["beat", "-l", loglevel])


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def retention(as_json: bool) -> None:
    """Trim now what is past HUBSYNC_HISTORY_DAYS (beat does it every HUBSYNC_RETENTION_INTERVAL_SECONDS)."""
    result = retention_run(open_store(), budget_seconds=3600.0)
    if as_json:
        emit_json(result.to_dict())
    else:
        click.echo(result.summary())


@click.command("resume-stalled")
@click.option(
    "--older-than",
    type=float,
    default=None,
    help="Seconds past due without any progress (default: HUBSYNC_STALL_SECONDS, 1.25 x the visibility timeout).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def resume_stalled_cmd(older_than: float | None, as_json: bool) -> None:
    """Publish again the chains nothing moves any more (their broker message was lost). Workers do it by
    themselves every HUBSYNC_RESUME_INTERVAL_SECONDS; this does it now. Safe at any time: every step does only
    what its record says is left."""
    stall = settings().stall_seconds if older_than is None else older_than
    result = resume_stalled(open_store(), broker().enqueue, PROVIDERS.chains(), stall)
    if as_json:
        emit_json({"resumed": result.resumed, "busy_providers": result.busy_providers})
        return
    for rid in result.resumed:
        click.echo(f"{rid}: published again")
    click.echo(result.summary())


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8800, show_default=True)
def dashboard(host: str, port: int) -> None:
    """Serve the operators' web dashboard (users from HUBSYNC_DASHBOARD_USERS; see the README)."""
    # Flask, and the password hash the dashboard's login makes at import, load for the dashboard's commands
    # only: every other command starts without them.
    from pipeline.dashboard.auth import UsersError
    from pipeline.dashboard.server import app_from_env, serve

    try:
        app = app_from_env(broker().enqueue)
    except UsersError as exc:
        fail(str(exc))
    open_store()
    click.echo(f"dashboard on http://{host}:{port}/")
    with contextlib.suppress(KeyboardInterrupt):
        serve(app, host, port)


@click.command("dashboard-user")
@click.argument("name")
@click.argument("role", type=click.Choice(["viewer", "operator"]))
def dashboard_user(name: str, role: str) -> None:
    """Print a HUBSYNC_DASHBOARD_USERS entry for NAME, hashing a password read from standard input."""
    from pipeline.dashboard.auth import UsersError, make_entry  # see dashboard()

    password = sys.stdin.readline().rstrip("\r\n")
    try:
        click.echo(make_entry(name, role, password))
    except UsersError as exc:
        fail(str(exc))


@click.command()
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=5555, show_default=True)
@click.option("--url-prefix", default="", help="Serve under this path (behind a reverse proxy).")
def flower(address: str, port: int, url_prefix: str) -> None:
    """Run Flower on the pipeline's Redis, with basic auth from HUBSYNC_FLOWER_BASIC_AUTH (required)."""
    try:
        check_basic_auth(os.environ.get("HUBSYNC_FLOWER_BASIC_AUTH", ""))
    except FlowerConfigError as exc:
        fail(str(exc))
    run_flower(broker().start, address, port, url_prefix)


COMMANDS = (worker, beat, retention, resume_stalled_cmd, dashboard, dashboard_user, flower)
