"""The S3 origin over HTTP (moto's server, a counting proxy in front) with real Redis."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from gateway.cluster.redis import keys_for
from tests.support.images import noise_png as png, sha

KEY_TTL_MAX = 3000
# Stored URLs the tests write themselves must look like the gateway's own, or they are
# not used at all (StoredUrlCheck).
CREDENTIAL = "testing%2F20300101%2Fus-east-1%2Fs3%2Faws4_request"



@pytest.fixture
def config(s3_config, s3_proxy, redis_url):
    return s3_config(endpoint=s3_proxy.url, redis={"url": redis_url},
                     origin={"connect_timeout": 1, "read_timeout": 1})


@pytest.fixture
async def client(gateway_client, config):
    return await gateway_client(config)


@pytest.fixture
def keys(config):
    """The client's Redis names (they carry its deployment)."""
    return keys_for(config)


async def test_serves_uploaded_object_once_from_origin(client, s3, s3_proxy):
    body = png(1)
    s3.put("a.png", body)
    resp = await client.get("/images/a.png")
    assert resp.status == 200
    assert sha(await resp.read()) == sha(body)
    assert resp.headers["X-Cache"] == "MISS"
    assert resp.headers["Content-Type"] == "image/png"
    again = await client.get("/images/a.png")
    assert again.headers["X-Cache"] == "HIT-MEMORY"
    assert sha(await again.read()) == sha(body)
    assert s3_proxy.gets("a.png") == 1


async def test_presigned_url_kept_in_redis_with_ttl_below_expiry(client, s3, redis, keys):
    s3.put("b.png", png(2))
    assert (await client.get("/images/b.png")).status == 200
    key = keys.url("b.png")
    url = (await redis.get(key)).decode()
    ttl = await redis.ttl(key)
    assert 0 < ttl <= KEY_TTL_MAX
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=3600" in url


async def test_url_endpoint_returns_working_presigned_url(client, s3):
    body = png(3)
    s3.put("c.png", body)
    resp = await client.get("/images/c.png/url")
    data = await resp.json()
    assert resp.status == 200
    assert data["success"] is True and data["image_id"] == "c.png"
    assert abs(data["expires_at"] - (time.time() + 3600)) < 60
    async with aiohttp.ClientSession() as session, session.get(data["url"]) as direct:
        assert direct.status == 200
        assert sha(await direct.read()) == sha(body)


async def test_url_endpoint_404_for_missing_object(client):
    resp = await client.get("/images/missing.png/url")
    assert resp.status == 404
    assert (await resp.json()) == {"success": False, "error": "image not found",
                                   "request_id": resp.headers["X-Request-Id"]}


async def test_missing_object_serves_fallback(client, s3_proxy):
    resp = await client.get("/images/missing.png")
    assert resp.status == 200
    assert resp.headers["X-Cache"] == "FALLBACK"
    assert resp.headers["Cache-Control"] == "max-age=60"


async def test_bad_id_touches_nothing(client, s3_proxy):
    resp = await client.get("/images/..%2f..%2fsecret")
    assert resp.status == 400
    assert s3_proxy.total() == 0


@pytest.mark.parametrize("status", [403, 400])
async def test_a_refused_url_is_resigned_once(client, s3, s3_proxy, redis, keys, status):
    s3.put("d.png", png(4))
    # A stored URL whose signature S3 no longer accepts (expired, or keys rotated: 403),
    # or whose parameters it refuses (400: someone else wrote it into Redis).
    old = (f"{s3_proxy.url}/{s3.bucket}/d.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
           f"&X-Amz-Credential={CREDENTIAL}"
           f"&X-Amz-Date={time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
           "&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=0000")
    await redis.set(keys.url("d.png"), old, ex=3000)
    s3_proxy.fail_with(status, body=b"<Error><Code>AccessDenied</Code></Error>", times=1)
    resp = await client.get("/images/d.png")
    assert resp.status == 200
    assert resp.headers["X-Cache"] == "MISS"
    assert s3_proxy.gets("d.png") == 2
    assert "X-Amz-Signature=0000" in s3_proxy.requests()[0].query  # the stored one, tried
    fresh = (await redis.get(keys.url("d.png"))).decode()
    assert fresh != old and "X-Amz-Signature=0000" not in fresh


async def test_persistent_403_is_502(client, s3, s3_proxy):
    s3.put("e.png", png(5))
    s3_proxy.fail_with(403)
    resp = await client.get("/images/e.png")
    assert resp.status == 502
    assert resp.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("status", [500, 503])
async def test_origin_5xx_is_502_not_cached(client, s3, s3_proxy, status):
    s3.put("f.png", png(6))
    s3_proxy.fail_with(status, body=b"<Error><Code>SlowDown</Code></Error>")
    resp = await client.get("/images/f.png")
    assert resp.status == 502
    body = await resp.text()
    assert "Traceback" not in body and "SlowDown" not in body
    s3_proxy.heal()
    assert (await client.get("/images/f.png")).status == 200


async def test_origin_refusing_is_502_fast(client, s3, s3_proxy):
    s3.put("g.png", png(7))
    s3_proxy.refuse()
    started = time.monotonic()
    resp = await client.get("/images/g.png")
    assert resp.status == 502
    assert time.monotonic() - started < 3


async def test_slow_first_byte_is_504(client, s3, s3_proxy):
    s3.put("h.png", png(8))
    s3_proxy.delay_first_byte(5)
    resp = await client.get("/images/h.png")
    assert resp.status == 504


async def test_truncated_body_is_502_and_not_cached(client, s3, s3_proxy):
    s3.put("i.png", png(9, size=(200, 200)))
    s3_proxy.truncate_body()
    assert (await client.get("/images/i.png")).status == 502
    s3_proxy.heal()
    resp = await client.get("/images/i.png")
    assert resp.status == 200
    assert resp.headers["X-Cache"] == "MISS"


async def test_html_object_is_refused(client, s3):
    s3.put("j.png", b"<html>hi</html>", content_type="text/html")
    assert (await client.get("/images/j.png")).status == 502
    s3.put("k.png", png(10), content_type="image/png, text/html")
    assert (await client.get("/images/k.png")).status == 502


async def test_object_over_max_bytes_refused(gateway_client, s3_config, s3, s3_proxy):
    client = await gateway_client(s3_config(endpoint=s3_proxy.url,
                                            origin={"max_bytes": 1000}))
    s3.put("big.png", png(11, size=(300, 300)))
    assert (await client.get("/images/big.png")).status == 502
    assert (await client.get("/images/big.png")).status == 502


async def test_without_redis_urls_kept_in_process(gateway_client, s3_config, s3, s3_proxy):
    client = await gateway_client(s3_config(endpoint=s3_proxy.url))
    s3.put("l.png", png(12))
    assert (await client.get("/images/l.png")).status == 200
    first = (await (await client.get("/images/l.png/url")).json())["url"]
    second = (await (await client.get("/images/l.png/url")).json())["url"]
    assert first == second


async def test_restarted_gateway_gives_same_etag(gateway_client, s3_config, s3, tmp_path):
    s3.put("m.png", png(13))
    one = await gateway_client(s3_config())
    two = await gateway_client(s3_config(disk={"path": str(tmp_path / "fresh")}))
    assert ((await one.get("/images/m.png")).headers["ETag"]
            == (await two.get("/images/m.png")).headers["ETag"])


async def test_readyz_reports_each_dependency(client):
    data = await (await client.get("/readyz")).json()
    assert data == {"status": "ok", "checks": {"origin": "ok", "disk": "ok", "redis": "ok"}}


async def test_url_near_expiry_is_resigned_in_background(client, s3, s3_proxy, redis,
                                                         keys):
    s3.put("old.png", png(14))
    aged = time.gmtime(time.time() - 2500)  # past 80% of the 3000 s store TTL
    old = (f"{s3_proxy.url}/{s3.bucket}/old.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
           f"&X-Amz-Credential={CREDENTIAL}"
           f"&X-Amz-Date={time.strftime('%Y%m%dT%H%M%SZ', aged)}"
           "&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=00aa")
    await redis.set(keys.url("old.png"), old, ex=500)
    resp = await client.get("/images/old.png")
    assert resp.status == 200  # served with the stored URL, not waiting for a signature
    assert any("Signature=00aa" in r.query for r in s3_proxy.requests())
    for _ in range(100):
        stored = (await redis.get(keys.url("old.png"))).decode()
        if stored != old:
            break
        await asyncio.sleep(0.02)
    assert stored != old
    assert 2900 < await redis.ttl(keys.url("old.png")) <= 3000


@pytest.mark.parametrize(("name", "value"), [
    ("Last-Modified", "Sun, 06 Nov 99999999999 08:49:37 GMT"),  # OverflowError
    ("Last-Modified", "Sun, 06 Nov 1994 08:49:37 +99999999999999999999999"),
    ("Last-Modified", "Sun, 06 Nov 1994 99:49:37 GMT"),
    ("Last-Modified", "Fri, 31 Dec 9999 23:59:59 -2359"),  # past year 9999 in UTC
    ("Last-Modified", "Sun, 06 Nov 1000 08:49:37 GMT"),  # before the epoch
    ("Last-Modified", "yesterday"),
    ("ETag", '"\xff\xfe<script>"'),  # not ASCII: cannot be sent back as If-None-Match
    ("ETag", '"' + "a" * 7000 + '"'),
    ("ETag", "no quotes, a list"),
])
async def test_junk_origin_headers_are_ignored(gateway_client, s3_config, s3, s3_proxy, name,
                                               value):
    """What S3 sends is input too: a header no calendar or grammar holds is dropped (no
    Last-Modified of its own, no conditional GET), never a 500."""
    client = await gateway_client(s3_config(endpoint=s3_proxy.url,
                                            disk={"ttl": 1, "ttl_jitter": 0},
                                            fetch={"refresh_ahead": 0}))
    body = png(9)
    s3.put("odd.png", body)
    s3_proxy.set_header(name, value, match="odd.png")
    url = await client.get("/images/odd.png/url")
    assert url.status == 200, await url.text()
    first = await client.get("/images/odd.png")
    assert first.status == 200, await first.text()
    assert sha(await first.read()) == sha(body)
    stamp = first.headers["Last-Modified"]
    assert stamp.endswith(" GMT") and len(stamp) == 29  # a real HTTP date
    await asyncio.sleep(1.1)  # expired: the next request revalidates
    again = await client.get("/images/odd.png")
    assert again.status == 200, await again.text()
    assert sha(await again.read()) == sha(body)
    assert again.headers["X-Cache"] in ("MISS", "REVALIDATED")
    conditional = [seen.header("If-None-Match") for seen in s3_proxy.requests()
                   if seen.method == "GET" and seen.path.endswith("/odd.png")
                   and seen.header("Range") is None]
    if name == "ETag":
        assert conditional == [None, None]  # a junk ETag is never sent back
