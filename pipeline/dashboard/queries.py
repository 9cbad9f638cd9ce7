"""What the dashboard shows and does, as plain functions over the durable records (no Flask, no broker).

Everything here reads the records in Redis through ``Store``; the one broker read is the length of the
pipeline's queue lists (``LLEN events`` …), which needs no consumer and changes nothing.
"""

from __future__ import annotations

import importlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime
from typing import Any

from pipeline.breaker import Breaker
from pipeline.deadletters import Enqueue, ReplayError, discard, replay
from pipeline.redact import mask, mask_text
from pipeline.store import DeadLetter, P, Record, Store

QUEUES = ("events", "acd", "cegid_loop")
CEGID = "cegid_loop"
STATUSES = ("open", "closed")
FACETS = ("provider", "client_file", "error_class", "step", "day")
SUCCESS_STATES = ("confirmed", "exported", "skipped")
FLOWER_TASKS = {
    ("acd", "fetch"): "hubsync.acd.fetch_document",
    ("acd", "rename"): "hubsync.acd.rename_document",
    ("acd", "map"): "hubsync.acd.map_entry",
    ("acd", "post"): "hubsync.acd.post_entry",
    ("acd", "confirm"): "hubsync.acd.confirm_ack",
}
INGEST_TASK = "hubsync.ingest_event"
AUDIT_SHOWN = 200


def day_of(ts: float) -> str:
    """The UTC day of a timestamp, ``YYYY-MM-DD``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def when(ts: float | None) -> str:
    """A timestamp as operators read it (UTC), or ``-``."""
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _valid_day(raw: str) -> str:
    try:
        return date.fromisoformat(raw.strip()).isoformat() if raw.strip() else ""
    except ValueError:
        return ""


@dataclass(frozen=True)
class Filter:
    """Which dead letters to show: every field empty means "any"."""

    provider: str = ""
    client_file: str = ""
    error_class: str = ""
    step: str = ""
    date_from: str = ""
    date_to: str = ""
    q: str = ""
    status: str = "open"

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> Filter:
        """Read a filter from query or form parameters, ignoring anything malformed."""
        status = args.get("status", "open")
        return cls(
            provider=args.get("provider", "").strip()[:64],
            client_file=args.get("client_file", "").strip()[:128],
            error_class=args.get("error_class", "").strip()[:128],
            step=args.get("step", "").strip()[:64],
            date_from=_valid_day(args.get("date_from", "")),
            date_to=_valid_day(args.get("date_to", "")),
            q=args.get("q", "").strip()[:200],
            status=status if status in STATUSES else "open",
        )

    def params(self) -> dict[str, str]:
        """The non-empty fields, for links and hidden form fields."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}
        if out.get("status") == "open":
            del out["status"]
        return out

    def with_(self, **changes: str) -> Filter:
        """The same filter with some fields changed."""
        return replace(self, **changes)

    @property
    def narrowed(self) -> bool:
        """True when anything but the status narrows the list."""
        return any(v for k, v in self.params().items() if k != "status")

    def matches(self, dl: DeadLetter) -> bool:
        """Whether one dead letter passes the filter (the status is chosen when loading)."""
        if self.provider and dl.provider != self.provider:
            return False
        if self.client_file and dl.client_file_id != self.client_file:
            return False
        if self.error_class and dl.error_class != self.error_class:
            return False
        if self.step and dl.step != self.step:
            return False
        day = day_of(dl.created_at)
        if self.date_from and day < self.date_from:
            return False
        if self.date_to and day > self.date_to:
            return False
        if self.q:
            haystack = search_text(dl)
            return all(word in haystack for word in self.q.lower().split())
        return True


def _labels(event: Any) -> list[str]:
    if not isinstance(event, dict):
        return []
    entry = event.get("entry")
    if not isinstance(entry, dict):
        return []
    labels = [str(entry.get("label") or ""), str(entry.get("invoice_number") or "")]
    for line in entry.get("lines") or []:
        if isinstance(line, dict):
            labels.append(str(line.get("label") or ""))
    return [label for label in labels if label]


def search_text(dl: DeadLetter) -> str:
    """What the search box looks in: ids, the entry's labels and the error's text, lower-cased."""
    parts = [dl.id, dl.entry_id, dl.event_id, dl.record_id, dl.client_file_id, dl.error_class, dl.message, dl.hint]
    parts += _labels(dl.event)
    if isinstance(dl.event, dict):
        parts.append(str(dl.event.get("event_id") or ""))
    elif isinstance(dl.event, str):
        parts.append(dl.event[:4096])
    return "\n".join(parts).lower()


def dead_letters(store: Store, flt: Filter) -> list[DeadLetter]:
    """The dead letters passing ``flt``, newest first."""
    letters = [dl for dl in store.dead_letters(status=flt.status) if flt.matches(dl)]
    letters.sort(key=lambda dl: dl.created_at, reverse=True)
    return letters


def facet_value(dl: DeadLetter, facet: str) -> str:
    """The value of one grouping dimension for a dead letter."""
    if facet == "provider":
        return dl.provider
    if facet == "client_file":
        return dl.client_file_id or "-"
    if facet == "error_class":
        return dl.error_class
    if facet == "step":
        return dl.step
    if facet == "day":
        return day_of(dl.created_at)
    raise ValueError(f"no facet {facet!r}")


def facets(letters: Iterable[DeadLetter]) -> dict[str, list[tuple[str, int]]]:
    """How many dead letters per provider, client file, error class, failed step and day."""
    counters: dict[str, Counter[str]] = {facet: Counter() for facet in FACETS}
    for dl in letters:
        for facet in FACETS:
            counters[facet][facet_value(dl, facet)] += 1
    out = {facet: sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])) for facet, counter in counters.items()}
    out["day"] = sorted(counters["day"].items(), reverse=True)
    return out


@dataclass
class Group:
    """Dead letters sharing a provider, client file, failed step and error class: usually one cause."""

    provider: str
    client_file: str
    step: str
    error_class: str
    count: int = 0
    oldest: float = 0.0
    newest: float = 0.0
    hint: str = ""
    message: str = ""

    def filter(self, base: Filter) -> Filter:
        """The filter that shows exactly this group."""
        return base.with_(
            provider=self.provider,
            client_file="" if self.client_file == "-" else self.client_file,
            step=self.step,
            error_class=self.error_class,
        )


def groups(letters: Iterable[DeadLetter]) -> list[Group]:
    """The dead letters grouped by likely cause, biggest group first."""
    by_key: dict[tuple[str, str, str, str], Group] = {}
    for dl in letters:
        key = (dl.provider, dl.client_file_id or "-", dl.step, dl.error_class)
        group = by_key.get(key)
        if group is None:
            group = by_key[key] = Group(*key, oldest=dl.created_at, hint=dl.hint, message=mask_text(dl.message))
        group.count += 1
        group.oldest = min(group.oldest, dl.created_at)
        group.newest = max(group.newest, dl.created_at)
    return sorted(by_key.values(), key=lambda g: (-g.count, g.provider, g.client_file, g.step))


def flower_link(flower_url: str, dl: DeadLetter) -> str:
    """A link to the failed step's tasks in Flower (its failures, by task name), or ``""``."""
    if not flower_url:
        return ""
    name = INGEST_TASK if dl.provider == "ingest" else FLOWER_TASKS.get((dl.provider, dl.step), "")
    base = flower_url.rstrip("/")
    return f"{base}/tasks?name={name}&state=FAILURE" if name else f"{base}/tasks"


@dataclass
class ProviderState:
    """Where the dead letter's entry stands with one provider now."""

    provider: str
    client_file: str
    state: str
    step: str
    ack: str
    provider_id: str
    attempts: int
    dead_letter_id: str
    next_retry_at: str
    updated_at: str


@dataclass
class Detail:
    """Everything the page of one dead letter shows (secrets and URL tokens already masked)."""

    dl: DeadLetter
    event_json: str
    attempts: list[dict[str, Any]]
    states: list[ProviderState]
    audit: list[dict[str, Any]]
    flower_url: str
    message: str
    hint: str


def provider_id_text(rec: Record) -> str:
    """The provider's id for a record: ACD's EcritureNum once its FEC shows the entry (ACD gives none back)."""
    if rec.provider_id:
        return f"EcritureNum {rec.provider_id}" if rec.provider == "acd" else rec.provider_id
    if rec.provider == "acd" and rec.posted_at:
        return "posted; not in the FEC yet"
    return "-"


def detail(store: Store, dl_id: str, flower_url: str = "") -> Detail | None:
    """One dead letter with its masked event, every attempt, its audit and its entry's state per provider."""
    dl = store.dead_letter(dl_id)
    if dl is None:
        return None
    attempts = store.attempts(dl.record_id) if dl.record_id else []
    if not attempts:
        attempts = list(dl.attempts)
    shown_attempts = []
    for attempt in attempts:
        item = mask(attempt)
        item["when"] = when(attempt.get("at"))
        shown_attempts.append(item)
    states = []
    if dl.entry_id:
        for rec in store.records_of_entry(dl.entry_id):
            states.append(
                ProviderState(
                    provider=rec.provider,
                    client_file=rec.client_file_id,
                    state=rec.state,
                    step=rec.step,
                    ack=f"(#{rec.ack}#)" if rec.ack else "-",
                    provider_id=provider_id_text(rec),
                    attempts=rec.attempts_count,
                    dead_letter_id=rec.dead_letter_id or "",
                    next_retry_at=when(rec.next_retry_at),
                    updated_at=when(rec.updated_at),
                )
            )
    event = mask(dl.event)
    event_json = event if isinstance(event, str) else json.dumps(event, indent=2, ensure_ascii=False, sort_keys=True)
    audit = [{**mask(a), "when": when(a.get("at"))} for a in dl.audit]
    return Detail(
        dl=dl,
        event_json=event_json,
        attempts=shown_attempts,
        states=states,
        audit=audit,
        flower_url=flower_link(flower_url, dl),
        message=mask_text(dl.message),
        hint=dl.hint,
    )


# -- actions -------------------------------------------------------------------------------------------


@dataclass
class BulkResult:
    """What a replay or discard of several dead letters did."""

    done: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)

    def summary(self, verb: str) -> str:
        """One line for the page."""
        text = f"{len(self.done)} {verb}"
        if self.refused:
            text += f", {len(self.refused)} not {verb}: " + "; ".join(f"{i}: {why}" for i, why in self.refused[:5])
        return text


def replay_many(
    store: Store, ids: Iterable[str], enqueue: Enqueue, ingest: Callable[[Any], str], who: str
) -> BulkResult:
    """Replay each dead letter from its failed step; one refusal does not stop the others."""
    result = BulkResult()
    for dl_id in dict.fromkeys(ids):
        try:
            replay(store, dl_id, enqueue, ingest, who=who)
        except ReplayError as exc:
            result.refused.append((dl_id, str(exc)))
        else:
            result.done.append(dl_id)
    return result


def discard_one(store: Store, dl_id: str, reason: str, who: str) -> None:
    """Discard a dead letter with the operator's reason (raises ``ReplayError`` when it cannot be)."""
    discard(store, dl_id, reason.strip()[:500], who=who)


def matching_ids(store: Store, flt: Filter) -> list[str]:
    """The open dead letters a filter shows right now (what "replay everything matching" replays)."""
    return [dl.id for dl in dead_letters(store, flt.with_(status="open"))]


def recent_audit(store: Store, limit: int = AUDIT_SHOWN) -> list[dict[str, Any]]:
    """The newest replays and discards across every dead letter."""
    out = []
    for raw in store.r.lrange(f"{P}:audit", 0, limit - 1):
        item = json.loads(raw)
        out.append({**mask(item), "when": when(item.get("at"))})
    return out


# -- health --------------------------------------------------------------------------------------------


@dataclass
class Health:
    """How one client file fares with one provider."""

    provider: str
    client_file: str
    connection: str
    connection_message: str
    dossier: str
    states: dict[str, int]
    last_success: str
    waiting_retries: int
    dead_open: int
    failures_in_a_row: int
    breaker: str
    breaker_until: str
    pending_exports: int | None = None
    next_export: str = ""


def _last_success(store: Store, provider: str, client_file: str) -> float:
    rids = store.record_ids(provider, client_file)
    pipe = store.r.pipeline(transaction=False)
    for rid in rids:
        pipe.hmget(f"{P}:rec:{{{rid}}}", "state", "confirmed_at", "updated_at")
    best = 0.0
    for state, confirmed_at, updated_at in pipe.execute() if rids else []:
        if state in SUCCESS_STATES:
            best = max(best, float(confirmed_at or updated_at or 0))
    return best


def health(store: Store) -> list[Health]:
    """Per client file and provider: last success, failures in a row, waiting retries, breaker state."""
    pairs = set(store.record_groups())
    connections = {(c.provider, c.client_file_id): c for c in store.connections()}
    pairs |= set(connections)
    dead = Counter((dl.provider, dl.client_file_id) for dl in store.dead_letters())
    exports = cegid_exports(store, sorted(cf for provider, cf in pairs if provider == CEGID))
    out = []
    for provider, client_file in sorted(pairs):
        conn = connections.get((provider, client_file))
        states = store.states(provider, client_file)
        breaker_state: dict[str, float | int | str] = {"state": "-", "failures": 0}
        if conn is not None and provider == "acd":
            from pipeline.acd.steps import breaker_name

            breaker_state = Breaker(store, breaker_name(conn.params), 0, 0, 0).state()
        until = float(breaker_state.get("open_until") or 0)
        pending, next_export = exports.get(client_file, (None, "")) if provider == CEGID else (None, "")
        out.append(
            Health(
                provider=provider,
                client_file=client_file,
                connection=conn.status if conn else "not connected",
                connection_message=mask_text(conn.status_message) if conn else "",
                dossier=str(conn.params.get("dossier") or "-") if conn else "-",
                states=states,
                last_success=when(_last_success(store, provider, client_file)),
                waiting_retries=states.get("waiting_retry", 0),
                dead_open=dead.get((provider, client_file), 0),
                failures_in_a_row=int(breaker_state.get("failures") or 0),
                breaker=str(breaker_state.get("state")),
                breaker_until=when(until) if breaker_state.get("state") == "open" else "",
                pending_exports=pending,
                next_export=next_export,
            )
        )
    return out


# kombu keeps a Redis queue as one list per priority step: "<queue>" for 0, "<queue>\x06\x16<n>" for the others.
PRIORITY_STEPS = (0, 3, 6, 9)


def queue_depths(store: Store) -> dict[str, int]:
    """Messages waiting in each of the pipeline's queues, every priority included (``LLEN``: the only read of
    the broker)."""
    pipe = store.r.pipeline(transaction=False)
    for queue in QUEUES:
        for pri in PRIORITY_STEPS:
            pipe.llen(queue if pri == 0 else f"{queue}\x06\x16{pri}")
    sizes = [int(n) for n in pipe.execute()]
    step = len(PRIORITY_STEPS)
    return {queue: sum(sizes[i * step : (i + 1) * step]) for i, queue in enumerate(QUEUES)}


def cegid_exports(store: Store, client_files: Iterable[str]) -> dict[str, tuple[int, str]]:
    """Pending Cegid Loop exports and the next export time per client file (empty without that provider)."""
    files = list(client_files)
    if not files:
        return {}
    try:
        export = importlib.import_module("pipeline.cegid.export")
        pending: Callable[[Store, str], list[str]] = export.pending
        next_export_at: Callable[[], datetime] = export.next_export_at
    except (ImportError, AttributeError, SyntaxError):  # Cegid Loop not (yet) part of this deployment
        return {}
    at = next_export_at().strftime("%Y-%m-%d %H:%MZ")
    return {cf: (len(pending(store, cf)), at) for cf in files}
