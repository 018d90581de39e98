"""GET /metrics: exact counter deltas after a scripted sequence, in one process and
added up over 2 worker processes (a real `python -m gateway` with SO_REUSEPORT)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from collections.abc import Mapping

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config_checks import ASSETS

PFP = (ASSETS / "default_pfp.png").read_bytes()
TOKEN = "metrics-test-token-0123456789"
IMAGE_ROUTE = "/images/{image_id}"


class Metrics:
    """One scrape: value(name, **labels), 0 for a series that is absent."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def sum(self, name: str, **labels: str) -> float:
        """Sum over every series of ``name`` whose labels include ``labels``."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and want <= ls)


def deltas(before: Metrics, after: Metrics, wanted: Mapping[str, float]) -> dict[str, float]:
    """{"name{l=v}": after - before} for the keys of ``wanted`` (same notation)."""
    out = {}
    for key in wanted:
        name, _, rest = key.partition("{")
        labels = dict(p.split("=", 1) for p in rest.rstrip("}").split(",") if p)
        out[key] = after.value(name, **labels) - before.value(name, **labels)
    return out


async def scrape(client) -> Metrics:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    return Metrics(await resp.text())


# --- one process ----------------------------------------------------------------------------


@pytest.fixture
async def s3_client(gateway_client, s3_config, s3_proxy):
    return await gateway_client(s3_config(endpoint=s3_proxy.url))


async def test_scripted_sequence_gives_exact_deltas(s3_client, s3, s3_proxy, make_image):
    client = s3_client
    a, b = make_image(seed=1), make_image(seed=2, size=(40, 40))
    s3.put("a.png", a)
    s3.put("b.png", b)
    before = await scrape(client)

    miss = await client.get("/images/a.png")  # MISS: one origin fetch
    assert (miss.headers["X-Cache"], len(await miss.read())) == ("MISS", len(a))
    hit = await client.get("/images/a.png")  # HIT-MEMORY
    assert (hit.headers["X-Cache"], len(await hit.read())) == ("HIT-MEMORY", len(a))
    cond = await client.get("/images/a.png", headers={"If-None-Match": miss.headers["ETag"]})
    assert (cond.status, cond.headers["X-Cache"]) == (304, "HIT-MEMORY")  # 304, no body

    # A burst of 5 for one uncached image while its origin fetch is held back:
    # one leader (MISS), four joiners (COALESCED), one origin fetch.
    s3_proxy.delay_first_byte(0.3, match="b.png")
    burst = await asyncio.gather(*(client.get("/images/b.png") for _ in range(5)))
    layers = sorted([r.headers["X-Cache"] for r in burst])
    assert layers == ["COALESCED"] * 4 + ["MISS"]
    for r in burst:
        assert len(await r.read()) == len(b)
    s3_proxy.heal()

    gone = await client.get("/images/nobody.png")  # FALLBACK: origin says not found
    assert (gone.headers["X-Cache"], await gone.read()) == ("FALLBACK", PFP)

    after = await scrape(client)
    expected = {
        f'gateway_http_requests_total{{route={IMAGE_ROUTE},status=200}}': 8,
        f'gateway_http_requests_total{{route={IMAGE_ROUTE},status=304}}': 1,
        "gateway_answers_total{layer=memory}": 2,
        "gateway_answers_total{layer=miss}": 2,
        "gateway_answers_total{layer=coalesced}": 4,
        "gateway_answers_total{layer=fallback}": 1,
        "gateway_answers_total{layer=disk}": 0,
        "gateway_request_duration_seconds_count{layer=coalesced}": 4,
        "gateway_cache_hits_total{layer=memory}": 2,
        "gateway_cache_misses_total{layer=memory}": 7,
        "gateway_cache_hits_total{layer=disk}": 0,
        "gateway_cache_misses_total{layer=disk}": 7,
        "gateway_coalesced_total": 4,
        "gateway_stale_served_total": 0,
        "gateway_fallback_served_total": 1,
        "gateway_origin_fetches_total{result=ok}": 2,
        "gateway_origin_fetches_total{result=not_found}": 1,
        "gateway_origin_fetches_total{result=error}": 0,
        "gateway_origin_fetch_duration_seconds_count{result=ok}": 2,
        "gateway_bytes_from_origin_total": len(a) + len(b),
        "gateway_bytes_served_total": 2 * len(a) + 5 * len(b) + len(PFP),
        "gateway_bytes_saved_total": len(a) + 4 * len(b),
        "gateway_url_store_lookups_total{result=miss}": 3,
        "gateway_url_store_lookups_total{result=hit}": 0,
        "gateway_cache_evictions_total{layer=memory}": 0,
    }
    assert deltas(before, after, expected) == expected
    # the held-back fetch took at least the 0.3 s delay: it is in the slow buckets
    assert after.value("gateway_origin_fetch_duration_seconds_bucket",
                       result="ok", le="0.25") == 1
    assert after.value("gateway_origin_fetch_duration_seconds_sum", result="ok") >= 0.3
    # gauges
    assert after.value("gateway_cache_entries", layer="memory") == 2
    assert after.value("gateway_cache_size_bytes", layer="memory") == len(a) + len(b)
    assert after.value("gateway_cache_limit_bytes", layer="memory") == 256 * 1024 * 1024
    assert after.value("gateway_cache_entries", layer="disk") == 2
    assert after.value("gateway_redis_state", state="disabled") == 1
    assert after.value("gateway_workers") == 1


async def test_metrics_text_is_well_formed(client_local):
    await (await client_local.get("/images/default_pfp.png")).read()
    metrics = await scrape(client_local)
    names = {name for name, _ in metrics.samples}
    for family in ("gateway_http_requests_total", "gateway_request_duration_seconds_bucket",
                   "gateway_origin_fetch_duration_seconds_bucket", "gateway_bytes_saved_total",
                   "gateway_cache_size_bytes", "gateway_cache_entries",
                   "gateway_url_store_lookups_total", "gateway_redis_up"):
        assert family in names, family
    # histogram buckets are cumulative and end with +Inf = count
    memory = [(float(dict(ls)["le"]), v) for (n, ls), v in metrics.samples.items()
              if n == "gateway_request_duration_seconds_bucket" and ("layer", "miss") in ls]
    memory.sort()
    assert [v for _, v in memory] == sorted(v for _, v in memory)
    assert memory[-1] == (float("inf"),
                          metrics.value("gateway_request_duration_seconds_count", layer="miss"))
    # /metrics is never cached by anyone
    resp = await client_local.get("/metrics")
    assert resp.headers["Cache-Control"] == "no-store"


async def test_origin_retries_and_breaker_trips(gateway_client, s3_config, s3, s3_proxy,
                                                make_image):
    client = await gateway_client(s3_config(endpoint=s3_proxy.url, origin={
        "retries": 2, "retry_backoff": 0.01, "breaker_threshold": 1, "breaker_reset": 30}))
    s3.put("r.png", make_image(seed=3))
    before = await scrape(client)
    assert before.value("gateway_origin_breaker_open") == 0
    s3_proxy.fail_with(500)  # retryable: asked 1 + 2 times, then the breaker opens
    assert (await client.get("/images/r.png")).status == 502
    assert s3_proxy.gets("r.png") == 3
    after = await scrape(client)
    expected = {"gateway_origin_retries_total": 2, "gateway_origin_breaker_trips_total": 1,
                "gateway_origin_fetches_total{result=error}": 1}
    assert deltas(before, after, expected) == expected
    assert after.value("gateway_origin_breaker_open") == 1


@pytest.fixture
async def client_local(gateway_client, gateway_config):
    return await gateway_client(gateway_config())


async def test_redis_down_is_reported(gateway_client, gateway_config, redis_server):
    redis_server.ensure_running()
    client = await gateway_client(gateway_config(redis={"url": redis_server.url},
                                                 cluster={"secret": "s" * 32}))
    await (await client.get("/readyz")).read()
    assert (await scrape(client)).value("gateway_redis_state", state="up") == 1
    redis_server.pause()
    try:
        await (await client.get("/readyz")).read()
        metrics = await scrape(client)
    finally:
        redis_server.resume()
    assert metrics.value("gateway_redis_state", state="down") == 1
    assert metrics.value("gateway_redis_up") == 0
    assert metrics.value("gateway_redis_failures_total") >= 1


# --- 2 worker processes --------------------------------------------------------------------


def _get(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, bytes, dict]:
    """One request on a new connection (urllib never reuses one): SO_REUSEPORT gives
    each new connection to either worker."""
    req = urllib.request.Request(url, headers=dict(headers or {}))
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.read(), dict(resp.headers)


def _until(predicate, timeout: float = 8.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.1)


def _admin_stats(url: str) -> dict:
    return json.loads(_get(f"{url}/admin/stats",
                           {"Authorization": f"Bearer {TOKEN}"})[1])


async def test_two_workers_add_up(spawn_gateway, redis_url):
    await asyncio.to_thread(_two_workers_add_up, spawn_gateway, redis_url)


def _two_workers_add_up(spawn_gateway, redis_url: str) -> None:
    gw = spawn_gateway({"GATEWAY_SERVER_WORKERS": "2", "GATEWAY_ADMIN_TOKEN": TOKEN,
                        "GATEWAY_REDIS_URL": redis_url, "GATEWAY_CLUSTER_SECRET": "s" * 32,
                        "GATEWAY_SERVER_ACCESS_LOG": "false"})
    (gw.dir / "origin" / "p.png").write_bytes(PFP)
    # both workers up and publishing
    _until(lambda: _admin_stats(gw.url)["scope"]["workers_reporting"] == 2, what="2 workers")

    n = 40
    layers: dict[str, int] = {}
    for _ in range(n):
        status, body, headers = _get(f"{gw.url}/images/p.png")
        assert (status, body) == (200, PFP)
        layers[headers["X-Cache"]] = layers.get(headers["X-Cache"], 0) + 1

    def totals() -> Metrics | None:
        metrics = Metrics(_get(f"{gw.url}/metrics")[1].decode())
        done = metrics.value("gateway_http_requests_total", route=IMAGE_ROUTE,
                             status="200") == n
        return metrics if done else None

    metrics = _until(totals, what=f"{n} requests in /metrics")
    assert metrics.sum("gateway_answers_total") == n
    for layer, count in layers.items():
        label = layer.lower().removeprefix("hit-")
        assert metrics.value("gateway_answers_total", layer=label) == count, layer
    assert (metrics.value("gateway_cache_hits_total", layer="memory")
            + metrics.value("gateway_cache_misses_total", layer="memory")) == n
    assert metrics.value("gateway_bytes_served_total") == n * len(PFP)
    assert metrics.value("gateway_workers") == 2
    # each worker has its own memory LRU holding p.png: the sizes add up
    assert metrics.value("gateway_cache_entries", layer="memory") == 2

    # Each worker publishes its figures every second: once both have answered with
    # the full total, each has published all it counted (its own figures are live,
    # the other's come from its file).
    full: set[int] = set()

    def both_published() -> dict | None:
        s = _admin_stats(gw.url)
        if s["requests"]["answers"] == n:
            full.add(s["scope"]["answered_by_pid"])
        return s if len(full) == 2 else None

    stats = _until(both_published, what="both workers' totals published")
    workers = [w for w in stats["workers"] if w["live"]]
    assert len(workers) == 2
    assert all(w["answers"] > 0 for w in workers), workers  # both served some
    assert sum(w["answers"] for w in workers) == n

    # A worker that dies keeps its counts in the totals; the supervisor replaces it.
    victim = workers[0]["pid"]
    os.kill(victim, signal.SIGKILL)

    def replaced() -> dict | None:
        try:
            s = _admin_stats(gw.url)
        except OSError:  # a connection the kernel had queued for the killed worker
            return None
        pids = {w["pid"] for w in s["workers"] if w["live"]}
        return s if len(pids) == 2 and victim not in pids else None

    stats = _until(replaced, timeout=15, what="a replacement worker")
    assert stats["requests"]["answers"] == n

    def scrape_again() -> Metrics | None:
        try:
            return Metrics(_get(f"{gw.url}/metrics")[1].decode())
        except OSError:
            return None

    metrics = _until(scrape_again, what="a scrape")
    assert metrics.value("gateway_http_requests_total", route=IMAGE_ROUTE, status="200") == n
    assert metrics.value("gateway_workers") == 2



async def test_variant_figures_are_exported(client_local):
    before = await scrape(client_local)
    for _ in range(2):
        resp = await client_local.get("/images/default_pfp.png?w=64&h=64&format=webp")
        assert resp.status == 200
        await resp.read()
    after = await scrape(client_local)
    assert deltas(before, after, {"gateway_variants_total{event=transforms}": 0,
                                  "gateway_variants_total{event=memory_hits}": 0,
                                  "gateway_variants_total{event=pool_completed}": 0}) == {
        "gateway_variants_total{event=transforms}": 1,
        "gateway_variants_total{event=memory_hits}": 1,
        "gateway_variants_total{event=pool_completed}": 1}
    assert after.value("gateway_transform_pool_pending") == 0
