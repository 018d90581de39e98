"""The HTTP surface on the local origin: status codes, headers, conditional rules."""

from __future__ import annotations

import hashlib
import io
from email.utils import formatdate, parsedate_to_datetime

import pytest
from PIL import Image
from yarl import URL

from gateway.config_checks import ASSETS

PFP = (ASSETS / "default_pfp.png").read_bytes()
#: The default http.cache_control (config/gateway.toml).
IMAGE_CACHE_CONTROL = "max-age=2700, stale-while-revalidate=3600, stale-if-error=604800"


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def png(color=(10, 20, 30), size=(16, 16)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
async def client(gateway_client, gateway_config):
    return await gateway_client(gateway_config())


async def test_serves_bytes_with_entity_headers(client):
    resp = await client.get("/images/default_pfp.png")
    body = await resp.read()
    assert resp.status == 200
    assert sha(body) == sha(PFP)
    h = resp.headers
    assert h["Content-Type"] == "image/png"
    assert h["Content-Length"] == str(len(PFP))
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["Cache-Control"] == IMAGE_CACHE_CONTROL
    assert h["ETag"] == f'"{sha(PFP)[:32]}"'
    assert parsedate_to_datetime(h["Last-Modified"]).tzinfo is not None
    assert h["X-Cache"] == "MISS"
    assert h["Server"] == "image-gateway"  # no framework or Python version for scanners


async def test_second_request_is_a_memory_hit(client):
    await (await client.get("/images/default_pfp.png")).read()
    resp = await client.get("/images/default_pfp.png")
    assert resp.headers["X-Cache"] == "HIT-MEMORY"
    assert sha(await resp.read()) == sha(PFP)


async def test_head_has_get_headers_and_no_body(client):
    get = await client.get("/images/default_pfp.png")
    await get.read()
    head = await client.head("/images/default_pfp.png")
    assert head.status == 200
    assert await head.read() == b""
    for name in ("ETag", "Last-Modified", "Cache-Control", "Content-Type", "Content-Length",
                 "X-Content-Type-Options"):
        assert head.headers[name] == get.headers[name], name


@pytest.mark.parametrize("form", ["{etag}", "W/{etag}", '"nope", {etag}', "*"])
async def test_if_none_match_gives_304(client, form):
    etag = (await client.get("/images/default_pfp.png")).headers["ETag"]
    resp = await client.get("/images/default_pfp.png",
                            headers={"If-None-Match": form.format(etag=etag)})
    assert resp.status == 304
    assert await resp.read() == b""
    assert resp.headers["ETag"] == etag
    assert resp.headers["Cache-Control"] == IMAGE_CACHE_CONTROL
    assert "Last-Modified" in resp.headers


@pytest.mark.parametrize("header", ['"other"', "garbage", 'W/"x", "y"', '""'])
async def test_if_none_match_without_true_match_gives_200(client, header):
    resp = await client.get("/images/default_pfp.png", headers={"If-None-Match": header})
    assert resp.status == 200
    assert sha(await resp.read()) == sha(PFP)


async def test_if_none_match_wins_over_if_modified_since(client):
    future = formatdate(4_000_000_000, usegmt=True)
    resp = await client.get("/images/default_pfp.png",
                            headers={"If-None-Match": '"other"', "If-Modified-Since": future})
    assert resp.status == 200


async def test_if_modified_since(client):
    first = await client.get("/images/default_pfp.png")
    lm = first.headers["Last-Modified"]
    assert (await client.get("/images/default_pfp.png",
                             headers={"If-Modified-Since": lm})).status == 304
    old = formatdate(0, usegmt=True)
    assert (await client.get("/images/default_pfp.png",
                             headers={"If-Modified-Since": old})).status == 200
    assert (await client.get("/images/default_pfp.png",
                             headers={"If-Modified-Since": "not a date"})).status == 200


async def test_head_304(client):
    etag = (await client.get("/images/default_pfp.png")).headers["ETag"]
    resp = await client.head("/images/default_pfp.png", headers={"If-None-Match": etag})
    assert resp.status == 304


@pytest.mark.parametrize("path", [
    "/images/a/.%2e", "/images/..%2f..%2fetc%2fpasswd", "/images/%2e%2e", "/images/a/%2E/b",
    "/images/a%00b", "/images/a%5c..%5cb", "/images/" + "x" * 1025, "/images/a//b",
    "/images/a/", "/images/%2Fa", "/images/%C3%28", "/images/a%",
])
async def test_bad_keys_are_400_json(client, path, origin_dir):
    resp = await client.get(URL(path, encoded=True))  # sent as written, not normalised
    assert resp.status == 400, path
    assert resp.headers["Content-Type"].startswith("application/json")
    assert (await resp.json())["success"] is False
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Server"] == "image-gateway"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_other_methods_are_405_with_allow(client, method):
    resp = await client.request(method, "/images/default_pfp.png")
    assert resp.status == 405
    # OPTIONS: the CORS preflight (web/cors.py)
    assert set(resp.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "OPTIONS"}


async def test_missing_image_serves_fallback(client):
    resp = await client.get("/images/nobody.png")
    assert resp.status == 200
    assert resp.headers["X-Cache"] == "FALLBACK"
    assert resp.headers["Cache-Control"] == "max-age=60"
    assert sha(await resp.read()) == sha(PFP)


async def test_no_fallback_configured_gives_404(gateway_client, gateway_config):
    client = await gateway_client(gateway_config(fallback={"image": ""}))
    resp = await client.get("/images/nobody.png")
    assert resp.status == 404
    assert (await resp.json())["success"] is False


async def test_non_image_object_is_502_and_not_cached(gateway_client, gateway_config,
                                                     origin_dir):
    # The refusal itself is remembered for cache.negative_ttl (test_negative_cache.py):
    # off here, so the fixed file is read at once.
    client = await gateway_client(gateway_config(cache={"negative_ttl": 0}))
    (origin_dir / "page.png").write_bytes(b"<html><script>alert(1)</script></html>")
    for _ in range(2):
        resp = await client.get("/images/page.png")
        assert resp.status == 502
        assert resp.headers["X-Cache"] == "ERROR"
        assert "script" not in await resp.text()
    (origin_dir / "page.png").write_bytes(png())
    resp = await client.get("/images/page.png")
    assert resp.status == 200
    assert resp.headers["X-Cache"] == "MISS"


async def test_svg_refused_by_default(client, origin_dir):
    (origin_dir / "x.svg").write_bytes(b'<svg xmlns="http://www.w3.org/2000/svg"/>')
    assert (await client.get("/images/x.svg")).status == 502


async def test_svg_allowed_gets_restrictive_csp(gateway_client, gateway_config, origin_dir):
    (origin_dir / "x.svg").write_bytes(b'<svg xmlns="http://www.w3.org/2000/svg"/>')
    client = await gateway_client(gateway_config(origin={"allow_svg": True}))
    resp = await client.get("/images/x.svg")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "image/svg+xml"
    assert "default-src 'none'" in resp.headers["Content-Security-Policy"]


async def test_same_bytes_same_etag_across_instances(gateway_client, gateway_config,
                                                     origin_dir, tmp_path):
    (origin_dir / "a.png").write_bytes(png((1, 2, 3)))
    one = await gateway_client(gateway_config())
    two = await gateway_client(gateway_config(disk={"path": str(tmp_path / "other")}))
    e1 = (await one.get("/images/a.png")).headers["ETag"]
    e2 = (await two.get("/images/a.png")).headers["ETag"]
    assert e1 == e2


async def test_url_endpoint_on_local_origin(client):
    resp = await client.get("/images/default_pfp.png/url")
    data = await resp.json()
    assert resp.status == 200
    assert data["success"] is True
    assert data["url"].endswith("/images/default_pfp.png")
    missing = await client.get("/images/nobody.png/url")
    assert missing.status == 404
    assert (await missing.json())["success"] is False


async def test_health_endpoints(client):
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200
    data = await ready.json()
    assert data["status"] == "ok"
    assert data["checks"] == {"origin": "ok", "disk": "ok"}


async def test_livez_is_liveness_even_while_draining(client):
    """/livez (Kubernetes' name) answers like /healthz: the process is alive, whatever
    its dependencies or draining say; /readyz is the one that fails while draining."""
    live = await client.get("/livez")
    assert (live.status, await live.json()) == (200, {"status": "ok"})
    assert live.headers["Cache-Control"] == "no-store"
    await client.app.shutdown()  # on_shutdown: draining
    assert (await client.get("/readyz")).status == 503
    assert (await client.get("/livez")).status == 200
    assert (await client.get("/healthz")).status == 200


async def test_unknown_route_is_json_404(client):
    resp = await client.get("/nope")
    assert resp.status == 404


async def test_memory_budget_is_shared_out_among_workers(gateway_client, gateway_config,
                                                        redis_url):
    from gateway.web.keys import PARTS

    client = await gateway_client(gateway_config(server={"workers": 4},
                                                 redis={"url": redis_url},
                                                 cluster={"secret": "s" * 32},
                                                 memory={"max_bytes": 4000}))
    assert client.app[PARTS].service.cache.memory.max_bytes == 1000


async def test_disk_budget_is_shared_out_among_workers(gateway_client, gateway_config,
                                                      redis_url):
    from gateway.web.keys import PARTS

    client = await gateway_client(gateway_config(server={"workers": 2},
                                                 redis={"url": redis_url},
                                                 cluster={"secret": "s" * 32},
                                                 disk={"max_bytes": 8000}))
    assert client.app[PARTS].service.cache.disk.max_bytes == 4000
