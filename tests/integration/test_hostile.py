"""Issue 12, part 5: hostile input and faults, each through the real HTTP stack.

Every case here answered a 500, a traceback or the wrong thing before issue 12.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import socket

import pytest
from aiohttp import web
from yarl import URL

from gateway.config_checks import ASSETS
from tests.support.fakes import until
from tests.support.images import noise_png

PFP = (ASSETS / "default_pfp.png").read_bytes()


def assert_error_headers(resp) -> None:
    """The rules of every error answer (README, HTTP rules)."""
    h = resp.headers
    assert h["Content-Type"].startswith("application/json")
    assert h["Cache-Control"] == "no-store"
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["Server"] == "image-gateway"


@pytest.fixture
async def client(gateway_client, gateway_config):
    return await gateway_client(gateway_config())


# -- conditional requests ---------------------------------------------------------------

@pytest.mark.parametrize("date", [
    "Sun, 06 Nov 99999999999 08:49:37 GMT",  # past what a datetime holds: OverflowError
    "Sun, 06 Nov 1994 99:49:37 GMT",
    "Sun, 06 Nov 1994 08:49:37 +9999",
])
async def test_out_of_range_if_modified_since_is_ignored(client, date):
    resp = await client.get("/images/default_pfp.png", headers={"If-Modified-Since": date})
    assert resp.status == 200
    assert await resp.read() == PFP


# -- admin bodies -------------------------------------------------------------------------

TOKEN = "a-token-long-enough-for-the-check"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NESTED = "[" * 100_000 + "]" * 100_000  # past the JSON decoder's recursion limit


@pytest.fixture
async def admin(gateway_client, gateway_config):
    return await gateway_client(gateway_config(admin={"token": TOKEN}))


@pytest.mark.parametrize(("method", "path"), [
    ("PUT", "/admin/users/u1"), ("POST", "/admin/prefetch"),
])
@pytest.mark.parametrize("body", [NESTED, '{"image_ids": ' + NESTED + "}"])
async def test_deeply_nested_json_is_400(admin, method, path, body):
    resp = await admin.request(method, path, data=body,
                               headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status == 400
    assert (await resp.json()) == {"success": False, "error": "body must be JSON",
                                   "request_id": resp.headers["X-Request-Id"]}


# -- variant parameters -------------------------------------------------------------------

@pytest.mark.parametrize(("query", "message"), [
    ("w=33", "w must be one of 32, 48, 64, 96, 128, 256, 512 (transform.widths)"),
    ("h=1e3", "h must be one of 32, 48, 64, 96, 128, 256, 512 (transform.heights)"),
    ("w=64&q=81", "q must be one of 50, 60, 70, 75, 80, 85, 90 (transform.qualities)"),
    ("w=64&w=64", "w given more than once"),
    ("w=64&h=64&fit=fill", "fit must be one of cover, contain"),
    ("format=bmp", "format must be one of auto, original, "),
])
async def test_variant_400_carries_the_documented_message(client, query, message):
    resp = await client.get(f"/images/default_pfp.png?{query}")
    assert resp.status == 400
    body = await resp.json()
    assert body["success"] is False
    assert body["error"].startswith(message)


# -- uploads ------------------------------------------------------------------------------

async def test_upload_up_to_the_documented_limit_is_accepted(admin, origin_dir):
    body = noise_png(1, size=(700, 700))  # ~1.4 MB: over aiohttp's default 1 MiB
    assert 1024 * 1024 < len(body) < 16 * 1024 * 1024
    resp = await admin.put("/admin/images/big.png", data=io.BytesIO(body), headers=AUTH)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["width"] == 128
    assert (origin_dir / "big.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_upload_over_the_limit_is_413_json(admin, origin_dir):
    resp = await admin.put("/admin/images/huge.png",
                           data=io.BytesIO(b"\0" * (16 * 1024 * 1024 + 1)), headers=AUTH)
    assert resp.status == 413
    assert (await resp.json()) == {"success": False, "error": "request body too large",
                                   "request_id": resp.headers["X-Request-Id"]}
    assert_error_headers(resp)
    assert not (origin_dir / "huge.png").exists()


# -- aiohttp's own answers -----------------------------------------------------------------

class RawAnswer:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = dict(line.split(": ", 1) for line in lines[1:])

    def json(self) -> dict:
        return json.loads(self.body)


def exchange(port: int, request: bytes) -> RawAnswer:
    """Send raw bytes on a new connection; what comes back until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return RawAnswer(b"".join(chunks))


MALFORMED = {
    "request line": (b"GET /images/a.png HTTP/1.1 <script>x</script>\r\nHost: x\r\n\r\n",
                     "malformed request line"),
    "control character": (b"GET /images/a.png HTTP/1.1\r\nHost: x\r\n"
                          b"X-Probe: <script>\x01</script>\r\n\r\n", "malformed request"),
    "over-long header": (b"GET /images/a.png HTTP/1.1\r\nHost: x\r\nX-Probe: <script>"
                         + b"a" * 9000 + b"\r\n\r\n", "request line or header too long"),
}


@pytest.mark.timeout(60)
async def test_protocol_errors_follow_the_error_rules(spawn_gateway):
    """Refused by aiohttp's parser, before any handler or edge: still the gateway's JSON answer
    that quotes nothing back, counted, and logged as one WARNING line, no traceback."""
    gateway = await asyncio.to_thread(spawn_gateway, {"GATEWAY_ADMIN_TOKEN": TOKEN})
    for what, (request, message) in MALFORMED.items():
        for _ in range(3):
            answer = await asyncio.to_thread(exchange, gateway.port, request)
            assert answer.status == 400, what
            assert answer.json() == {"success": False, "error": message,
                                     "request_id": answer.headers["X-Request-Id"]}, what
            assert b"script" not in answer.body
            assert_error_headers(answer)
            assert answer.headers["X-Cache"] == "ERROR"
    # A body over the limit is aiohttp's 413, raised inside the app.
    upload = (b"PUT /admin/images/x.png HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
              + TOKEN.encode() + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n")
    size = 16 * 1024 * 1024 + 1
    answer = await asyncio.to_thread(exchange, gateway.port, upload % size + b"\0" * size)
    assert answer.status == 413
    assert answer.json() == {"success": False, "error": "request body too large",
                             "request_id": answer.headers["X-Request-Id"]}
    assert_error_headers(answer)

    metrics = await asyncio.to_thread(exchange, gateway.port,
                                      b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
                                      b"Connection: close\r\n\r\n")
    assert b"gateway_malformed_requests_total 9.0" in metrics.body
    log = gateway.stderr_text()
    assert "Traceback" not in log
    assert "script" not in log
    warnings = [line for line in log.splitlines() if " WARNING " in line or " ERROR " in line]
    assert len(warnings) == 1, warnings
    assert re.search(r"refused a malformed request from 127\.0\.0\.1 \(\w+\)$", warnings[0])


PUBLIC_GETS = {  # route -> the requests that reach it
    "/images/{image_id}": ["/images/default_pfp.png", "/images/default_pfp.png?w=32",
                           "/images/default_pfp.png/url", "/images/user/u1",
                           "/images/missing.png", "/images/..%2f"],
    "/healthz": ["/healthz"], "/livez": ["/livez"], "/readyz": ["/readyz"],
    "/metrics": ["/metrics"], "/openapi.json": ["/openapi.json"],
    "/client/sw.js": ["/client/sw.js"], "/client/image-cache.js": ["/client/image-cache.js"],
    "/client/fallback": ["/client/fallback"],
}


async def test_every_route_names_the_gateway_and_forbids_sniffing(admin):
    routes = {r.resource.canonical for r in admin.app.router.routes()
              if r.method == "GET" and r.resource is not None
              and not r.resource.canonical.startswith("/admin")}
    assert routes == set(PUBLIC_GETS)  # a new route needs its requests here
    paths = [p for ps in PUBLIC_GETS.values() for p in ps] + [
        "/nowhere", "/admin/stats", "/admin/dashboard", "/admin/nowhere"]
    for path in paths:
        resp = await admin.get(URL(path, encoded=True), headers=AUTH)
        await resp.read()
        assert resp.headers["Server"] == "image-gateway", path
        assert resp.headers["X-Content-Type-Options"] == "nosniff", path
        assert resp.headers["X-Request-Id"], path  # every answer: web/requestid.py


# -- admin answers ------------------------------------------------------------------------

ADMIN_CALLS = {
    ("DELETE", "/admin/images/{image_id}"): ("/admin/images/default_pfp.png", None),
    ("PUT", "/admin/images/{image_id}"): ("/admin/images/up.png", noise_png(3)),
    ("PUT", "/admin/users/{user_id}"): ("/admin/users/u1", {"image_id": "default_pfp.png"}),
    ("DELETE", "/admin/users/{user_id}"): ("/admin/users/u1", None),
    ("POST", "/admin/prefetch"): ("/admin/prefetch", {"image_ids": ["default_pfp.png"]}),
    ("GET", "/admin/stats"): ("/admin/stats", None),
    ("POST", "/admin/stats/reset"): ("/admin/stats/reset", None),
    ("POST", "/admin/cache/clear"): ("/admin/cache/clear", None),
    ("GET", "/admin/dashboard"): ("/admin/dashboard", None),
}


def _admin_routes(app: web.Application) -> set[tuple[str, str]]:
    found = set()
    for resource in app.router.resources():
        if isinstance(resource, web.PrefixedSubAppResource):
            sub = resource.get_info()["app"]
            # HEAD goes with GET; "*" is the catch-all that answers 404/405 (web/edge.py)
            found |= {(r.method, r.resource.canonical) for r in sub.router.routes()
                      if r.method not in ("HEAD", "*") and r.resource is not None}
    return found


async def test_every_admin_answer_is_no_store(admin):
    assert _admin_routes(admin.app) == set(ADMIN_CALLS)  # a new route needs a case here
    for (method, _), (path, body) in ADMIN_CALLS.items():
        kwargs = {"json": body} if isinstance(body, dict) else {"data": body}
        resp = await admin.request(method, path, headers=AUTH, **kwargs)
        await resp.read()
        assert resp.status == 200, (method, path, resp.status)
        assert resp.headers["Cache-Control"] == "no-store", (method, path)


# -- GET /images/{id}/url ---------------------------------------------------------------------

@pytest.fixture
async def s3_client(gateway_client, s3_config, s3_proxy):
    return await gateway_client(s3_config(endpoint=s3_proxy.url,
                                          origin={"max_bytes": 50_000}))


def _object_gets(proxy, key: str) -> list[str | None]:
    """The Range header of each GET of ``key`` the origin saw (None: the whole object)."""
    return [seen.header("Range") for seen in proxy.requests()
            if seen.method == "GET" and seen.path.endswith(f"/{key}")]


@pytest.mark.parametrize(("key", "body", "label"), [
    ("page.png", b"<!doctype html><script>alert(1)</script>", "image/png"),  # magic says HTML
    ("doc.png", noise_png(1), "text/html"),  # the label says HTML
    ("big.png", noise_png(2, size=(200, 200)), "image/png"),  # ~120 KB > origin.max_bytes
])
async def test_url_refuses_what_the_image_route_refuses(s3_client, s3, s3_proxy, key, body,
                                                        label):
    s3.put(key, body, content_type=label)
    url = await s3_client.get(f"/images/{key}/url")
    assert url.status == 502
    assert (await url.json())["success"] is False
    assert "url" not in await url.json()
    assert _object_gets(s3_proxy, key) == ["bytes=0-1023"]  # the first bytes, not all
    image = await s3_client.get(f"/images/{key}")
    assert image.status == 502


async def test_url_of_a_picture_costs_one_ranged_get(s3_client, s3, s3_proxy):
    s3.put("ok.png", noise_png(3))
    resp = await s3_client.get("/images/ok.png/url")
    assert resp.status == 200
    assert _object_gets(s3_proxy, "ok.png") == ["bytes=0-1023"]
    assert (await s3_client.get("/images/ok.png")).status == 200  # now fresh in memory
    assert (await s3_client.get("/images/ok.png/url")).status == 200
    assert _object_gets(s3_proxy, "ok.png") == ["bytes=0-1023", None]  # no second probe


async def test_url_of_a_missing_object_is_404(s3_client, s3_proxy):
    resp = await s3_client.get("/images/nobody.png/url")
    assert resp.status == 404
    assert (await resp.json()) == {"success": False, "error": "image not found",
                                   "request_id": resp.headers["X-Request-Id"]}


async def test_url_on_the_local_origin_refuses_non_images(client, origin_dir):
    (origin_dir / "page.png").write_bytes(b"<html>not a picture</html>")
    assert (await client.get("/images/page.png/url")).status == 502
    assert (await client.get("/images/page.png")).status == 502


# -- Cache-Control of stale answers ---------------------------------------------------------

async def test_stale_answers_carry_the_short_max_age(gateway_client, s3_config, s3, s3_proxy):
    client = await gateway_client(s3_config(
        endpoint=s3_proxy.url, disk={"ttl": 1, "ttl_jitter": 0}, fetch={"refresh_ahead": 0},
        origin={"retries": 0, "retry_backoff": 0.01, "read_timeout": 0.5}))
    s3.put("st.png", noise_png(7))
    fresh = await client.get("/images/st.png")
    variant = await client.get("/images/st.png?w=32&h=32&format=png")
    assert (fresh.status, variant.status) == (200, 200)
    assert fresh.headers["Cache-Control"].startswith("max-age=2700, ")
    await asyncio.sleep(1.1)  # both expire (disk.ttl = 1 s)
    s3_proxy.fail_with(500)
    for path in ("/images/st.png", "/images/st.png?w=32&h=32&format=png"):
        stale = await client.get(path)
        assert (stale.status, stale.headers["X-Cache"]) == (200, "STALE"), path
        assert stale.headers["Cache-Control"] == "max-age=30", path
        revalidated = await client.get(path, headers={"If-None-Match": stale.headers["ETag"]})
        assert (revalidated.status, revalidated.headers["X-Cache"]) == (304, "STALE"), path
        assert revalidated.headers["Cache-Control"] == "max-age=30", path


# -- a Redis outage in the log ---------------------------------------------------------------

@pytest.mark.timeout(60)
async def test_redis_outage_logs_one_warning_and_one_info(gateway_client, gateway_config,
                                                          redis_url, redis_server, caplog):
    from gateway.web.keys import PARTS

    client = await gateway_client(gateway_config(redis={"url": redis_url},
                                                 cluster={"secret": "s" * 32}))
    parts = client.app[PARTS]
    bus = parts.invalidator.bus
    await until(bus.subscribed.is_set, what="first subscription")
    caplog.set_level(logging.INFO, logger="gateway")
    caplog.clear()
    redis_server.stop()
    try:
        # The listener retries every 0.5 s; requests keep coming in meanwhile.
        async def many_failures() -> bool:
            assert (await client.get("/images/default_pfp.png")).status == 200
            return parts.redis_health.failures >= 8

        await until(many_failures, timeout=30, interval=0.1, what="8 failed Redis calls")
    finally:
        redis_server.start()
    await until(bus.subscribed.is_set, timeout=30, what="resubscribed")
    lines = [(r.levelname, r.name, r.getMessage()) for r in caplog.records
             if r.levelno >= logging.INFO]
    assert [line for line in lines if line[0] != "INFO"] == [
        ("WARNING", "gateway.cluster.redis",
         "redis unavailable (ConnectionError); serving without it")], lines
    back = [line for line in lines if "reachable again" in line[2]]
    assert len(back) == 1, lines
    assert not [line for line in lines if "subscri" in line[2]], lines


async def test_no_admin_route_fails_on_a_deeply_nested_body(admin):
    """Routes that read JSON answer 400 (above); the others do not read it: never a 500."""
    for (method, _), (path, _) in ADMIN_CALLS.items():
        resp = await admin.request(method, path, data=NESTED,
                                   headers={**AUTH, "Content-Type": "application/json"})
        await resp.read()
        assert resp.status < 500, (method, path, resp.status)
