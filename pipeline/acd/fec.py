"""Finding entries again in ACD: the FEC file, read once for every entry of a dossier that waits for it.

ACD has no route that searches entries and gives no id when it takes one: the year's FEC (the whole fiscal
year, tab-separated, decimal comma) is the only way back, by the ``(#XXXX#)`` ACK code at the end of each
line's label. A FEC is expensive (ACD builds it from the whole fiscal year), so it is shared:

- an entry that needs to be found (to confirm it, or after a post whose outcome is unknown) registers in its
  dossier's waiting set in Redis, with the time from which a FEC must have been *requested* to be conclusive
  about it (``conclusive_from``: posted_at + ACD's index lag, or after an unknown outcome the post's start +
  the HTTP timeout + the lag);
- whichever worker finds a fetch due takes the dossier's FEC lock (one fetch in flight per dossier, its TTL
  above the FEC read timeout), honours a minimum interval between fetches (longer for a FEC that ACD takes
  long to build: ``LOAD_FACTOR``), reads each needed fiscal year's FEC once, and writes the outcome into the
  record of every waiting entry: the EcritureNum(s) found, or "not found as of the fetch's start";
- a firm's server builds at most ``HUBSYNC_ACD_FEC_READS_PER_SERVER`` FECs for the hub at once, however many
  of its dossiers wait: the fetch also takes one of the server's slots (locks shared by every worker), and a
  dossier that finds them all taken waits for one;
- the others do not wait in a worker: they are deferred (a countdown) until the next fetch.

"Not found" is only ever concluded from a FEC requested after ``conclusive_from``; "found" is always final.

Keys, per dossier scope::

    hubsync:acd:fec:<scope>:waiting   sorted set: record id -> conclusive_from
    hubsync:acd:fec:<scope>:wait      hash: record id -> {"year", "ack"}
    hubsync:acd:fec:<scope>           hash: started_at, duration of the last fetch
    record fields                      fec_checked_at, fec_found (JSON list of EcritureNum), fec_error
"""

from __future__ import annotations

import contextlib
import json
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pipeline import runtime
from pipeline.acd.answers import as_bool, ci_get
from pipeline.acd.errors import FecUnavailable, MalformedResponse
from pipeline.acd.tokens import count
from pipeline.config import settings
from pipeline.errors import Deferred
from pipeline.stepkit import deferred_while_busy
from pipeline.store import LockBusy, Record, Store, now

PROVIDER = "acd"
ACK_AT_END = re.compile(r"\(#([A-Z0-9]{4})#\)\s*$")
REQUIRED_COLUMNS = ("ecriturenum", "ecriturelib")
LOCK_MARGIN_SECONDS = 30.0
LOAD_FACTOR = 3.0
"""Fetches are at least this many times the last one's duration apart: a dossier whose FEC takes ACD long to
build is asked for it less often (the server spends at most a quarter of its time on it for the hub)."""


class FecUnreadable(MalformedResponse):
    """A FEC whose header or amounts cannot be read."""


# -- the file --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FecLine:
    """One line of a FEC (one entry line)."""

    journal: str
    number: str
    date: str
    account: str
    aux: str
    piece: str
    label: str
    debit: Decimal
    credit: Decimal


def parse_amount(raw: str) -> Decimal:
    """A FEC amount: decimal comma (or point), spaces as thousands separators, empty for zero."""
    text = raw.strip().replace("\u00a0", "").replace("\u202f", "").replace(" ", "")
    if not text:
        return Decimal(0)
    if "," in text:
        text = text.replace(".", "").replace(",", ".")
    try:
        return Decimal(text)
    except InvalidOperation as exc:
        raise FecUnreadable(f"the FEC holds an amount that is not a number: {raw!r}") from exc


def parse_fec(text: str) -> list[FecLine]:
    """Read a FEC: a header line then one line per entry line; tab-separated (a ``|`` file is accepted too),
    CRLF or LF, a BOM tolerated, column names in any case."""
    rows = [row for row in text.lstrip("\ufeff").splitlines() if row.strip()]
    if not rows:
        raise FecUnreadable("ACD answered an empty FEC (not even its header)")
    header = rows[0]
    sep = "\t" if "\t" in header else ("|" if "|" in header else ";")
    columns = {name.strip().strip('"').casefold(): i for i, name in enumerate(header.split(sep))}
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise FecUnreadable(f"the FEC has no {', '.join(missing)} column (header: {header[:200]!r})")

    def cell(values: list[str], name: str) -> str:
        i = columns.get(name)
        return values[i].strip() if i is not None and i < len(values) else ""

    out = []
    for row in rows[1:]:
        values = row.split(sep)
        out.append(
            FecLine(
                journal=cell(values, "journalcode"),
                number=cell(values, "ecriturenum"),
                date=cell(values, "ecrituredate"),
                account=cell(values, "comptenum"),
                aux=cell(values, "compauxnum"),
                piece=cell(values, "pieceref"),
                label=cell(values, "ecriturelib"),
                debit=parse_amount(cell(values, "debit")),
                credit=parse_amount(cell(values, "credit")),
            )
        )
    return out


def entries_by_ack(lines: Iterable[FecLine]) -> dict[str, list[str]]:
    """ACK code -> the EcritureNum of every ACD entry carrying it at the end of a line label (an entry counts
    once however many of its lines carry it; two entries are two even when their numbers are equal)."""
    seen: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for line in lines:
        match = ACK_AT_END.search(line.label)
        if match:
            seen[match.group(1)].add((line.journal, line.number))
    return {ack: [number for _, number in sorted(refs, key=lambda r: (r[1], r[0]))] for ack, refs in seen.items()}


# -- fiscal years ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FiscalYear:
    """One fiscal year of a dossier (ACD's ``compta/exercices``)."""

    start: date
    end: date
    current: bool = False
    closed: bool = False

    def holds(self, day: date) -> bool:
        """Whether ``day`` falls in this fiscal year."""
        return self.start <= day <= self.end

    def to_dict(self) -> dict[str, Any]:
        """JSON form (ISO dates)."""
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "current": self.current,
            "closed": self.closed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FiscalYear:
        """From ``to_dict``."""
        return cls(date.fromisoformat(data["start"]), date.fromisoformat(data["end"]), data["current"], data["closed"])


_DOTNET_DATE = re.compile(r"/Date\((-?\d+)")


def parse_day(value: Any) -> date | None:
    """A date as ACD writes it: an ISO date-time (``2026-04-01T00:00:00``, with or without a zone), an ISO date,
    ``dd/mm/yyyy``, or .NET's ``/Date(ms)/``."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    dotnet = _DOTNET_DATE.search(text)
    if dotnet:
        return datetime.fromtimestamp(int(dotnet.group(1)) / 1000).date()
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        pass
    try:
        return datetime.strptime(text[:10], "%d/%m/%Y").date()
    except ValueError:
        return None


def parse_fiscal_years(raw: Iterable[dict[str, Any]]) -> list[FiscalYear]:
    """The fiscal years of a ``compta/exercices`` answer (property names in any case), oldest first."""
    years = []
    for item in raw:
        start, end = parse_day(ci_get(item, "DateDebut")), parse_day(ci_get(item, "DateFin"))
        if start is None or end is None or end < start:
            continue
        years.append(FiscalYear(start, end, as_bool(ci_get(item, "Courant")), as_bool(ci_get(item, "Cloture"))))
    return sorted(years, key=lambda y: y.start)


def fiscal_year_of(day: date, years: Iterable[FiscalYear]) -> FiscalYear | None:
    """The fiscal year holding ``day``, or None."""
    return next((y for y in years if y.holds(day)), None)


def fec_year(day: date, years: Iterable[FiscalYear]) -> int:
    """The ``Annee`` to ask the FEC for: the year in which the fiscal year holding ``day`` ENDS (a fiscal year
    from April 2026 to March 2027 holds November 2026 and is FEC 2027); the calendar year if none is known."""
    held = fiscal_year_of(day, years)
    return held.end.year if held is not None else day.year


@dataclass(frozen=True)
class FecYears:
    """The FEC years that may hold an entry: exactly one when its fiscal year is known; otherwise every year its
    fiscal year could end in (a fiscal year lasts at most 24 months), where "no FEC for that year" is an answer."""

    years: tuple[int, ...]
    guessed: bool = False


def fec_years(day: date, years: Iterable[FiscalYear] | None) -> FecYears:
    """Where to look for an entry dated ``day``: never a single guessed year, which could wrongly say "absent"
    (and have the entry posted again) when the dossier's fiscal years are not calendar years."""
    held = fiscal_year_of(day, years or [])
    if held is not None:
        return FecYears((held.end.year,))
    return FecYears((day.year, day.year + 1, day.year + 2), guessed=True)


# -- the coordinator -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What the last FEC read said about one record."""

    checked_at: float
    found: list[str]
    error: str = ""


def outcome(store: Store, rid: str) -> Outcome | None:
    """The FEC's last word on a record, or None."""
    return _outcome(*store.records.fields(rid, "fec_checked_at", "fec_found", "fec_error"))


def outcome_of(rec: Record) -> Outcome | None:
    """The FEC's last word on a record as it was loaded (no read)."""
    return _outcome(rec.extra.get("fec_checked_at"), rec.extra.get("fec_found"), rec.extra.get("fec_error"))


def _outcome(checked: str | None, found: str | None, error: str | None) -> Outcome | None:
    if not checked:
        return None
    return Outcome(float(checked), json.loads(found) if found else [], error or "")


def register(
    store: Store,
    scope: str,
    rid: str,
    ack: str,
    where: FecYears,
    conclusive_from: float,
    generation: int | None = None,
) -> tuple[dict[str, str], float | None]:
    """Put a record in its dossier's waiting set (idempotent; a later ``conclusive_from`` wins). ``generation``:
    the entry is posted, and a read that finds it confirms it (its chain of that generation). Returns the
    dossier's last read and planned read as they were then (one round trip for all of it)."""
    wanted: dict[str, Any] = {"years": list(where.years), "guessed": where.guessed, "ack": ack}
    if generation is not None:
        wanted["gen"] = generation
    return store.fec.register(scope, rid, conclusive_from, wanted)


def waiting(store: Store, scope: str) -> int:
    """How many records of a dossier wait for its FEC."""
    return store.fec.waiting_count(scope)


def _write_outcome(store: Store, rid: str, checked_at: float, found: list[str], error: str = "") -> bool:
    if store.records.fields(rid, "state")[0] is None:
        return False  # the record is gone: never create a stub
    # no counter or index depends on these: one HSET (an empty error, not a cleared one, which would be an HDEL)
    store.records.note(rid, fec_checked_at=checked_at, fec_found=found, fec_error=error)
    return True


Fetch = Callable[[int], str]
"""Reads the FEC of one year (the fiscal year ending in it) from ACD."""


def fetch_round(store: Store, scope: str, fetch: Fetch, hold: Iterable[str] = (), own: str | None = None) -> float:
    """Read the FEC once for every record waiting in a dossier and write each one's outcome; returns the
    fetch's start time. Run only under the dossier's FEC lock (and ``hold``, the names of other locks held for
    the read, such as the server's slot), by the confirm step of ``own``.

    A posted entry that rode this read (no confirm message of its own) is confirmed here when found; one the read
    cannot confirm (absent, or a year without FEC) gets its confirm step published, which judges it; and when
    entries are left waiting for a later read and ``own`` is not one of them, the earliest is woken to make it.
    """
    started = now()
    store.fec.read_started(scope, started)
    members: list[tuple[str, float]] = []
    info: dict[str, dict[str, Any]] = {}
    for rid, score, looks_for in store.fec.waiting(scope):
        members.append((rid, score))
        if looks_for is None:
            store.fec.forget_waiting(scope, rid)
            continue
        info[rid] = looks_for
    conclusive = [rid for rid, score in members if score <= started and rid in info]
    years = sorted({int(y) for rid in conclusive for y in info[rid]["years"]})
    found: dict[str, list[str]] = {}
    read: set[int] = set()
    failed: dict[int, str] = {}
    lock_seconds = settings().acd_fec_timeout_seconds + LOCK_MARGIN_SECONDS
    try:
        for n, year in enumerate(years):
            if n:
                # each year's read gets the whole timeout: a worker that dies holding the lock stalls the dossier's
                # confirmations for one read's timeout at most
                store.locks.extend([f"fec:{scope}", *hold], lock_seconds)
            try:
                text = fetch(year)
            except FecUnavailable as exc:
                failed[year] = exc.message
                continue
            lines = parse_fec(text)
            count(store, "fec_fetches", scope)
            count(store, "fec_lines", None, len(lines))
            for ack, numbers in entries_by_ack(lines).items():
                found.setdefault(ack, []).extend(numbers)
            read.add(year)
    finally:
        store.fec.read_finished(scope, now() - started, now())
    settled: list[str] = []
    for rid, score in members:
        item = info.get(rid)
        if item is None:
            continue
        hits = found.get(str(item["ack"]))
        wanted = {int(y) for y in item["years"]}
        rider = rid != own and "gen" in item
        # a guessed year without a FEC simply holds no fiscal year: it cannot hold the entry either
        answered = read | (set(failed) if item.get("guessed") else set())
        if hits:
            if not (rider and _confirm_rider(store, rid, int(item["gen"]), started, sorted(hits))):
                _write_outcome(store, rid, started, sorted(hits))
            settled.append(rid)
        elif wanted <= answered and wanted & read:
            written = _write_outcome(store, rid, started, [])
            if score <= started or not written:
                settled.append(rid)
                if rider and written:
                    runtime.wake(PROVIDER, rid, int(item["gen"]), "confirm")
        elif wanted & set(failed) and score <= started:
            reasons = "; ".join(failed[y] for y in sorted(wanted & set(failed)))
            _write_outcome(store, rid, started, [], reasons)
            settled.append(rid)
            if rider:
                runtime.wake(PROVIDER, rid, int(item["gen"]), "confirm")
    store.fec.unregister(scope, *settled)
    _hand_over(store, scope, started, [(rid, score) for rid, score in members if rid not in settled], info, own)
    return started


def _confirm_rider(store: Store, rid: str, generation: int, read_at: float, numbers: list[str]) -> bool:
    """Confirm a posted entry the read found, for its chain (no confirm step of its own runs); False when it is
    no longer a posted entry of that generation (re-validated, replayed, dead-lettered), left to its own steps."""
    state, current = store.records.fields(rid, "state", "generation")
    if state not in ("posted", "waiting_retry") or int(current or 0) != generation:
        return False
    if len(numbers) > 1:
        store.records.note(rid, note=f"ACD holds {len(numbers)} copies: EcritureNum {', '.join(numbers)}")
    done = store.records.finish_step(
        rid,
        "confirm",
        generation,
        attempt={"step": "confirm", "outcome": "confirmed", "provider_id": numbers[0], "by": "the dossier's read"},
        provider_id=numbers[0],
        confirmed_at=now(),
        fec_checked_at=read_at,
        fec_found=numbers,
        fec_error="",
    )
    return done is not None


def _hand_over(
    store: Store,
    scope: str,
    read_at: float,
    left: list[tuple[str, float]],
    info: dict[str, dict[str, Any]],
    own: str | None,
) -> None:
    """After a read: entries still waiting need a later one. When the entry that read is one of them, its own
    retry makes it; otherwise the earliest of the riders is woken for when the next read is allowed."""
    if own is not None and any(rid == own for rid, _ in left):
        return
    riders = sorted((score, rid) for rid, score in left if "gen" in info.get(rid, {}))
    if not riders:
        return
    score, rid = riders[0]
    due = max(score, read_at + _interval(store.fec.last_read(scope)))
    store.fec.plan_read(scope, due, due - now() + 10.0)
    runtime.wake(PROVIDER, rid, int(info[rid]["gen"]), "confirm", countdown=max(0.0, due - now()) + 0.1)


def _interval(meta: dict[str, str]) -> float:
    """The time between two fetch starts: the minimum interval, longer for a FEC that takes long to build."""
    return max(settings().acd_fec_min_interval_seconds, LOAD_FACTOR * float(meta.get("duration") or 0.0))


def _settled(store: Store, rid: str, conclusive_from: float, known: Outcome | None = None) -> list[str] | None:
    """What a conclusive FEC read said about a record (None when none did yet). The read that concluded took
    the record out of the waiting set itself."""
    known = known or outcome(store, rid)
    if known is None or not (known.found or known.checked_at >= conclusive_from):
        return None
    if known.found:
        return known.found
    if known.error:
        # the next look must be a new read of the FEC, not this failed one again
        store.records.update(rid, fec_checked_at=None, fec_error=None)
        raise FecUnavailable(known.error)
    return []


def _why_wait(current: float, conclusive_from: float, last: float, due: float) -> str:
    if due == conclusive_from:
        return f"ACD writes new entries into the FEC asynchronously; the next read comes in {due - current:.1f}s"
    return f"the dossier's FEC was read {current - last:.1f}s ago; the next read comes in {due - current:.1f}s"


def _wake_at(store: Store, scope: str, meta: dict[str, str], due: float, planned: float | None) -> float:
    """When a waiting entry should look again. One of them (the first to see this read coming) wakes when it is
    due and reads; the others wake once that read should be over, so they find their outcome at the first look
    instead of meeting the lock. A planned read that starts before this entry's due cannot settle it (it could
    not hold the entry yet): this entry plans the read after that one, and the entries after it wait for that.
    ``meta`` and ``planned``: the board as ``register`` read it."""
    expected = float(meta.get("duration") or 0.5)
    current = now()
    if planned is not None and planned >= max(current, due):
        return planned + expected + random.uniform(0.3, 0.6)
    if planned is not None and planned >= current:
        due = max(due, planned + _interval(meta))
    store.fec.plan_read(scope, due, due - current + expected + 5.0)
    return due + random.uniform(0.05, 0.2)


@contextlib.contextmanager
def _server_slot(store: Store, server: str, ttl_seconds: float, expected: float) -> Iterator[list[str]]:
    """One of the server's ``HUBSYNC_ACD_FEC_READS_PER_SERVER`` FEC slots (none needed when 0 or no server):
    a firm's server builds at most that many FECs for the hub at once, however many of its dossiers wait.
    ``Deferred`` when every slot is taken."""
    slots = settings().acd_fec_reads_per_server
    if slots <= 0 or not server:
        yield []
        return
    names = [f"fec-server:{server}:{n}" for n in random.sample(range(slots), slots)]
    why = (
        f"the firm's server is building {slots} other dossiers' FECs for the hub (at most {slots} at once); this "
        "dossier's read waits for one of them to finish"
    )
    wait = max(0.5, expected) * random.uniform(0.6, 1.4)
    with deferred_while_busy(store.locks.hold_one_of(names, ttl_seconds), why, retry_after=wait) as held:
        yield [held]


def lookup(
    store: Store,
    scope: str,
    rid: str,
    ack: str,
    where: FecYears,
    conclusive_from: float,
    fetch: Fetch,
    server: str = "",
    generation: int | None = None,
) -> list[str]:
    """The EcritureNum(s) of the entry carrying ``ack`` in the dossier's FEC of ``where``; ``[]`` when FECs
    requested at or after ``conclusive_from`` do not hold it. Raises ``Deferred`` until such a FEC was read
    (sharing the dossier's fetch with every other waiting entry, and the ``server``'s FEC slots with its other
    dossiers), ``FecUnavailable`` when ACD gives no FEC. ``generation``: the entry is posted (see ``register``)."""
    s = settings()
    settled = _settled(store, rid, conclusive_from)
    if settled is not None:
        return settled
    meta, planned = register(store, scope, rid, ack, where, conclusive_from, generation)
    current = now()
    last = float(meta.get("started_at") or 0.0)
    due = max(conclusive_from, last + _interval(meta))
    if current < due:
        wake = _wake_at(store, scope, meta, due, planned)
        raise Deferred(_why_wait(current, conclusive_from, last, due), retry_after=wake - current)
    try:
        ttl = s.acd_fec_timeout_seconds + LOCK_MARGIN_SECONDS
        with store.locks.hold(f"fec:{scope}", ttl_seconds=ttl):
            meta = store.fec.last_read(scope)
            if now() >= float(meta.get("started_at") or 0.0) + _interval(meta):
                with _server_slot(store, server, ttl, float(meta.get("duration") or 1.0)) as hold:
                    fetch_round(store, scope, fetch, hold, own=rid)
    except LockBusy as exc:
        running_for = now() - float(meta.get("started_at") or now())
        expected = float(meta.get("duration") or 1.0)
        raise Deferred(
            "another worker is reading the dossier's FEC", retry_after=max(0.3, expected - running_for) + 0.3
        ) from exc
    settled = _settled(store, rid, conclusive_from)
    if settled is not None:
        return settled
    raise Deferred("waiting for the next read of the dossier's FEC", retry_after=_interval(meta))


def plan(
    store: Store, scope: str, rid: str, ack: str, where: FecYears, conclusive_from: float, generation: int
) -> tuple[float, bool]:
    """Register a just-posted entry on its dossier's FEC board; returns in how many seconds it should look and
    whether it must: True when it plans the read that can settle it (its confirm step makes that read), False
    when a read planned at or after its due time will (that read confirms it; its confirm step need not run)."""
    meta, planned = register(store, scope, rid, ack, where, conclusive_from, generation)
    due = max(conclusive_from, float(meta.get("started_at") or 0.0) + _interval(meta))
    wake = _wake_at(store, scope, meta, due, planned)
    return max(0.0, wake - now()), not (planned is not None and planned >= max(now(), due))
