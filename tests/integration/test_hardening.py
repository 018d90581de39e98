"""Hostile input, failing dependencies and limits, through the real HTTP stack."""

from __future__ import annotations

import asyncio
import random
import socket
import time

import aiohttp
import pytest
from yarl import URL

from gateway.web.keys import PARTS
from gateway.web.signing import UrlSigner
from tests.support.images import noise_png as png, sha

FAST = {"connect_timeout": 0.5, "read_timeout": 0.5, "retry_backoff": 0.01}


@pytest.fixture
async def client(gateway_client, s3_config, s3_proxy):
    return await gateway_client(s3_config(endpoint=s3_proxy.url, origin=FAST))


# -- bad input ------------------------------------------------------------------------

async def test_junk_query_strings_share_one_cache_entry(client, s3, s3_proxy):
    s3.put("q.png", png(1))
    variants = ["", "?v=1", "?v=2&x=y", "?%00=%ff", "?" + "a" * 2000, "?cb=" + "9" * 50]
    for query in variants:
        resp = await client.get(URL(f"/images/q.png{query}", encoded=True))
        assert resp.status == 200, query
        assert sha(await resp.read()) == sha(png(1))
    service = client.app[PARTS].service
    assert len(service.cache.memory) == 1
    assert service.cache.disk.entry_count == 1
    assert s3_proxy.gets("q.png") == 1


async def test_overlong_and_control_character_keys(client, s3_proxy):
    for path in ["/images/" + "a" * 1025, "/images/" + "%C3%A9" * 513, "/images/a%0Ab",
                 "/images/a%09b", "/images/%7F", "/images/a%C2%85b", "/images/a%2F..%2Fb",
                 "/images/..%5C..%5Cwin.ini", "/images/a%ff", "/images/a%zz"]:
        resp = await client.get(URL(path, encoded=True))
        assert resp.status == 400, path
    assert s3_proxy.total() == 0


async def test_empty_id_is_not_an_image(client, s3_proxy):
    assert (await client.get("/images/")).status == 404
    assert s3_proxy.total() == 0


async def test_huge_headers_refused_before_any_io(client, s3_proxy):
    resp = await client.get("/images/x.png", headers={"X-Big": "a" * 20000})
    assert resp.status in (400, 431)
    assert s3_proxy.total() == 0


async def test_range_requests_are_ignored_with_full_200(client, s3):
    s3.put("r.png", png(2))
    for header in ["bytes=0-10", "bytes=-5", "bytes=99999-", "bytes=5-2", "junk"]:
        resp = await client.get("/images/r.png", headers={"Range": header})
        assert resp.status == 200, header
        assert "Content-Range" not in resp.headers
        assert sha(await resp.read()) == sha(png(2))


async def test_unkeyed_headers_do_not_change_what_others_get(client, s3):
    s3.put("u.png", png(3))
    hostile = {"X-Forwarded-Host": "evil.example", "Cookie": "session=abc",
               "Authorization": "Bearer x", "Accept": "text/html",
               "X-Forwarded-Proto": "gopher", "Host": "evil.example"}
    first = await client.get("/images/u.png", headers=hostile)
    assert first.status == 200
    plain = await client.get("/images/u.png")
    assert sha(await plain.read()) == sha(png(3))
    assert plain.headers["Content-Type"] == "image/png"
    for name in ("Set-Cookie", "Vary", "Location"):
        assert name not in plain.headers
        assert name not in first.headers
    assert "evil" not in str(dict(plain.headers))


# -- failing origin ---------------------------------------------------------------------

async def test_503_slowdown_retried_then_served(client, s3, s3_proxy):
    s3.put("sd.png", png(4))
    s3_proxy.fail_with(503, body=b"<Error><Code>SlowDown</Code></Error>", times=2)
    resp = await client.get("/images/sd.png")
    assert resp.status == 200
    assert s3_proxy.gets("sd.png") == 3


async def test_retries_bounded_then_502(client, s3, s3_proxy):
    s3.put("fail.png", png(5))
    s3_proxy.fail_with(500)
    resp = await client.get("/images/fail.png")
    assert resp.status == 502
    assert s3_proxy.gets("fail.png") == 3  # 1 + origin.retries


async def test_circuit_breaker_stops_hammering_then_half_opens(gateway_client, s3_config,
                                                               s3, s3_proxy):
    client = await gateway_client(s3_config(endpoint=s3_proxy.url, origin={
        **FAST, "retries": 0, "breaker_threshold": 2, "breaker_reset": 0.5}))
    s3.put("cb.png", png(6))
    s3_proxy.fail_with(503)
    for _ in range(2):
        assert (await client.get("/images/cb.png")).status == 502
    assert s3_proxy.gets("cb.png") == 2
    for _ in range(5):  # open: answered at once, origin not asked
        assert (await client.get("/images/cb.png")).status == 502
    assert s3_proxy.gets("cb.png") == 2
    s3_proxy.heal()
    await asyncio.sleep(0.6)
    resp = await client.get("/images/cb.png")  # the half-open trial
    assert resp.status == 200
    assert s3_proxy.gets("cb.png") == 3


async def test_open_breaker_with_stale_copy_serves_stale(gateway_client, s3_config, s3,
                                                         s3_proxy):
    client = await gateway_client(s3_config(
        endpoint=s3_proxy.url, disk={"ttl": 1, "ttl_jitter": 0}, fetch={"refresh_ahead": 0},
        origin={**FAST, "retries": 0, "breaker_threshold": 1, "breaker_reset": 30}))
    s3.put("st.png", png(7))
    assert (await client.get("/images/st.png")).status == 200
    await asyncio.sleep(1.1)
    s3_proxy.fail_with(500)
    for _ in range(3):
        resp = await client.get("/images/st.png")
        assert resp.status == 200
        assert resp.headers["X-Cache"] == "STALE"
        assert sha(await resp.read()) == sha(png(7))


async def test_slow_body_is_504_within_budget(client, s3, s3_proxy):
    s3.put("slow.png", png(8, size=(120, 120)))
    s3_proxy.slow_body(2000)
    started = time.monotonic()
    resp = await client.get("/images/slow.png")
    assert resp.status == 504
    assert time.monotonic() - started < 5  # bounded: connect + read budget, no retry


async def test_reset_mid_body_not_cached(client, s3, s3_proxy):
    s3.put("rst.png", png(9, size=(120, 120)))
    s3_proxy.reset_mid_body()
    resp = await client.get("/images/rst.png")
    assert resp.status == 502
    s3_proxy.heal()
    resp = await client.get("/images/rst.png")
    assert resp.status == 200
    assert resp.headers["X-Cache"] == "MISS"
    assert sha(await resp.read()) == sha(png(9, size=(120, 120)))


async def test_more_slow_objects_than_fetch_slots(gateway_client, s3_config, s3, s3_proxy):
    client = await gateway_client(s3_config(endpoint=s3_proxy.url, origin={
        "max_concurrent_fetches": 2, "queue_timeout": 0.2, "read_timeout": 3}))
    for i in range(5):
        s3.put(f"q{i}.png", png(10 + i))
    s3_proxy.delay_first_byte(1.0)
    responses = await asyncio.gather(*(client.get(f"/images/q{i}.png") for i in range(5)))
    statuses = sorted(r.status for r in responses)
    assert statuses == [200, 200, 503, 503, 503]
    assert all(r.headers["Retry-After"] for r in responses if r.status == 503)
    s3_proxy.heal()
    for i in range(5):  # nothing stuck: every slot came back
        assert (await client.get(f"/images/q{i}.png")).status == 200


# -- failing Redis ---------------------------------------------------------------------

@pytest.mark.timeout(30)
async def test_blackholed_redis_bounded_by_socket_timeouts(gateway_client, s3_config, s3,
                                                           s3_proxy, redis_url,
                                                           redis_server):
    client = await gateway_client(s3_config(
        endpoint=s3_proxy.url, redis={"url": redis_url, "socket_timeout": 0.2,
                                      "connect_timeout": 0.2}))
    s3.put("bh1.png", png(20))
    s3.put("bh2.png", png(21))
    assert (await client.get("/images/bh1.png")).status == 200
    redis_server.pause()
    try:
        started = time.monotonic()
        cached = await client.get("/images/bh1.png")
        cold = await client.get("/images/bh2.png")
        assert (cached.status, cold.status) == (200, 200)
        assert sha(await cold.read()) == sha(png(21))
        # one socket timeout per Redis call at most, then Redis is skipped (back-off)
        assert time.monotonic() - started < 3
        ready = await (await client.get("/readyz")).json()
        assert ready["status"] == "degraded"
    finally:
        redis_server.resume()


# -- clients -----------------------------------------------------------------------------

@pytest.mark.timeout(20)
async def test_slowloris_connection_closed_by_keepalive_timeout(spawn_gateway):
    # A real process: the keep-alive setting belongs to the server runner in gateway/server.py.
    gateway = spawn_gateway({"GATEWAY_SERVER_KEEPALIVE_TIMEOUT": "1"})
    host, port = "127.0.0.1", gateway.port

    def trickle() -> float:
        started = time.monotonic()
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(b"GET /images/default_pfp.png HTTP/1.1\r\nHost: x\r\n")
            try:
                for _ in range(40):  # one header byte every 0.2 s: never finishes
                    sock.sendall(b"X")
                    time.sleep(0.2)
                    sock.setblocking(False)
                    try:
                        if sock.recv(1) == b"":
                            break
                    except BlockingIOError:
                        pass
                    finally:
                        sock.setblocking(True)
            except (BrokenPipeError, ConnectionResetError):
                pass
        return time.monotonic() - started

    elapsed = await asyncio.to_thread(trickle)
    assert elapsed < 6  # closed by the server, not by our 8 s of trickling


async def test_rate_limit_per_client(gateway_client, gateway_config):
    client = await gateway_client(gateway_config(limits={"rate": 1, "burst": 2}))
    statuses = [(await client.get("/images/default_pfp.png")).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    limited = await client.get("/images/default_pfp.png")
    assert limited.headers["Retry-After"] == "1"
    # the peer (127.0.0.1) is a trusted proxy by default: X-Forwarded-For names the client
    other = await client.get("/images/default_pfp.png",
                             headers={"X-Forwarded-For": "198.51.100.7"})
    assert other.status == 200
    assert (await client.get("/healthz")).status == 200  # probes are never limited


async def test_rate_limit_ignores_forwarded_for_from_untrusted_peer(gateway_client,
                                                                    gateway_config):
    client = await gateway_client(gateway_config(
        limits={"rate": 1, "burst": 1}, server={"trusted_proxies": ["10.0.0.0/8"]}))
    assert (await client.get("/images/default_pfp.png")).status == 200
    spoofed = await client.get("/images/default_pfp.png",
                               headers={"X-Forwarded-For": "203.0.113.1"})
    assert spoofed.status == 429


async def test_signed_urls(gateway_client, gateway_config):
    keys = ["new:fedcba9876543210fedc", "old:0123456789abcdef0123"]
    client = await gateway_client(gateway_config(signing={"keys": keys, "required": True}))
    assert (await client.get("/images/default_pfp.png")).status == 403
    signed = UrlSigner(keys).sign("/images/default_pfp.png")
    assert (await client.get(URL(signed, encoded=True))).status == 200
    old = UrlSigner(keys[1:]).sign("/images/default_pfp.png")
    assert (await client.get(URL(old, encoded=True))).status == 200
    tampered = signed.replace("default_pfp", "default_pfx")
    assert (await client.get(URL(tampered, encoded=True))).status == 403
    assert (await client.get("/healthz")).status == 200


async def test_concurrent_clients_never_see_wrong_bytes(client, s3):
    bodies = {f"c{i}.png": png(30 + i) for i in range(5)}
    for name, body in bodies.items():
        s3.put(name, body)
    names = list(bodies) * 20
    random.Random(1).shuffle(names)
    async with aiohttp.ClientSession() as session:
        async def get(name):
            async with session.get(f"{client.make_url('/images/' + name)}") as resp:
                return name, resp.status, await resp.read()

        for name, status, body in await asyncio.gather(*(get(n) for n in names)):
            assert status == 200
            assert sha(body) == sha(bodies[name])
