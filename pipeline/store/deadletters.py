"""Dead letters: chains and events that stopped and wait for an operator, with the indexes the dashboard
pages and filters by (kept as they open and close, so a page costs the same whatever the history)."""

from __future__ import annotations

import getpass
import json
import time
import uuid
from typing import Any

from pipeline.store import keys
from pipeline.store.client import Redis, script
from pipeline.store.models import DeadLetter, dumps, now

AUDIT_KEPT = 100_000
DLQ_FACETS = ("provider", "client_file", "error_class", "step", "day")


def cause_group(dl: DeadLetter) -> str:
    """The cause group of a dead letter: provider, client file, failed step, error class."""
    return "|".join((dl.provider, dl.client_file_id or "-", dl.step, dl.error_class))


def facet_values(dl: DeadLetter) -> dict[str, str]:
    """The value of each dashboard facet for a dead letter."""
    return {
        "provider": dl.provider,
        "client_file": dl.client_file_id or "-",
        "error_class": dl.error_class,
        "step": dl.step,
        "day": time.strftime("%Y-%m-%d", time.gmtime(dl.created_at)),
    }


def _whoami() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # pragma: no cover - no user database in some containers
        return "unknown"


class DeadLetterStore:
    """Dead letters, their facet indexes and the audit trail of replays and discards."""

    def __init__(self, client: Redis) -> None:
        self.r = client
        self._index_script = script(client, "dlq_index")

    def _index(self, dl: DeadLetter, status: str, sign: int) -> bool:
        args: list[Any] = [sign, dl.id, dl.created_at, cause_group(dl), f"{keys.dlq_index(status)}:"]
        for facet, value in facet_values(dl).items():
            args += [facet, value]
        index_keys = [
            keys.dlq_index(status),
            keys.dlq_facets(status),
            keys.dlq_groups(status),
            keys.dlq_newest(status),
        ]
        return bool(self._index_script(keys=index_keys, args=args))

    def add(self, dl: DeadLetter) -> None:
        """Keep a dead letter; writing the same id twice keeps the first."""
        if not self.r.hsetnx(keys.dead_letter(dl.id), "data", dumps(dl.to_dict())):
            return
        self.r.zadd(keys.dead_letters("open"), {dl.id: dl.created_at})
        self._index(dl, "open", 1)

    def get(self, dl_id: str) -> DeadLetter | None:
        """One dead letter, or None."""
        raw = self.r.hget(keys.dead_letter(dl_id), "data")
        return None if raw is None else DeadLetter(**json.loads(raw))

    def by_ids(self, ids: list[str]) -> list[DeadLetter]:
        """Some dead letters, in the order given (missing ones left out)."""
        pipe = self.r.pipeline(transaction=False)
        for dl_id in ids:
            pipe.hget(keys.dead_letter(dl_id), "data")
        return [DeadLetter(**json.loads(raw)) for raw in pipe.execute() if raw is not None]

    def all(self, provider: str | None = None, status: str = "open") -> list[DeadLetter]:
        """Every dead letter of a status (of one provider), oldest first; reads them all: operators' pages
        use ``page``."""
        key = keys.dlq_index(status, "provider", provider) if provider else keys.dlq_index(status)
        return self.by_ids(self.r.zrange(key, 0, -1))

    def page(
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
        index_keys = [keys.dlq_index(status)] + [
            keys.dlq_index(status, facet, value) for facet, value in sorted((where or {}).items()) if value
        ]
        low = "-inf" if since is None else since
        high = "+inf" if until is None else until
        scratch = ""
        key = index_keys[-1]
        if len(index_keys) > 2:
            scratch = keys.dlq_scratch(uuid.uuid4().hex)
            pipe = self.r.pipeline(transaction=False)
            # weight 1 on the first index only: the result keeps the creation time as its score
            pipe.zinterstore(scratch, {k: (1 if i == 0 else 0) for i, k in enumerate(index_keys[1:])})
            pipe.expire(scratch, 60)
            pipe.execute()
            key = scratch
        try:
            pipe = self.r.pipeline(transaction=False)
            if newest_first:
                pipe.zrevrangebyscore(key, high, low, start=offset, num=count)
            else:
                pipe.zrangebyscore(key, low, high, start=offset, num=count)
            pipe.zcount(key, low, high)
            ids, total = pipe.execute()
        finally:
            if scratch:
                self.r.delete(scratch)
        return list(ids), int(total)

    def facets(self, status: str = "open") -> dict[str, dict[str, int]]:
        """Dead letters of a status per facet value (from counts kept as they open and close)."""
        out: dict[str, dict[str, int]] = {facet: {} for facet in DLQ_FACETS}
        for name, value in self.r.hgetall(keys.dlq_facets(status)).items():
            facet, _, label = name.partition("=")
            if facet in out and int(value) > 0:
                out[facet][label] = int(value)
        return out

    def groups(self, status: str = "open") -> list[tuple[str, str, str, str, int, float, str]]:
        """Cause groups of a status: provider, client file, step, error class, count, newest time, newest id."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(keys.dlq_groups(status))
        pipe.hgetall(keys.dlq_newest(status))
        counts, newest = pipe.execute()
        out = []
        for group, n in counts.items():
            if int(n) <= 0:
                continue
            provider, client_file, step, error_class = group.split("|", 3)
            at, _, dl_id = (newest.get(group) or "0|").partition("|")
            out.append((provider, client_file, step, error_class, int(n), float(at), dl_id))
        return out

    def open_count(self) -> int:
        """How many dead letters wait for an operator."""
        return int(self.r.zcard(keys.dead_letters("open")))

    def close(self, dl_id: str, status: str, action: str, reason: str = "", who: str = "") -> bool:
        """Mark a dead letter replayed or discarded, with an audit line; False if it was not open."""
        if not self.r.zrem(keys.dead_letters("open"), dl_id):
            return False
        dl = self.get(dl_id)
        if dl is None:
            return False
        line = {"at": now(), "who": who or _whoami(), "action": action, "reason": reason}
        dl.status = status
        dl.audit.append(line)
        self.r.hset(keys.dead_letter(dl_id), "data", dumps(dl.to_dict()))
        self._index(dl, "open", -1)
        self._index(dl, "closed", 1)
        self.r.zadd(keys.dead_letters("closed"), {dl_id: now()})
        pipe = self.r.pipeline(transaction=False)
        pipe.lpush(keys.AUDIT, dumps({**line, "dead_letter": dl_id}))
        pipe.ltrim(keys.AUDIT, 0, AUDIT_KEPT - 1)
        pipe.execute()
        return True

    def reopen(self, dl_id: str, note: str) -> None:
        """Open a closed dead letter again (a replayed event was refused once more)."""
        dl = self.get(dl_id)
        if dl is None:
            return
        dl.status = "open"
        dl.audit.append({"at": now(), "who": "hubsync", "action": "reopened", "reason": note})
        self.r.hset(keys.dead_letter(dl_id), "data", dumps(dl.to_dict()))
        self.r.zrem(keys.dead_letters("closed"), dl_id)
        self._index(dl, "closed", -1)
        self.r.zadd(keys.dead_letters("open"), {dl_id: now()})
        self._index(dl, "open", 1)

    def audit_page(self, offset: int = 0, count: int = 100) -> tuple[list[dict[str, Any]], int]:
        """Replays and discards, newest first: one page and how many are kept."""
        pipe = self.r.pipeline(transaction=False)
        pipe.lrange(keys.AUDIT, offset, offset + count - 1)
        pipe.llen(keys.AUDIT)
        raw, total = pipe.execute()
        return [json.loads(item) for item in raw], int(total)

    def forget_closed_before(self, cutoff: float, limit: int = 1000) -> int:
        """Forget up to ``limit`` dead letters closed before ``cutoff`` (their audit lines stay)."""
        ids: list[str] = self.r.zrangebyscore(keys.dead_letters("closed"), "-inf", cutoff, start=0, num=limit)
        done = 0
        for dl_id in ids:
            dl = self.get(dl_id)
            if dl is not None and dl.status != "open":
                self._index(dl, "closed", -1)
                self.r.delete(keys.dead_letter(dl_id))
                done += 1
            self.r.zrem(keys.dead_letters("closed"), dl_id)
        return done

    def reindex(self) -> int:
        """Put every dead letter missing from the facet indexes into them (after an upgrade); returns how many."""
        added = 0
        for status in ("open", "closed"):
            for dl_id in self.r.zrange(keys.dead_letters(status), 0, -1):
                if self.r.zscore(keys.dlq_index(status), dl_id) is None:
                    dl = self.get(dl_id)
                    if dl is not None:
                        added += int(self._index(dl, status, 1))
        return added
