"""gateway.observe.report: figures and recommendations from constructed snapshots."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.config import Config
from gateway.observe.aggregate import Aggregate, Baseline, WorkerInfo
from gateway.observe.histogram import Histogram
from gateway.observe.report import build_report, human_bytes
from gateway.observe.snapshot import Snapshot

MiB = 1024 * 1024


def histogram(seconds: float, n: int) -> Histogram:
    h = Histogram()
    for _ in range(n):
        h.observe(seconds)
    return h


def snapshot(answers: dict[str, int] | None = None, *, redis: str = "up",
             counters: dict[str, float] | None = None,
             origin: dict[str, tuple[float, int]] | None = None,
             gauges: dict[str, float] | None = None) -> Snapshot:
    s = Snapshot(pid=42, started=1000.0, written=1100.0, redis=redis)
    for layer, n in (answers or {}).items():
        s.histograms[f"latency|{layer}"] = histogram(0.001, n)
        s.counters[f"bytes|{layer}"] = 100 * n
    for result, (seconds, n) in (origin or {}).items():
        s.histograms[f"origin|{result}"] = histogram(seconds, n)
    s.counters.update(counters or {})
    s.gauges.update(gauges or {"memory.bytes": 10, "memory.entries": 1,
                               "memory.limit": 256 * MiB, "disk.bytes": 10,
                               "disk.entries": 1, "disk.limit": 10 * 1024 * MiB})
    return s


def report(s: Snapshot, config: Config | None = None, baseline: Baseline | None = None):
    worker = WorkerInfo(pid=42, started=1000.0, written=1100.0, live=True, this=True,
                        answers=0, requests=0)
    return build_report(Aggregate(s, [worker], []), baseline, config or Config(), now=1100.0)


def ids(r) -> list[str]:
    return [x["id"] for x in r["recommendations"]]


def test_healthy_figures_need_no_advice():
    r = report(snapshot({"HIT-MEMORY": 90, "HIT-DISK": 5, "MISS": 5},
                        origin={"ok": (0.05, 5)}))
    assert r["hit_rate"]["overall"] == 0.95
    assert r["recommendations"] == []
    assert r["seconds"] == 100.0
    # time saved: 95 cache answers x 50 ms origin average - their own 1 ms each
    assert r["saved"]["time_seconds"] == pytest.approx(95 * 0.05 - 95 * 0.001, rel=0.05)


def test_too_few_answers_for_rate_advice():
    assert ids(report(snapshot({"MISS": 19}))) == []
    assert ids(report(snapshot({"MISS": 20}))) == ["low_hit_rate"]


def test_redis_down_is_critical_and_first():
    r = report(snapshot({"HIT-MEMORY": 5, "MISS": 30}, redis="down",
                        counters={"redis.failures": 3}))
    assert ids(r) == ["redis_down", "low_hit_rate"]
    assert r["recommendations"][0]["severity"] == "critical"
    assert r["redis"] == {"state": "down", "failures": 3}


def test_disk_problems():
    r = report(snapshot({"HIT-DISK": 30}, counters={
        "stats.disk.corrupt_dropped": 2, "stats.disk.write_errors": 5,
        "stats.disk.evictions": 50},
        gauges={"memory.limit": 100, "disk.bytes": 990, "disk.limit": 1000}))
    assert {"disk_corrupt", "disk_write_errors", "disk_too_small"} <= set(ids(r))


def test_slow_origin():
    r = report(snapshot({"HIT-MEMORY": 30, "MISS": 6}, origin={"ok": (2.0, 6)}))
    assert ids(r) == ["slow_origin"]
    assert r["origin"]["latency"]["p95_ms"] >= 1500


def test_memory_advice_without_disk():
    config = dataclasses.replace(Config(), disk=dataclasses.replace(Config().disk,
                                                                    enabled=False))
    s = snapshot({"HIT-MEMORY": 30, "MISS": 30}, counters={"stats.memory.evictions": 25},
                 gauges={"memory.bytes": 90, "memory.limit": 100})
    r = report(s, config)
    assert r["cache"]["disk"] == {"enabled": False}
    assert r["hit_rate"]["disk"] is None
    assert "memory_too_small" in ids(r)
    advice = next(x for x in r["recommendations"] if x["id"] == "memory_too_small")
    assert "512.0 MiB" in advice["detail"]  # twice the per-worker 256 MiB


def test_baseline_is_subtracted():
    now = snapshot({"HIT-MEMORY": 10, "MISS": 4})
    then = snapshot({"HIT-MEMORY": 6, "MISS": 4})
    r = report(now, baseline=Baseline(1, 1050.0, then))
    assert r["requests"]["answers"] == 4
    assert r["layers"]["memory"]["answers"] == 4
    assert r["layers"]["miss"]["answers"] == 0
    assert r["since"] == 1050.0


def test_human_bytes():
    assert human_bytes(12) == "12 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(256 * MiB) == "256.0 MiB"
