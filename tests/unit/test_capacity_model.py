"""The capacity model (bench/capacity) on cases with known answers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench.capacity import che, exact, workload
from bench.capacity.cli import main, size
from bench.capacity.model import Deployment, Throughput, predict
from bench.capacity.throughput import from_bench


def equal_sizes(n: int, s: float, size_bytes: float = 1000.0) -> workload.Workload:
    return workload.Workload(np.full(n, size_bytes), workload.zipf_probs(n, s),
                             workload.default_uris(n))


def gateway_only(**kw: float) -> Deployment:
    """One replica, one worker, no micro-cache, no expiry: just the two LRUs."""
    base: dict[str, float] = dict(replicas=1, workers=1, micro_ttl=0.0, disk_ttl=1e12,
                                  disk_overhead=0.0, url_ttl=0.0)
    base.update(kw)
    return Deployment(**base)  # type: ignore[arg-type]


def test_uniform_popularity_and_a_cache_larger_than_the_set_hits_everything() -> None:
    wl = equal_sizes(500, 0.0)
    d = gateway_only(memory_max_bytes=600_000, disk_max_bytes=1e9)
    warm = np.arange(500)  # every object once: the compulsory misses
    ids = np.concatenate([warm, workload.sample_trace(wl.probs, 5000, seed=3)])
    replay = exact.simulate(wl, ids, d, rate=100.0, measure_from=500)
    assert replay.shares()["memory"] == 1.0
    assert replay.origin_gets == 0
    assert predict(wl, 100.0, d).shares["memory"] == pytest.approx(1.0)


@pytest.mark.parametrize("k", [50, 200, 1000])
def test_an_lru_of_k_objects_under_zipf_matches_che(k: int) -> None:
    n = 5000
    wl = equal_sizes(n, 0.8)
    d = gateway_only(memory_max_bytes=k * 1000.0, disk_max_bytes=1e12)
    ids = workload.sample_trace(wl.probs, 200_000, seed=k)
    replay = exact.simulate(wl, ids, d, rate=1000.0, measure_from=50_000)
    # Che by hand for equal sizes: sum(1 - exp(-p_i T)) = k
    t = che.characteristic_time(wl.probs, np.ones(n), float(k))
    expected = float(np.dot(wl.probs, -np.expm1(-wl.probs * t)))
    assert replay.shares()["memory"] == pytest.approx(expected, abs=0.015)
    assert predict(wl, 1000.0, d).shares["memory"] == pytest.approx(expected, abs=1e-6)


def test_che_with_objects_of_different_sizes_matches_the_exact_lru() -> None:
    wl = workload.synthetic(4000, 1.0, median=10_000, sigma=0.8, lo=1000, hi=100_000, seed=5)
    d = gateway_only(memory_max_bytes=0.05 * wl.total_bytes, disk_max_bytes=0.3 * wl.total_bytes)
    ids = workload.sample_trace(wl.probs, 300_000, seed=6)
    replay = exact.simulate(wl, ids, d, rate=1000.0, measure_from=100_000).shares()
    model = predict(wl, 1000.0, d).shares
    for layer in ("memory", "disk", "miss"):
        assert model[layer] == pytest.approx(replay[layer], abs=0.02), layer


def test_a_copy_older_than_the_ttl_is_revalidated_not_fetched_again() -> None:
    wl = equal_sizes(1, 0.0)
    d = gateway_only(memory_max_bytes=1e6, disk_max_bytes=1e6, disk_ttl=3.0)
    replay = exact.simulate(wl, np.zeros(10, dtype=np.int64), d, rate=1.0)  # t = 0..9 s
    # fetched at 0, expired at 3, 6, 9: each time a conditional GET (304, no body)
    assert replay.counts == {"miss": 1, "memory": 6, "revalidated": 3}
    assert replay.origin_gets == 4
    assert replay.origin_bytes == 1000.0


def test_revalidations_follow_the_renewal_formula() -> None:
    wl = equal_sizes(200, 0.0)
    d = gateway_only(memory_max_bytes=1e9, disk_max_bytes=1e9, disk_ttl=20.0)
    rate = 100.0  # each object 0.5/s: 1 / (1 + 0.5 * 20) = 1/11 of the requests revalidate
    ids = workload.sample_trace(wl.probs, 100_000, seed=8)
    replay = exact.simulate(wl, ids, d, rate=rate, measure_from=20_000)
    model = predict(wl, rate, d).shares
    assert model["revalidated"] == pytest.approx(1 / 11)
    assert replay.shares()["revalidated"] == pytest.approx(1 / 11, abs=0.01)


def test_purges_empty_the_caches_at_the_rate_given() -> None:
    wl = equal_sizes(100, 0.0)
    d = gateway_only(memory_max_bytes=1e9, disk_max_bytes=1e9, purge_rate=2.0)
    rate = 50.0  # each object 0.5 requests/s and 0.02 purges/s: misses p / (r + p)
    ids = workload.sample_trace(wl.probs, 100_000, seed=9)
    replay = exact.simulate(wl, ids, d, rate=rate, measure_from=10_000, seed=4)
    model = predict(wl, rate, d)
    assert model.shares["miss"] == pytest.approx(0.02 / 0.52)
    assert replay.shares()["miss"] == pytest.approx(0.02 / 0.52, abs=0.008)
    # each purge: version bump, URL delete, publish; delivered to the one replica
    assert model.redis["purge"] == 6.0
    assert model.redis["purge_delivery"] == 2.0


def test_after_a_resync_each_held_copy_is_revalidated_once_on_its_next_request() -> None:
    wl = equal_sizes(2000, 0.8)
    d = gateway_only(memory_max_bytes=1e9, disk_max_bytes=1e9)
    rate = 400.0
    model = predict(wl, rate, d).resync
    assert model[0.0][0] == pytest.approx(rate)  # everything held: every request at first
    g = wl.probs * rate
    assert model[60.0][0] == pytest.approx(float(np.dot(g, np.exp(-g * 60))))
    assert model[0.0][1] == pytest.approx(3 * rate)  # lease, release, result (no URLs)
    # replayed: the revalidations in the first 60 s add up to what the rates say
    ids = workload.sample_trace(wl.probs, 100_000 + 24_000, seed=12)
    replay = exact.simulate_resync(wl, ids[:124_000], d, rate=rate, measure_from=100_000)
    expected = float((-np.expm1(-g * 60)).sum())  # objects asked for within 60 s
    assert replay.counts["revalidated"] == pytest.approx(expected, rel=0.03)


def test_the_micro_cache_answers_the_ttl_share() -> None:
    wl = equal_sizes(10, 0.0)
    d = gateway_only(memory_max_bytes=1e9, disk_max_bytes=1e9, micro_ttl=1.0)
    rate = 40.0  # 4 requests/s per object: 4 / (1 + 4) answered by nginx
    ids = workload.sample_trace(wl.probs, 100_000, seed=10)
    replay = exact.simulate(wl, ids, d, rate=rate, measure_from=1000)
    assert predict(wl, rate, d).shares["micro"] == pytest.approx(0.8)
    assert replay.shares()["micro"] == pytest.approx(0.8, abs=0.01)


def test_a_cdn_in_front_answers_the_hit_ratio_given_popular_objects_first() -> None:
    wl = equal_sizes(1000, 1.0)
    model = predict(wl, 1000.0, gateway_only(memory_max_bytes=1e9, disk_max_bytes=1e9,
                                             cdn_hit=0.6))
    assert model.shares["cdn"] == pytest.approx(0.6, abs=1e-6)
    assert sum(model.shares.values()) == pytest.approx(1.0)


def test_workers_split_the_memory_and_the_requests() -> None:
    wl = equal_sizes(2000, 0.9)
    one = predict(wl, 1000.0, gateway_only(memory_max_bytes=200_000, disk_max_bytes=1e9))
    two = predict(wl, 1000.0, gateway_only(memory_max_bytes=200_000, disk_max_bytes=1e9,
                                           workers=2))
    # each worker keeps its own copy of the hot set in half the memory
    assert two.shares["memory"] < one.shares["memory"]
    ids = workload.sample_trace(wl.probs, 200_000, seed=11)
    replay = exact.simulate(wl, ids, gateway_only(memory_max_bytes=200_000, disk_max_bytes=1e9,
                                                  workers=2), rate=1000.0, measure_from=50_000)
    assert two.shares["memory"] == pytest.approx(replay.shares()["memory"], abs=0.015)


def test_origin_bytes_redis_and_cores_follow_the_misses() -> None:
    wl = equal_sizes(100, 0.0, size_bytes=2000.0)
    d = Deployment(replicas=1, workers=1, memory_max_bytes=0, disk_max_bytes=1,
                   micro_ttl=0.0, url_ttl=3000.0)
    tp = Throughput(memory=1000.0, disk=500.0, miss=100.0)
    p = predict(wl, 10.0, d, tp)  # nothing fits: every request goes to the origin
    assert p.shares["miss"] == pytest.approx(1.0)
    assert p.origin_gets == pytest.approx(10.0)
    assert p.origin_bytes == pytest.approx(20_000.0)
    assert p.redis["lease"] == pytest.approx(20.0)   # SET NX + release
    assert p.redis["fill"] == pytest.approx(10.0)
    # each object is fetched 0.1/s; its URL is stored again once per 3000 s at most
    assert p.redis["url"] == pytest.approx(10.0 + 100 * 0.1 / (1 + 0.1 * 3000))
    assert p.cores == pytest.approx(0.1)


def test_a_sampled_large_set_gives_the_figures_of_the_whole_one() -> None:
    kw: dict[str, float] = dict(median=15_000, sigma=0.5, lo=2000, hi=200_000, seed=3)
    whole = workload.synthetic(200_000, 0.9, **kw)  # type: ignore[arg-type]
    sample = workload.sampled_synthetic(200_000, 0.9, head=10_000, tail=10_000, **kw)  # type: ignore[arg-type]
    assert sample.modelled < 25_000
    assert sample.objects == pytest.approx(200_000, rel=0.03)
    d = Deployment(replicas=3, memory_max_bytes=0.02 * whole.total_bytes,
                   disk_max_bytes=0.2 * whole.total_bytes, purge_rate=1.0)
    full, sampled = predict(whole, 5000.0, d), predict(sample, 5000.0, d)
    for layer in ("micro", "memory", "disk", "miss"):
        assert sampled.shares[layer] == pytest.approx(full.shares[layer], abs=0.01), layer
    assert sampled.origin_gets == pytest.approx(full.origin_gets, rel=0.05)
    assert sampled.redis["purge"] == full.redis["purge"] == 3.0


def test_sizes_parse_with_units() -> None:
    assert size("256MiB") == 256 * 2**20
    assert size("10GB") == 10e9
    assert size("1e6") == 1e6


def test_the_command_line_prints_the_layers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--objects", "2000", "--rate", "500", "--replicas", "3",
                 "--memory-max-bytes", "2MB", "--exact", "20000", "--miss-rps", "50"]) == 0
    text = capsys.readouterr().out
    assert "memory" in text and "origin GETs" in text and "gateway cores" in text
    assert main(["--objects", "2000", "--rate", "500", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert math.isclose(sum(data["prediction"]["shares"].values()), 1.0)
    assert len(data["prediction"]["replica_rates"]) == 2


def test_a_trace_file_gives_the_popularity(tmp_path: Path) -> None:
    trace = tmp_path / "trace.txt"
    trace.write_text("/images/a.jpg\n/images/b.jpg\n/images/a.jpg\na.jpg\n")
    ids, uris = workload.read_trace(trace)
    assert uris == ["/images/a.jpg", "/images/b.jpg"]
    wl = workload.from_trace(ids, np.array([10.0, 20.0]), uris)
    assert wl.probs.tolist() == [0.75, 0.25]


def test_throughput_is_read_from_the_latest_bench(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(json.dumps({
        "settings": {"workers": 2},
        "measures": {"memory": {"rps": 20000}, "disk": {"rps": 8000}}}))
    (tmp_path / "longtail.json").write_text(json.dumps({"fill_rps_per_worker": 700}))
    tp = from_bench(tmp_path)
    assert (tp.memory, tp.disk, tp.miss) == (10000.0, 4000.0, 700.0)
    assert "results.json" in tp.source and "longtail.json" in tp.source
    empty = from_bench(tmp_path / "nothing")
    assert empty.source == "built-in defaults"
