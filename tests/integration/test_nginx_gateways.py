"""The shipped deploy/nginx.conf, rendered onto free ports, in front of two real
gateway processes (S3 origin on moto, no Redis: each replica has its own caches)."""

from __future__ import annotations

import hashlib
import io
import random

import aiohttp
import pytest
from PIL import Image
from yarl import URL

from tests.support import free_port
from tests.support.nginx import SHIPPED_CONF, NginxServer, render_nginx_conf

#: The default http.cache_control (config/gateway.toml).
IMAGE_CACHE_CONTROL = "max-age=2700, stale-while-revalidate=3600, stale-if-error=604800"

TOKEN = "nginx-test-admin-token-0123"


def png(seed: int) -> bytes:
    pixels = random.Random(seed).randbytes(32 * 32 * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (32, 32), pixels).save(out, "PNG")
    return out.getvalue()


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


@pytest.fixture
def edge(spawn_gateway, s3, s3_proxy, tmp_path):
    """nginx (no micro-cache, so every request reaches a gateway) over two gateways."""

    def start(*, internal_admin: bool = True):
        env = {**s3.env(s3_proxy.url), "GATEWAY_ADMIN_TOKEN": TOKEN,
               "GATEWAY_SERVER_ACCESS_LOG": "false"}
        gateways = [spawn_gateway(env), spawn_gateway(env)]
        conf = render_nginx_conf(SHIPPED_CONF.read_text(), listen_port=free_port(),
                                 upstreams=[f"127.0.0.1:{g.port}" for g in gateways],
                                 tmp_dir=tmp_path, micro_cache=False)
        if not internal_admin:
            # Make this test's own address (127.0.0.1) an outside one for /admin/.
            conf = conf.replace("allow 127.0.0.1;", "")
        nginx = NginxServer(conf, tmp_path).start()
        return nginx, gateways

    started: list[NginxServer] = []
    yield lambda **kw: (lambda r: (started.append(r[0]), r)[1])(start(**kw))
    for nginx in started:
        nginx.stop()


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.mark.timeout(60)
async def test_rules_survive_nginx(edge, s3, session):
    nginx, _ = edge()
    body = png(1)
    s3.put("n.png", body)
    url = f"{nginx.url}/images/n.png"
    async with session.get(url) as first:
        assert first.status == 200
        assert sha(await first.read()) == sha(body)
        etag, cc = first.headers["ETag"], first.headers["Cache-Control"]
        assert first.headers["X-Cache"] == "MISS"
        assert first.headers["Content-Type"] == "image/png"
        assert first.headers["X-Content-Type-Options"] == "nosniff"
    assert cc == IMAGE_CACHE_CONTROL
    async with session.get(url, headers={"If-None-Match": etag}) as cond:
        assert cond.status == 304
        assert cond.headers["ETag"] == etag
        assert cond.headers["Cache-Control"] == cc
        assert await cond.read() == b""
    async with session.head(url) as head:
        assert head.status == 200
        assert head.headers["ETag"] == etag
        assert head.headers["Content-Length"] == str(len(body))
        assert await head.read() == b""


@pytest.mark.timeout(60)
async def test_each_image_is_routed_to_one_replica(edge, s3, s3_proxy, session):
    nginx, _ = edge()
    names = [f"route{i}.png" for i in range(8)]
    for i, name in enumerate(names):
        s3.put(name, png(10 + i))
    for name in names:
        layers = []
        for query in ["", "?v=1", "?v=2", "", "?cb=x", ""]:
            async with session.get(f"{nginx.url}/images/{name}{query}") as resp:
                assert resp.status == 200
                layers.append(resp.headers["X-Cache"])
        # One replica fetched it once; every later request (query or not) hit its cache.
        assert layers[0] == "MISS" and set(layers[1:]) == {"HIT-MEMORY"}, (name, layers)
        assert s3_proxy.gets(name) == 1


@pytest.mark.timeout(60)
async def test_object_keys_through_nginx(edge, s3, s3_proxy, session):
    # nginx passes the request target on as the client sent it (proxy_pass without a
    # URI): nested and odd keys arrive intact, and traversal is refused by a gateway
    # whether or not nginx would have normalised it.
    nginx, _ = edge()
    keys = {"a/b.png": "/images/a/b.png", ".env": "/images/.env",
            "sp ace+/日本.png": "/images/sp%20ace%2B/%E6%97%A5%E6%9C%AC.png",
            "user/42": "/images/user%2F42", "100%/x.png": "/images/100%25/x.png"}
    for i, (key, path) in enumerate(keys.items()):
        s3.put(key, png(30 + i))
        async with session.get(URL(f"{nginx.url}{path}", encoded=True)) as resp:
            assert resp.status == 200, path
            assert resp.headers["X-Cache"] == "MISS", path
            assert sha(await resp.read()) == sha(png(30 + i)), path
        assert s3_proxy.count("GET", f"/{s3.bucket}/{key}") == 1, key
    s3_proxy.reset()
    for raw in ["/images/a/../b.png", "/images/..%2f..%2fetc%2fpasswd", "/images/%2e%2e/x",
                "/images/a%00b", "/images/a//b.png", "/images/a/./b.png"]:
        async with session.get(URL(f"{nginx.url}{raw}", encoded=True)) as resp:
            assert resp.status in (400, 404), raw
    assert s3_proxy.total() == 0


@pytest.mark.timeout(60)
async def test_admin_from_outside_is_refused(edge, s3, session):
    nginx, gateways = edge(internal_admin=False)
    s3.put("adm.png", png(3))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with session.delete(f"{nginx.url}/admin/images/adm.png", headers=headers) as r:
        assert r.status == 403  # nginx refused it: it never reached a gateway
    async with session.get(f"{nginx.url}/metrics") as r:
        assert r.status == 403
    async with session.delete(f"{gateways[0].url}/admin/images/adm.png",
                              headers=headers) as r:
        assert r.status == 200  # the same call inside the network works


@pytest.mark.timeout(60)
async def test_admin_from_inside_passes_through(edge, s3, session):
    nginx, _ = edge()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with session.delete(f"{nginx.url}/admin/images/x.png", headers=headers) as r:
        assert r.status == 200
    async with session.delete(f"{nginx.url}/admin/images/x.png") as r:
        assert r.status == 401


@pytest.mark.timeout(60)
async def test_the_service_worker_and_cors_through_nginx(edge, s3, session):
    """An app on nginx's origin registers /client/sw.js; another origin reads pictures."""
    nginx, _ = edge()
    s3.put("c.png", png(3))
    async with session.get(f"{nginx.url}/client/sw.js") as resp:
        assert resp.status == 200
        assert resp.headers["Service-Worker-Allowed"] == "/"
        assert resp.headers["Content-Type"].startswith("text/javascript")
        assert "self.IMAGE_GATEWAY" in await resp.text()
    async with session.get(f"{nginx.url}/client/fallback") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "image/png"
    async with session.get(f"{nginx.url}/images/c.png",
                           headers={"Origin": "https://app.example"}) as resp:
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert resp.headers["Timing-Allow-Origin"] == "*"
    async with session.options(f"{nginx.url}/images/c.png", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "GET"}) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Max-Age"] == "86400"
