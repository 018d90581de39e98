"""The HTTP side of the browser layers: CORS (and preflights that touch nothing),
presets, dpr and client hints, placeholders cached and purged like variants, and
signed links that expire. Real gateways; S3 behind the counting proxy, real Redis
where a claim is about them."""

from __future__ import annotations

import dataclasses
import io
import json
import time
from typing import Any

import blurhash as reference
import pytest
from PIL import Image
from redis.asyncio import Redis

from gateway.config import ConfigError
from gateway.web.keys import PARTS
from gateway.web.signing import UrlSigner
from tests.support.images import make_image

TOKEN = "browser-http-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
CORS = ("Access-Control-Allow-Origin", "Access-Control-Expose-Headers", "Timing-Allow-Origin")


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (120, 80)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


# --- CORS --------------------------------------------------------------------------------


async def test_image_answers_carry_cors_for_any_origin(gateway_client: Any,
                                                       gateway_config: Any) -> None:
    client = await gateway_client(gateway_config(admin={"token": TOKEN}))
    for path in ("/images/default_pfp.png", "/images/default_pfp.png?w=32",
                 "/images/missing.png", "/images/default_pfp.png/url", "/images/a%ZZ"):
        resp = await client.get(path, headers={"Origin": "https://app.example"})
        assert resp.headers["Access-Control-Allow-Origin"] == "*", path
        assert resp.headers["Access-Control-Expose-Headers"] == "ETag, X-Cache", path
        assert resp.headers["Timing-Allow-Origin"] == "*", path
        assert "Origin" not in resp.headers.get("Vary", ""), path  # the same for all
        assert "Access-Control-Allow-Credentials" not in resp.headers
    first = await client.get("/images/default_pfp.png")
    again = await client.get("/images/default_pfp.png",
                             headers={"If-None-Match": first.headers["ETag"]})
    assert again.status == 304 and again.headers["Access-Control-Allow-Origin"] == "*"
    head = await client.head("/images/default_pfp.png")
    assert head.headers["Access-Control-Allow-Origin"] == "*"
    # Admin and the rest: none.
    for path in ("/admin/stats", "/healthz", "/metrics", "/client/sw.js"):
        resp = await client.get(path, headers={"Origin": "https://app.example", **ADMIN})
        assert resp.status == 200, path
        assert not any(name in resp.headers for name in CORS), path
    resp = await client.options("/admin/stats", headers={"Origin": "https://app.example"})
    assert not any(name in resp.headers for name in CORS)


async def test_listed_origins_are_echoed_with_vary(gateway_client: Any,
                                                   gateway_config: Any) -> None:
    allowed = "https://app.example"
    client = await gateway_client(gateway_config(
        http={"cors_origins": [allowed, "http://localhost:3000"]}))
    for path in ("/images/default_pfp.png", "/images/default_pfp.png?format=auto&w=32"):
        resp = await client.get(path, headers={"Origin": allowed})
        assert resp.headers["Access-Control-Allow-Origin"] == allowed
        assert resp.headers["Timing-Allow-Origin"] == allowed
        assert "Origin" in resp.headers["Vary"]
        other = await client.get(path, headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in other.headers
        assert "Timing-Allow-Origin" not in other.headers
        assert "Origin" in other.headers["Vary"]  # a cache must keep the two apart
        assert resp.headers["ETag"] == other.headers["ETag"]
    auto = await client.get("/images/default_pfp.png?format=auto&w=32",
                            headers={"Origin": allowed, "Accept": "image/webp"})
    assert auto.headers["Vary"] == "Accept, Origin"


async def test_no_cors_when_the_list_is_empty(gateway_client: Any,
                                              gateway_config: Any) -> None:
    client = await gateway_client(gateway_config(http={"cors_origins": []}))
    resp = await client.get("/images/default_pfp.png", headers={"Origin": "https://a.example"})
    assert not any(name in resp.headers for name in CORS)
    assert "Vary" not in resp.headers


def test_star_with_origins_is_refused(gateway_config: Any) -> None:
    with pytest.raises(ConfigError, match=r"http\.cors_origins"):
        gateway_config(http={"cors_origins": ["*", "https://a.example"]})
    with pytest.raises(ConfigError, match=r"http\.cors_origins"):
        gateway_config(http={"cors_origins": ["https://a.example/path"]})


async def test_a_preflight_touches_no_cache_origin_or_redis(
        gateway_client: Any, s3_config: Any, s3: Any, s3_proxy: Any, redis_url: str,
        redis: Redis) -> None:
    s3.put("pre.png", make_image(seed=3))
    client = await gateway_client(s3_config(endpoint=s3_proxy.url, redis={"url": redis_url},
                                            signing={"keys": ["k1:0123456789abcdef"],
                                                     "required": True}))
    stats = client.app[PARTS].stats
    before = dataclasses.asdict(stats)
    commands = (await redis.info("stats"))["total_commands_processed"]
    s3_proxy.reset()
    resp = await client.options("/images/pre.png?w=64", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "if-none-match"})
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert resp.headers["Access-Control-Max-Age"] == "86400"
    assert resp.headers["Access-Control-Allow-Methods"] == "GET, HEAD"
    assert "If-None-Match" in resp.headers["Access-Control-Allow-Headers"]
    assert await resp.read() == b""
    assert s3_proxy.total() == 0
    assert dataclasses.asdict(stats) == before
    # Only our own INFO call (and the bus's keep-alive, if one fell in between).
    assert (await redis.info("stats"))["total_commands_processed"] - commands <= 2


# --- presets, dpr, client hints --------------------------------------------------------


async def test_presets_dpr_and_presets_only(gateway_client: Any, gateway_config: Any,
                                            origin_dir: Any) -> None:
    (origin_dir / "big.png").write_bytes(solid((10, 200, 10), (600, 400)))
    client = await gateway_client(gateway_config(
        presets={"avatar": "w=64&h=64&fit=cover&format=png", "wide": "w=128&format=png"},
        variants={"presets_only": True}))
    resp = await client.get("/images/big.png?preset=avatar")
    assert resp.status == 200
    assert Image.open(io.BytesIO(await resp.read())).size == (64, 64)
    resp = await client.get("/images/big.png?preset=avatar&dpr=2")
    assert Image.open(io.BytesIO(await resp.read())).size == (128, 128)
    resp = await client.get("/images/big.png?preset=wide&dpr=3")
    assert resp.status == 400  # 384 is not an allowed width
    assert "dpr=3 is 384" in (await resp.json())["error"]
    for query, said in (("w=64", "only presets"), ("preset=nope", "preset must be one of"),
                        ("preset=avatar&w=32", "cannot be combined"),
                        ("preset=avatar&dpr=4", "dpr must be one of")):
        resp = await client.get(f"/images/big.png?{query}")
        assert resp.status == 400, query
        assert said in (await resp.json())["error"], query
    # Same variant, same entry: the preset and its spelled-out query share one ETag.
    plain = await gateway_client(gateway_config())
    a = await plain.get("/images/big.png?w=128&h=128&format=png")
    b = await plain.get("/images/big.png?w=64&h=64&format=png&dpr=2")
    assert a.headers["ETag"] == b.headers["ETag"]


async def test_client_hints(gateway_client: Any, gateway_config: Any, origin_dir: Any) -> None:
    (origin_dir / "big.png").write_bytes(solid((10, 200, 10), (600, 400)))
    client = await gateway_client(gateway_config(variants={"client_hints": True}))
    resp = await client.get("/images/big.png?w=64&format=png", headers={"Sec-CH-DPR": "2"})
    assert Image.open(io.BytesIO(await resp.read())).size == (128, 85)
    assert resp.headers["Accept-CH"] == "Sec-CH-DPR, Sec-CH-Width"
    assert resp.headers["Vary"] == "Sec-CH-DPR, Sec-CH-Width"
    # 256 x 3 is not allowed, 256 x 2 is: the best density that fits, never a 400.
    resp = await client.get("/images/big.png?w=256&format=png", headers={"Sec-CH-DPR": "3"})
    assert Image.open(io.BytesIO(await resp.read())).size[0] == 512
    resp = await client.get("/images/big.png?format=png", headers={"Sec-CH-Width": "100"})
    assert Image.open(io.BytesIO(await resp.read())).size[0] == 128
    for junk in ("abc", "-1", "nan", "1e999"):
        resp = await client.get("/images/big.png?w=64&format=png", headers={"Sec-CH-DPR": junk})
        assert resp.status == 200
        assert Image.open(io.BytesIO(await resp.read())).size[0] == 64
    original = await client.get("/images/big.png", headers={"Sec-CH-DPR": "2"})
    assert "Vary" not in original.headers  # not a variant: hints change nothing
    off = await gateway_client(gateway_config())
    resp = await off.get("/images/big.png?w=64&format=png", headers={"Sec-CH-DPR": "2"})
    assert Image.open(io.BytesIO(await resp.read())).size[0] == 64
    assert "Accept-CH" not in resp.headers and "Vary" not in resp.headers


# --- placeholders ------------------------------------------------------------------------


async def test_placeholders_are_cached_and_purged_like_variants(
        gateway_client: Any, gateway_config: Any, origin_dir: Any) -> None:
    (origin_dir / "face.png").write_bytes(solid((200, 30, 30)))
    client = await gateway_client(gateway_config(admin={"token": TOKEN}))
    resp = await client.get("/images/face.png?placeholder=blurhash")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/json")
    assert resp.headers["X-Cache"] == "MISS"
    first = await resp.json()
    assert (first["width"], first["height"]) == (120, 80)
    r, g, b = reference.decode(first["blurhash"], 4, 4)[0][0][:3]
    assert r > 150 and g < 80 and b < 80  # red
    again = await client.get("/images/face.png?placeholder=blurhash")
    assert again.headers["X-Cache"] == "HIT-MEMORY"
    assert again.headers["ETag"] == resp.headers["ETag"]

    lqip = await client.get("/images/face.png?preset=avatar&placeholder=lqip")
    body = await lqip.read()
    assert lqip.headers["Content-Type"] in ("image/webp", "image/jpeg")
    assert len(body) <= 1024
    assert max(Image.open(io.BytesIO(body)).size) <= 16

    (origin_dir / "face.png").write_bytes(solid((30, 30, 200)))
    purge = await client.delete("/admin/images/face.png", headers=ADMIN)
    assert purge.status == 200
    after = await client.get("/images/face.png?placeholder=blurhash")
    assert after.headers["X-Cache"] == "MISS"
    r, g, b = reference.decode((await after.json())["blurhash"], 4, 4)[0][0][:3]
    assert b > 150 and r < 80  # blue now

    bad = await client.get("/images/face.png?placeholder=svg")
    assert bad.status == 400 and "placeholder must be one of" in (await bad.json())["error"]
    missing = await client.get("/images/nobody.png?placeholder=blurhash")
    assert missing.headers["X-Cache"] == "FALLBACK"
    assert "blurhash" in await missing.json()


async def test_a_page_of_fifty_placeholders_is_small(gateway_client: Any, gateway_config: Any,
                                                     origin_dir: Any) -> None:
    for i in range(50):
        (origin_dir / f"u{i}.png").write_bytes(make_image(seed=i, size=(96, 96)))
    client = await gateway_client(gateway_config())
    total = 0
    for i in range(50):
        resp = await client.get(f"/images/u{i}.png?preset=avatar&placeholder=blurhash")
        total += len(json.loads(await resp.read())["blurhash"])
    assert total == 50 * 36  # 4x4 components: 36 characters each, ~2 KB a page


# --- signed links that expire ------------------------------------------------------------


async def test_signed_links_expire(gateway_client: Any, gateway_config: Any) -> None:
    keys = ["k1:0123456789abcdef"]
    client = await gateway_client(gateway_config(signing={"keys": keys, "required": True}))
    signer = UrlSigner(keys)
    now = int(time.time())
    fresh = signer.sign("/images/default_pfp.png?w=32", now + 3600)
    assert "exp=" in fresh
    assert (await client.get(fresh)).status == 200
    stale = signer.sign("/images/default_pfp.png", now - 1)
    resp = await client.get(stale)
    assert resp.status == 403 and (await resp.json())["error"] == "link expired"
    # exp is covered: moving it forward breaks the signature.
    moved = stale.replace(f"exp={now - 1}", f"exp={now + 3600}")
    resp = await client.get(moved)
    assert resp.status == 403 and "signature" in (await resp.json())["error"]
    for junk in ("exp=soon", "exp=1&exp=99999999999"):
        resp = await client.get(signer.sign(f"/images/default_pfp.png?{junk}"))
        assert resp.status == 403, junk
    assert (await client.get(signer.sign("/images/default_pfp.png"))).status == 200
