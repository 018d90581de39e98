"""Negative caching (issue 12, part 4): a missing image costs one S3 request per
``cache.negative_ttl`` and leaves nothing in Redis; a purge or an upload ends it on
every replica. Real Redis, moto S3 behind the counting proxy, real gateways."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from gateway.cluster.redis import keys_for
from gateway.web.keys import PARTS
from tests.support.fakes import until
from tests.support.images import noise_png as png, sha

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
N = 400
OLD_COST_PER_MISS = 1000  # bytes of Redis memory a miss used to leave (URL + marker)



class Monitor:
    """Every command Redis executes while it runs (MONITOR), up to a marker."""

    def __init__(self, redis_url: str) -> None:
        self.client = Redis.from_url(redis_url)
        self.commands: list[str] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Monitor:
        self._task = asyncio.create_task(self._watch())
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def _watch(self) -> None:
        async with self.client.monitor() as monitor:
            self._ready.set()
            while True:
                self.commands.append((await monitor.next_command())["command"])

    async def __aexit__(self, *exc: object) -> None:
        marker = f"end-of-watch-{secrets.token_hex(4)}"
        await self.client.echo(marker)
        await until(lambda: any(marker in c for c in self.commands), timeout=10)
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.client.aclose()


async def test_random_missing_ids_leave_nothing_in_redis_and_reach_s3_once(
        gateway_client: Any, s3_config: Any, s3: Any, s3_proxy: Any, redis_url: str,
        redis: Redis) -> None:
    config = s3_config(endpoint=s3_proxy.url, redis={"url": redis_url})
    keys = keys_for(config)
    client = await gateway_client(config)
    stats = client.app[PARTS].stats
    await until(lambda: redis.exists(keys.epoch()), timeout=10)  # the bus subscribed
    s3.put("here.png", png(1))
    assert (await client.get("/images/here.png")).headers["X-Cache"] == "MISS"
    assert await redis.exists(keys.url("here.png"))  # kept for an existing object
    before = set(await redis.keys("*"))
    memory_before = (await redis.info("memory"))["used_memory"]

    ids = [f"gone-{secrets.token_hex(8)}.png" for _ in range(N)]
    for image_id in ids:
        resp = await client.get(f"/images/{image_id}")
        assert resp.status == 200 and resp.headers["X-Cache"] == "FALLBACK"
    assert s3_proxy.gets("gone-") == N  # one GET each, no HEAD, nothing else
    assert s3_proxy.total() == s3_proxy.gets("gone-") + s3_proxy.gets("here.png")
    added = set(await redis.keys("*")) - before
    assert all(k.startswith(keys.fill("").encode()) for k in added)  # no URL, no lease
    for key in added:  # only what replicas waiting on the same fetch would need
        assert await redis.pttl(key) <= 2000

    async def markers_gone() -> bool:
        return await redis.dbsize() == len(before)

    await until(markers_gone, timeout=10, interval=0.1)
    growth = (await redis.info("memory"))["used_memory"] - memory_before
    assert growth < N * OLD_COST_PER_MISS // 10

    async with Monitor(redis_url) as watched:
        for image_id in ids:
            resp = await client.get(f"/images/{image_id}")
            assert resp.headers["X-Cache"] == "FALLBACK"
            resp = await client.get(f"/images/{image_id}?w=64&h=64")  # variants share it
            assert resp.headers["X-Cache"] == "FALLBACK"
    assert s3_proxy.gets("gone-") == N
    assert stats.negative_hits == 2 * N
    assert not [c for c in watched.commands if "gone-" in c]


async def test_negative_ttl_zero_asks_the_origin_every_time(
        gateway_client: Any, s3_config: Any, s3_proxy: Any) -> None:
    client = await gateway_client(s3_config(endpoint=s3_proxy.url,
                                            cache={"negative_ttl": 0}))
    for _ in range(3):
        assert (await client.get("/images/nope.png")).headers["X-Cache"] == "FALLBACK"
    assert s3_proxy.gets("nope.png") == 3


async def test_the_url_api_asks_s3_once_for_a_missing_object(
        gateway_client: Any, s3_config: Any, s3_proxy: Any) -> None:
    client = await gateway_client(s3_config(endpoint=s3_proxy.url))
    for _ in range(3):
        assert (await client.get("/images/nope.png/url")).status == 404
    assert s3_proxy.total() == 1  # one probe
    assert (await client.get("/images/nope.png")).headers["X-Cache"] == "FALLBACK"
    assert s3_proxy.total() == 1


async def test_an_upload_ends_the_miss_on_every_replica(
        spawn_gateway: Any, s3: Any, s3_proxy: Any, redis_url: str) -> None:
    env = {**s3.env(s3_proxy.url), "GATEWAY_REDIS_URL": redis_url,
           "GATEWAY_ADMIN_TOKEN": TOKEN, "GATEWAY_SERVER_ACCESS_LOG": "false"}
    a, b = spawn_gateway(env), spawn_gateway(env)
    async with aiohttp.ClientSession() as session:
        async def layer(gateway: Any) -> tuple[str, str]:
            async with session.get(f"{gateway.url}/images/new.png") as resp:
                await resp.read()
                return resp.headers["X-Cache"], resp.headers.get("ETag", "")

        for gateway in (a, b):
            assert (await layer(gateway))[0] == "FALLBACK"
        asked = s3_proxy.gets("new.png")
        assert 1 <= asked <= 2
        for gateway in (a, b):
            assert (await layer(gateway))[0] == "FALLBACK"
        assert s3_proxy.gets("new.png") == asked  # remembered on both

        async with session.put(f"{a.url}/admin/images/new.png", data=png(7),
                               headers=AUTH) as resp:
            assert resp.status == 200
            uploaded = await resp.json()
        assert uploaded["propagated"] is True
        assert await layer(a) == ("MISS", uploaded["etag"])  # at once, here

        async def b_serves_the_upload() -> bool:
            return await layer(b) == ("MISS", uploaded["etag"])

        await until(b_serves_the_upload, timeout=5, interval=0.05)  # through the bus


async def test_a_purge_ends_the_miss(gateway_client: Any, s3_config: Any, s3: Any,
                                     s3_proxy: Any) -> None:
    client = await gateway_client(s3_config(endpoint=s3_proxy.url, admin={"token": TOKEN}))
    assert (await client.get("/images/late.png")).headers["X-Cache"] == "FALLBACK"
    s3.put("late.png", png(8))  # written straight to the bucket: the gateway can't know
    assert (await client.get("/images/late.png")).headers["X-Cache"] == "FALLBACK"
    assert (await client.delete("/admin/images/late.png", headers=AUTH)).status == 200
    resp = await client.get("/images/late.png")
    assert resp.headers["X-Cache"] == "MISS" and sha(await resp.read()) == sha(png(8))


async def test_remembered_misses_in_the_metrics(gateway_client: Any, s3_config: Any) -> None:
    client = await gateway_client(s3_config())
    for _ in range(3):
        await client.get("/images/nope.png")
    text = await (await client.get("/metrics")).text()
    assert "gateway_negative_hits_total 2.0" in text
    assert 'gateway_cache_entries{layer="negative"} 1.0' in text
    assert 'gateway_cache_limit_bytes{layer="negative"} 4.194304e+06' in text


@pytest.mark.parametrize(("key", "body", "label"), [
    ("page.png", b"<!doctype html><script>alert(1)</script>", "image/png"),  # not an image
    ("huge.png", png(3, size=(200, 200)), "image/png"),  # over origin.max_bytes (50 KB)
])
async def test_a_refused_object_is_remembered_like_a_miss(
        gateway_client: Any, s3_config: Any, s3: Any, s3_proxy: Any, caplog: Any,
        key: str, body: bytes, label: str) -> None:
    """An object the gateway refuses (502) is not downloaded again on every request: up
    to origin.max_bytes from S3 per request, and two WARNING lines each, for whoever
    asks. The same 502 meanwhile; a purge or an upload ends it, as it ends a miss."""
    client = await gateway_client(s3_config(endpoint=s3_proxy.url, admin={"token": TOKEN},
                                            origin={"max_bytes": 50_000}))
    stats = client.app[PARTS].stats
    s3.put(key, body, content_type=label)
    caplog.set_level(logging.INFO, logger="gateway")
    answers = []
    for path in (f"/images/{key}", f"/images/{key}", f"/images/{key}?w=64",
                 f"/images/{key}/url", f"/images/{key}"):
        resp = await client.get(path)
        answers.append((resp.status, (await resp.json())["error"]))
    assert len(set(answers)) == 1 and answers[0][0] == 502
    assert s3_proxy.gets(key) == 1  # the first request only
    assert (stats.origin_refused, stats.refused_hits) == (1, 4)
    # One line at most (throttled for the process: an earlier case may have had it).
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) <= 1, warnings
    assert all(w.startswith(f"refused {key}: origin object ") for w in warnings), warnings
    text = await (await client.get("/metrics")).text()
    assert "gateway_refused_hits_total 4.0" in text
    assert "gateway_origin_refused_total 1.0" in text

    s3.put(key, png(5))  # fixed in the bucket: the gateway cannot know until a purge
    assert (await client.get(f"/images/{key}")).status == 502
    assert (await client.delete(f"/admin/images/{key}", headers=AUTH)).status == 200
    resp = await client.get(f"/images/{key}")
    assert (resp.status, resp.headers["X-Cache"]) == (200, "MISS")
    assert sha(await resp.read()) == sha(png(5))
    assert s3_proxy.gets(key) == 2


async def test_an_upload_ends_a_remembered_refusal(gateway_client: Any, s3_config: Any,
                                                   s3: Any, s3_proxy: Any) -> None:
    client = await gateway_client(s3_config(endpoint=s3_proxy.url, admin={"token": TOKEN}))
    s3.put("doc.png", b"<html>no picture</html>")
    for _ in range(2):
        assert (await client.get("/images/doc.png")).status == 502
    assert s3_proxy.gets("doc.png") == 1
    put = await client.put("/admin/images/doc.png", data=png(6), headers=AUTH)
    assert put.status == 200
    resp = await client.get("/images/doc.png")
    assert (resp.status, resp.headers["ETag"]) == (200, (await put.json())["etag"])


async def test_a_refusal_is_not_remembered_with_negative_ttl_zero(
        gateway_client: Any, s3_config: Any, s3: Any, s3_proxy: Any) -> None:
    client = await gateway_client(s3_config(endpoint=s3_proxy.url,
                                            cache={"negative_ttl": 0}))
    s3.put("doc.png", b"<html>no picture</html>")
    for _ in range(3):
        assert (await client.get("/images/doc.png")).status == 502
    assert s3_proxy.gets("doc.png") == 3
