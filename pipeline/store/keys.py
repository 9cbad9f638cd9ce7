"""Every Redis key hubsync uses, built in one place.

Key names are a storage format: a Redis written by an earlier version must keep working, so a name here never
changes without a migration. Everything lives under ``hubsync:``; the keys of one record share a hash tag
(``{provider:client_file:entry}``) so that a record and its attempt list sit in one slot.

Records::

    hubsync:rec:{<rid>}               hash: the record while it is in flight and for its history window
    hubsync:rec:{<rid>}:attempts      list: its attempt history (the newest ATTEMPTS_KEPT)
    hubsync:kept:<group>              hash: entry id -> what a trimmed record keeps for good (packed)
    hubsync:idx:<group>               set: entry ids of the group's full records (trimmed ones are in kept)
    hubsync:idx                       set: every group ("provider:client file")
    hubsync:entry:<entry id>          set: record ids of an entry's full records
    hubsync:states                    hash: "provider:client file:state" -> records in that state
    hubsync:settled                   sorted set: settled full records by the time they settled (retention)
    hubsync:last_success              hash: group -> when a record of it last settled successfully
    hubsync:inflight                  sorted set: records on their way, by when they are due to move again

Events, connections, ACK codes, locks::

    hubsync:event:<event id>          string: "done" once an event fanned out (90 days)
    hubsync:counters                  hash: events received, duplicates, refused…
    hubsync:conn:<client file>:<provider>   hash: a client file's connection to a provider
    hubsync:conns                     set: "<client file>:<provider>" of every connection
    hubsync:ack:<scope>               hash: ACK code -> owner (record id), per ACD dossier
    hubsync:lock:<name>               string: a lock's holder token

Dead letters::

    hubsync:dlq:<id>                  hash: the dead letter (JSON in "data")
    hubsync:dlq:open / :closed        sorted sets: by creation / by closing time (retention)
    hubsync:dlq:ix:<status>[:<facet>:<value>]   sorted sets: dead letters of a status (per facet value) by creation
    hubsync:dlq:facets:<status>       hash: "facet=value" -> count
    hubsync:dlq:groups:<status>       hash: "provider|client file|step|error class" -> count
    hubsync:dlq:newest:<status>       hash: group -> "created_at|id" of its newest dead letter
    hubsync:audit                     list: replays and discards, newest first

ACD (per dossier scope or API access)::

    hubsync:acd:token:<key id>        hash: a sealed token and its fingerprint, use times
    hubsync:acd:stats                 hash: logins, sessions, fec_fetches… in total and per dossier
    hubsync:acd:refused-login:<key>   string: fingerprint of a password ACD refused
    hubsync:acd:fec:<scope>           hash: started_at, duration, finished_at of the last FEC read
    hubsync:acd:fec:<scope>:next      string: when the next FEC read is planned
    hubsync:acd:fec:<scope>:waiting   sorted set: record id -> conclusive_from
    hubsync:acd:fec:<scope>:wait      hash: record id -> {"years", "guessed", "ack"}
    hubsync:ref:acd:<scope>           hash: reference data (journals, fiscal years, GED tree…)
    hubsync:ref:acd:<scope>:generaux  set: general account codes
    hubsync:ref:acd:<scope>:tiers     set: subsidiary account codes

Cegid Loop (per client file)::

    hubsync:cegid_loop:pending:<cf>   sorted set: records waiting for the next export, by arrival
    hubsync:cegid_loop:seen:<cf>:<event id>    string: the event was fanned out to Loop
    hubsync:cegid_loop:export_live:<export id> string: an export is enqueueing right now
    hubsync:cegid_loop:exports:<cf>   list: the latest exports, newest first
    hubsync:cegid_loop:content:<cf>:<sha256>   string: the record that deposits this file

Operations::

    hubsync:breaker:<server>[:probe]  hash: failures, open_until; string: the probe's turn
    hubsync:schedule:<job>            hash: a scheduled job's last run
    hubsync:deliveries:<task>:<retry> string: runs of one message (poison-message cap)
    hubsync:lock:resume               string: the resume sweep's turn
"""

from __future__ import annotations

P = "hubsync"


def group(provider: str, client_file_id: str) -> str:
    """The group of a provider and client file (``provider:client file``)."""
    return f"{provider}:{client_file_id}"


# -- records ------------------------------------------------------------------------------------------------


def record(rid: str) -> str:
    """A record's hash (its id as the hash tag)."""
    return f"{P}:rec:{{{rid}}}"


def attempts(rid: str) -> str:
    """A record's attempt history."""
    return f"{P}:rec:{{{rid}}}:attempts"


def kept(group_name: str) -> str:
    """What the group's trimmed records keep for good."""
    return f"{P}:kept:{group_name}"


def index(group_name: str) -> str:
    """Entry ids of a group's full records."""
    return f"{P}:idx:{group_name}"


GROUPS = f"{P}:idx"
STATES = f"{P}:states"
SETTLED = f"{P}:settled"
LAST_SUCCESS = f"{P}:last_success"
IN_FLIGHT = f"{P}:inflight"


def entry(entry_id: str) -> str:
    """Record ids of an entry's full records, with every provider."""
    return f"{P}:entry:{entry_id}"


def states_recount(token: str) -> str:
    """A scratch hash while the state counters are rebuilt."""
    return f"{P}:states:recount:{token}"


# -- events, connections, ACK codes, locks ------------------------------------------------------------------


def event(event_id: str) -> str:
    """An event's dedupe mark."""
    return f"{P}:event:{event_id}"


COUNTERS = f"{P}:counters"
CONNECTIONS = f"{P}:conns"


def connection(client_file_id: str, provider: str) -> str:
    """A client file's connection to one provider."""
    return f"{P}:conn:{client_file_id}:{provider}"


def acks(scope: str) -> str:
    """The ACK codes handed out in one scope (an ACD dossier)."""
    return f"{P}:ack:{scope}"


def lock(name: str) -> str:
    """A lock shared by every worker."""
    return f"{P}:lock:{name}"


# -- dead letters -------------------------------------------------------------------------------------------


def dead_letter(dl_id: str) -> str:
    """One dead letter."""
    return f"{P}:dlq:{dl_id}"


def dead_letters(status: str) -> str:
    """Dead letters by creation (open) or by closing time (closed), for retention."""
    return f"{P}:dlq:{status}"


def dlq_index(status: str, facet: str = "", value: str = "") -> str:
    """Dead letters of a status by creation time (of one facet value)."""
    base = f"{P}:dlq:ix:{status}"
    return f"{base}:{facet}:{value}" if facet else base


def dlq_facets(status: str) -> str:
    """Dead letters of a status per facet value."""
    return f"{P}:dlq:facets:{status}"


def dlq_groups(status: str) -> str:
    """Dead letters of a status per cause group."""
    return f"{P}:dlq:groups:{status}"


def dlq_newest(status: str) -> str:
    """The newest dead letter of each cause group of a status."""
    return f"{P}:dlq:newest:{status}"


def dlq_scratch(token: str) -> str:
    """A short-lived intersection of dead-letter indexes."""
    return f"{P}:tmp:dlq:{token}"


AUDIT = f"{P}:audit"

# -- ACD ----------------------------------------------------------------------------------------------------


def acd_token(key_id: str) -> str:
    """One ACD token (sealed), by the digest of what its session depends on."""
    return f"{P}:acd:token:{key_id}"


ACD_STATS = f"{P}:acd:stats"


def acd_refused_login(access: str) -> str:
    """The fingerprint of a password ACD refused for one API access."""
    return f"{P}:acd:refused-login:{access}"


def fec(scope: str) -> str:
    """A dossier's last FEC read."""
    return f"{P}:acd:fec:{scope}"


def fec_next(scope: str) -> str:
    """When the dossier's next FEC read is planned."""
    return f"{P}:acd:fec:{scope}:next"


def fec_waiting(scope: str) -> str:
    """Records waiting for the dossier's FEC, by the time from which a read is conclusive."""
    return f"{P}:acd:fec:{scope}:waiting"


def fec_wait(scope: str) -> str:
    """What each waiting record looks for."""
    return f"{P}:acd:fec:{scope}:wait"


def reference(scope: str) -> str:
    """A dossier's reference data."""
    return f"{P}:ref:acd:{scope}"


def reference_general(scope: str) -> str:
    """A dossier's general account codes."""
    return f"{P}:ref:acd:{scope}:generaux"


def reference_subsidiaries(scope: str) -> str:
    """A dossier's subsidiary (client and supplier) account codes."""
    return f"{P}:ref:acd:{scope}:tiers"


# -- Cegid Loop ---------------------------------------------------------------------------------------------


def loop_pending(client_file_id: str) -> str:
    """A client file's records waiting for the next export."""
    return f"{P}:cegid_loop:pending:{client_file_id}"


def loop_seen(client_file_id: str, event_id: str) -> str:
    """An event already fanned out to Loop."""
    return f"{P}:cegid_loop:seen:{client_file_id}:{event_id}"


def loop_export_live(export_id: str) -> str:
    """An export that is enqueueing right now."""
    return f"{P}:cegid_loop:export_live:{export_id}"


def loop_exports(client_file_id: str) -> str:
    """A client file's latest exports."""
    return f"{P}:cegid_loop:exports:{client_file_id}"


def loop_content(client_file_id: str, sha256: str) -> str:
    """The record that deposits one file's content in a client file's dossier."""
    return f"{P}:cegid_loop:content:{client_file_id}:{sha256}"


# -- operations ---------------------------------------------------------------------------------------------


def breaker(name: str) -> str:
    """A server's circuit breaker."""
    return f"{P}:breaker:{name}"


def breaker_probe(name: str) -> str:
    """Whose turn it is to probe a server whose breaker is open."""
    return f"{P}:breaker:{name}:probe"


def job(name: str) -> str:
    """A scheduled job's last run."""
    return f"{P}:schedule:{name}"


def deliveries(task_id: str, retries: int) -> str:
    """The runs of one message (a task id at one retry number)."""
    return f"{P}:deliveries:{task_id}:{retries}"
