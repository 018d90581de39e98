"""/admin/stats: figures and recommendations for constructed situations; reset; clear."""

from __future__ import annotations

import asyncio

import pytest

from gateway.config_checks import ASSETS

TOKEN = "stats-test-token-0123456789abc"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PFP = (ASSETS / "default_pfp.png").read_bytes()


async def stats(client, **params) -> dict:
    resp = await client.get("/admin/stats", headers=AUTH, params=params)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    return await resp.json()


async def fetch(client, image_id: str, **headers) -> tuple[int, str, bytes]:
    resp = await client.get(f"/images/{image_id}", headers=headers)
    return resp.status, resp.headers.get("X-Cache", ""), await resp.read()


def rec_ids(report: dict) -> list[str]:
    return [r["id"] for r in report["recommendations"]]


@pytest.fixture
def admin_config(gateway_config):
    def make(**sections):
        return gateway_config(admin={"token": TOKEN}, **sections)
    return make


async def test_needs_the_token(gateway_client, admin_config):
    client = await gateway_client(admin_config())
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"},
                    {"Authorization": f"Basic {TOKEN}"}):
        assert (await client.get("/admin/stats", headers=headers)).status == 401
        assert (await client.post("/admin/stats/reset", headers=headers)).status == 401
        assert (await client.post("/admin/cache/clear", headers=headers)).status == 401


async def test_no_admin_token_means_no_stats(gateway_client, gateway_config):
    client = await gateway_client(gateway_config())
    assert (await client.get("/admin/stats", headers=AUTH)).status == 404
    assert (await client.get("/admin/dashboard")).status == 404
    assert (await client.get("/metrics")).status == 200  # /metrics is not admin


async def test_all_misses(gateway_client, admin_config, origin_dir, make_image):
    images = {f"u{i}.png": make_image(seed=i) for i in range(25)}
    for name, body in images.items():
        (origin_dir / name).write_bytes(body)
    client = await gateway_client(admin_config())
    for name in images:
        assert (await fetch(client, name))[1] == "MISS"

    report = await stats(client)
    assert report["requests"]["answers"] == 25
    assert report["requests"]["hits"] == 0
    assert report["hit_rate"]["overall"] == 0
    assert report["layers"]["miss"]["answers"] == 25
    assert report["layers"]["miss"]["share"] == 1
    assert report["layers"]["miss"]["p95_ms"] >= report["layers"]["miss"]["avg_ms"] * 0.5
    assert report["origin"]["fetches"] == report["origin"]["ok"] == 25
    assert report["saved"]["bytes"] == 0
    assert report["saved"]["bytes_from_origin"] == sum(map(len, images.values()))
    assert report["saved"]["bytes_saved_ratio"] == 0
    assert report["saved"]["time_seconds"] == 0
    assert report["cache"]["memory"]["entries"] == 25
    assert report["cache"]["memory"]["evictions"] == 0
    assert len(report["top_images"]) == 10 and all(t["requests"] == 1
                                                   for t in report["top_images"])
    assert rec_ids(report) == ["low_hit_rate"]
    advice = report["recommendations"][0]
    assert advice["severity"] == "warning" and "prefetch" in advice["detail"]


async def test_memory_too_small(gateway_client, admin_config, origin_dir, make_image):
    a, b = make_image(seed=1), make_image(seed=2)
    (origin_dir / "a.png").write_bytes(a)
    (origin_dir / "b.png").write_bytes(b)
    # room for one picture only: asking for a, b, a, b... evicts on every request
    client = await gateway_client(admin_config(memory={"max_bytes": max(len(a), len(b)) + 8}))
    layers = [(await fetch(client, name))[1] for _ in range(15) for name in ("a.png", "b.png")]
    assert layers[:2] == ["MISS", "MISS"] and set(layers[2:]) == {"HIT-DISK"}

    report = await stats(client)
    memory = report["cache"]["memory"]
    assert memory["evictions"] == 29  # every put after the first
    assert memory["hits"] == 0 and memory["hit_rate"] == 0
    assert memory["entries"] == 1 and memory["fill"] > 0.5
    assert report["cache"]["disk"]["hits"] == 28
    assert report["hit_rate"]["overall"] == pytest.approx(28 / 30, abs=1e-3)
    assert report["layers"]["disk"]["answers"] == 28
    assert "memory_too_small" in rec_ids(report)
    assert "low_hit_rate" not in rec_ids(report)
    advice = next(r for r in report["recommendations"] if r["id"] == "memory_too_small")
    assert "memory.max_bytes" in advice["detail"] and "29" in advice["detail"]


async def test_origin_failing(gateway_client, s3_config, s3, s3_proxy, make_image):
    s3.put("ok.png", make_image(seed=1))
    client = await gateway_client(s3_config(endpoint=s3_proxy.url, admin={"token": TOKEN}))
    assert (await fetch(client, "ok.png"))[1] == "MISS"
    s3_proxy.fail_with(500, b"<Error><Code>InternalError</Code></Error>")
    for i in range(4):
        status, layer, _ = await fetch(client, f"down{i}.png")
        assert (status, layer) == (502, "ERROR")

    report = await stats(client)
    origin = report["origin"]
    assert (origin["fetches"], origin["ok"], origin["error"], origin["failed"]) == (5, 1, 4, 4)
    assert origin["error_rate"] == 0.8
    assert report["layers"]["error"]["answers"] == 4
    assert report["requests"]["errors"] == 4
    assert report["requests"]["http"]["/images/{image_id}"] == {"200": 1, "502": 4}
    assert rec_ids(report)[0] == "origin_errors"
    advice = report["recommendations"][0]
    assert advice["severity"] == "critical"
    assert "4 of 5 origin fetches failed" in advice["detail"]
    assert "S3" in advice["detail"]


async def test_time_and_bandwidth_saved(gateway_client, s3_config, s3, s3_proxy, make_image):
    body = make_image(seed=3, size=(64, 64))
    s3.put("slow.png", body)
    client = await gateway_client(s3_config(endpoint=s3_proxy.url, admin={"token": TOKEN}))
    s3_proxy.delay_first_byte(0.2)
    assert (await fetch(client, "slow.png"))[1] == "MISS"
    for _ in range(10):
        assert (await fetch(client, "slow.png"))[1] == "HIT-MEMORY"

    saved = (await stats(client))["saved"]
    assert saved["bytes"] == 10 * len(body)
    assert saved["bytes_from_origin"] == len(body)
    assert saved["bytes_saved_ratio"] == pytest.approx(10 / 11, abs=1e-3)
    assert saved["origin_fetches_avoided"] == 10
    assert saved["avg_origin_fetch_ms"] >= 200
    # 10 hits x >= 0.2 s each, minus the hits' own (sub-millisecond) time
    assert 1.9 < saved["time_seconds"] < 10 * saved["avg_origin_fetch_ms"] / 1000


async def test_missing_images_and_top_lists(gateway_client, admin_config, origin_dir):
    (origin_dir / "hot.png").write_bytes(PFP)
    client = await gateway_client(admin_config())
    for _ in range(12):
        await fetch(client, "hot.png")
    for i in range(6):
        await fetch(client, "gone.png")
        await fetch(client, f"gone{i % 2}.png")
    report = await stats(client, top="3")
    assert report["top_images"] == [{"image_id": "hot.png", "requests": 12},
                                    {"image_id": "gone.png", "requests": 6},
                                    {"image_id": "gone0.png", "requests": 3}]
    assert report["top_missing"][0] == {"image_id": "gone.png", "requests": 6}
    assert report["layers"]["fallback"]["answers"] == 12
    advice = next(r for r in report["recommendations"] if r["id"] == "missing_images")
    assert "gone.png" in advice["detail"]
    assert (await client.get("/admin/stats", headers=AUTH, params={"top": "0"})).status == 400


async def test_reset_zeroes_stats_but_not_metrics(gateway_client, admin_config, origin_dir):
    (origin_dir / "a.png").write_bytes(PFP)
    client = await gateway_client(admin_config())
    for _ in range(3):
        await fetch(client, "a.png")
    before = await stats(client)
    assert before["requests"]["answers"] == 3

    resp = await client.post("/admin/stats/reset", headers=AUTH)
    assert resp.status == 200
    reset = await resp.json()
    assert reset["success"] is True and reset["generation"] == 1

    after = await stats(client)
    assert after["requests"]["answers"] == 0
    assert after["since"] == reset["since"]
    assert after["top_images"] == []
    assert after["cache"]["memory"]["entries"] == 1  # gauges are not counters
    assert after["origin"]["fetches"] == 0
    await fetch(client, "a.png")
    after = await stats(client)
    assert after["requests"]["answers"] == 1
    assert after["layers"]["memory"]["answers"] == 1
    assert after["top_images"] == [{"image_id": "a.png", "requests": 1}]
    # Prometheus counters only grow
    text = await (await client.get("/metrics")).text()
    assert 'gateway_answers_total{layer="memory"} 3.0' in text


async def test_clear_all_caches(gateway_client, admin_config, origin_dir):
    (origin_dir / "a.png").write_bytes(PFP)
    client = await gateway_client(admin_config())
    await fetch(client, "a.png")
    assert (await fetch(client, "a.png"))[1] == "HIT-MEMORY"
    resp = await client.post("/admin/cache/clear", headers=AUTH)
    assert resp.status == 200
    body = await resp.json()
    assert body["success"] is True
    assert body["cleared"] == {"memory_entries": 1, "disk_entries": 1}
    assert (await fetch(client, "a.png"))[1] == "MISS"


async def test_stats_while_requests_run(gateway_client, admin_config, origin_dir):
    """The view is consistent under load: answers by layer add up to the total."""
    (origin_dir / "a.png").write_bytes(PFP)
    client = await gateway_client(admin_config())

    async def load() -> None:
        for _ in range(30):
            await fetch(client, "a.png")

    reports = []

    async def watch() -> None:
        for _ in range(10):
            reports.append(await stats(client))
            await asyncio.sleep(0)

    await asyncio.gather(load(), watch())
    for report in reports:
        total = report["requests"]["answers"]
        assert sum(layer["answers"] for layer in report["layers"].values()) == total
        assert report["history"][-1]["answers"] <= total
