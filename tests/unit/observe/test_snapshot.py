"""gateway.observe.snapshot: a process's figures as flat counters, JSON and back."""

from __future__ import annotations

import json

from gateway.observe.counters import Stats
from gateway.observe.recorder import Recorder
from gateway.observe.snapshot import Sample, Snapshot, hits_of, recorder_totals, stats_counters


def test_stats_counters_include_fields_added_later():
    stats = Stats()
    stats.memory.hits = 3
    stats.coalesced = 2
    counters = stats_counters(stats)
    assert counters["stats.memory.hits"] == 3
    assert counters["stats.coalesced"] == 2
    assert all(isinstance(v, int) for v in counters.values())


def test_json_round_trip_and_totals_since_a_baseline():
    recorder = Recorder()
    recorder.request("/images/{image_id}", 200)
    recorder.answer("HIT-MEMORY", 0.001, 10, "a.png")
    counters, histograms = recorder_totals(recorder)
    base = Snapshot(1, 10.0, 20.0, counters=counters, histograms=histograms,
                    gauges={"memory.bytes": 5}, redis="up", top={"a.png": 1},
                    history=[Sample(15.0, 1, 1, recorder.latency["HIT-MEMORY"].copy())],
                    reset_generation=2)
    copy = Snapshot.from_json(json.loads(json.dumps(base.to_json())))
    assert copy.to_json() == base.to_json()

    copy.add_totals(base)  # twice the traffic
    assert copy.counter("http|/images/{image_id}|200") == 2
    assert copy.answers_by_layer() == {"HIT-MEMORY": 2}
    since = copy.minus_totals(base)
    assert since.counter("http|/images/{image_id}|200") == 1
    assert since.answers_by_layer() == {"HIT-MEMORY": 1}
    assert since.gauges == {"memory.bytes": 5}  # gauges are not subtracted
    assert base.minus_totals(copy).counter("bytes|HIT-MEMORY") == 0  # never negative
    assert copy.counter("no.such") == 0 and copy.histogram("no|such").count == 0


def test_hits_are_memory_and_disk_answers():
    assert hits_of({"HIT-MEMORY": 2, "HIT-DISK": 3, "MISS": 4, "COALESCED": 5}) == 5
