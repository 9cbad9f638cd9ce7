"""What the dashboard shows and does, as plain functions over the durable records (no Flask, no broker).

Everything here reads the records in Redis through ``Store``; the one broker read is the length of the
pipeline's queue lists (``LLEN events`` …), which needs no consumer and changes nothing. Pages read the
counters and indexes the store keeps as states change, one page of dead letters at a time: their cost does
not grow with the number of records or dead letters kept.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime
from typing import Any

from pipeline import schedule
from pipeline.console import when as when  # how a time reads, the same on the command line
from pipeline.deadletters import INGEST
from pipeline.dlq import ReplayError, discard, replay
from pipeline.ingest import INGEST_TASK
from pipeline.providers import Enqueue
from pipeline.redact import mask, mask_text
from pipeline.registry import PROVIDERS
from pipeline.schedule import JobStatus
from pipeline.store import DeadLetter, Store
from pipeline.views import Health as Health  # the health page's rows, shared with the command line
from pipeline.views import health as health
from pipeline.views import key_text
from pipeline.views import provider_id_text as provider_id_text

STATUSES = ("open", "closed")
FACETS = ("provider", "client_file", "error_class", "step", "day")
AUDIT_SHOWN = 200
PAGE_SIZE = 50
SEARCH_BATCH = 500
SEARCH_SCAN_LIMIT = 5000


def day_of(ts: float) -> str:
    """The UTC day of a timestamp, ``YYYY-MM-DD``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


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


def _where(flt: Filter) -> dict[str, str]:
    return {"provider": flt.provider, "client_file": flt.client_file, "error_class": flt.error_class, "step": flt.step}


def _time_range(flt: Filter) -> tuple[float | None, float | None]:
    def start(day: str) -> float:
        return datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()

    since = start(flt.date_from) if flt.date_from else None
    until = start(flt.date_to) + 86400 - 1e-6 if flt.date_to else None
    return since, until


@dataclass
class Page:
    """One page of dead letters passing a filter, newest first, and how many pass it in all.

    A text search reads candidates newest first and stops after ``SEARCH_SCAN_LIMIT``: ``searched`` says
    how many it looked at and ``complete`` whether that was all of them."""

    letters: list[DeadLetter]
    total: int
    offset: int = 0
    size: int = PAGE_SIZE
    searched: int = 0
    complete: bool = True

    @property
    def next_offset(self) -> int | None:
        """The offset of the next page, or None on the last one."""
        return self.offset + self.size if self.offset + self.size < self.total else None

    @property
    def previous_offset(self) -> int | None:
        """The offset of the previous page, or None on the first one."""
        return max(0, self.offset - self.size) if self.offset > 0 else None


def page(store: Store, flt: Filter, offset: int = 0, size: int = PAGE_SIZE) -> Page:
    """The dead letters passing ``flt``, one page, from the indexes (a text search reads a bounded window)."""
    since, until = _time_range(flt)
    offset = max(0, offset)
    if not flt.q:
        ids, total = store.dead_letters.page(flt.status, _where(flt), since, until, offset, size)
        return Page(store.dead_letters.by_ids(ids), total, offset, size)
    found: list[DeadLetter] = []
    scanned, total = 0, 0
    while scanned < SEARCH_SCAN_LIMIT:
        ids, total = store.dead_letters.page(flt.status, _where(flt), since, until, scanned, SEARCH_BATCH)
        if not ids:
            break
        scanned += len(ids)
        found += [dl for dl in store.dead_letters.by_ids(ids) if flt.matches(dl)]
    return Page(found[offset : offset + size], len(found), offset, size, scanned, scanned >= total)


def dead_letters(store: Store, flt: Filter) -> list[DeadLetter]:
    """Every dead letter passing ``flt``, newest first (for bulk actions; pages use ``page``)."""
    if flt.q:
        return page(store, flt, 0, SEARCH_SCAN_LIMIT).letters
    since, until = _time_range(flt)
    out: list[DeadLetter] = []
    while True:
        ids, _total = store.dead_letters.page(flt.status, _where(flt), since, until, len(out), SEARCH_BATCH)
        if not ids:
            return out
        out += store.dead_letters.by_ids(ids)


def facet_counts(store: Store, status: str = "open") -> dict[str, list[tuple[str, int]]]:
    """How many dead letters of a status per provider, client file, error class, failed step and day (kept
    up to date as dead letters open and close: no dead letter is read)."""
    counts = store.dead_letters.facets(status)
    out = {facet: sorted(counts[facet].items(), key=lambda kv: (-kv[1], kv[0])) for facet in FACETS}
    out["day"] = sorted(counts["day"].items(), reverse=True)
    return out


def cause_groups(store: Store, flt: Filter, shown: int = 30) -> list[Group]:
    """The dead letters grouped by likely cause (provider, client file, step, error class), biggest first,
    narrowed by the filter's facets (not by its dates or search), with the newest one's hint."""
    out = []
    for provider, client_file, step, error_class, n, newest, dl_id in store.dead_letters.groups(flt.status):
        if any(
            wanted and wanted != have
            for wanted, have in (
                (flt.provider, provider),
                (flt.client_file, client_file),
                (flt.step, step),
                (flt.error_class, error_class),
            )
        ):
            continue
        out.append((Group(provider, client_file, step, error_class, n, newest=newest), dl_id))
    out.sort(key=lambda item: (-item[0].count, item[0].provider, item[0].client_file, item[0].step))
    out = out[:shown]
    samples = {dl.id: dl for dl in store.dead_letters.by_ids([dl_id for _, dl_id in out if dl_id])}
    for group, dl_id in out:
        sample = samples.get(dl_id)
        if sample is not None:
            group.hint, group.message = sample.hint, mask_text(sample.message)
    return [group for group, _ in out]


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


def flower_link(flower_url: str, dl: DeadLetter) -> str:
    """A link to the failed step's tasks in Flower (its failures, by task name), or ``""``."""
    if not flower_url:
        return ""
    provider = PROVIDERS.find(dl.provider)
    if dl.provider == INGEST:
        name = INGEST_TASK
    elif provider is not None and dl.step in provider.step_names:
        name = provider.step(dl.step).task
    else:
        name = ""
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


def detail(store: Store, dl_id: str, flower_url: str = "") -> Detail | None:
    """One dead letter with its masked event, every attempt, its audit and its entry's state per provider."""
    dl = store.dead_letters.get(dl_id)
    if dl is None:
        return None
    attempts = store.records.attempts(dl.record_id) if dl.record_id else []
    if not attempts:
        attempts = list(dl.attempts)
    shown_attempts = []
    for attempt in attempts:
        item = mask(attempt)
        item["when"] = when(attempt.get("at"))
        shown_attempts.append(item)
    states = []
    if dl.entry_id:
        for rec in store.records.of_entry(dl.entry_id):
            states.append(
                ProviderState(
                    provider=rec.provider,
                    client_file=rec.client_file_id,
                    state=rec.state,
                    step=rec.step,
                    ack=key_text(rec) or "-",
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


def recent_audit(store: Store, limit: int = AUDIT_SHOWN, offset: int = 0) -> list[dict[str, Any]]:
    """The newest replays and discards across every dead letter (one page)."""
    return audit_page(store, offset, limit)[0]


def audit_page(store: Store, offset: int = 0, size: int = AUDIT_SHOWN) -> tuple[list[dict[str, Any]], int]:
    """One page of the audit trail, newest first, and how many lines are kept."""
    items, total = store.dead_letters.audit_page(max(0, offset), size)
    return [{**mask(item), "when": when(item.get("at"))} for item in items], total


# -- health (its rows: pipeline.views.health) ------------------------------------------------------


def scheduled_jobs(store: Store) -> list[JobStatus]:
    """The beat schedule's jobs: last run, outcome, next due time, late or not."""
    beat_schedule, _lock_key = schedule.beat_config()
    return schedule.jobs(store, beat_schedule)


def beat_lock(store: Store) -> float | None:
    """Seconds left on the scheduler's lock, or None when no beat holds it."""
    return schedule.beat_lock(store, schedule.beat_config()[1])
