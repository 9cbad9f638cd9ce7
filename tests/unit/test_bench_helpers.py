"""The benchmark's arithmetic: how traffic is split between firms, how a steady rate is read off samples."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import pytest

from bench.__main__ import _spread, _steady_rate, latencies, parse
from hubsync_sandbox.bed import percentile


def test_spread_follows_the_weights_and_interleaves() -> None:
    order = _spread(100, {"dupont": 0.45, "martin": 0.45, "leroy": 0.10})
    assert Counter(order) == {"dupont": 45, "martin": 45, "leroy": 10}
    # interleaved: leroy's share is spread over the run, never bunched at one end
    positions = [i for i, firm in enumerate(order) if firm == "leroy"]
    assert max(b - a for a, b in pairwise(positions)) <= 11


def test_steady_rate_leaves_out_ramp_up_and_tail() -> None:
    # 2 s of nothing (workers starting), then 10 entries/s for 10 s, then a slow tail
    samples = [(float(t), 0) for t in range(3)]
    samples += [(2.0 + t, 10 * t) for t in range(1, 11)]
    samples += [(13.0, 101), (20.0, 102)]
    assert _steady_rate(samples, 102) == pytest.approx(10.0, rel=0.1)


def test_steady_rate_of_nothing_is_zero() -> None:
    assert _steady_rate([(0.0, 0), (1.0, 0)], 10) == 0.0
    assert _steady_rate([(0.0, 0)], 10) == 0.0


def test_latencies_filter_and_percentiles() -> None:
    sent = {f"acd:cf_{i % 2}:e{i}": 100.0 for i in range(100)}
    confirmed = {r: 100.0 + int(r.rsplit("e", 1)[1]) / 10 for r in sent}
    everyone = latencies(sent, confirmed)
    assert everyone["count"] == 100 and everyone["max"] == pytest.approx(9.9)
    assert everyone["p50"] == pytest.approx(percentile([i / 10 for i in range(100)], 50))
    odd = latencies(sent, confirmed, lambda r: r.split(":")[1] == "cf_1")
    assert odd["count"] == 50
    assert latencies(sent, {}) == {"count": 0}


def test_quick_mode_keeps_numbers_small() -> None:
    args = parse(["--quick"])
    assert args.repeats == 1 and args.entries <= 200
    assert max(int(b) for b in args.backlogs.split(",")) <= 2000
