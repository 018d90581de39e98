"""gateway.observe.histogram: fixed-bucket histograms and the bounded top counter."""

from __future__ import annotations

import random

import pytest

from gateway.observe.histogram import BOUNDS, PROMETHEUS_BOUNDS, Histogram, TopCounter


def test_bounds_are_sorted_and_prometheus_bounds_a_subset():
    assert list(BOUNDS) == sorted(set(BOUNDS))
    assert set(PROMETHEUS_BOUNDS) <= set(BOUNDS)
    assert PROMETHEUS_BOUNDS[0] == 0.0001 and PROMETHEUS_BOUNDS[-1] == 10.0


def test_histogram_counts_sum_and_buckets():
    h = Histogram()
    for v in (0.00001, 0.001, 0.001, 0.2, 100.0):
        h.observe(v)
    assert h.count == 5
    assert h.sum == pytest.approx(100.20201)
    assert h.counts[BOUNDS.index(0.00001)] == 1  # le is inclusive
    assert h.counts[BOUNDS.index(0.001)] == 2
    assert h.counts[-1] == 1  # +Inf
    cumulative = dict(h.cumulative(PROMETHEUS_BOUNDS))
    assert cumulative["0.0001"] == 1
    assert cumulative["0.001"] == 3
    assert cumulative["0.25"] == 4
    assert cumulative["10.0"] == 4
    assert cumulative["+Inf"] == 5


def test_quantiles_are_close_for_known_distributions():
    rng = random.Random(7)
    values = [rng.uniform(0.001, 0.1) for _ in range(20000)]
    h = Histogram()
    for v in values:
        h.observe(v)
    exact = sorted(values)[int(0.95 * len(values))]
    assert h.quantile(0.95) == pytest.approx(exact, rel=0.05)
    assert h.mean() == pytest.approx(sum(values) / len(values))
    assert Histogram().quantile(0.95) is None and Histogram().mean() is None
    slow = Histogram()
    slow.observe(1000.0)
    assert slow.quantile(0.5) == BOUNDS[-1]


def test_histograms_add_and_subtract():
    a, b = Histogram(), Histogram()
    for v in (0.001, 0.002, 0.5):
        a.observe(v)
    b.observe(0.002)
    total = a.copy()
    total.add(b)
    assert total.count == 4
    assert total.minus(b).counts == a.counts
    assert b.minus(a).count == 0  # never negative
    assert Histogram.from_json(total.to_json()).counts == total.counts
    with pytest.raises(ValueError):
        Histogram.from_json({"c": [1, 2], "s": 0})


def test_top_counter_is_bounded_and_keeps_hot_keys():
    top = TopCounter(capacity=50)
    rng = random.Random(1)
    for i in range(100_000):
        top.add(f"random-{rng.randrange(10**9)}")
        if i % 50 == 0:
            top.add("hot.png")
        if i % 200 == 0:
            top.add("warm.png")
        assert len(top) <= 100
    ranked = top.top(2)
    assert ranked == [("hot.png", 2000), ("warm.png", 500)]
    top.clear()
    assert top.top(5) == []
