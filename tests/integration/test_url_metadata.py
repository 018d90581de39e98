"""The old API's metadata cache (issue 13): ``GET /images/{key}/url`` keeps what its
probe learned (exists, size, type, ETag) as long as the object's presigned URL is
kept, so it costs at most one origin request per object per URL lifetime; a purge
clears it on every replica; values read back from Redis are checked. Real Redis,
moto S3 behind the counting proxy."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from gateway.cluster.redis import keys_for
from tests.support.images import noise_png as png, sha

TOKEN = "url-metadata-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CALLS = 50


@pytest.fixture
def config(s3_config: Any, s3_proxy: Any, redis_url: str) -> Any:
    return s3_config(endpoint=s3_proxy.url, redis={"url": redis_url}, admin={"token": TOKEN})


async def url_of(client: Any, key: str) -> str:
    resp = await client.get(f"/images/{key}/url")
    assert resp.status == 200, await resp.text()
    url: str = (await resp.json())["url"]
    return url


async def metric(client: Any, line_start: str) -> float:
    text = await (await client.get("/metrics")).text()
    found = [line for line in text.splitlines() if line.startswith(line_start + " ")]
    assert found, f"{line_start} not in /metrics"
    return float(found[0].rpartition(" ")[2])


async def test_fifty_calls_cost_one_origin_request(gateway_client: Any, config: Any,
                                                   s3: Any, s3_proxy: Any) -> None:
    body = png(1)
    s3.put("friend.png", body)
    client = await gateway_client(config)
    urls = {await url_of(client, "friend.png") for _ in range(CALLS)}
    assert s3_proxy.total() == 1  # the first call's ranged GET, nothing after it
    assert len(urls) == 1
    assert await metric(client, 'gateway_url_metadata_lookups_total{result="miss"}') == 1
    assert await metric(client, 'gateway_url_metadata_lookups_total{result="hit"}') == CALLS - 1
    async with aiohttp.ClientSession() as session, session.get(urls.pop()) as direct:
        assert sha(await direct.read()) == sha(body)


async def test_kept_no_longer_than_the_url(gateway_client: Any, config: Any, s3: Any,
                                           redis: Redis) -> None:
    s3.put("ttl.png", png(2))
    client = await gateway_client(config)
    await url_of(client, "ttl.png")
    keys = keys_for(config)
    url_ttl = await redis.ttl(keys.url("ttl.png"))
    known_ttl = await redis.ttl(keys.known("ttl.png"))
    assert 0 < known_ttl <= url_ttl <= config.presign.cache_ttl


async def test_a_purge_makes_every_replica_probe_again(gateway_client: Any, config: Any,
                                                       s3: Any, s3_proxy: Any,
                                                       redis: Redis) -> None:
    s3.put("p.png", png(3))
    a = await gateway_client(config)
    b = await gateway_client(config)
    await url_of(a, "p.png")
    await url_of(b, "p.png")
    assert s3_proxy.total() == 1  # b used what a learned (shared through Redis)
    assert (await a.delete("/admin/images/p.png", headers=AUTH)).status == 200
    assert await redis.exists(keys_for(config).known("p.png")) == 0
    await url_of(b, "p.png")
    assert s3_proxy.total() == 2
    await url_of(a, "p.png")
    assert s3_proxy.total() == 2


async def test_a_purge_after_a_replacement_probes_the_new_object(
        gateway_client: Any, config: Any, s3: Any, s3_proxy: Any) -> None:
    s3.put("r.png", png(4))
    client = await gateway_client(config)
    await url_of(client, "r.png")
    s3.put("r.png", b"<html>not a picture</html>", content_type="text/html")
    assert (await client.get("/images/r.png/url")).status == 200  # kept: no request
    assert s3_proxy.total() == 1
    assert (await client.delete("/admin/images/r.png", headers=AUTH)).status == 200
    assert (await client.get("/images/r.png/url")).status == 502
    assert s3_proxy.total() == 2


async def test_without_redis_kept_in_process(gateway_client: Any, s3_config: Any, s3: Any,
                                             s3_proxy: Any) -> None:
    s3.put("m.png", png(5))
    client = await gateway_client(s3_config(endpoint=s3_proxy.url, admin={"token": TOKEN}))
    for _ in range(10):
        await url_of(client, "m.png")
    assert s3_proxy.total() == 1
    assert (await client.delete("/admin/images/m.png", headers=AUTH)).status == 200
    await url_of(client, "m.png")
    assert s3_proxy.total() == 2


HOSTILE = [
    b"not json",
    b'{"size":1,"modified":1,"type":"image/png","etag":null,"url":"http://evil/"}',
    b'{"size":999999999999,"modified":1,"type":"image/png","etag":null}',
    b'{"size":0,"modified":1,"type":"image/png","etag":null}',
    b'{"size":true,"modified":1,"type":"image/png","etag":null}',
    b'{"size":10,"modified":-1,"type":"image/png","etag":null}',
    b'{"size":10,"modified":1,"type":"text/html","etag":null}',
    b'{"size":10,"modified":1,"type":"image/png","etag":"\\"a\\"\\r\\nX-Evil: 1"}',
    b'{"size":10,"modified":1,"type":"image/png","etag":"unquoted"}',
    b"\xff\xfe",
    b"[]",
]


@pytest.mark.parametrize("value", HOSTILE)
async def test_hostile_values_in_redis_are_counted_and_not_used(
        gateway_client: Any, config: Any, s3: Any, s3_proxy: Any, redis: Redis,
        value: bytes) -> None:
    s3.put("h.png", png(6))
    client = await gateway_client(config)
    await redis.set(keys_for(config).known("h.png"), value, ex=600)
    await url_of(client, "h.png")
    assert s3_proxy.total() == 1  # probed as if nothing were stored
    assert await metric(client, 'gateway_redis_values_rejected_total{kind="known"}') == 1
    await url_of(client, "h.png")  # the probe's own answer replaced it
    assert s3_proxy.total() == 1


async def test_a_new_url_lifetime_probes_again(gateway_client: Any, s3_config: Any,
                                                s3: Any, s3_proxy: Any, redis_url: str) -> None:
    s3.put("life.png", png(7))
    client = await gateway_client(s3_config(endpoint=s3_proxy.url, redis={"url": redis_url},
                                            presign={"cache_ttl": 2}))
    await url_of(client, "life.png")
    await url_of(client, "life.png")
    assert s3_proxy.total() == 1
    await asyncio.sleep(2.2)  # the stored URL, and what was learned with it, are gone
    await url_of(client, "life.png")
    assert s3_proxy.total() == 2
