"""gateway.observe.metrics: histograms, the bounded top counter, TimedOrigin, the exposition."""

from __future__ import annotations

import asyncio
import random

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.errors import NotFound, OriginError, OriginTimeout
from gateway.observe.counters import Stats
from gateway.observe.metrics import (
    BOUNDS,
    PROMETHEUS_BOUNDS,
    Histogram,
    Recorder,
    Snapshot,
    TimedOrigin,
    TopCounter,
    render_prometheus,
    stats_counters,
)
from gateway.origin import NOT_MODIFIED, Fetched


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


async def test_timed_origin_records_each_result():
    class Fake:
        kind = "fake"

        def __init__(self) -> None:
            self.outcomes: list[object] = []

        async def fetch(self, image_id, if_none_match=None):
            outcome = self.outcomes.pop(0)
            if isinstance(outcome, BaseException):
                raise outcome
            if outcome == "slow":
                await asyncio.sleep(10)
            return outcome

    fake = Fake()
    recorder = Recorder()
    origin = TimedOrigin(fake, recorder)
    assert origin.kind == "fake"
    fake.outcomes = [Fetched(b"x", "image/png", 0, None), NOT_MODIFIED, NotFound(),
                     OriginTimeout(), OriginError("boom"), "slow"]
    assert isinstance(await origin.fetch("a"), Fetched)
    assert await origin.fetch("a", '"etag"') is NOT_MODIFIED
    for exc in (NotFound, OriginTimeout, OriginError):
        with pytest.raises(exc):
            await origin.fetch("a")
    task = asyncio.create_task(origin.fetch("a"))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    counts = {result: h.count for result, h in recorder.origin.items()}
    assert counts == {"ok": 1, "not_modified": 1, "not_found": 1, "timeout": 1, "error": 1}


def test_stats_counters_include_fields_added_later():
    stats = Stats()
    stats.memory.hits = 3
    stats.coalesced = 2
    counters = stats_counters(stats)
    assert counters["stats.memory.hits"] == 3
    assert counters["stats.coalesced"] == 2
    assert all(isinstance(v, int) for v in counters.values())


def test_exposition_parses_and_names_every_family():
    stats = Stats()
    stats.memory.hits, stats.disk.evictions, stats.url_store_hits = 5, 2, 7
    recorder = Recorder()
    recorder.request("/images/{image_id}", 200)
    recorder.answer("HIT-MEMORY", 0.0002, 100, "a.png")
    recorder.origin_fetch("ok", 0.05)
    snap = Snapshot(pid=1, started=0, written=0, counters=stats_counters(stats))
    snap.counters["stats.some_new_counter"] = 4
    from gateway.observe.metrics import recorder_totals

    counters, histograms = recorder_totals(recorder)
    snap.counters.update(counters)
    snap.histograms.update(histograms)
    snap.gauges.update({"memory.bytes": 100, "memory.entries": 1, "memory.limit": 1000})
    text = render_prometheus(snap, workers=3).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("gateway_cache_hits_total", (("layer", "memory"),))] == 5
    assert samples[("gateway_cache_evictions_total", (("layer", "disk"),))] == 2
    assert samples[("gateway_url_store_lookups_total", (("result", "hit"),))] == 7
    assert samples[("gateway_some_new_counter_total", ())] == 4
    assert samples[("gateway_answers_total", (("layer", "memory"),))] == 1
    assert samples[("gateway_bytes_saved_total", ())] == 100
    assert samples[("gateway_origin_fetches_total", (("result", "ok"),))] == 1
    assert samples[("gateway_cache_size_bytes", (("layer", "memory"),))] == 100
    assert ("gateway_cache_size_bytes", (("layer", "disk"),)) not in samples  # no disk
    assert samples[("gateway_workers", ())] == 3
    assert samples[("gateway_request_duration_seconds_bucket",
                    (("layer", "memory"), ("le", "0.00025")))] == 1
