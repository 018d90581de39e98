"""gateway.observe.prometheus: the exposition of a Snapshot."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from gateway.observe.counters import Stats
from gateway.observe.prometheus import render_prometheus
from gateway.observe.recorder import Recorder
from gateway.observe.snapshot import Snapshot, recorder_totals, stats_counters


def test_exposition_parses_and_names_every_family():
    stats = Stats()
    stats.memory.hits, stats.disk.evictions, stats.url_store_hits = 5, 2, 7
    recorder = Recorder()
    recorder.request("/images/{image_id}", 200)
    recorder.answer("HIT-MEMORY", 0.0002, 100, "a.png")
    recorder.origin_fetch("ok", 0.05)
    snap = Snapshot(pid=1, started=0, written=0, counters=stats_counters(stats))
    snap.counters["stats.some_new_counter"] = 4
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


def exposed(snapshot: Snapshot) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = render_prometheus(snapshot, workers=1).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_origin_retries_and_breaker_trips_are_exported():
    snap = Snapshot(pid=1, started=0, written=0,
                    counters={"origin.retries": 7, "origin.breaker_trips": 2})
    samples = exposed(snap)
    assert samples[("gateway_origin_retries_total", ())] == 7
    assert samples[("gateway_origin_breaker_trips_total", ())] == 2


def test_origin_retries_and_breaker_trips_are_zero_when_absent():
    samples = exposed(Snapshot(pid=1, started=0, written=0))
    assert samples[("gateway_origin_retries_total", ())] == 0
    assert samples[("gateway_origin_breaker_trips_total", ())] == 0


def test_rejected_redis_values_are_one_family_by_kind():
    stats = Stats()
    stats.redis_rejected_url, stats.redis_rejected_fill = 3, 1
    samples = exposed(Snapshot(pid=1, started=0, written=0, counters=stats_counters(stats)))
    assert samples[("gateway_redis_values_rejected_total", (("kind", "url"),))] == 3
    assert samples[("gateway_redis_values_rejected_total", (("kind", "alias"),))] == 0
    assert samples[("gateway_redis_values_rejected_total", (("kind", "fill"),))] == 1
    assert not any(name.startswith("gateway_redis_rejected") for name, _ in samples)


def test_every_stats_counter_has_its_own_help():
    """No counter of Stats is exported with the generic help line: each says what it
    counts (a new field gets the generic one until it is given its own)."""
    snap = Snapshot(pid=1, started=0, written=0, counters=stats_counters(Stats()))
    families = list(text_string_to_metric_families(render_prometheus(snap, 1).decode()))
    generic = [f.name for f in families if f.documentation.startswith("Stats.")]
    assert generic == []
    names = {f.name for f in families}
    assert {"gateway_cluster_joins", "gateway_negative_hits", "gateway_resyncs",
            "gateway_bus_messages_rejected"} <= names


def test_breaker_open_is_a_gauge_of_workers():
    samples = exposed(Snapshot(pid=1, started=0, written=0,
                               gauges={"origin.breaker_open": 1.0}))
    assert samples[("gateway_origin_breaker_open", ())] == 1
    assert exposed(Snapshot(pid=1, started=0, written=0))[
        ("gateway_origin_breaker_open", ())] == 0
