"""The durable records: connections, one record per entry per provider, dead letters, locks, ACK codes.

The record is the truth and a broker message is disposable: a task carries a record id, reads what it
needs here, and writes its progress back, so any step can run again on any worker and a replay only has
to re-enqueue an id. Everything lives in Redis under ``hubsync:``; the keys of one record share a hash
tag (``{provider:client_file:entry}``).

Every state change goes through ``create_record`` and ``update``, whose Lua scripts also move the counters
per provider, client file and state, keep the index of settled records and the time of each group's last
success, atomically with the write; the dead-letter store keeps its facet indexes the same way. So reads
for operators cost the same whatever the history, and retention (``trim_expired``) shrinks records past
``HUBSYNC_HISTORY_DAYS`` without any caller knowing. These scripts touch a record's keys together with
shared ones (counters, indexes): hubsync runs on one Redis (with replicas), not on a Redis Cluster.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import secrets as _random
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from pipeline.config import settings

P = "hubsync"
ATTEMPTS_KEPT = 100
AUDIT_KEPT = 100_000
TRIM_ON_SETTLE = 2

STATES = ("received", "waiting_retry", "posted", "confirmed", "exported", "skipped", "dead")
FINAL_STATES = ("confirmed", "exported", "skipped")
IN_FLIGHT_STATES = ("received", "posted", "waiting_retry")
ACK_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
# What a settled record keeps for good once its history window has passed, in this order (``|``-separated;
# the provider id goes last so that nothing it holds can shift the others). Enough to never post it twice:
# the state (counted), the event it came from (a redelivery of it is recognised), its ACK code, when it
# settled and whether (when) it was posted, the start of a post whose outcome stayed unknown (a re-validation
# looks it up before posting), the dead letter a discarded record was closed with. It is packed
# small (a letter per state, times in base 36: about 50 bytes, so that Redis stores it in a smaller block):
# its confirmation time is its settling time, and a discarded record's dead letter is the one it was
# discarded with.
COMPACT_FIELDS = (
    "state",
    "event_id",
    "ack",
    "generation",
    "settled_at",
    "posted_at",
    "post_started_at",
    "discarded",
    "provider_id",
)
COMPACT_TIMES = ("settled_at", "posted_at", "post_started_at")
STATE_CODES = {
    "received": "r",
    "waiting_retry": "w",
    "posted": "p",
    "confirmed": "c",
    "exported": "e",
    "skipped": "s",
    "dead": "d",
}
_STATE_NAMES = {code: name for name, code in STATE_CODES.items()}


def unpack_compact(packed: str) -> dict[str, str]:
    """The fields a trimmed record kept, decoded (with those derived from them: ``confirmed_at``,
    ``dead_letter_id``), as its hash would hold them."""
    values = packed.split("|", len(COMPACT_FIELDS) - 1)
    h = {name: value for name, value in zip(COMPACT_FIELDS, values, strict=False) if value}
    if "state" in h:
        h["state"] = _STATE_NAMES.get(h["state"], h["state"])
    for name in COMPACT_TIMES:
        if name in h:
            h[name] = str(int(h[name], 36))
    if h.get("state") in ("confirmed", "exported") and "settled_at" in h:
        h["confirmed_at"] = h["settled_at"]
    if "discarded" in h:
        h["dead_letter_id"] = h["discarded"]
    return h


DLQ_FACETS = ("provider", "client_file", "error_class", "step", "day")

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end
"""

# Shared by the record scripts: KEYS rec, kept, idx, settled, counts, entry set, last successes, in flight; ARGV
# rid, group, entry id, now.
_LUA_COMMON = (
    """
local rec, kept, idx, settled, counts, entryset = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local successes, inflight = KEYS[7], KEYS[8]
local rid, group, entry, stamp = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local COMPACT = {__COMPACT__}
local TIMES = {__TIMES__}
local CODES = {__CODES__}
local NAMES = {}
for name, code in pairs(CODES) do NAMES[code] = name end
local B36 = '0123456789abcdefghijklmnopqrstuvwxyz'

local function to36(n)
  n = math.floor(n)
  if n <= 0 then return '0' end
  local out = ''
  while n > 0 do
    local d = n % 36
    out = string.sub(B36, d + 1, d + 1) .. out
    n = math.floor(n / 36)
  end
  return out
end

local function split(packed)
  local out, start = {}, 1
  for i = 1, #COMPACT - 1 do
    local stop = string.find(packed, '|', start, true)
    if not stop then out[i] = string.sub(packed, start); return out end
    out[i] = string.sub(packed, start, stop - 1)
    start = stop + 1
  end
  out[#COMPACT] = string.sub(packed, start)
  return out
end

-- what a trimmed record kept, decoded: name -> value (see pipeline.store.unpack_compact)
local function unpacked(packed)
  local values, out = split(packed), {}
  for i, name in ipairs(COMPACT) do
    local v = values[i]
    if v and v ~= '' then
      if name == 'state' then v = NAMES[v] or v elseif TIMES[name] then v = tostring(tonumber(v, 36)) end
      out[name] = v
    end
  end
  local state = out['state']
  if out['settled_at'] and (state == 'confirmed' or state == 'exported') then
    out['confirmed_at'] = out['settled_at']
  end
  if out['discarded'] then out['dead_letter_id'] = out['discarded'] end
  return out
end

-- a trimmed record written again becomes a full one (with a fresh window) before the write lands
local function rehydrate()
  if redis.call('exists', rec) == 1 then return end
  local packed = redis.call('hget', kept, entry)
  if not packed then return end
  local args = {}
  for name, value in pairs(unpacked(packed)) do args[#args + 1] = name; args[#args + 1] = value end
  redis.call('hset', rec, unpack(args))
  redis.call('hset', rec, 'settled_at', stamp)
  redis.call('zadd', settled, stamp, rid)
  redis.call('hdel', kept, entry)
  redis.call('sadd', idx, entry)
  redis.call('sadd', entryset, rid)
end

local function is_final(state)
  if state == 'confirmed' or state == 'exported' or state == 'skipped' then return true end
  if state == 'dead' then
    local dl = redis.call('hget', rec, 'dead_letter_id')
    return dl and dl == redis.call('hget', rec, 'discarded')
  end
  return false
end

-- a record on its way (not settled, not dead, not waiting for an export) is due to move again by the later of
-- now and its next retry: the index of records in flight, where a chain whose message was lost is found
local function track(new)
  local step = redis.call('hget', rec, 'step')
  if (new == 'received' or new == 'posted' or new == 'waiting_retry') and step ~= 'pending' then
    local due = tonumber(stamp)
    local retry = tonumber(redis.call('hget', rec, 'next_retry_at') or '')
    if retry and retry > due then due = retry end
    redis.call('zadd', inflight, due, rid)
  else
    redis.call('zrem', inflight, rid)
  end
end

-- old state -> new state: move the counters, and enter or leave the indexes of settled and in-flight records
local function settle(old)
  local new = redis.call('hget', rec, 'state')
  if old ~= new then
    if old then redis.call('hincrby', counts, group .. ':' .. old, -1) end
    if new then redis.call('hincrby', counts, group .. ':' .. new, 1) end
  end
  track(new)
  local since = redis.call('hget', rec, 'settled_at')
  if is_final(new) then
    if not since then
      if new ~= 'dead' then redis.call('hset', successes, group, stamp) end
      redis.call('hset', rec, 'settled_at', stamp)
      redis.call('zadd', settled, stamp, rid)
      return 1
    end
  elseif since then
    redis.call('hdel', rec, 'settled_at')
    redis.call('zrem', settled, rid)
  end
  return 0
end
""".replace("__COMPACT__", ", ".join(f"'{name}'" for name in COMPACT_FIELDS))
    .replace("__TIMES__", ", ".join(f"{name} = true" for name in COMPACT_TIMES))
    .replace("__CODES__", ", ".join(f"{name} = '{code}'" for name, code in STATE_CODES.items()))
)

# ARGV after the common four: the number of field/value pairs, the pairs, then the fields to clear.
_UPDATE = (
    _LUA_COMMON
    + """
rehydrate()
local old = redis.call('hget', rec, 'state')
local n, i = tonumber(ARGV[5]), 6
if n > 0 then redis.call('hset', rec, unpack(ARGV, i, i + 2 * n - 1)) end
i = i + 2 * n
if #ARGV >= i then redis.call('hdel', rec, unpack(ARGV, i, #ARGV)) end
return settle(old)
"""
)

# KEYS[9] is the set of groups; ARGV after the common four: field/value pairs.
_CREATE = (
    _LUA_COMMON
    + """
local old = redis.call('hget', rec, 'state')
if not old then
  local packed = redis.call('hget', kept, entry)
  if packed then
    old = unpacked(packed)['state']
    redis.call('hdel', kept, entry)
  end
end
redis.call('hset', rec, unpack(ARGV, 5, #ARGV))
redis.call('sadd', idx, entry)
redis.call('sadd', KEYS[9], group)
redis.call('sadd', entryset, rid)
return settle(old)
"""
)

# KEYS[9] is the attempt list; ARGV[5] the cutoff: trim only a record still settled, settled before it.
_TRIM = (
    _LUA_COMMON
    + """
local since = redis.call('hget', rec, 'settled_at')
if not since or not is_final(redis.call('hget', rec, 'state')) then
  redis.call('zrem', settled, rid)
  if since then redis.call('hdel', rec, 'settled_at') end
  return 0
end
if tonumber(since) > tonumber(ARGV[5]) then
  redis.call('zadd', settled, since, rid)
  return 0
end
local values = redis.call('hmget', rec, unpack(COMPACT))
for i, name in ipairs(COMPACT) do
  local v = values[i]
  if not v then v = '' elseif name == 'state' then v = CODES[v] or v elseif TIMES[name] then v = to36(tonumber(v)) end
  values[i] = v
end
redis.call('hset', kept, entry, table.concat(values, '|'))
redis.call('del', rec, KEYS[9])
redis.call('zrem', inflight, rid)
redis.call('srem', idx, entry)
redis.call('srem', entryset, rid)
redis.call('zrem', settled, rid)
return 1
"""
)

# A dead letter entering (ARGV[1] = 1) or leaving (-1) the indexes of one status: KEYS all-by-time index,
# facet counts, cause groups, newest of each group; ARGV sign, id, created_at, group field, then
# facet/value pairs. Counts that reach zero are removed so the facet lists stay short.
_DLQ_INDEX = """
local sign, id, created, group = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local all, facets, groups, newest, prefix = KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[5]
local function bump(hash, field)
  if redis.call('hincrby', hash, field, sign) <= 0 then redis.call('hdel', hash, field) end
end
if sign > 0 then
  if redis.call('zadd', all, 'NX', created, id) == 0 then return 0 end
else
  if redis.call('zrem', all, id) == 0 then return 0 end
end
for i = 6, #ARGV, 2 do
  local facet, value = ARGV[i], ARGV[i + 1]
  bump(facets, facet .. '=' .. value)
  local key = prefix .. facet .. ':' .. value
  if sign > 0 then redis.call('zadd', key, created, id) else redis.call('zrem', key, id) end
end
bump(groups, group)
local seen = redis.call('hget', newest, group)
if sign > 0 then
  if not seen or tonumber(string.match(seen, '^[^|]*')) <= tonumber(created) then
    redis.call('hset', newest, group, created .. '|' .. id)
  end
elseif seen and string.sub(seen, -#id - 1) == '|' .. id then
  redis.call('hdel', newest, group)
end
return 1
"""


def now() -> float:
    """Wall-clock seconds; one place to read the time."""
    return time.time()


def record_id(provider: str, client_file_id: str, entry_id: str) -> str:
    """The id of an entry's record with one provider."""
    return f"{provider}:{client_file_id}:{entry_id}"


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _loads(raw: str | None, default: Any = None) -> Any:
    return default if raw is None or raw == "" else json.loads(raw)


@dataclass
class Connection:
    """A client file's connection to one provider. ``secret`` is sealed; only the client unseals it."""

    provider: str
    client_file_id: str
    params: dict[str, Any]
    sealed_secret: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
    status: str = "ready"
    status_message: str = ""


@dataclass
class Record:
    """Where one entry stands with one provider."""

    id: str
    provider: str
    client_file_id: str
    entry_id: str
    state: str
    step: str
    event: dict[str, Any]
    event_id: str
    ack: str | None = None
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    payload: dict[str, Any] | None = None
    provider_id: str | None = None
    post_started_at: float | None = None
    posted_at: float | None = None
    confirmed_at: float | None = None
    retry_since: float | None = None
    next_retry_at: float | None = None
    last_error: dict[str, Any] | None = None
    dead_letter_id: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    generation: int = 0
    attempts_count: int = 0
    note: str = ""
    settled_at: float | None = None
    trimmed: bool = False

    @classmethod
    def from_hash(cls, rid: str, h: dict[str, str]) -> Record:
        """Rebuild a record from its Redis hash."""

        def opt_float(name: str) -> float | None:
            raw = h.get(name)
            return float(raw) if raw else None

        provider, client_file_id, entry_id = rid.split(":", 2)
        return cls(
            id=rid,
            provider=provider,
            client_file_id=client_file_id,
            entry_id=entry_id,
            state=h.get("state", "received"),
            step=h.get("step", ""),
            event=_loads(h.get("event"), {}),
            event_id=h.get("event_id", ""),
            ack=h.get("ack") or None,
            docs={k[4:]: json.loads(v) for k, v in h.items() if k.startswith("doc:")},
            payload=_loads(h.get("payload")),
            provider_id=h.get("provider_id") or None,
            post_started_at=opt_float("post_started_at"),
            posted_at=opt_float("posted_at"),
            confirmed_at=opt_float("confirmed_at"),
            retry_since=opt_float("retry_since"),
            next_retry_at=opt_float("next_retry_at"),
            last_error=_loads(h.get("last_error")),
            dead_letter_id=h.get("dead_letter_id") or None,
            created_at=float(h.get("created_at") or 0),
            updated_at=float(h.get("updated_at") or 0),
            generation=int(h.get("generation") or 0),
            attempts_count=int(h.get("attempts_count") or 0),
            note=h.get("note", ""),
            settled_at=opt_float("settled_at"),
        )

    @classmethod
    def from_compact(cls, rid: str, packed: str) -> Record:
        """Rebuild what a trimmed record kept (``COMPACT_FIELDS``): no event, payload, documents or attempts."""
        h = unpack_compact(packed)
        # the chain of a trimmed record ran to its end, so its event was the last one enqueued
        rec = cls.from_hash(rid, h)
        rec.trimmed = True
        return rec


@dataclass
class DeadLetter:
    """A chain (or an event) that stopped and waits for an operator."""

    id: str
    provider: str
    client_file_id: str
    entry_id: str
    record_id: str
    step: str
    error_class: str
    error_kind: str
    message: str
    hint: str
    created_at: float
    event: Any = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    status: str = "open"
    audit: list[dict[str, Any]] = field(default_factory=list)
    event_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for ``--json`` and the dashboard."""
        return {
            "id": self.id,
            "event_id": self.event_id,
            "provider": self.provider,
            "client_file_id": self.client_file_id,
            "entry_id": self.entry_id,
            "record_id": self.record_id,
            "step": self.step,
            "error_class": self.error_class,
            "error_kind": self.error_kind,
            "message": self.message,
            "hint": self.hint,
            "created_at": self.created_at,
            "attempts": self.attempts,
            "status": self.status,
            "audit": self.audit,
            "event": self.event,
        }


class LockBusy(RuntimeError):
    """Somebody else holds the lock."""


class Store:
    """Typed access to everything hubsync keeps in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        # redis-py's annotations do not model decode_responses=True (every reply here is a str).
        self.r: Any = client
        self._release = client.register_script(_RELEASE)
        self._update = client.register_script(_UPDATE)
        self._create = client.register_script(_CREATE)
        self._trim = client.register_script(_TRIM)
        self._dlq_script = client.register_script(_DLQ_INDEX)

    @classmethod
    def from_url(cls, url: str | None = None) -> Store:
        """Connect to the store at ``url`` (default: ``HUBSYNC_REDIS_URL``)."""
        return cls(redis.Redis.from_url(url or settings().redis_url, decode_responses=True))

    # -- connections -------------------------------------------------------------------------------

    def save_connection(self, conn: Connection) -> None:
        """Create or replace a client file's connection to a provider."""
        key = f"{P}:conn:{conn.client_file_id}:{conn.provider}"
        existing = self.r.hget(key, "created_at")
        stamp = now()
        self.r.hset(
            key,
            mapping={
                "provider": conn.provider,
                "client_file_id": conn.client_file_id,
                "params": _dumps(conn.params),
                "secret": conn.sealed_secret,
                "created_at": existing or stamp,
                "updated_at": stamp,
                "status": conn.status,
                "status_message": conn.status_message,
            },
        )
        self.r.sadd(f"{P}:conns", f"{conn.client_file_id}:{conn.provider}")

    def connection(self, client_file_id: str, provider: str) -> Connection | None:
        """One connection, or None."""
        h = self.r.hgetall(f"{P}:conn:{client_file_id}:{provider}")
        if not h:
            return None
        return Connection(
            provider=h["provider"],
            client_file_id=h["client_file_id"],
            params=_loads(h.get("params"), {}),
            sealed_secret=h.get("secret", ""),
            created_at=float(h.get("created_at") or 0),
            updated_at=float(h.get("updated_at") or 0),
            status=h.get("status", "ready"),
            status_message=h.get("status_message", ""),
        )

    def connections(self, client_file_id: str | None = None) -> list[Connection]:
        """Every connection, or those of one client file."""
        out = []
        for member in sorted(self.r.smembers(f"{P}:conns")):
            cf, provider = member.rsplit(":", 1)
            if client_file_id is not None and cf != client_file_id:
                continue
            conn = self.connection(cf, provider)
            if conn is not None:
                out.append(conn)
        return out

    def delete_connection(self, client_file_id: str, provider: str) -> Connection | None:
        """Remove a client file's connection to a provider (its records stay); returns what was removed."""
        conn = self.connection(client_file_id, provider)
        if conn is None:
            return None
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(f"{P}:conn:{client_file_id}:{provider}")
        pipe.srem(f"{P}:conns", f"{client_file_id}:{provider}")
        pipe.execute()
        return conn

    def set_connection_status(self, client_file_id: str, provider: str, status: str, message: str = "") -> None:
        """Mark a connection (e.g. ``auth_failed``) so that no worker keeps trying a wrong password."""
        self.r.hset(f"{P}:conn:{client_file_id}:{provider}", mapping={"status": status, "status_message": message})

    # -- events ------------------------------------------------------------------------------------

    def event_status(self, event_id: str) -> str | None:
        """``done`` once an event's fan-out finished; None when never seen."""
        value: str | None = self.r.get(f"{P}:event:{event_id}")
        return value

    def mark_event(self, event_id: str, status: str) -> None:
        """Remember an event id so that a second delivery has no effect."""
        self.r.set(f"{P}:event:{event_id}", status, ex=settings().event_ttl_seconds)

    def count(self, name: str, amount: int = 1) -> None:
        """Bump a global counter (events received, duplicates, refused…)."""
        self.r.hincrby(f"{P}:counters", name, amount)

    def counters(self) -> dict[str, int]:
        """Every global counter."""
        return {k: int(v) for k, v in self.r.hgetall(f"{P}:counters").items()}

    # -- records ---------------------------------------------------------------------------------------
    #
    # hubsync:rec:{rid}            hash: the record while it is in flight and for its history window
    # hubsync:rec:{rid}:attempts   list: its attempt history (the newest ATTEMPTS_KEPT)
    # hubsync:kept:<group>         hash: entry id -> what a trimmed record keeps for good (COMPACT_FIELDS)
    # hubsync:idx:<group>          set: entry ids of the group's full records (trimmed ones are in kept)
    # hubsync:idx                  set: every group ("provider:client file")
    # hubsync:entry:<entry id>     set: record ids of an entry's full records
    # hubsync:states               hash: "provider:client file:state" -> records in that state (trimmed included)
    # hubsync:settled              sorted set: settled full records by the time they settled (retention)
    # hubsync:last_success         hash: group -> when a record of it last settled as confirmed/exported/skipped
    # hubsync:inflight             sorted set: records on their way, by when they are due to move again

    def _rkey(self, rid: str) -> str:
        return f"{P}:rec:{{{rid}}}"

    def _keys(self, rid: str) -> tuple[list[str], str, str]:
        """The keys a record script touches, its group and its entry id."""
        provider, client_file_id, entry_id = rid.split(":", 2)
        group = f"{provider}:{client_file_id}"
        keys = [
            self._rkey(rid),
            f"{P}:kept:{group}",
            f"{P}:idx:{group}",
            f"{P}:settled",
            f"{P}:states",
            f"{P}:entry:{entry_id}",
            f"{P}:last_success",
            f"{P}:inflight",
        ]
        return keys, group, entry_id

    def record(self, rid: str) -> Record | None:
        """One record (a trimmed one as what it kept, ``trimmed`` set), or None."""
        h = self.r.hgetall(self._rkey(rid))
        if h:
            return Record.from_hash(rid, h)
        provider, client_file_id, entry_id = rid.split(":", 2)
        packed = self.r.hget(f"{P}:kept:{provider}:{client_file_id}", entry_id)
        return Record.from_compact(rid, packed) if packed is not None else None

    def fields(self, rid: str, *names: str) -> list[str | None]:
        """Some fields of a full record, as stored (None where missing)."""
        return list(self.r.hmget(self._rkey(rid), list(names)))

    def create_record(self, rid: str, event: dict[str, Any], event_id: str) -> Record:
        """A new record in state ``received`` for an entry's first event (counted, indexed)."""
        stamp = now()
        keys, group, entry_id = self._keys(rid)
        mapping: dict[str, Any] = {
            "state": "received",
            "step": "received",
            "event": _dumps(event),
            "event_id": event_id,
            "created_at": stamp,
            "updated_at": stamp,
            "generation": 0,
        }
        args: list[Any] = [rid, group, entry_id, stamp]
        for name, value in mapping.items():
            args += [name, value]
        self._create(keys=[*keys, f"{P}:idx"], args=args)
        return Record.from_hash(rid, {name: str(value) for name, value in mapping.items()})

    def update(self, rid: str, **fields: Any) -> None:
        """Write some fields of a record; None clears a field, dicts and lists are stored as JSON.

        One script does the write, moves the state counters (old state -> new state), enters or leaves the
        index of settled records and, on a trimmed record, first brings back what it kept, so no caller has
        to know about counters or retention.
        """
        stamp = now()
        pairs: list[Any] = ["updated_at", stamp]
        clear = []
        for name, value in fields.items():
            if value is None:
                clear.append(name)
            elif isinstance(value, dict | list):
                pairs += [name, _dumps(value)]
            elif isinstance(value, bool):
                pairs += [name, int(value)]
            else:
                pairs += [name, value]
        keys, group, entry_id = self._keys(rid)
        settled = self._update(keys=keys, args=[rid, group, entry_id, stamp, len(pairs) // 2, *pairs, *clear])
        if settled and self.trim_on_settle:
            # Retention without any scheduler: each record that settles trims a few that settled long ago.
            self.trim_expired(limit=TRIM_ON_SETTLE)

    def _ensure_full(self, rid: str) -> None:
        """Bring a trimmed record back to a full one before a write that is not ``update``."""
        if not self.r.exists(self._rkey(rid)):
            provider, client_file_id, entry_id = rid.split(":", 2)
            if self.r.hexists(f"{P}:kept:{provider}:{client_file_id}", entry_id):
                self.update(rid)

    def update_doc(self, rid: str, doc_id: str, **fields: Any) -> dict[str, Any]:
        """Merge fields into one document's progress inside a record."""
        self._ensure_full(rid)
        key = self._rkey(rid)
        doc: dict[str, Any] = _loads(self.r.hget(key, f"doc:{doc_id}"), {})
        doc.update(fields)
        self.r.hset(key, f"doc:{doc_id}", _dumps(doc))
        return doc

    def enqueued_event(self, rid: str) -> str | None:
        """The event whose chain was last enqueued for a record (for a trimmed one: its event)."""
        value: str | None = self.r.hget(self._rkey(rid), "enqueued_event")
        if value is None and not self.r.exists(self._rkey(rid)):
            rec = self.record(rid)
            return rec.event_id if rec is not None else None
        return value

    def add_attempt(self, rid: str, attempt: dict[str, Any]) -> None:
        """Append to a record's attempt history (the newest ``ATTEMPTS_KEPT`` are kept)."""
        self._ensure_full(rid)
        key = f"{P}:rec:{{{rid}}}:attempts"
        pipe = self.r.pipeline(transaction=False)
        pipe.rpush(key, _dumps({"at": now(), **attempt}))
        pipe.ltrim(key, -ATTEMPTS_KEPT, -1)
        pipe.hincrby(self._rkey(rid), "attempts_count", 1)
        pipe.execute()

    def attempts(self, rid: str) -> list[dict[str, Any]]:
        """A record's attempt history, oldest first (empty once trimmed)."""
        return [json.loads(a) for a in self.r.lrange(f"{P}:rec:{{{rid}}}:attempts", 0, -1)]

    def record_ids(self, provider: str, client_file_id: str) -> list[str]:
        """Every record id of a provider and client file, trimmed ones included (reads the whole group)."""
        group = f"{provider}:{client_file_id}"
        entries = set(self.r.smembers(f"{P}:idx:{group}")) | set(self.r.hkeys(f"{P}:kept:{group}"))
        return [record_id(provider, client_file_id, e) for e in sorted(entries)]

    def record_groups(self) -> list[tuple[str, str]]:
        """Every (provider, client file) pair that has records."""
        pairs = (m.split(":", 1) for m in self.r.smembers(f"{P}:idx"))
        return sorted((provider, client_file) for provider, client_file in pairs)

    def records_of_entry(self, entry_id: str) -> list[Record]:
        """An entry's records with every provider, trimmed ones included."""
        rids = set(self.r.smembers(f"{P}:entry:{entry_id}"))
        groups = [f"{provider}:{cf}" for provider, cf in self.record_groups()]
        pipe = self.r.pipeline(transaction=False)
        for group in groups:
            pipe.hexists(f"{P}:kept:{group}", entry_id)
        rids |= {f"{group}:{entry_id}" for group, found in zip(groups, pipe.execute(), strict=True) if found}
        out = []
        for rid in sorted(rids):
            rec = self.record(rid)
            if rec is not None:
                out.append(rec)
        return out

    def states(self, provider: str, client_file_id: str) -> dict[str, int]:
        """How many records of a group are in each state (from the counters: no scan)."""
        group = f"{provider}:{client_file_id}"
        values = self.r.hmget(f"{P}:states", [f"{group}:{state}" for state in STATES])
        return {state: int(v or 0) for state, v in zip(STATES, values, strict=True)}

    def all_states(self) -> dict[tuple[str, str], dict[str, int]]:
        """Records per state of every group, from the counters (one read, whatever the history)."""
        out: dict[tuple[str, str], dict[str, int]] = {}
        for name, value in self.r.hgetall(f"{P}:states").items():
            provider, client_file_id, state = name.split(":", 2)
            counts = out.setdefault((provider, client_file_id), dict.fromkeys(STATES, 0))
            counts[state] = counts.get(state, 0) + int(value)
        for group in self.record_groups():
            out.setdefault(group, dict.fromkeys(STATES, 0))
        return out

    def last_successes(self) -> dict[tuple[str, str], float]:
        """When a record of each group last settled successfully."""
        out = {}
        for group, stamp in self.r.hgetall(f"{P}:last_success").items():
            provider, client_file_id = group.split(":", 1)
            out[(provider, client_file_id)] = float(stamp)
        return out

    def recount(self) -> dict[tuple[str, str], dict[str, int]]:
        """Rebuild the state counters, the settled index and the dead-letter indexes by reading every record
        and dead letter (expensive: for repair, and once after upgrading from a version without them)."""
        counts: Counter[str] = Counter()
        names = ["state", "settled_at", "updated_at", "dead_letter_id", "discarded", "step", "next_retry_at"]
        for provider, client_file_id in self.record_groups():
            group = f"{provider}:{client_file_id}"
            batch: list[str] = []
            for entry_id in [*self.r.sscan_iter(f"{P}:idx:{group}", count=1000), None]:
                if entry_id is not None:
                    batch.append(record_id(provider, client_file_id, entry_id))
                if batch and (entry_id is None or len(batch) >= 1000):
                    pipe = self.r.pipeline(transaction=False)
                    for rid in batch:
                        pipe.hmget(self._rkey(rid), names)
                    fix = self.r.pipeline(transaction=False)
                    for rid, (state, settled_at, updated_at, dl_id, discarded, step, next_retry_at) in zip(
                        batch, pipe.execute(), strict=True
                    ):
                        if not state:
                            continue
                        counts[f"{group}:{state}"] += 1
                        if state in IN_FLIGHT_STATES and step != "pending":
                            due = max(float(updated_at or 0), float(next_retry_at or 0))
                            fix.zadd(f"{P}:inflight", {rid: due})
                        final = state in FINAL_STATES or (state == "dead" and dl_id and dl_id == discarded)
                        if final and not settled_at:  # settled before the index existed: its window starts then
                            fix.hset(self._rkey(rid), "settled_at", updated_at or now())
                            fix.zadd(f"{P}:settled", {rid: float(updated_at or now())})
                    fix.execute()
                    batch = []
            for _entry, packed in self.r.hscan_iter(f"{P}:kept:{group}", count=1000):
                counts[f"{group}:{unpack_compact(packed).get('state', '')}"] += 1
        tmp = f"{P}:states:recount:{uuid.uuid4().hex}"
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(tmp)
        if counts:
            pipe.hset(tmp, mapping=dict(counts))
            pipe.rename(tmp, f"{P}:states")
        else:
            pipe.delete(f"{P}:states")
        pipe.execute()
        self.reindex_dead_letters()
        return self.all_states()

    def reindex_dead_letters(self) -> int:
        """Put every dead letter missing from the facet indexes into them (after an upgrade); returns how many."""
        added = 0
        for status in ("open", "closed"):
            for dl_id in self.r.zrange(f"{P}:dlq:{status}", 0, -1):
                if self.r.zscore(f"{P}:dlq:ix:{status}", dl_id) is None:
                    dl = self.dead_letter(dl_id)
                    if dl is not None:
                        added += int(self._dlq_index(dl, status, 1))
        return added

    # -- retention -----------------------------------------------------------------------------------

    trim_on_settle = True

    def history_seconds(self) -> float:
        """How long a settled record keeps its full detail (``HUBSYNC_HISTORY_DAYS``)."""
        return settings().history_days * 86400.0

    def trim_expired(self, at: float | None = None, limit: int = 1000) -> int:
        """Shrink up to ``limit`` records settled before the history window to what they keep for good.

        Safe with any number of callers at once: each record is trimmed by a script that checks again that
        it is still settled and old enough. Returns how many were trimmed.
        """
        cutoff = (now() if at is None else at) - self.history_seconds()
        rids: list[str] = self.r.zrangebyscore(f"{P}:settled", "-inf", cutoff, start=0, num=limit)
        if not rids:
            return 0
        pipe = self.r.pipeline(transaction=False)
        for rid in rids:
            keys, group, entry_id = self._keys(rid)
            attempts = f"{P}:rec:{{{rid}}}:attempts"
            self._trim(keys=[*keys, attempts], args=[rid, group, entry_id, now(), cutoff], client=pipe)
        return sum(int(done) for done in pipe.execute())

    def trim_closed_dead_letters(self, at: float | None = None, limit: int = 1000) -> int:
        """Forget dead letters closed before the history window (their lines in the audit trail stay)."""
        cutoff = (now() if at is None else at) - self.history_seconds()
        ids: list[str] = self.r.zrangebyscore(f"{P}:dlq:closed", "-inf", cutoff, start=0, num=limit)
        done = 0
        for dl_id in ids:
            dl = self.dead_letter(dl_id)
            if dl is not None and dl.status != "open":
                self._dlq_index(dl, "closed", -1)
                self.r.delete(f"{P}:dlq:{dl_id}")
                done += 1
            self.r.zrem(f"{P}:dlq:closed", dl_id)
        return done

    def stalled(self, before: float, limit: int = 100) -> list[tuple[str, float]]:
        """Records on their way that were due to move again before ``before`` (oldest first), with that time."""
        rows: list[tuple[str, float]] = self.r.zrangebyscore(
            f"{P}:inflight", "-inf", before, start=0, num=limit, withscores=True
        )
        return rows

    def settled_backlog(self, at: float | None = None) -> int:
        """Settled records past the history window and not trimmed yet."""
        cutoff = (now() if at is None else at) - self.history_seconds()
        return int(self.r.zcount(f"{P}:settled", "-inf", cutoff))

    # -- ACK codes ---------------------------------------------------------------------------------

    def allocate_ack(self, scope: str, owner: str) -> str:
        """A 4-character code unique within ``scope`` (one ACD dossier) and always the same for ``owner``."""
        key = f"{P}:ack:{scope}"
        for n in range(10_000):
            digest = hashlib.sha256(f"{scope}|{owner}|{n}".encode()).digest()
            code = "".join(ACK_ALPHABET[b % len(ACK_ALPHABET)] for b in digest[:4])
            if self.r.hsetnx(key, code, owner) or self.r.hget(key, code) == owner:
                return code
        raise RuntimeError(f"no free ACK code left in {scope}")

    # -- dead letters --------------------------------------------------------------------------------
    #
    # hubsync:dlq:<id>                     hash: the dead letter (JSON in "data")
    # hubsync:dlq:open / :closed           sorted sets: by creation / by closing time (retention)
    # hubsync:dlq:ix:<status>              sorted set: every dead letter of that status by creation time
    # hubsync:dlq:ix:<status>:<facet>:<v>  sorted sets: the same, per provider, client file, error class, step, day
    # hubsync:dlq:facets:<status>          hash: "facet=value" -> count
    # hubsync:dlq:groups:<status>          hash: "provider|client file|step|error class" -> count
    # hubsync:dlq:newest:<status>          hash: group -> "created_at|id" of its newest dead letter
    # hubsync:audit                        list: replays and discards, newest first (AUDIT_KEPT kept)

    @staticmethod
    def dlq_group(dl: DeadLetter) -> str:
        """The cause group of a dead letter: provider, client file, failed step, error class."""
        return "|".join((dl.provider, dl.client_file_id or "-", dl.step, dl.error_class))

    @staticmethod
    def dlq_facets(dl: DeadLetter) -> dict[str, str]:
        """The value of each dashboard facet for a dead letter."""
        day = time.strftime("%Y-%m-%d", time.gmtime(dl.created_at))
        return {
            "provider": dl.provider,
            "client_file": dl.client_file_id or "-",
            "error_class": dl.error_class,
            "step": dl.step,
            "day": day,
        }

    def _dlq_index(self, dl: DeadLetter, status: str, sign: int) -> bool:
        base = f"{P}:dlq:ix:{status}"
        args: list[Any] = [sign, dl.id, dl.created_at, self.dlq_group(dl), f"{base}:"]
        for facet, value in self.dlq_facets(dl).items():
            args += [facet, value]
        keys = [base, f"{P}:dlq:facets:{status}", f"{P}:dlq:groups:{status}", f"{P}:dlq:newest:{status}"]
        return bool(self._dlq_script(keys=keys, args=args))

    def add_dead_letter(self, dl: DeadLetter) -> None:
        """Keep a dead letter; writing the same id twice keeps the first."""
        key = f"{P}:dlq:{dl.id}"
        if not self.r.hsetnx(key, "data", _dumps(dl.to_dict())):
            return
        self.r.zadd(f"{P}:dlq:open", {dl.id: dl.created_at})
        self._dlq_index(dl, "open", 1)

    def dead_letter(self, dl_id: str) -> DeadLetter | None:
        """One dead letter, or None."""
        raw = self.r.hget(f"{P}:dlq:{dl_id}", "data")
        if raw is None:
            return None
        return DeadLetter(**json.loads(raw))

    def dead_letters_by_id(self, ids: list[str]) -> list[DeadLetter]:
        """Some dead letters, in the order given (missing ones left out)."""
        pipe = self.r.pipeline(transaction=False)
        for dl_id in ids:
            pipe.hget(f"{P}:dlq:{dl_id}", "data")
        return [DeadLetter(**json.loads(raw)) for raw in pipe.execute() if raw is not None]

    def dead_letters(self, provider: str | None = None, status: str = "open") -> list[DeadLetter]:
        """Every dead letter of a status (of one provider), oldest first; reads them all: operators' pages
        use ``dead_letter_page``."""
        key = f"{P}:dlq:ix:{status}" + (f":provider:{provider}" if provider else "")
        return self.dead_letters_by_id(self.r.zrange(key, 0, -1))

    def dead_letter_ids(
        self,
        status: str = "open",
        where: dict[str, str] | None = None,
        since: float | None = None,
        until: float | None = None,
        offset: int = 0,
        count: int = 50,
        newest_first: bool = True,
    ) -> tuple[list[str], int]:
        """One page of dead-letter ids of a status matching facet values (``where``, e.g. ``{"provider":
        "acd"}``) and a creation-time range, with how many match in all; reads only indexes."""
        base = f"{P}:dlq:ix:{status}"
        keys = [base] + [f"{base}:{facet}:{value}" for facet, value in sorted((where or {}).items()) if value]
        low = "-inf" if since is None else since
        high = "+inf" if until is None else until
        tmp = ""
        key = keys[-1]
        if len(keys) > 2:
            tmp = f"{P}:tmp:dlq:{uuid.uuid4().hex}"
            pipe = self.r.pipeline(transaction=False)
            # weight 1 on the first index only: the result keeps the creation time as its score
            pipe.zinterstore(tmp, {k: (1 if i == 0 else 0) for i, k in enumerate(keys[1:])})
            pipe.expire(tmp, 60)
            pipe.execute()
            key = tmp
        try:
            pipe = self.r.pipeline(transaction=False)
            if newest_first:
                pipe.zrevrangebyscore(key, high, low, start=offset, num=count)
            else:
                pipe.zrangebyscore(key, low, high, start=offset, num=count)
            pipe.zcount(key, low, high)
            ids, total = pipe.execute()
        finally:
            if tmp:
                self.r.delete(tmp)
        return list(ids), int(total)

    def dead_letter_facets(self, status: str = "open") -> dict[str, dict[str, int]]:
        """Dead letters of a status per facet value (from counts kept as they open and close)."""
        out: dict[str, dict[str, int]] = {facet: {} for facet in DLQ_FACETS}
        for name, value in self.r.hgetall(f"{P}:dlq:facets:{status}").items():
            facet, _, label = name.partition("=")
            if facet in out and int(value) > 0:
                out[facet][label] = int(value)
        return out

    def dead_letter_groups(self, status: str = "open") -> list[tuple[str, str, str, str, int, float, str]]:
        """Cause groups of a status: provider, client file, step, error class, count, newest time, newest id."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(f"{P}:dlq:groups:{status}")
        pipe.hgetall(f"{P}:dlq:newest:{status}")
        counts, newest = pipe.execute()
        out = []
        for group, n in counts.items():
            if int(n) <= 0:
                continue
            provider, client_file, step, error_class = group.split("|", 3)
            at, _, dl_id = (newest.get(group) or "0|").partition("|")
            out.append((provider, client_file, step, error_class, int(n), float(at), dl_id))
        return out

    def dead_letters_open(self) -> int:
        """How many dead letters wait for an operator."""
        return int(self.r.zcard(f"{P}:dlq:open"))

    def close_dead_letter(self, dl_id: str, status: str, action: str, reason: str = "", who: str = "") -> bool:
        """Mark a dead letter replayed or discarded, with an audit line; False if it was not open."""
        if not self.r.zrem(f"{P}:dlq:open", dl_id):
            return False
        dl = self.dead_letter(dl_id)
        if dl is None:
            return False
        entry = {"at": now(), "who": who or _whoami(), "action": action, "reason": reason}
        dl.status = status
        dl.audit.append(entry)
        self.r.hset(f"{P}:dlq:{dl_id}", "data", _dumps(dl.to_dict()))
        self._dlq_index(dl, "open", -1)
        self._dlq_index(dl, "closed", 1)
        self.r.zadd(f"{P}:dlq:closed", {dl_id: now()})
        pipe = self.r.pipeline(transaction=False)
        pipe.lpush(f"{P}:audit", _dumps({**entry, "dead_letter": dl_id}))
        pipe.ltrim(f"{P}:audit", 0, AUDIT_KEPT - 1)
        pipe.execute()
        return True

    def reopen_dead_letter(self, dl_id: str, note: str) -> None:
        """Open a closed dead letter again (a replayed event was refused once more)."""
        dl = self.dead_letter(dl_id)
        if dl is None:
            return
        dl.status = "open"
        dl.audit.append({"at": now(), "who": "hubsync", "action": "reopened", "reason": note})
        self.r.hset(f"{P}:dlq:{dl_id}", "data", _dumps(dl.to_dict()))
        self.r.zrem(f"{P}:dlq:closed", dl_id)
        self._dlq_index(dl, "closed", -1)
        self.r.zadd(f"{P}:dlq:open", {dl_id: now()})
        self._dlq_index(dl, "open", 1)

    def audit_page(self, offset: int = 0, count: int = 100) -> tuple[list[dict[str, Any]], int]:
        """Replays and discards, newest first: one page and how many are kept."""
        pipe = self.r.pipeline(transaction=False)
        pipe.lrange(f"{P}:audit", offset, offset + count - 1)
        pipe.llen(f"{P}:audit")
        raw, total = pipe.execute()
        return [json.loads(item) for item in raw], int(total)

    # -- locks -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, name: str, ttl_seconds: float, wait_seconds: float = 0.0) -> Iterator[None]:
        """A lock shared by every worker on every machine; raises ``LockBusy`` after ``wait_seconds``."""
        key = f"{P}:lock:{name}"
        token = uuid.uuid4().hex
        deadline = time.monotonic() + wait_seconds
        while not self.r.set(key, token, nx=True, px=int(ttl_seconds * 1000)):
            if time.monotonic() >= deadline:
                raise LockBusy(name)
            time.sleep(0.02 + _random.randbelow(30) / 1000)
        try:
            yield
        finally:
            self._release(keys=[key], args=[token])

    @contextlib.contextmanager
    def lock_one_of(self, names: Sequence[str], ttl_seconds: float) -> Iterator[str]:
        """The first free lock of ``names``: a semaphore of ``len(names)`` holders shared by every worker; yields
        the lock's key (to extend its life with ``pexpire``); raises ``LockBusy`` when every one is held."""
        token = uuid.uuid4().hex
        for name in names:
            key = f"{P}:lock:{name}"
            if self.r.set(key, token, nx=True, px=int(ttl_seconds * 1000)):
                break
        else:
            raise LockBusy(", ".join(names))
        try:
            yield key
        finally:
            self._release(keys=[key], args=[token])


def _whoami() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # pragma: no cover - no user database in some containers
        return "unknown"


def new_dead_letter_id() -> str:
    """A fresh, sortable dead-letter id."""
    return f"dl_{int(now() * 1000):x}{uuid.uuid4().hex[:6]}"
