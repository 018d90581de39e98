"""Redis is input, not truth: hostile values written straight into a real Redis (an alias
out of the bucket, a stored URL for another host, bucket or key, a forged result holding
HTML) are never followed or served.

The gateway talks to moto S3 only through the counting proxy; a second counting proxy
stands for "another host" and must see no request at all, and a second bucket on the
same S3 must see no GET.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from gateway.cluster.fill import FillCodec, fill_key
from gateway.cluster.redis import keys_for
from gateway.config_checks import ASSETS
from gateway.model import cache_key
from gateway.web.keys import PARTS
from tests.support.fakes import blob, until
from tests.support.images import noise_png as png, sha
from tests.support.proxy import FaultProxy

TOKEN = "hostile-test-token-0123456789"
FALLBACK = (ASSETS / "default_pfp.png").read_bytes()
HTML = b"<!doctype html><html><script>document.cookie</script></html>"
S3_SECRET = "testing"  # s3_config's secret access key



@pytest.fixture
def other_host(s3_server: Any) -> Iterator[FaultProxy]:
    """Another host (it happens to lead to the same S3): must never be asked anything."""
    proxy = FaultProxy(s3_server.endpoint)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def other_bucket(s3_server: Any) -> Iterator[Any]:
    """Another bucket on the very same S3, holding pictures of the same names."""
    bucket = s3_server.bucket()
    for name in ("a.png", "x", "f.png"):
        bucket.put(name, png(90))
    yield bucket
    bucket.destroy()


@pytest.fixture
def config(s3_config: Any, s3_proxy: FaultProxy, redis_url: str) -> Any:
    return s3_config(endpoint=s3_proxy.url, redis={"url": redis_url},
                     admin={"token": TOKEN})


@pytest.fixture
async def client(gateway_client: Any, config: Any) -> Any:
    return await gateway_client(config)


@pytest.fixture
def keys(config: Any) -> Any:
    return keys_for(config)


async def rejected(client: Any, kind: str) -> float:
    """gateway_redis_values_rejected_total{kind=...} as /metrics exports it."""
    text = await (await client.get("/metrics")).text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name == "gateway_redis_values_rejected_total"
                    and sample.labels == {"kind": kind}):
                return float(sample.value)
    raise AssertionError("gateway_redis_values_rejected_total is not exported")


def no_request_left_the_deployment(s3: Any, s3_proxy: FaultProxy, other_host: FaultProxy,
                                   other_bucket: Any) -> None:
    assert other_host.total() == 0
    assert s3_proxy.gets(other_bucket.bucket) == 0
    paths = [r.path for r in s3_proxy.requests()]
    assert all(path.startswith(f"/{s3.bucket}/") for path in paths), paths


# -- an alias is a key of this bucket, or nothing -----------------------------------------


@pytest.mark.parametrize("value", [
    "../{other}/x", "/{other}/x", "..", "../x", "a//x", "x.png\r\nHost: evil",
])
async def test_an_alias_out_of_the_bucket_is_never_followed(
        client: Any, redis: Redis, keys: Any, s3: Any, s3_proxy: FaultProxy,
        other_host: FaultProxy, other_bucket: Any, value: str) -> None:
    s3.put("x", png(1))
    await redis.set(keys.user("mallory"), value.format(other=other_bucket.bucket))
    for _ in range(3):
        resp = await client.get("/images/user/mallory")
        assert resp.status == 200 and resp.headers["X-Cache"] == "FALLBACK"
        assert await resp.read() == FALLBACK
    assert s3_proxy.total() == 0  # not even this bucket was asked
    no_request_left_the_deployment(s3, s3_proxy, other_host, other_bucket)
    assert await rejected(client, "alias") == 1  # read once, then remembered


@pytest.mark.parametrize("value", ["{other}/x", "%2e%2e%2f{other}%2fx"])
async def test_an_alias_that_names_a_key_stays_in_this_bucket(
        client: Any, redis: Redis, keys: Any, s3: Any, s3_proxy: FaultProxy,
        other_host: FaultProxy, other_bucket: Any, value: str) -> None:
    # Valid object keys (a nested one; one of literal '%' characters): looked up in
    # THIS bucket under exactly that name, never in the bucket the text names.
    other_bucket.put("x", png(2))
    await redis.set(keys.user("mallory"), value.format(other=other_bucket.bucket))
    resp = await client.get("/images/user/mallory")
    assert resp.status == 200 and resp.headers["X-Cache"] == "FALLBACK"
    assert await resp.read() == FALLBACK
    assert other_host.total() == 0
    paths = [r.path for r in s3_proxy.requests()]
    assert paths and all(path.startswith(f"/{s3.bucket}/") for path in paths), paths
    assert await rejected(client, "alias") == 0


# -- a stored URL is this endpoint, bucket and key, or it is signed afresh ---------------


def sigv4_query(signed_at: float | None = None) -> str:
    date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(signed_at or time.time()))
    return ("X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=testing%2F20300101%2Fus-east-1%2Fs3%2Faws4_request"
            f"&X-Amz-Date={date}&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
            "&X-Amz-Signature=0000")


HOSTILE_URLS = {
    "other-host": "{host}/{bucket}/a.png?{q}",
    "other-host-userinfo": "http://127.0.0.1:{proxy_port}@{host_netloc}/{bucket}/a.png?{q}",
    "other-bucket": "{proxy}/{other}/a.png?{q}",
    "other-key": "{proxy}/{bucket}/b.png?{q}",
    "traversal": "{proxy}/{bucket}/../{other}/a.png?{q}",
    "encoded-traversal": "{proxy}/{bucket}/..%2F{other}%2Fa.png?{q}",
    "extra-parameter": "{proxy}/{bucket}/a.png?{q}&versionId=1",
    "expired": "{proxy}/{bucket}/a.png?{old_q}",
    "not-a-url": "javascript:alert(1)",
}


@pytest.mark.parametrize("shape", list(HOSTILE_URLS))
async def test_a_stored_url_elsewhere_is_never_used(
        client: Any, redis: Redis, keys: Any, s3: Any, s3_proxy: FaultProxy,
        other_host: FaultProxy, other_bucket: Any, shape: str) -> None:
    body = png(2)
    s3.put("a.png", body)
    s3.put("b.png", png(3))
    hostile = HOSTILE_URLS[shape].format(
        host=other_host.url, host_netloc=other_host.url.removeprefix("http://"),
        proxy=s3_proxy.url, proxy_port=s3_proxy.url.rsplit(":", 1)[1],
        bucket=s3.bucket, other=other_bucket.bucket, q=sigv4_query(),
        old_q=sigv4_query(time.time() - 4000))
    await redis.set(keys.url("a.png"), hostile, ex=3000)

    resp = await client.get("/images/a.png")
    assert resp.status == 200 and resp.headers["X-Cache"] == "MISS"
    assert sha(await resp.read()) == sha(body)
    no_request_left_the_deployment(s3, s3_proxy, other_host, other_bucket)
    assert [r.path for r in s3_proxy.requests()] == [f"/{s3.bucket}/a.png"]
    assert "X-Amz-Signature=0000" not in s3_proxy.requests()[0].query
    fresh = (await redis.get(keys.url("a.png"))).decode()
    assert fresh.startswith(f"{s3_proxy.url}/{s3.bucket}/a.png?")  # replaced
    assert await rejected(client, "url") == 1


async def test_the_url_api_never_hands_out_a_stored_url_elsewhere(
        client: Any, redis: Redis, keys: Any, s3: Any, other_host: FaultProxy) -> None:
    """GET /images/{id}/url gives clients a URL: a hostile one would send them away."""
    s3.put("c.png", png(4))
    await redis.set(keys.url("c.png"), f"{other_host.url}/{s3.bucket}/c.png?{sigv4_query()}")
    data = await (await client.get("/images/c.png/url")).json()
    assert data["url"].startswith(f"{client.app[PARTS].config.s3.endpoint}/{s3.bucket}/c.png?")
    assert other_host.url not in data["url"]
    assert await rejected(client, "url") == 1


# -- a result left by "another replica" is authenticated and re-checked ---------------------


def forged_fills(deployment: str, key: str) -> dict[str, bytes]:
    """What a writer of Redis could leave: it sees the key names (so the deployment),
    not the secret. And what a replica with a bug could leave: signed, yet HTML."""
    def codec(secret: str) -> FillCodec:
        return FillCodec(fill_key(secret), deployment, allowed_types=frozenset({"text/html"}),
                         max_bytes=1 << 20)

    intruder = codec("the intruder's guess of the secret")
    replica = codec(S3_SECRET)  # the key every replica derives from the S3 secret key
    return {
        "raw-html": HTML,
        "signed-by-a-stranger": intruder.pack(key, blob(HTML)),
        "html-labelled-png": intruder.pack(key, blob(HTML, content_type="image/png")),
        "missing": intruder.pack(key, None),
        "html-from-a-replica": replica.pack(key, blob(HTML, content_type="image/png")),
    }


@pytest.mark.parametrize(("shape", "reason"), [
    ("raw-html", "not signed"), ("signed-by-a-stranger", "not signed"),
    ("html-labelled-png", "not signed"), ("missing", "not signed"),
    ("html-from-a-replica", "not an image"),  # signed right, refused by the byte check
])
async def test_a_forged_result_is_never_served(
        client: Any, redis: Redis, keys: Any, s3: Any, s3_proxy: FaultProxy,
        caplog: pytest.LogCaptureFixture, shape: str, reason: str) -> None:
    body = png(5)
    s3.put("f.png", body)
    key = cache_key("f.png", 0)
    # "Another replica" holds the lease and left its "result".
    await redis.set(keys.lease(key), "someone", px=30_000)
    await redis.set(keys.fill(key), forged_fills(keys.deployment, key)[shape])

    resp = await client.get("/images/f.png")
    served = await resp.read()
    assert resp.status == 200 and resp.headers["X-Cache"] == "MISS"
    assert sha(served) == sha(body) and b"<html" not in served
    assert resp.headers["Content-Type"] == "image/png"
    assert s3_proxy.gets("f.png") == 1  # it fetched the origin itself, at once
    assert await redis.exists(keys.fill(key)) == 0  # dropped for every replica
    assert await rejected(client, "fill") == 1
    assert any(reason in r.getMessage() for r in caplog.records
               if r.name == "gateway.observe.rejected")
    again = await client.get("/images/f.png")
    assert again.headers["X-Cache"] == "HIT-MEMORY" and sha(await again.read()) == sha(body)


@pytest.mark.parametrize(("cluster", "warned"), [
    ({}, True),  # derived from the S3 secret "testing": a default anybody can know
    ({"secret": "c" * 32}, False),
])
async def test_a_key_derived_from_a_short_s3_secret_is_warned_about(
        gateway_client: Any, s3_config: Any, redis_url: str,
        caplog: pytest.LogCaptureFixture, cluster: dict[str, str], warned: bool) -> None:
    with caplog.at_level(logging.WARNING, "gateway.web.app"):
        await gateway_client(s3_config(redis={"url": redis_url}, cluster=cluster))
    lines = [r.getMessage() for r in caplog.records if "GATEWAY_CLUSTER_SECRET" in
             r.getMessage()]
    assert len(lines) == (1 if warned else 0)
    assert all("testing" not in line for line in lines)  # says how long, never what


# -- two deployments, one Redis ------------------------------------------------------------


async def test_deployments_sharing_redis_never_use_each_others_values(
        gateway_client: Any, s3_config: Any, s3: Any, s3_proxy: FaultProxy, redis: Redis,
        redis_url: str, other_bucket: Any, tmp_path: Path) -> None:
    """Two buckets behind one endpoint, the same credentials (so the same derived fill
    key), one Redis: each serves its own bucket's bytes, and a result copied from one
    deployment's keys to the other's is refused."""
    mine, theirs = png(6), png(7)
    s3.put("same.png", mine)
    other_bucket.put("same.png", theirs)
    config_a = s3_config(endpoint=s3_proxy.url, redis={"url": redis_url})
    # Each its own disk: the disk cache's names carry no deployment (one disk, one
    # deployment).
    config_b = s3_config(endpoint=s3_proxy.url, redis={"url": redis_url},
                         s3={"bucket": other_bucket.bucket},
                         disk={"path": str(tmp_path / "cache-b")})
    keys_a, keys_b = keys_for(config_a), keys_for(config_b)
    assert keys_a.deployment != keys_b.deployment
    a, b = await gateway_client(config_a), await gateway_client(config_b)
    # Building B blocked the loop a moment (botocore loads its models): A may have
    # timed out on Redis; both must use it before the test can look at what they store.
    await until(lambda: all(c.app[PARTS].redis_health.state == "up" and
                            c.app[PARTS].redis_health.usable() for c in (a, b)),
                what="both deployments on Redis")

    assert sha(await (await a.get("/images/same.png")).read()) == sha(mine)
    assert sha(await (await b.get("/images/same.png")).read()) == sha(theirs)
    url_a = (await redis.get(keys_a.url("same.png"))).decode()
    url_b = (await redis.get(keys_b.url("same.png"))).decode()
    assert f"/{s3.bucket}/" in url_a and f"/{other_bucket.bucket}/" in url_b

    # A's result for a new picture, replayed under B's names while "B's lease" is held.
    s3.put("r.png", mine)
    other_bucket.put("r.png", theirs)
    key = cache_key("r.png", 0)
    assert (await a.get("/images/r.png")).status == 200
    fill_a = await redis.get(keys_a.fill(key))
    assert fill_a is not None  # A left its result for its own replicas
    await redis.set(keys_b.lease(key), "someone", px=30_000)
    await redis.set(keys_b.fill(key), fill_a)
    resp = await b.get("/images/r.png")
    assert sha(await resp.read()) == sha(theirs)
    assert await rejected(b, "fill") == 1 and await rejected(a, "fill") == 0
