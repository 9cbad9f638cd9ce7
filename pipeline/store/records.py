"""Records: one per entry per provider, the truth a task reads and writes its progress back to.

Every write goes through ``create`` and ``update``, whose scripts (``lua/record*.lua``) also move the
counters per provider, client file and state, keep the indexes of settled and in-flight records and the time
of each group's last success, atomically with the write. So reads for operators cost the same whatever the
history, and retention shrinks records past ``HUBSYNC_HISTORY_DAYS`` without any caller knowing. These
scripts touch a record's keys together with shared ones (counters, indexes): hubsync runs on one Redis (with
replicas), not on a Redis Cluster.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from redis.commands.core import Script

from pipeline.store import keys
from pipeline.store.client import Redis, script
from pipeline.store.models import (
    COMPACT_FIELDS,
    COMPACT_TIMES,
    FINAL_STATES,
    IN_FLIGHT_STATES,
    STATE_CODES,
    STATES,
    Record,
    dumps,
    now,
    record_id,
    split_record_id,
    unpack_compact,
)

ATTEMPTS_KEPT = 100
BOOKKEEPING = frozenset(
    ("state", "step", "next_retry_at", "settled_at", "dead_letter_id", "discarded", "attempts_count", "generation")
)
"""Fields whose writes move counters or indexes, or that the write script keeps: only ``update`` writes them."""


def record_script(client: Redis, name: str) -> Script:
    """One of the record scripts, after the part they share (``lua/record.lua``)."""
    return script(
        client,
        "record",
        name,
        COMPACT=", ".join(f"'{field}'" for field in COMPACT_FIELDS),
        TIMES=", ".join(f"{field} = true" for field in COMPACT_TIMES),
        CODES=", ".join(f"{state} = '{code}'" for state, code in STATE_CODES.items()),
        ATTEMPTS_KEPT=str(ATTEMPTS_KEPT),
    )


def script_keys(rid: str) -> tuple[list[str], str, str]:
    """The keys a record script touches (the record and its attempts, the group's and the shared indexes), the
    record's group and its entry id."""
    provider, client_file_id, entry_id = split_record_id(rid)
    group = keys.group(provider, client_file_id)
    return (
        [
            keys.record(rid),
            keys.kept(group),
            keys.index(group),
            keys.SETTLED,
            keys.STATES,
            keys.entry(entry_id),
            keys.LAST_SUCCESS,
            keys.IN_FLIGHT,
            keys.attempts(rid),
        ],
        group,
        entry_id,
    )


class RecordStore:
    """Records, their attempt histories, and the counters and indexes their writes keep."""

    def __init__(self, client: Redis, on_settled: Callable[[], None] | None = None) -> None:
        self.r = client
        self._write = record_script(client, "record_write")
        self._claim = script(client, "record_claim")
        # retention without any scheduler: each record that settles trims a few that settled long ago
        self.on_settled = on_settled

    # -- reading --------------------------------------------------------------------------------------------

    def get(self, rid: str) -> Record | None:
        """One record (a trimmed one as what it kept, ``trimmed`` set), or None."""
        h = self.r.hgetall(keys.record(rid))
        if h:
            return Record.from_hash(rid, h)
        provider, client_file_id, entry_id = split_record_id(rid)
        packed = self.r.hget(keys.kept(keys.group(provider, client_file_id)), entry_id)
        return Record.from_compact(rid, packed) if packed is not None else None

    def fields(self, rid: str, *names: str) -> list[str | None]:
        """Some fields of a full record, as stored (None where missing)."""
        return list(self.r.hmget(keys.record(rid), list(names)))

    def fields_of_many(self, rids: list[str], *names: str, chunk: int = 5000) -> list[list[str | None]]:
        """Some fields of several full records, pipelined in chunks (None where missing)."""
        out: list[list[str | None]] = []
        for start in range(0, len(rids), chunk):
            pipe = self.r.pipeline(transaction=False)
            for rid in rids[start : start + chunk]:
                pipe.hmget(keys.record(rid), list(names))
            out.extend(pipe.execute())
        return out

    def enqueued_event(self, rid: str) -> str | None:
        """The event whose chain was last enqueued for a record (for a trimmed one: its event)."""
        value: str | None = self.r.hget(keys.record(rid), "enqueued_event")
        if value is None and not self.r.exists(keys.record(rid)):
            rec = self.get(rid)
            return rec.event_id if rec is not None else None
        return value

    def attempts(self, rid: str) -> list[dict[str, Any]]:
        """A record's attempt history, oldest first (empty once trimmed)."""
        return [json.loads(a) for a in self.r.lrange(keys.attempts(rid), 0, -1)]

    def ids(self, provider: str, client_file_id: str) -> list[str]:
        """Every record id of a provider and client file, trimmed ones included (reads the whole group)."""
        group = keys.group(provider, client_file_id)
        entries = set(self.r.smembers(keys.index(group))) | set(self.r.hkeys(keys.kept(group)))
        return [record_id(provider, client_file_id, e) for e in sorted(entries)]

    def groups(self) -> list[tuple[str, str]]:
        """Every (provider, client file) pair that has records."""
        pairs = (m.split(":", 1) for m in self.r.smembers(keys.GROUPS))
        return sorted((provider, client_file) for provider, client_file in pairs)

    def file_under_entry(self, entry_id: str, rid: str) -> None:
        """List a record under a hub entry whose id is not the record's own (a Loop record is named for its
        document), so that the entry's re-validation finds it."""
        self.r.sadd(keys.entry(entry_id), rid)

    def entry_record_ids(self, entry_id: str) -> set[str]:
        """The ids of an entry's full records, with every provider (trimmed ones are not listed)."""
        return set(self.r.smembers(keys.entry(entry_id)))

    def of_entry(self, entry_id: str) -> list[Record]:
        """An entry's records with every provider, trimmed ones included."""
        rids = self.entry_record_ids(entry_id)
        groups = [keys.group(provider, cf) for provider, cf in self.groups()]
        pipe = self.r.pipeline(transaction=False)
        for group in groups:
            pipe.hexists(keys.kept(group), entry_id)
        rids |= {f"{group}:{entry_id}" for group, found in zip(groups, pipe.execute(), strict=True) if found}
        return [rec for rid in sorted(rids) if (rec := self.get(rid)) is not None]

    def states(self, provider: str, client_file_id: str) -> dict[str, int]:
        """How many records of a group are in each state (from the counters: no scan)."""
        group = keys.group(provider, client_file_id)
        values = self.r.hmget(keys.STATES, [f"{group}:{state}" for state in STATES])
        return {state: int(v or 0) for state, v in zip(STATES, values, strict=True)}

    def all_states(self) -> dict[tuple[str, str], dict[str, int]]:
        """Records per state of every group, from the counters (one read, whatever the history)."""
        out: dict[tuple[str, str], dict[str, int]] = {}
        for name, value in self.r.hgetall(keys.STATES).items():
            provider, client_file_id, state = name.split(":", 2)
            counts = out.setdefault((provider, client_file_id), dict.fromkeys(STATES, 0))
            counts[state] = counts.get(state, 0) + int(value)
        for group in self.groups():
            out.setdefault(group, dict.fromkeys(STATES, 0))
        return out

    def last_successes(self) -> dict[tuple[str, str], float]:
        """When a record of each group last settled successfully."""
        out = {}
        for group, stamp in self.r.hgetall(keys.LAST_SUCCESS).items():
            provider, client_file_id = group.split(":", 1)
            out[(provider, client_file_id)] = float(stamp)
        return out

    def stalled(self, before: float, limit: int = 100) -> list[tuple[str, float]]:
        """Records on their way that were due to move again before ``before`` (oldest first), with that time."""
        rows: list[tuple[str, float]] = self.r.zrangebyscore(
            keys.IN_FLIGHT, "-inf", before, start=0, num=limit, withscores=True
        )
        return rows

    def rescore(self, rid: str, due: float) -> None:
        """Say when a record in flight is next due to move (only if it is in the in-flight index)."""
        self.r.zadd(keys.IN_FLIGHT, {rid: due}, xx=True)

    # -- writing --------------------------------------------------------------------------------------------

    def create(self, rid: str, event: dict[str, Any], event_id: str, **extra: Any) -> Record:
        """A new record in state ``received`` for an entry's first event (counted, indexed); ``extra`` fields
        are written with it."""
        created = self._create(rid, event, event_id, "create", extra)
        assert created is not None
        return created

    def create_new(self, rid: str, event: dict[str, Any], event_id: str, **extra: Any) -> Record | None:
        """Like ``create``, only when no record of that id exists (full or trimmed), atomically: None when one
        does, so that of two deliveries racing one creates and the other finds it."""
        return self._create(rid, event, event_id, "create_new", extra)

    def _create(
        self, rid: str, event: dict[str, Any], event_id: str, mode: str, extra: dict[str, Any]
    ) -> Record | None:
        stamp = now()
        mapping: dict[str, Any] = {
            "state": "received",
            "step": "received",
            "event": dumps(event),
            "event_id": event_id,
            "created_at": stamp,
            "updated_at": stamp,
            "generation": 0,
            **{name: _stored(value) for name, value in extra.items() if value is not None},
        }
        pairs: list[Any] = []
        for name, value in mapping.items():
            pairs += [name, value]
        if self._run(rid, mode, pairs, [], None, stamp) is None:
            return None
        return Record.from_hash(rid, {name: str(value) for name, value in mapping.items()})

    def update(self, rid: str, attempt: dict[str, Any] | None = None, **fields: Any) -> None:
        """Write some fields of a record (and append ``attempt`` to its history); None clears a field, dicts and
        lists are stored as JSON.

        One script does the write, moves the state counters (old state -> new state), enters or leaves the
        indexes of settled and in-flight records and, on a trimmed record, first brings back what it kept, so no
        caller has to know about counters or retention.
        """
        stamp = now()
        self._write_fields(rid, "set", {"updated_at": stamp, **fields}, attempt, stamp)

    def finish_step(
        self, rid: str, step: str, generation: int, attempt: dict[str, Any] | None = None, **fields: Any
    ) -> str | None:
        """A step of ``generation`` ended well: write ``fields``, the step, no pending retry, and the state its
        progress gives (confirmed once confirmed, posted once posted, else received; a settled state stays), in
        one script; returns that state, or None (and writes nothing) when the record moved to another generation
        meanwhile (a re-validation or a replay: the step's work belongs to a chain that was replaced)."""
        stamp = now()
        fields = {"updated_at": stamp, **fields, "step": step, "retry_since": None, "next_retry_at": None}
        return self._write_fields(rid, "finish", fields, attempt, stamp, generation=generation)

    def add_attempt(self, rid: str, attempt: dict[str, Any]) -> None:
        """Append to a record's attempt history (the newest ``ATTEMPTS_KEPT`` are kept)."""
        self._write_fields(rid, "set", {}, attempt, now())

    def _write_fields(
        self,
        rid: str,
        mode: str,
        fields: dict[str, Any],
        attempt: dict[str, Any] | None,
        stamp: float,
        generation: int | None = None,
    ) -> str | None:
        pairs: list[Any] = []
        clear = []
        for name, value in fields.items():
            if value is None:
                clear.append(name)
            else:
                pairs += [name, _stored(value)]
        return self._run(rid, mode, pairs, clear, attempt, stamp, generation)

    def _run(
        self,
        rid: str,
        mode: str,
        pairs: list[Any],
        clear: list[str],
        attempt: dict[str, Any] | None,
        stamp: float,
        generation: int | None = None,
    ) -> str | None:
        """Run the write script; returns the record's state after it, None when a ``create_new`` found the record
        or the record is of another generation than ``generation`` (and trims a few old records when this write
        settled it)."""
        record_keys, group, entry_id = script_keys(rid)
        line = dumps({"at": stamp, **attempt}) if attempt is not None else ""
        guard = "" if generation is None else str(generation)
        args = [rid, group, entry_id, stamp, mode, guard, line, len(pairs) // 2, *pairs, *clear]
        flag, state = self._write(keys=[*record_keys, keys.GROUPS], args=args)
        if int(flag) < 0:
            return None
        if int(flag) and self.on_settled is not None:
            self.on_settled()
        return str(state)

    def _ensure_full(self, rid: str) -> None:
        """Bring a trimmed record back to a full one before a write that is not ``update``."""
        if not self.r.exists(keys.record(rid)):
            provider, client_file_id, entry_id = split_record_id(rid)
            if self.r.hexists(keys.kept(keys.group(provider, client_file_id)), entry_id):
                self.update(rid)

    def update_doc(self, rid: str, doc_id: str, **fields: Any) -> dict[str, Any]:
        """Merge fields into one document's progress inside a record."""
        key = keys.record(rid)
        raw = self.r.hget(key, f"doc:{doc_id}")
        if raw is None:
            self._ensure_full(rid)  # a trimmed record keeps no documents: only a first write can meet one
        doc: dict[str, Any] = json.loads(raw) if raw else {}
        doc.update(fields)
        self.r.hset(key, f"doc:{doc_id}", dumps(doc))
        return doc

    def claim(self, rid: str, name: str, value: str) -> str | None:
        """Set a field of a full record only if it is unset; returns the value it holds after (``value`` when
        this call set it, another holder's otherwise, None when the record is gone)."""
        key = keys.record(rid)
        if self.r.hsetnx(key, name, value):
            return value
        held: str | None = self.r.hget(key, name)
        return held

    def claim_start(
        self, rid: str, marker: str, seen: float | None, at: float, done_when: tuple[str, ...]
    ) -> tuple[str, str]:
        """Set ``marker`` (e.g. ``post_started_at``) to ``at`` only if it still holds ``seen`` (None: unset) and
        none of ``done_when`` is set, in one script: the claim a run makes before it writes to a provider, so two
        runs never send the same write. Returns ``("claimed", at)``, ``("done", marker)`` (the write happened),
        ``("taken", marker)`` (another run moved the marker since it was seen) or ``("gone", "")``."""
        seen_text = "" if seen is None else repr(float(seen))
        outcome, value = self._claim(keys=[keys.record(rid)], args=[marker, seen_text, repr(at), repr(at), *done_when])
        return str(outcome), str(value)

    def set_field(self, rid: str, name: str, value: str) -> None:
        """Overwrite one plain field of a full record that no counter or index depends on (not the state)."""
        self.note(rid, touch=False, **{name: value})

    def note(self, rid: str, touch: bool = True, **fields: Any) -> None:
        """Write fields of a full record (one a step is working on) that no counter or index depends on, in one
        command (two when some are cleared with None); ``touch`` also moves ``updated_at``. The state, step,
        retry times and dead letter go through ``update``."""
        booked = BOOKKEEPING.intersection(fields)
        if booked:
            raise ValueError(f"{', '.join(sorted(booked))} move counters or indexes: write them with update()")
        values = {name: _stored(value) for name, value in fields.items() if value is not None}
        if touch:
            values["updated_at"] = now()
        cleared = [name for name, value in fields.items() if value is None]
        if cleared:
            pipe = self.r.pipeline(transaction=False)
            if values:
                pipe.hset(keys.record(rid), mapping=values)
            pipe.hdel(keys.record(rid), *cleared)
            pipe.execute()
        elif values:
            self.r.hset(keys.record(rid), mapping=values)

    # -- repair ---------------------------------------------------------------------------------------------

    def recount(self) -> dict[tuple[str, str], dict[str, int]]:
        """Rebuild the state counters and the settled and in-flight indexes by reading every record (expensive:
        for repair, and once after upgrading from a version without them)."""
        counts: Counter[str] = Counter()
        names = ["state", "settled_at", "updated_at", "dead_letter_id", "discarded", "step", "next_retry_at"]
        for provider, client_file_id in self.groups():
            group = keys.group(provider, client_file_id)
            batch: list[str] = []
            for entry_id in [*self.r.sscan_iter(keys.index(group), count=1000), None]:
                if entry_id is not None:
                    batch.append(record_id(provider, client_file_id, entry_id))
                if batch and (entry_id is None or len(batch) >= 1000):
                    self._recount_batch(batch, names, group, counts)
                    batch = []
            for _entry, packed in self.r.hscan_iter(keys.kept(group), count=1000):
                counts[f"{group}:{unpack_compact(packed).get('state', '')}"] += 1
        scratch = keys.states_recount(uuid.uuid4().hex)
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(scratch)
        if counts:
            pipe.hset(scratch, mapping=dict(counts))
            pipe.rename(scratch, keys.STATES)
        else:
            pipe.delete(keys.STATES)
        pipe.execute()
        return self.all_states()

    def _recount_batch(self, batch: list[str], names: list[str], group: str, counts: Counter[str]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for rid in batch:
            pipe.hmget(keys.record(rid), names)
        fix = self.r.pipeline(transaction=False)
        for rid, (state, settled_at, updated_at, dl_id, discarded, step, next_retry_at) in zip(
            batch, pipe.execute(), strict=True
        ):
            if not state:
                continue
            counts[f"{group}:{state}"] += 1
            if state in IN_FLIGHT_STATES and step != "pending":
                due = max(float(updated_at or 0), float(next_retry_at or 0))
                fix.zadd(keys.IN_FLIGHT, {rid: due})
            final = state in FINAL_STATES or (state == "dead" and dl_id and dl_id == discarded)
            if final and not settled_at:  # settled before the index existed: its window starts then
                fix.hset(keys.record(rid), "settled_at", updated_at or now())
                fix.zadd(keys.SETTLED, {rid: float(updated_at or now())})
        fix.execute()


def _stored(value: Any) -> Any:
    """A field value as the hash holds it: dicts and lists as JSON, booleans as 0/1."""
    if isinstance(value, dict | list):
        return dumps(value)
    if isinstance(value, bool):
        return int(value)
    return value
