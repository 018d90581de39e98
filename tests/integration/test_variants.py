"""Sized and re-encoded variants over HTTP: S3 behind a counting proxy.

In-process apps run without Redis (purges apply locally); the replica test runs
two gateway processes on one real Redis."""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import resource
import struct
import time
import zlib

import aiohttp
import pytest
from PIL import Image

from gateway.web.keys import PARTS

#: The default http.cache_control (config/gateway.toml).
IMAGE_CACHE_CONTROL = "max-age=2700, stale-while-revalidate=3600, stale-if-error=604800"

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHROME_ACCEPT = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
PIL_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP",
               "image/avif": "AVIF", "image/gif": "GIF"}


def photo(color=(200, 30, 40), size=(600, 400), fmt="PNG", seed=0, **params) -> bytes:
    """A one-colour picture with a little seeded noise (so seeds give other bytes)."""
    image = Image.new("RGB", size, color)
    rng = random.Random(seed)
    for _ in range(50):
        image.putpixel((rng.randrange(size[0]), rng.randrange(size[1])), (0, 0, 0))
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def noise_png(size) -> bytes:
    out = io.BytesIO()
    Image.frombytes("RGB", size, random.Random(1).randbytes(size[0] * size[1] * 3)).save(
        out, "PNG", compress_level=1)
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose IHDR announces width x height (CRC recomputed): a pixel bomb."""
    body = bytearray(photo(size=(1, 1)))
    body[16:24] = struct.pack(">II", width, height)
    body[29:33] = struct.pack(">I", zlib.crc32(bytes(body[12:29])))
    return bytes(body)


def decoded(body: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    image.load()
    return image


def centre(image: Image.Image) -> tuple[int, ...]:
    return image.convert("RGB").getpixel((image.width // 2, image.height // 2))


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def get(client, path, **headers):
    resp = await client.get(path, headers=headers)
    return resp, await resp.read()


@pytest.fixture
def config(s3_config, s3_proxy):
    def make(**sections):
        base = {"admin": {"token": TOKEN},
                "origin": {"connect_timeout": 1, "read_timeout": 2, "retries": 0},
                "fetch": {"refresh_ahead": 0}}
        for name, values in sections.items():
            base[name] = {**base.get(name, {}), **values}
        return s3_config(endpoint=s3_proxy.url, **base)

    return make


@pytest.fixture
async def client(gateway_client, config):
    return await gateway_client(config())


# -- sizes and formats -----------------------------------------------------------------------


SIX = [  # query, (width, height), content type
    ("w=64&h=64", (64, 64), "image/png"),
    ("w=128&format=webp", (128, 85), "image/webp"),
    ("h=96&format=jpeg&q=90", (144, 96), "image/jpeg"),
    ("w=256&h=128&fit=contain&format=avif", (192, 128), "image/avif"),
    ("w=32&h=48&fit=cover&format=png", (32, 48), "image/png"),
    ("w=512&format=webp&q=50", (512, 341), "image/webp"),
]


async def test_six_variants_from_one_origin_get(client, s3, s3_proxy):
    s3.put("a.png", photo())
    answers = await asyncio.gather(*(get(client, f"/images/a.png?{q}") for q, _, _ in SIX))
    etags = set()
    for (query, size, content_type), (resp, body) in zip(SIX, answers, strict=True):
        assert resp.status == 200, query
        assert resp.headers["Content-Type"] == content_type
        assert resp.headers["X-Cache"] == "MISS"
        assert "Vary" not in resp.headers  # the format was named: Accept changes nothing
        image = decoded(body)
        assert image.format == PIL_FORMATS[content_type], query
        assert image.size == size, query
        assert centre(image) == pytest.approx((200, 30, 40), abs=10)
        etag = resp.headers["ETag"]
        assert etag.startswith('"') and not etag.startswith("W/")
        etags.add(etag)
    original, body = await get(client, "/images/a.png")
    assert decoded(body).size == (600, 400)
    etags.add(original.headers["ETag"])
    assert len(etags) == 7  # each variant has its own validator
    assert s3_proxy.gets("a.png") == 1

    for (query, _, _), (first, first_body) in zip(SIX, answers, strict=True):
        again, again_body = await get(client, f"/images/a.png?{query}")
        assert again.headers["X-Cache"] == "HIT-MEMORY"
        assert again.headers["ETag"] == first.headers["ETag"]
        assert again_body == first_body
    assert s3_proxy.gets("a.png") == 1


async def test_concurrent_requests_for_one_variant_render_it_once(client, s3):
    s3.put("c.png", photo())
    answers = await asyncio.gather(*(get(client, "/images/c.png?w=64&format=webp")
                                     for _ in range(8)))
    assert {resp.status for resp, _ in answers} == {200}
    assert len({body for _, body in answers}) == 1
    assert {resp.headers["X-Cache"] for resp, _ in answers} <= {"MISS", "COALESCED"}
    assert client.app[PARTS].variants.stats.transforms == 1


async def test_format_auto_negotiates_from_accept(client, s3, s3_proxy):
    original = photo()
    s3.put("n.png", original)
    cases = [(CHROME_ACCEPT, "image/avif"), ("image/webp,*/*", "image/webp"),
             ("image/*,*/*;q=0.8", "image/png"), (None, "image/png")]
    for accept, content_type in cases:
        headers = {"Accept": accept} if accept else {}
        resp, body = await get(client, "/images/n.png?w=64&format=auto", **headers)
        assert resp.status == 200
        assert resp.headers["Content-Type"] == content_type, accept
        assert resp.headers["Vary"] == "Accept"
        assert decoded(body).size == (64, 43)
        assert decoded(body).format == PIL_FORMATS[content_type]
    # auto resolved to webp is the very same entry as an explicit format=webp
    auto, _ = await get(client, "/images/n.png?w=64&format=auto", Accept="image/webp")
    explicit, _ = await get(client, "/images/n.png?w=64&format=webp")
    assert auto.headers["ETag"] == explicit.headers["ETag"]
    assert explicit.headers["X-Cache"] == "HIT-MEMORY"
    # no size and no better format: the original itself, still varying on Accept
    resp, body = await get(client, "/images/n.png?format=auto", Accept="*/*")
    assert body == original and resp.headers["Vary"] == "Accept"
    assert s3_proxy.gets("n.png") == 1


async def test_conditional_and_head_requests_on_variants(client, s3):
    s3.put("e.png", photo())
    url = "/images/e.png?w=96&format=auto"
    first, body = await get(client, url, Accept="image/webp")
    etag = first.headers["ETag"]
    not_modified, empty = await get(client, url, Accept="image/webp",
                                    **{"If-None-Match": etag})
    assert not_modified.status == 304 and empty == b""
    assert not_modified.headers["ETag"] == etag
    assert not_modified.headers["Vary"] == "Accept"
    assert not_modified.headers["Cache-Control"] == IMAGE_CACHE_CONTROL
    # another representation's validator does not match
    other, _ = await get(client, url, Accept="image/avif", **{"If-None-Match": etag})
    assert other.status == 200 and other.headers["ETag"] != etag
    original, _ = await get(client, "/images/e.png")
    assert (await get(client, url, Accept="image/webp",
                      **{"If-None-Match": original.headers["ETag"]}))[0].status == 200
    head = await client.head(url, headers={"Accept": "image/webp"})
    assert head.status == 200
    assert head.headers["Content-Length"] == str(len(body))
    assert await head.read() == b""


async def test_cache_busters_and_unknown_parameters_are_the_original(client, s3, s3_proxy):
    body = photo()
    s3.put("b.png", body)
    first, first_body = await get(client, "/images/b.png?v=123")
    second, second_body = await get(client, "/images/b.png?v=456&utm=x")
    plain, _ = await get(client, "/images/b.png")
    assert first_body == second_body == body
    assert first.headers["ETag"] == second.headers["ETag"] == plain.headers["ETag"]
    assert second.headers["X-Cache"] == plain.headers["X-Cache"] == "HIT-MEMORY"
    assert "Vary" not in first.headers
    assert s3_proxy.gets("b.png") == 1


@pytest.mark.parametrize("query", [
    "w=100", "h=97", "q=55", "fit=stretch", "format=bmp", "format=svg", "w=abc", "w=",
    "w=64&w=128", "q=80&q=80",
])
async def test_disallowed_values_are_400_before_any_io(client, s3_proxy, query):
    resp, body = await get(client, f"/images/x.png?{query}")
    assert resp.status == 400
    assert resp.headers["Cache-Control"] == "no-store"
    assert b'"success": false' in body
    assert s3_proxy.total() == 0


async def test_variants_are_kept_on_disk(gateway_client, config, s3, s3_proxy):
    s3.put("d.png", photo())
    settings = config()
    first = await gateway_client(settings)
    made, body = await get(first, "/images/d.png?w=48&format=webp")
    assert made.headers["X-Cache"] == "MISS"
    # A second process (fresh memory) on the same disk cache: no origin, no render.
    second = await gateway_client(settings)
    again, again_body = await get(second, "/images/d.png?w=48&format=webp")
    assert again.headers["X-Cache"] == "HIT-DISK"
    assert again_body == body and again.headers["ETag"] == made.headers["ETag"]
    assert second.app[PARTS].variants.stats.transforms == 0
    assert s3_proxy.gets("d.png") == 1


async def test_missing_image_gives_the_fallback_as_the_variant(client):
    for _ in range(2):
        resp, body = await get(client, "/images/missing.png?w=64&h=64&format=webp")
        assert resp.status == 200
        assert resp.headers["X-Cache"] == "FALLBACK"
        assert resp.headers["Cache-Control"] == "max-age=60"
        assert decoded(body).size == (64, 64) and decoded(body).format == "WEBP"
    assert client.app[PARTS].variants.stats.transforms == 1


async def test_user_picture_variants(client, s3):
    s3.put("face.png", photo(color=(10, 200, 10)))
    resp = await client.put("/admin/users/u1", json={"image_id": "face.png"}, headers=AUTH)
    assert resp.status == 200
    resp, body = await get(client, "/images/user/u1?w=32&h=32&format=png")
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "max-age=30"
    assert decoded(body).size == (32, 32)
    assert centre(decoded(body)) == pytest.approx((10, 200, 10), abs=10)
    resp, body = await get(client, "/images/user/nobody?w=32&h=32")
    assert resp.headers["X-Cache"] == "FALLBACK" and decoded(body).size == (32, 32)
    resp, _ = await get(client, "/images/user/u1?w=33")
    assert resp.status == 400


# -- purge and upload -----------------------------------------------------------------------


async def test_purge_changes_every_variant(client, s3, s3_proxy):
    queries = ["w=64&h=64", "w=128&format=webp", "h=96&format=jpeg", "format=avif&w=32"]
    s3.put("p.png", photo(color=(200, 30, 40)))
    before = {q: (await get(client, f"/images/p.png?{q}"))[0].headers["ETag"] for q in queries}
    s3.put("p.png", photo(color=(20, 40, 220), seed=1))
    # Until the purge, the cached variants are served.
    assert (await get(client, f"/images/p.png?{queries[0]}"))[0].headers["ETag"] \
        == before[queries[0]]
    resp = await client.delete("/admin/images/p.png", headers=AUTH)
    assert resp.status == 200
    for query in queries:
        resp, body = await get(client, f"/images/p.png?{query}")
        assert resp.headers["X-Cache"] == "MISS", query
        assert resp.headers["ETag"] != before[query], query
        assert centre(decoded(body)) == pytest.approx((20, 40, 220), abs=12), query
    assert s3_proxy.gets("p.png") == 2


async def test_upload_normalises_stores_and_purges(client, s3):
    s3.put("up.jpg", photo(color=(200, 30, 40), fmt="JPEG"), content_type="image/jpeg")
    old_variant, _ = await get(client, "/images/up.jpg?w=64&format=webp")
    old_original, _ = await get(client, "/images/up.jpg")

    exif = Image.Exif()
    exif[0x010F] = "Camera Maker"
    exif.get_ifd(0x8825)[2] = (52.0, 31.0, 12.0)
    upload = photo(color=(30, 200, 40), size=(300, 200), fmt="JPEG", exif=exif.tobytes())
    resp = await client.put("/admin/images/up.jpg", data=upload,
                            headers={**AUTH, "Content-Type": "image/jpeg"})
    assert resp.status == 200, await resp.text()
    info = await resp.json()
    assert info["success"] is True
    assert (info["width"], info["height"], info["content_type"]) == (128, 128, "image/jpeg")

    stored = decoded(s3.get("up.jpg"))
    assert stored.size == (128, 128) and stored.format == "JPEG"
    assert not stored.getexif()
    assert s3.head("up.jpg")["ContentType"] == "image/jpeg"

    resp, body = await get(client, "/images/up.jpg")
    assert resp.headers["ETag"] == info["etag"] != old_original.headers["ETag"]
    assert decoded(body).size == (128, 128)
    variant, body = await get(client, "/images/up.jpg?w=64&format=webp")
    assert variant.headers["X-Cache"] == "MISS"
    assert variant.headers["ETag"] != old_variant.headers["ETag"]
    assert decoded(body).size == (64, 64)
    assert centre(decoded(body)) == pytest.approx((30, 200, 40), abs=12)


async def test_upload_refusals(client, s3):
    def put(body, headers=AUTH):
        return client.put("/admin/images/r.png", data=body, headers=headers)

    assert (await put(photo(), headers={})).status == 401
    assert (await put(b"")).status == 400
    resp = await put(b"<html>not a picture</html>")
    assert resp.status == 415
    assert (await put(b"<svg xmlns='http://www.w3.org/2000/svg'/>")).status == 415
    truncated = photo(fmt="PNG")
    assert (await put(truncated[: len(truncated) // 2])).status == 422
    resp = await put(png_claiming(50_000, 50_000))
    assert resp.status == 422
    assert "max_pixels" in (await resp.json())["error"]
    assert s3.keys() == []  # nothing was stored


async def test_upload_to_a_local_origin(gateway_client, gateway_config, origin_dir):
    client = await gateway_client(gateway_config(admin={"token": TOKEN}))
    resp = await client.put("/admin/images/local.png", data=photo(size=(40, 30)), headers=AUTH)
    assert resp.status == 200
    assert decoded((origin_dir / "local.png").read_bytes()).size == (128, 128)
    assert [p.name for p in origin_dir.iterdir() if p.name.startswith(".")] == []
    resp, body = await get(client, "/images/local.png?w=32")
    assert decoded(body).size == (32, 32)


# -- hostile originals -----------------------------------------------------------------------


async def test_pixel_bomb_original_is_served_but_never_decoded(client, s3):
    bomb = png_claiming(50_000, 50_000)
    s3.put("bomb.png", bomb)
    resp, body = await get(client, "/images/bomb.png")
    assert resp.status == 200 and body == bomb  # the bytes themselves are harmless
    before = peak_rss_mib()
    for query in ("w=64", "w=512&format=avif", "h=32&format=jpeg", "w=64&h=64&fit=contain"):
        resp, body = await get(client, f"/images/bomb.png?{query}")
        assert resp.status == 422, query
        assert resp.headers["Cache-Control"] == "no-store"
        assert b"max_pixels" in body
    assert peak_rss_mib() - before < 50  # 50000x50000 RGB would be 7 GiB


async def test_truncated_original_cannot_be_transformed(client, s3):
    whole = photo(fmt="JPEG", size=(300, 300))
    s3.put("cut.jpg", whole[: len(whole) // 2], content_type="image/jpeg")
    resp, _ = await get(client, "/images/cut.jpg")
    assert resp.status == 200
    before = peak_rss_mib()
    for _ in range(3):
        resp, body = await get(client, "/images/cut.jpg?w=64&format=webp")
        assert resp.status == 422
        assert b"corrupt, truncated" in body
    assert peak_rss_mib() - before < 50


async def test_exif_orientation_respected_and_metadata_stripped(client, s3):
    source = Image.new("RGB", (600, 400), (0, 0, 255))
    source.paste((255, 0, 0), (0, 0, 300, 400))  # left half red: the top once upright
    exif = Image.Exif()
    exif[0x0112] = 6
    exif.get_ifd(0x8825)[2] = (52.0, 31.0, 12.0)
    out = io.BytesIO()
    source.save(out, "JPEG", exif=exif.tobytes(), quality=95)
    s3.put("o.jpg", out.getvalue(), content_type="image/jpeg")
    for fmt in ("jpeg", "webp", "avif", "png"):
        _resp, body = await get(client, f"/images/o.jpg?w=64&format={fmt}")
        image = decoded(body)
        assert image.size == (64, 96), fmt
        r, _g, b = image.convert("RGB").getpixel((32, 10))
        assert r > 200 and b < 60, fmt
        assert not image.getexif(), fmt
        assert b"Exif" not in body, fmt


# -- freshness ---------------------------------------------------------------------------------


async def test_expired_variant_follows_its_original(gateway_client, config, s3, s3_proxy):
    client = await gateway_client(config(disk={"ttl": 1, "ttl_jitter": 0}))
    s3.put("t.png", photo())
    made, body = await get(client, "/images/t.png?w=64")
    stats = client.app[PARTS].variants.stats
    await asyncio.sleep(1.1)
    # Expired with its original: the original is revalidated (unchanged), the
    # variant kept without rendering it again.
    again, again_body = await get(client, "/images/t.png?w=64")
    assert again.status == 200 and again_body == body
    assert again.headers["ETag"] == made.headers["ETag"]
    assert (stats.transforms, stats.refreshed) == (1, 1)
    # Origin down after expiry: the stale variant is served.
    await asyncio.sleep(1.1)
    s3_proxy.fail_with(500)
    stale, stale_body = await get(client, "/images/t.png?w=64")
    assert stale.status == 200 and stale_body == body
    assert stale.headers["X-Cache"] == "STALE"


# -- saturation ---------------------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_saturated_pool_answers_503_at_once(gateway_client, config, s3):
    client = await gateway_client(config(transform={"workers": 1, "queue": 1}))
    s3.put("big.png", noise_png((1024, 1024)))
    assert (await get(client, "/images/big.png"))[0].status == 200  # original cached

    async def timed(query):
        started = time.monotonic()
        resp, body = await get(client, f"/images/big.png?{query}")
        return resp, body, time.monotonic() - started

    queries = [f"w=512&format=avif&q={q}" for q in (50, 60, 70, 75, 80, 85, 90)]
    answers = await asyncio.gather(*(timed(q) for q in queries))
    ok = [a for a in answers if a[0].status == 200]
    busy = [a for a in answers if a[0].status == 503]
    assert len(ok) == 2 and len(busy) == 5, [a[0].status for a in answers]
    for resp, body, _ in busy:
        assert resp.headers["Retry-After"] == "1"
        assert resp.headers["Cache-Control"] == "no-store"
        assert b"busy" in body
    # refused at once, not after waiting for the pool
    assert max(t for *_, t in busy) < min(t for *_, t in ok)
    for _resp, body, _ in ok:
        assert decoded(body).size == (512, 512)
    assert client.app[PARTS].variants.pool.pending == 0
    # once the pool has room, the refused variants are made
    resp, body = await get(client, f"/images/big.png?{queries[-1]}")
    assert resp.status == 200 and decoded(body).format == "AVIF"


# -- replicas ----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_purge_on_one_replica_drops_the_variants_of_both(spawn_gateway, s3, s3_proxy,
                                                              redis_url):
    env = {**s3.env(s3_proxy.url), "GATEWAY_REDIS_URL": redis_url,
           "GATEWAY_ADMIN_TOKEN": TOKEN, "GATEWAY_SERVER_ACCESS_LOG": "false"}
    a, b = spawn_gateway(env), spawn_gateway(env)
    s3.put("r.png", photo(color=(200, 30, 40)))
    queries = ["w=64&format=webp", "w=32&h=32&format=avif", "h=48"]
    async with aiohttp.ClientSession() as session:
        async def fetch(gw, query):
            async with session.get(f"{gw.url}/images/r.png?{query}") as resp:
                assert resp.status == 200
                return resp.headers["ETag"], await resp.read()

        before = {(gw.url, q): (await fetch(gw, q))[0] for gw in (a, b) for q in queries}
        assert before[(a.url, queries[0])] == before[(b.url, queries[0])]  # same bytes, same ETag
        s3.put("r.png", photo(color=(20, 40, 220), seed=1))
        async with session.delete(f"{a.url}/admin/images/r.png", headers=AUTH) as resp:
            assert (await resp.json())["propagated"] is True

        for gw in (a, b):
            for query in queries:
                deadline = time.monotonic() + 5
                while True:
                    etag, body = await fetch(gw, query)
                    if etag != before[(gw.url, query)]:
                        break
                    assert time.monotonic() < deadline, (gw.url, query)
                    await asyncio.sleep(0.02)
                assert centre(decoded(body)) == pytest.approx((20, 40, 220), abs=12)
