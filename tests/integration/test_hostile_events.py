"""Malformed, hostile and huge events sent straight to the real worker's queue, valid ones beside them: each
hostile one is refused with a dead letter naming the field (or, for a document at an internal address, a
``DocumentHostNotAllowed`` dead letter at fetch), the worker keeps consuming, and every valid one lands once."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from hubsync_sandbox.samples import document_ref, sample_entry, sample_event, tiny_pdf
from tests.conftest import Hub

pytestmark = pytest.mark.integration
FIRM, DOSSIER = "dupont", "DUPONT01"
INTERNAL_URLS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/doc.pdf",
    "http://localhost/doc.pdf",
    "http://127.0.0.1:6379/",
]
UNICODE_LABELS = [
    "Café crème ☕ et croissants 🥐 pour la réunion du comité de direction",
    "e\u0301" * 40,  # one letter and its combining accent, 40 times: never split apart
    "שכירות משרד חודש נובמבר 2026 - תשלום לבעל הבית ומיסים עירוניים",
    "日本語のラベル・出張経費精算書・東京大阪間新幹線往復運賃と宿泊費",
    "👨‍👩‍👧‍👦 famille " * 6,
    "Zero\u200bwidth\u200bjoiners\u200band\u00a0non-breaking\u00a0spaces in a label that is long",
]
NOT_A_STRING = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.lists(st.integers(), max_size=2)
)
FIELDS = [
    ("entry", "kind"),
    ("entry", "date"),
    ("entry", "label"),
    ("entry", "journal_code"),
    ("entry", "lines", 0, "account"),
    ("occurred_at",),
]


def _put(event: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(event)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def _event(hub: Hub, cf: str, tag: str, n: int, documents: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    entry = sample_entry("bank_transaction", n)
    entry["id"] = f"ent_{tag}_{n}_{hub.run}"
    return sample_event(cf, entry, event_id=f"evt_{tag}_{n}_{hub.run}", documents=documents or [])


def _hostile(hub: Hub, cf: str, tag: str, wrong: list[tuple[tuple[Any, ...], Any]]) -> list[tuple[dict | str, str]]:
    """(event, the field its refusal must name) for every kind of trouble, plus the drawn wrong types."""
    out: list[tuple[dict | str, str]] = []
    n = 0

    def base() -> dict[str, Any]:
        nonlocal n
        n += 1
        return _event(hub, cf, tag, 100 + n)

    money = base()
    money["entry"]["lines"][0]["debit"] = 12.5
    out.append((money, "entry.lines.0.debit"))
    unbalanced = base()
    unbalanced["entry"]["lines"][0]["debit"] = "999.99"
    out.append((unbalanced, "entry.lines"))
    control = base()
    control["entry"]["label"] = "Frais\x00bancaires\x1b[31m"
    out.append((control, "entry.label"))
    huge = base()
    huge["entry"]["label"] = "L" * (10 * 1024 * 1024)
    out.append((huge, "event"))
    pdf = tiny_pdf("x")
    traversal = _event(
        hub, cf, tag, 199, [document_ref("doc_trav", "https://docs.hub.example/d", pdf, "receipt", "../../etc/passwd")]
    )
    out.append((traversal, "documents.0.filename"))
    out.append((f"{{not json at all {tag}", "event"))
    out.append((f'[1, 2, "{tag}"]', "event"))
    for path, value in wrong:
        out.append((_put(base(), path, value), ".".join(str(p) for p in path)))
    return out


@settings(
    max_examples=2,
    deadline=None,
    phases=[Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(wrong=st.lists(st.tuples(st.sampled_from(FIELDS), NOT_A_STRING), min_size=3, max_size=6))
def test_hostile_events_are_refused_the_worker_survives_and_valid_ones_land(
    hub: Hub, worker: Any, wrong: list[tuple[tuple[Any, ...], Any]]
) -> None:
    # given a connected client file, valid events, hostile ones, and documents at internal addresses
    cf = hub.cf("hostile")
    hub.connect_acd(cf)
    tag = f"h{uuid.uuid4().hex[:4]}"
    hostile = _hostile(hub, cf, tag, wrong)
    valid = [_event(hub, cf, tag, n) for n in range(len(UNICODE_LABELS))]
    for event, label in zip(valid, UNICODE_LABELS, strict=True):
        event["entry"]["label"] = label
    internal = [
        _event(hub, cf, tag, 50 + i, [document_ref(f"doc_int{i}", url, tiny_pdf("i"), "receipt", "scan.pdf")])
        for i, url in enumerate(INTERNAL_URLS)
    ]
    open_before = {d.id for d in hub.store.dead_letters.all("ingest")}
    # when they all go straight onto the worker's queue, interleaved
    mixed: list[Any] = []
    for i in range(max(len(hostile), len(valid))):
        if i < len(hostile):
            mixed.append(hostile[i][0])
        if i < len(valid):
            mixed.append(valid[i])
    for event in mixed + internal:
        hub.emit(event)
    # then every valid one lands once
    records = hub.wait_states(cf, [e["entry"]["id"] for e in valid + internal], timeout=120)
    for event in valid:
        rec = records[event["entry"]["id"]]
        assert rec.state == "confirmed", rec.last_error
        (stored,) = hub.acd_entries_with(FIRM, DOSSIER, rec.ack)
        assert all(len(line["Libelle"]) <= 50 for line in stored["LignesEcriture"])
    # and each document at an internal address is refused at fetch, before any connection
    for event in internal:
        rec = records[event["entry"]["id"]]
        assert (rec.state, rec.step, rec.last_error["error_class"]) == ("dead", "fetch", "DocumentHostNotAllowed")
    # and each hostile event is kept as a dead letter naming its field
    hub.wait(
        lambda: len({d.id for d in hub.store.dead_letters.all("ingest")} - open_before) >= len(hostile),
        60,
        "a dead letter per hostile event",
    )
    new = [d for d in hub.store.dead_letters.all("ingest") if d.id not in open_before]
    assert all(d.error_class == "InvalidEvent" for d in new)
    for event, field in hostile:
        if isinstance(event, dict) and field != "event":
            (dl,) = [d for d in new if isinstance(d.event, dict) and d.event.get("event_id") == event["event_id"]]
            assert any(part.strip().startswith(field + ":") for part in dl.message.split(";")), dl.message
    assert any("larger than" in d.message for d in new)
    assert any("not valid JSON" in d.message for d in new)
    # and the worker is still alive and consuming
    assert worker.poll() is None
    after = _event(hub, cf, tag, 90)
    hub.emit(after)
    assert hub.wait_states(cf, [after["entry"]["id"]])[after["entry"]["id"]].state == "confirmed"
