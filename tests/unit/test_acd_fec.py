"""The FEC: the parser (decimal comma, CRLF, BOM, any column case), fiscal years (the FEC year is the year the
fiscal year ENDS), and the coordinator that shares one FEC read among every waiting entry of a dossier
(against the suite's private Redis, with a counted fake fetch)."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from hubsync_sandbox.samples import sample_entry, sample_event
from pipeline.acd import fec
from pipeline.acd.errors import FecUnavailable
from pipeline.acd.fec import FecYears, FiscalYear, entries_by_ack, fec_year, fec_years, parse_fec, parse_fiscal_years
from pipeline.config import reset_settings
from pipeline.errors import Deferred
from pipeline.store import Store, record_id
from tests.conftest import flushed_store

Y2026 = FecYears((2026,))
HEADER = (
    "JournalCode\tJournalLib\tEcritureNum\tEcritureDate\tCompteNum\tCompteLib\tCompAuxNum\tCompAuxLib\tPieceRef\t"
    "PieceDate\tEcritureLib\tDebit\tCredit\tEcritureLet\tDateLet\tValidDate\tMontantdevise\tIdevise"
)


def row(num: int, label: str, debit: str = "0,00", credit: str = "0,00", account: str = "606400", aux: str = "") -> str:
    return "\t".join(
        [
            "AC",
            "Achats",
            str(num),
            "20261119",
            account,
            "",
            aux,
            "",
            "F-1",
            "20261119",
            label,
            debit,
            credit,
            "",
            "",
            "20261119",
            "",
            "",
        ]
    )


def test_fec_lines_are_read_with_decimal_comma_crlf_and_bom():
    text = (
        "\ufeff"
        + "\r\n".join(
            [
                HEADER,
                row(7, "Orange (#K7QZ#)", debit="1 234,56"),
                row(7, "Orange (#K7QZ#)", credit="1234,56", account="401000", aux="FORANGE"),
            ]
        )
        + "\r\n"
    )
    lines = parse_fec(text)
    assert [(line.number, line.debit, line.credit) for line in lines] == [
        ("7", Decimal("1234.56"), Decimal("0")),
        ("7", Decimal("0"), Decimal("1234.56")),
    ]
    assert lines[1].account == "401000" and lines[1].aux == "FORANGE"


def test_column_names_are_matched_in_any_case_and_a_pipe_file_is_read():
    text = "ecriturenum|ECRITURELIB|debit|credit\n12|Loyer (#AB23#)|100.50|0\n"
    (line,) = parse_fec(text)
    assert (line.number, line.label, line.debit) == ("12", "Loyer (#AB23#)", Decimal("100.50"))


def test_a_fec_without_its_columns_or_with_a_bad_amount_is_unreadable():
    with pytest.raises(fec.FecUnreadable):
        parse_fec("<html>Erreur</html>")
    with pytest.raises(fec.FecUnreadable):
        parse_fec(HEADER + "\r\n" + row(1, "x", debit="abc"))


def test_acks_are_found_at_the_end_of_labels_once_per_entry():
    lines = parse_fec(
        "\r\n".join(
            [
                HEADER,
                row(1, "Orange (#K7QZ#)"),
                row(1, "Orange (#K7QZ#)"),
                row(2, "Orange again (#K7QZ#)"),
                row(3, "(#AB23#) not at the end"),
                row(4, "EDF (#AB23#) "),
            ]
        )
    )
    assert entries_by_ack(lines) == {"K7QZ": ["1", "2"], "AB23": ["4"]}


def test_fiscal_years_are_read_in_any_case_and_date_form():
    years = parse_fiscal_years(
        [
            {"DateDebut": "2026-04-01T00:00:00", "DateFin": "2027-03-31T00:00:00", "Courant": True, "Cloture": False},
            {"datedebut": "2025-04-01", "datefin": "2026-03-31Z", "cloture": "true"},
            {"DateDebut": "garbage", "DateFin": "2020-01-01"},
        ]
    )
    assert years == [
        FiscalYear(date(2025, 4, 1), date(2026, 3, 31), False, True),
        FiscalYear(date(2026, 4, 1), date(2027, 3, 31), True, False),
    ]


def test_the_fec_year_is_the_year_the_fiscal_year_ends():
    years = [FiscalYear(date(2026, 4, 1), date(2027, 3, 31)), FiscalYear(date(2027, 4, 1), date(2028, 3, 31))]
    assert fec_year(date(2026, 11, 19), years) == 2027
    assert fec_year(date(2027, 3, 31), years) == 2027
    assert fec_year(date(2027, 4, 1), years) == 2028
    assert fec_year(date(2026, 1, 15), years) == 2026  # in no known fiscal year: the calendar year


# -- the coordinator -------------------------------------------------------------------------------------


@pytest.fixture
def store(redis_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.setenv("HUBSYNC_ACD_FEC_MIN_INTERVAL_SECONDS", "0.5")
    monkeypatch.setenv("HUBSYNC_ACD_FEC_TIMEOUT_SECONDS", "5")
    reset_settings()
    with flushed_store(redis_server, 10) as s:
        yield s
    reset_settings()


class Acd:
    """The dossier's FEC as ACD would give it: the entries posted so far, each fetch counted."""

    def __init__(self, delay: float = 0.0) -> None:
        self.rows: list[str] = []
        self.fetches: list[int] = []
        self.delay = delay
        self.lock = threading.Lock()

    def post(self, ack: str) -> None:
        self.rows.append(row(len(self.rows) + 1, f"Entry (#{ack}#)"))

    def fetch(self, year: int) -> str:
        with self.lock:
            self.fetches.append(year)
        time.sleep(self.delay)
        return "\r\n".join([HEADER, *self.rows]) + "\r\n"


def _record(store: Store, ack: str) -> str:
    entry = sample_entry("bank_transaction", 1)
    entry["id"] = f"ent_{uuid.uuid4().hex[:8]}"
    rid = record_id("acd", "cf_x", entry["id"])
    store.records.create(rid, sample_event("cf_x", entry), "evt_x")
    store.records.update(rid, ack=ack)
    return rid


def _settle(
    store: Store, rid: str, ack: str, since: float, acd: Acd, deadline: float = 10.0, where: FecYears | None = None
) -> list[str]:
    where = where or Y2026
    end = time.monotonic() + deadline
    while True:
        try:
            return fec.lookup(store, "scope1", rid, ack, where, since, acd.fetch)
        except Deferred as exc:
            assert time.monotonic() < end, "never settled"
            time.sleep(min(exc.retry_after or 0.1, 0.5))


def test_entries_waiting_in_one_dossier_share_one_fec_read(store):
    acd = Acd()
    acks = [f"A{n:03d}" for n in range(20)]
    rids = [_record(store, a) for a in acks]
    for a in acks:
        acd.post(a)
    since = time.time() + 0.3  # posted just now: the FEC holds them only after the index lag
    # every entry asks once (all register, none can be read yet), then they all settle
    for rid, a in zip(rids, acks, strict=True):
        with contextlib.suppress(Deferred):
            fec.lookup(store, "scope1", rid, a, Y2026, since, acd.fetch)
    results = [_settle(store, rid, a, since, acd) for rid, a in zip(rids, acks, strict=True)]
    assert results == [[str(n + 1)] for n in range(20)]
    assert len(acd.fetches) == 1


def test_a_fec_read_before_the_entry_could_be_in_it_is_not_conclusive(store):
    acd = Acd()
    rid = _record(store, "LATE")
    since = time.time() + 0.6  # the entry reaches the FEC only then
    with pytest.raises(Deferred):
        fec.lookup(store, "scope1", rid, "LATE", Y2026, since, acd.fetch)
    assert acd.fetches == []
    assert _settle(store, rid, "LATE", since, acd) == []  # absent, from a read started after `since`
    (checked,) = [fec.outcome(store, rid).checked_at]
    assert checked >= since


def test_fetches_respect_the_minimum_interval_and_one_in_flight(store):
    acd = Acd(delay=0.4)
    a, b = _record(store, "AAAA"), _record(store, "BBBB")
    acd.post("AAAA")
    since = time.time()
    assert _settle(store, a, "AAAA", since, acd) == ["1"]
    acd.post("BBBB")
    later = time.time()
    with pytest.raises(Deferred) as info:
        fec.lookup(store, "scope1", b, "BBBB", Y2026, later, acd.fetch)
    assert "next read" in info.value.message
    # two workers ask at once once it is due (a read that took 0.4 s spaces the next by 3 x 0.4 s, above the
    # 0.5 s minimum): one reads, the other is deferred, both get the answer
    time.sleep(1.3)
    outcomes: list[Any] = []

    def ask() -> None:
        try:
            outcomes.append(fec.lookup(store, "scope1", b, "BBBB", Y2026, later, acd.fetch))
        except Deferred as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(acd.fetches) == 2
    assert sorted(type(o).__name__ for o in outcomes) == ["Deferred", "list"]
    assert _settle(store, b, "BBBB", later, acd) == ["2"]


def test_two_copies_of_one_ack_are_both_reported(store):
    acd = Acd()
    rid = _record(store, "DUPL")
    acd.post("DUPL")
    acd.post("DUPL")
    assert _settle(store, rid, "DUPL", time.time(), acd) == ["1", "2"]


def test_a_year_without_fec_is_an_error_and_the_next_look_reads_again(store):
    calls: list[int] = []

    def no_fec(year: int) -> str:
        calls.append(year)
        raise FecUnavailable(f"ACD has no FEC for {year}")

    rid = _record(store, "NOPE")
    since = time.time()
    with pytest.raises(FecUnavailable):
        fec.lookup(store, "scope1", rid, "NOPE", Y2026, since, no_fec)
    assert calls == [2026]
    # the failed read is not taken for an answer: the next look waits for a new read, which is tried
    with pytest.raises(Deferred):
        fec.lookup(store, "scope1", rid, "NOPE", Y2026, since, no_fec)
    time.sleep(0.6)
    with pytest.raises(FecUnavailable):
        fec.lookup(store, "scope1", rid, "NOPE", Y2026, since, no_fec)
    assert calls == [2026, 2026]


def test_an_outcome_is_never_written_into_a_record_that_is_gone(store):
    acd = Acd()
    rid = _record(store, "GONE")
    fec.register(store, "scope1", rid, "GONE", Y2026, time.time() - 1)
    store.r.delete(f"hubsync:rec:{{{rid}}}")
    fec.fetch_round(store, "scope1", acd.fetch)
    assert store.r.exists(f"hubsync:rec:{{{rid}}}") == 0
    assert fec.waiting(store, "scope1") == 0


def test_without_known_fiscal_years_every_year_the_entry_could_end_in_is_read():
    assert fec_years(date(2026, 11, 19), None) == FecYears((2026, 2027, 2028), guessed=True)
    assert fec_years(date(2026, 11, 19), [FiscalYear(date(2026, 4, 1), date(2027, 3, 31))]) == FecYears((2027,))


def test_a_guessed_year_without_fec_is_no_answer_but_absence_needs_every_year_read(store):
    rows_2027 = [row(1, "Found (#HERE#)")]

    def fetch(year: int) -> str:
        if year == 2027:
            return "\r\n".join([HEADER, *rows_2027]) + "\r\n"
        raise FecUnavailable(f"no fiscal year ends in {year}")

    guess = fec_years(date(2026, 11, 19), None)
    here, absent = _record(store, "HERE"), _record(store, "ABSE")
    since = time.time()
    assert fec.lookup(store, "scope1", here, "HERE", guess, since, fetch) == ["1"]
    # the entry absent from the one FEC there is: absent, since no other year has a FEC at all
    for _ in range(40):
        try:
            assert fec.lookup(store, "scope1", absent, "ABSE", guess, since, fetch) == []
            break
        except Deferred:
            time.sleep(0.1)
    else:
        pytest.fail("the absent entry never settled")
    calls: list[int] = []

    def nothing(year: int) -> str:
        calls.append(year)
        raise FecUnavailable(f"no fiscal year ends in {year}")

    lonely = _record(store, "LONE")
    time.sleep(0.6)
    with pytest.raises(FecUnavailable):
        fec.lookup(store, "scope1", lonely, "LONE", guess, time.time(), nothing)
    assert calls == [2026, 2027, 2028]  # never "absent" without a single FEC read


class BlockingAcd(Acd):
    """A FEC that ACD takes until ``go`` is set to build."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.go = threading.Event()

    def fetch(self, year: int) -> str:
        self.started.set()
        assert self.go.wait(10), "never released"
        return super().fetch(year)


def test_a_server_builds_at_most_two_fecs_for_the_hub_at_once_whatever_its_dossiers(store):
    # given two dossiers of one server whose FECs are being built (two slots, the default)
    busy = {scope: BlockingAcd() for scope in ("d1", "d2")}
    outcomes: dict[str, Any] = {}

    def read(scope: str, acd: Acd, server: str) -> None:
        rid = _record(store, scope.upper().ljust(4, "X"))
        acd.post(scope.upper().ljust(4, "X"))
        try:
            outcomes[scope] = fec.lookup(store, scope, rid, scope.upper().ljust(4, "X"), Y2026, 0.0, acd.fetch, server)
        except Deferred as exc:
            outcomes[scope] = exc

    threads = [threading.Thread(target=read, args=(scope, acd, "https://srv/cnx/api")) for scope, acd in busy.items()]
    for t in threads:
        t.start()
    assert all(acd.started.wait(5) for acd in busy.values())
    # when a third dossier of that server is due: it waits, without a read
    third = Acd()
    read("d3", third, "https://srv/cnx/api")
    assert isinstance(outcomes["d3"], Deferred) and "at most 2 at once" in outcomes["d3"].message
    assert third.fetches == []
    # while a dossier of another firm's server is read at once
    other = Acd()
    read("d4", other, "https://other/cnx/api")
    assert outcomes["d4"] == ["1"] and other.fetches == [2026]
    # and once one of the two reads is over, the third dossier's read goes
    busy["d1"].go.set()
    threads[0].join(5)
    assert outcomes["d1"] == ["1"]
    rid = _record(store, "D3XX")
    assert fec.lookup(store, "d3", rid, "D3XX", Y2026, 0.0, third.fetch, "https://srv/cnx/api") == ["1"]
    busy["d2"].go.set()
    threads[1].join(5)
    assert outcomes["d2"] == ["1"] and third.fetches == [2026]


def test_a_just_posted_entry_plans_its_first_look_for_when_the_read_that_settles_it_is_over(store):
    # given a dossier read a moment ago (the minimum interval is 0.5 s here)
    acd = Acd()
    first = _record(store, "P001")
    acd.post("P001")
    _settle(store, first, "P001", time.time() - 1.0, acd)
    read_at = float(store.fec.last_read("scope1")["started_at"])
    # when two entries are posted now: the first plans the next read, the second rides it
    reader, must = fec.plan(store, "scope1", _record(store, "P002"), "P002", Y2026, time.time(), 0)
    rider, rides = fec.plan(store, "scope1", _record(store, "P003"), "P003", Y2026, time.time(), 0)
    # then the reader looks when the next read is due and must run; the other need not (the read confirms it)
    assert read_at + 0.5 - time.time() - 0.1 <= reader <= read_at + 0.5 - time.time() + 0.3
    assert must and not rides and rider > reader
    # and an entry whose index lag ends after that planned read plans the read after it, not a look too early,
    # even when the planned read starts only a moment before it could hold the entry
    planned = store.fec.planned_read("scope1")
    assert planned is not None
    barely, must = fec.plan(store, "scope1", _record(store, "P004"), "P004", Y2026, planned + 0.02, 0)
    assert must and barely >= planned + 0.5 - time.time()
    late, must = fec.plan(store, "scope1", _record(store, "P005"), "P005", Y2026, time.time() + 2.0, 0)
    assert must and late >= 2.0


def test_one_read_confirms_the_entries_that_rode_it_and_wakes_those_it_cannot(store, monkeypatch):
    # given a reader and three riders posted before it reads: two in the FEC, one absent, and one posted after
    from pipeline import runtime

    woken: list[tuple[str, int, str, float | None]] = []
    monkeypatch.setattr(
        runtime, "_waker", lambda p, rid, gen, step, countdown=None: woken.append((rid, gen, step, countdown))
    )
    acd = Acd()
    reader, found, absent = _posted(store, "R001"), _posted(store, "R002"), _posted(store, "R003")
    for ack in ("R001", "R002"):
        acd.post(ack)
    since = time.time() - 1.0
    for rid, ack in ((found, "R002"), (absent, "R003")):
        fec.register(store, "scope1", rid, ack, Y2026, since, generation=0)
    later = _posted(store, "R004")
    fec.register(store, "scope1", later, "R004", Y2026, time.time() + 60, generation=0)
    # when the reader's confirm step reads
    assert _settle(store, reader, "R001", since, acd) == ["1"]
    # then the rider found is confirmed by that read, in its own chain's name
    rec = store.records.get(found)
    assert (rec.state, rec.step, rec.provider_id) == ("confirmed", "confirm", "2")
    assert store.records.attempts(found)[-1]["by"] == "the dossier's read"
    # the absent one is woken to judge itself, and the one posted since is woken for the next read, planned
    assert [(rid, step) for rid, _gen, step, _c in woken] == [(absent, "confirm"), (later, "confirm")]
    assert woken[1][3] >= 55 and store.fec.planned_read("scope1") is not None
    # and the reader's own record is left to its own step
    assert store.records.get(reader).state == "posted"
    assert len(acd.fetches) == 1


def _posted(store: Store, ack: str) -> str:
    rid = _record(store, ack)
    store.records.update(rid, state="posted", posted_at=time.time() - 5, step="post")
    return rid


def test_an_outcome_is_read_from_the_loaded_record_without_another_read(store):
    # given an entry a read found
    acd = Acd()
    rid = _record(store, "L001")
    acd.post("L001")
    _settle(store, rid, "L001", time.time() - 1.0, acd)
    # when its record is loaded
    rec = store.records.get(rid)
    # then the outcome is in it, as the store has it
    assert fec.outcome_of(rec) == fec.outcome(store, rid)
    assert fec.outcome_of(rec).found == ["1"]
