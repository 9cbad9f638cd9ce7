"""The operators' web dashboard: a small Flask app over ``pipeline.dashboard.queries``.

Every page needs a login. Replay and discard are POSTs that carry the session's CSRF token, come from the
dashboard's own origin (``Origin`` and ``Sec-Fetch-Site`` are checked) and need the ``operator`` role; the
session cookie is ``HttpOnly`` and ``SameSite=Strict``. Actions are written to the dead letter's audit trail
under the operator's name.
"""

from __future__ import annotations

import hmac
import secrets as _random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import Flask, abort, flash, g, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from pipeline.dashboard import queries
from pipeline.dashboard.auth import User, authenticate
from pipeline.dlq import ReplayError
from pipeline.providers import Enqueue
from pipeline.queues import queue_depths
from pipeline.redact import mask_text
from pipeline.store import Store

SESSION_HOURS = 8
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass
class Wiring:
    """What the dashboard needs from the rest of hubsync; tests pass their own."""

    store: Callable[[], Store]
    users: dict[str, User]
    enqueue: Enqueue
    ingest: Callable[[Store, Any], str]
    flower_url: str = ""
    allowed_origins: tuple[str, ...] = ()


def create_app(wiring: Wiring, secret_key: str, secure_cookies: bool = False) -> Flask:
    """The dashboard application."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secret_key,
        SESSION_COOKIE_NAME="hubsync_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=secure_cookies,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
        MAX_CONTENT_LENGTH=256 * 1024,
        TEMPLATES_AUTO_RELOAD=False,
    )
    app.jinja_env.globals.update(when=queries.when, facets_order=queries.FACETS)

    def store() -> Store:
        return wiring.store()

    def csrf_token() -> str:
        token = session.get("csrf")
        if not isinstance(token, str):
            token = session["csrf"] = _random.token_urlsafe(32)
        return token

    app.jinja_env.globals["csrf_token"] = csrf_token

    def same_origin() -> bool:
        site = request.headers.get("Sec-Fetch-Site")
        if site and site not in ("same-origin", "none"):
            return False
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        return origin in (f"{request.scheme}://{request.host}", *wiring.allowed_origins)

    @app.before_request
    def guard() -> Response | None:
        if request.method not in SAFE_METHODS:
            sent = request.form.get("csrf_token", "")
            expected = session.get("csrf")
            if not same_origin():
                abort(403, "cross-site request refused")
            if not isinstance(expected, str) or not hmac.compare_digest(sent.encode(), expected.encode()):
                abort(403, "missing or wrong CSRF token: reload the page and try again")
        if request.endpoint in ("login", "healthz", "static"):
            return None
        name = session.get("user")
        user = wiring.users.get(name) if isinstance(name, str) else None
        if user is None or session.get("role") != user.role:
            if request.method not in SAFE_METHODS:
                abort(403, "log in first")
            return redirect(url_for("login", next=request.full_path if request.args else request.path))
        g.user = user
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
            "base-uri 'none'"
        )
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
        return response

    def require_operator() -> User:
        user: User = g.user
        if not user.can_act:
            abort(403, f"{user.name} is a viewer: replay and discard need the operator role")
        return user

    def index_url(flt: queries.Filter) -> str:
        params: dict[str, Any] = flt.params()
        return url_for("index", **params)

    def ingest_fn() -> Callable[[Any], str]:
        s = store()
        return lambda raw: wiring.ingest(s, raw)

    # -- pages -----------------------------------------------------------------------------------------

    @app.get("/healthz")
    def healthz() -> tuple[str, int]:
        try:
            store().ping()
        except Exception:  # noqa: BLE001 - any failure to reach Redis is "not healthy"
            return "redis unreachable\n", 503
        return "ok\n", 200

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        error = ""
        if request.method == "POST":
            name = request.form.get("username", "")[:64]
            user = authenticate(wiring.users, name, request.form.get("password", "")[:1024])
            if user is not None:
                target = request.args.get("next", "")
                session.clear()
                session.permanent = True
                session.update(user=user.name, role=user.role, csrf=_random.token_urlsafe(32))
                if not target.startswith("/") or target.startswith("//") or "\\" in target:
                    target = url_for("index")
                return redirect(target)
            error = "Wrong user name or password."
        return render_template("login.html", error=error), 401 if error else 200

    @app.post("/logout")
    def logout() -> Response:
        session.clear()
        return redirect(url_for("login"))

    def offset_arg() -> int:
        try:
            return max(0, int(request.args.get("offset", "0")))
        except ValueError:
            return 0

    @app.get("/")
    def index() -> str:
        flt = queries.Filter.from_args(request.args)
        s = store()
        found = queries.page(s, flt, offset_arg())
        counts = queries.facet_counts(s, flt.status)
        return render_template(
            "index.html",
            flt=flt,
            page=found,
            letters=found.letters,
            total=found.total,
            facets=counts,
            options=counts,
            groups=queries.cause_groups(s, flt),
            depths=queue_depths(s),
            mask_text=mask_text,
        )

    @app.get("/dead-letters/<dl_id>")
    def dead_letter(dl_id: str) -> str:
        found = queries.detail(store(), dl_id, wiring.flower_url)
        if found is None:
            abort(404, f"no dead letter {dl_id}")
        return render_template("dead_letter.html", d=found)

    @app.get("/health")
    def health() -> str:
        s = store()
        return render_template(
            "health.html",
            rows=queries.health(s),
            depths=queue_depths(s),
            jobs=queries.scheduled_jobs(s),
            beat_lock=queries.beat_lock(s),
        )

    @app.get("/audit")
    def audit() -> str:
        offset = offset_arg()
        items, total = queries.audit_page(store(), offset)
        return render_template("audit.html", items=items, total=total, offset=offset, size=queries.AUDIT_SHOWN)

    # -- actions ---------------------------------------------------------------------------------------

    @app.post("/dead-letters/<dl_id>/replay")
    def replay_one(dl_id: str) -> Response:
        user = require_operator()
        result = queries.replay_many(store(), [dl_id], wiring.enqueue, ingest_fn(), who=user.name)
        if result.done:
            flash(f"{dl_id} replayed by {user.name}: the chain resumes at its failed step.", "ok")
        else:
            flash(f"{dl_id} not replayed: {result.refused[0][1]}", "error")
        return redirect(url_for("dead_letter", dl_id=dl_id))

    @app.post("/dead-letters/<dl_id>/discard")
    def discard_one(dl_id: str) -> Response:
        user = require_operator()
        reason = request.form.get("reason", "")
        try:
            queries.discard_one(store(), dl_id, reason, who=user.name)
        except ReplayError as exc:
            flash(f"{dl_id} not discarded: {exc}", "error")
        else:
            flash(f"{dl_id} discarded by {user.name}.", "ok")
        return redirect(url_for("dead_letter", dl_id=dl_id))

    @app.post("/replay-selected")
    def replay_selected() -> Response:
        user = require_operator()
        ids = request.form.getlist("ids")[:1000]
        flt = queries.Filter.from_args(request.form)
        if not ids:
            flash("Nothing selected: tick the dead letters to replay.", "error")
        else:
            result = queries.replay_many(store(), ids, wiring.enqueue, ingest_fn(), who=user.name)
            flash(f"Replay of the selected by {user.name}: {result.summary('replayed')}.", "ok")
        return redirect(index_url(flt))

    @app.post("/replay-matching")
    def replay_matching() -> Response:
        user = require_operator()
        flt = queries.Filter.from_args(request.form)
        s = store()
        ids = queries.matching_ids(s, flt)
        result = queries.replay_many(s, ids, wiring.enqueue, ingest_fn(), who=user.name)
        flash(f"Replay of everything matching the filter by {user.name}: {result.summary('replayed')}.", "ok")
        return redirect(index_url(flt))

    @app.errorhandler(403)
    @app.errorhandler(404)
    def refused(exc: Any) -> tuple[str, int]:
        code = int(getattr(exc, "code", 403) or 403)
        return render_template("error.html", code=code, message=getattr(exc, "description", "")), code

    return app
