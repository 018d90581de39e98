"""Any S3 object key, end to end against moto over HTTP behind the counting proxy:
the classes of key nginx-s3-gateway's own suite serves, the route table of the
README, and keys that must be refused before any S3 request."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import pytest
from redis.asyncio import Redis
from yarl import URL

from gateway.cluster.redis import keys_for
from gateway.model import encode_key
from gateway.web.keys import PARTS
from gateway.web.paths import image_path
from tests.support.fakes import until
from tests.support.images import noise_png as png, sha

TOKEN = "keys-test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# One key per class of character (nginx-s3-gateway's integration suite serves these),
# plus what is special to this gateway: '..'-like text, '%' sequences that look like
# escapes, ':' and the words of the other routes.
KEYS = {
    "space": "with space.png",
    "plus": "a+b.png",
    "percent": "100%.png",
    "percent-escape-text": "%2e%2e/%252e.png",  # literally these characters
    "equals": "a=b.png",
    "double-quote": 'say "cheese".png',
    "single-quote": "it's.png",
    "parentheses": "(1).png",
    "hash": "#1.png",
    "ampersand": "a&b.png",
    "pipe": "a|b.png",
    "caret": "a^b.png",
    "dollar": "$5.png",
    "bang": "bang!.png",
    "star": "star*.png",
    "question": "why?.png",
    "japanese": "日本語/写真.png",
    "cyrillic": "Кириллица.png",
    "hebrew": "עברית.png",
    "full-width-space": "full\u3000width.png",
    "nested": "a/b/c/d/e/f.png",
    "dot-text": "a..b/.../..c/.hidden.png",
    "colon": "user:42/x:y.png",
    "like-alias": "user/42",
    "like-url-api": "photos/url",
    "brackets-and-more": "[x]{y}<z>`~@;,.png",
}


@pytest.fixture(params=["alone", "redis"])
def config(request, s3_config, s3_proxy):
    """Every key test runs without Redis and with a real one: there the key is also in
    Redis names (stored URL, version) and in the purge messages of the bus."""
    with_redis = ({"redis": {"url": request.getfixturevalue("redis_url")}}
                  if request.param == "redis" else {})
    return s3_config(endpoint=s3_proxy.url, admin={"token": TOKEN}, **with_redis)


@pytest.fixture
async def client(gateway_client, config):
    return await gateway_client(config)


def get(client, path: str, **kwargs):
    return client.get(URL(path, encoded=True), **kwargs)  # sent as written


def s3_gets(proxy, bucket: str, key: str) -> list:
    """The GETs S3 received for exactly ``key`` (decoded path) of ``bucket``."""
    return [r for r in proxy.requests() if r.method == "GET" and r.path == f"/{bucket}/{key}"]


@pytest.mark.parametrize("key", list(KEYS.values()), ids=list(KEYS))
async def test_key_served_exactly_cached_revalidated_and_purged(client, config, s3, s3_proxy,
                                                                key, replica):
    body = png(sum(map(ord, key)) % 997)
    s3.put(key, body)
    path = image_path(key)

    first = await get(client, path)
    assert (first.status, first.headers["X-Cache"]) == (200, "MISS")
    assert sha(await first.read()) == sha(body)
    sent = s3_gets(s3_proxy, s3.bucket, key)
    assert len(sent) == 1 and s3_proxy.total() == 1
    # exactly what botocore signed: RFC 3986 encoding, nothing re-quoted or normalised
    assert sent[0].target.partition("?")[0] == f"/{s3.bucket}/{quote(key, safe='/~')}"

    second = await get(client, path)
    assert (second.status, second.headers["X-Cache"]) == (200, "HIT-MEMORY")
    assert sha(await second.read()) == sha(body)
    cond = await get(client, path, headers={"If-None-Match": first.headers["ETag"]})
    assert cond.status == 304

    other = None
    if config.redis.configured:
        async with Redis.from_url(config.redis.url) as redis:
            stored = (await redis.get(keys_for(config).url(key))).decode()
        assert stored.startswith(f"{s3_proxy.url}/{s3.bucket}/{encode_key(key)}?")
        other = await replica()  # another replica on this Redis, with the key cached
        hit = await get(other, path)
        assert sha(await hit.read()) == sha(body)
        assert (await get(other, path)).headers["X-Cache"] == "HIT-MEMORY"

    purged = await client.delete(URL("/admin/images/" + encode_key(key), encoded=True),
                                 headers=AUTH)
    assert purged.status == 200
    assert (await purged.json())["image_id"] == key
    s3.put(key, png(1000))
    after = await get(client, path)
    assert (after.status, after.headers["X-Cache"]) == (200, "MISS")
    assert sha(await after.read()) == sha(png(1000))
    assert len(s3_gets(s3_proxy, s3.bucket, key)) == 2 + (other is not None)
    if other is not None:
        version = (await purged.json())["version"]
        async with Redis.from_url(config.redis.url) as redis:
            assert int(await redis.get(keys_for(config).version(key))) == version
        # The purge message named the key: the other replica moved it forward too.
        await until(lambda: other.app[PARTS].service.version_of(key) == version,
                    what="the purge reached the other replica")
        there = await get(other, path)
        assert there.headers["X-Cache"] != "HIT-MEMORY"
        assert sha(await there.read()) == sha(png(1000))


@pytest.fixture
def replica(gateway_client, s3_config, s3_proxy, config, tmp_path):
    """replica(): a second gateway of the same deployment, with its own disk folder."""

    async def make():
        return await gateway_client(s3_config(
            endpoint=s3_proxy.url, redis={"url": config.redis.url},
            disk={"path": str(tmp_path / "other-cache")}))

    return make


async def test_presigned_url_is_sent_byte_for_byte(client, s3, s3_proxy):
    key = "sub-delims/!$&'()*+,;=:@.png"  # what yarl would decode if it parsed the URL
    s3.put(key, png(7))
    api = await get(client, f"/images/{quote(key, safe='')}/url")  # one segment + url
    url = (await api.json())["url"]
    s3_proxy.reset()
    resp = await get(client, image_path(key))
    assert sha(await resp.read()) == sha(png(7))
    (sent,) = [r for r in s3_proxy.requests() if r.method == "GET"]
    assert url.endswith(sent.target)  # path and signed query exactly as signed


async def test_url_api_of_the_local_origin_gives_the_stable_url_of_the_key(
        gateway_client, gateway_config, origin_dir):
    (origin_dir / "user").mkdir()
    (origin_dir / "user" / "4 2.png").write_bytes(png(8))
    client = await gateway_client(gateway_config())
    data = await (await get(client, "/images/user%2F4%202.png/url")).json()
    assert data["image_id"] == "user/4 2.png" and data["expires_at"] is None
    url = URL(data["url"], encoded=True)
    assert url.raw_path == "/images/user%2F4%202.png"  # not the alias route of user '4 2.png'
    resp = await get(client, url.raw_path)
    assert sha(await resp.read()) == sha(png(8))


# -- the route table (README, HTTP API), one test a row --------------------------------


@pytest.fixture
async def routed(gateway_client, s3_config, s3_proxy, s3, redis_url):
    client = await gateway_client(s3_config(endpoint=s3_proxy.url, admin={"token": TOKEN},
                                            redis={"url": redis_url}))
    for i, key in enumerate(["a.png", "a/b.png", "user/42", "a/b/url", "user/a/b", "a/url",
                             "user", "url", "pic of 42.png", "pic of url.png"]):
        s3.put(key, png(100 + i))
    for user, key in [("42", "pic of 42.png"), ("url", "pic of url.png")]:
        resp = await client.put(f"/admin/users/{user}", json={"image_id": key}, headers=AUTH)
        assert resp.status == 200
    return client


async def served(client, path: str) -> str:
    """Which object a path served, by its bytes."""
    resp = await get(client, path)
    assert resp.status == 200, path
    body = sha(await resp.read())
    names = ["a.png", "a/b.png", "user/42", "a/b/url", "user/a/b", "a/url", "user", "url",
             "pic of 42.png", "pic of url.png"]
    return next(n for i, n in enumerate(names) if sha(png(100 + i)) == body)


async def url_api(client, path: str) -> str:
    resp = await get(client, path)
    assert resp.status == 200, path
    return (await resp.json())["image_id"]


async def test_route_two_segments_first_user_is_the_alias(routed):
    assert await served(routed, "/images/user/42") == "pic of 42.png"


async def test_route_url_api_wins_over_the_alias_as_before_object_keys(routed):
    assert await url_api(routed, "/images/user/url") == "user"


async def test_route_two_segments_second_url_is_the_url_api(routed):
    assert await url_api(routed, "/images/a.png/url") == "a.png"
    assert await url_api(routed, "/images/a%2Fb.png/url") == "a/b.png"


async def test_route_everything_else_is_the_object_key(routed):
    assert await served(routed, "/images/a/b/url") == "a/b/url"
    assert await served(routed, "/images/user/a/b") == "user/a/b"
    assert await served(routed, "/images/user") == "user"
    assert await served(routed, "/images/url") == "url"


async def test_route_escaped_slash_names_an_object_the_other_routes_would_take(routed):
    assert await served(routed, "/images/user%2F42") == "user/42"
    assert await served(routed, "/images/a%2Furl") == "a/url"
    assert await served(routed, "/images/a%2Fb.png") == "a/b.png"  # same key as a/b.png


async def test_url_api_refuses_head(routed):
    resp = await routed.head(URL("/images/a.png/url", encoded=True))
    assert resp.status == 405 and resp.headers["Allow"] == "GET"


async def test_route_labels_of_the_metrics(routed):
    for path in ["/images/user/42", "/images/a.png/url", "/images/a/b/url", "/images/a//b"]:
        await (await get(routed, path)).read()
    text = await (await routed.get("/metrics")).text()
    for route, status in [("/images/user/{user_id}", 200), ("/images/{image_id}/url", 200),
                          ("/images/{image_id}", 200), ("/images/{image_id}", 400)]:
        assert f'gateway_http_requests_total{{route="{route}",status="{status}"}} 1.0' \
            in text, route


# -- refused before any I/O --------------------------------------------------------------


async def raw_status(client, method: str, target: str, headers: dict[str, str] | None = None
                     ) -> int:
    """Send a request target exactly as written (no client library normalises it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    head = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write(f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{head}"
                 f"Content-Length: 0\r\n\r\n".encode())
    status_line = await reader.readline()
    writer.close()
    return int(status_line.split()[1])


REFUSED = ["a/../b.png", "a/./b.png", "a//b.png", "a/%2e%2e/b.png", "%2E%2E/x.png",
           "a%2F..%2Fb.png", "/a.png", "%2Fa.png", "a.png/", "a%00b", "a%0D%0Ab", "a%C2%85b",
           "a%ff.png", "a%zz.png", "a%2.png", "a#b.png", "..%5C..%5Cwin.ini", "x" * 1025,
           "..", "user/..", "user/a%2Fb", "%2e%2e/url", "a%2F%2Fb/url", "x/../user/bob"]


@pytest.mark.parametrize("tail", REFUSED)
async def test_refused_keys_cost_no_s3_request(client, s3_proxy, tail):
    for method in ("GET", "HEAD"):
        assert await raw_status(client, method, f"/images/{tail}") == 400, tail
    assert await raw_status(client, "GET", f"/images/{tail}?w=64") == 400
    assert s3_proxy.total() == 0


@pytest.mark.parametrize("tail", ["a/../b.png", "a//b.png", "a%2F..%2Fb", "%2e%2e", "a%zz"])
async def test_refused_admin_keys_touch_nothing(client, s3, s3_proxy, tail):
    for method in ("DELETE", "PUT"):
        assert await raw_status(client, method, f"/admin/images/{tail}", AUTH) == 400
    assert s3_proxy.total() == 0 and s3.keys() == []


# -- admin and variants take the same keys -------------------------------------------------


async def test_upload_stores_exactly_that_key(client, s3, s3_proxy):
    key = "uploads/日本 語/a+b=c (1).png"
    resp = await client.put(URL("/admin/images/" + encode_key(key), encoded=True),
                            data=png(11, size=(300, 300)), headers=AUTH)
    assert resp.status == 200
    assert (await resp.json())["image_id"] == key
    assert s3.keys() == [key]
    served_ = await get(client, image_path(key))
    assert (served_.status, served_.headers["X-Cache"]) == (200, "MISS")
    assert sha(await served_.read()) == sha(s3.get(key))


async def test_prefetch_takes_keys(client, s3, s3_proxy):
    keys = ["pre/one two.png", "pre/日本.png", "user/7"]
    for i, key in enumerate(keys):
        s3.put(key, png(20 + i))
    resp = await client.post("/admin/prefetch", json={"image_ids": [*keys, "pre/none.png"]},
                             headers=AUTH)
    data = await resp.json()
    assert (resp.status, data["fetched"], data["missing"]) == (200, 3, 1)
    for key in keys:
        hit = await get(client, image_path(key))
        assert hit.headers["X-Cache"] == "HIT-MEMORY"
    bad = await client.post("/admin/prefetch", json={"image_ids": ["ok.png", "a/../b"]},
                            headers=AUTH)
    assert bad.status == 400
    assert s3_proxy.gets("ok.png") == 0


async def test_variants_of_a_key_and_their_purge(client, s3, s3_proxy):
    key = "variants/ünï côdé+%.png"
    s3.put(key, png(30, size=(200, 200)))
    path = image_path(key) + "?w=64&format=png"
    first = await get(client, path)
    assert (first.status, first.headers["Content-Type"]) == (200, "image/png")
    again = await get(client, path)
    assert again.headers["X-Cache"] == "HIT-MEMORY"
    assert await again.read() == await first.read()
    purge = await client.delete(URL("/admin/images/" + encode_key(key), encoded=True),
                                headers=AUTH)
    assert purge.status == 200
    s3.put(key, png(31, size=(200, 200)))
    after = await get(client, path)
    assert after.headers["X-Cache"] == "MISS"
    assert await after.read() != await first.read()
    assert len(s3_gets(s3_proxy, s3.bucket, key)) == 2


async def test_top_images_name_the_keys(client, s3):
    key = "top/日本 \"語\".png"
    s3.put(key, png(40))
    for _ in range(3):
        await (await get(client, image_path(key))).read()
    stats = await (await client.get("/admin/stats", headers=AUTH)).json()
    assert {"image_id": key, "requests": 3} in stats["top_images"]
