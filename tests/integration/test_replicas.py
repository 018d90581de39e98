"""Two gateway processes on one Redis and one S3: purges, aliases, cluster single-flight,
Redis outages."""

from __future__ import annotations

import asyncio
from functools import partial

import aiohttp
import pytest
from yarl import URL

from gateway.cluster.redis import keys_for
from gateway.config_load import load
from tests.support.fakes import until
from tests.support.images import noise_png as png, sha

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def fetch(session, url, headers=None):
    async with session.get(url, headers=headers or {}) as resp:
        return resp.status, resp.headers.copy(), await resp.read()


# Poll until ``check()`` is true; the bound is for 'no hang', not a speed claim.
eventually = partial(until, timeout=3.0, interval=0.01)


@pytest.fixture
def pair(spawn_gateway, s3, s3_proxy, redis_url, tmp_path):
    """Two gateways with separate disks, behind one counting proxy to S3."""

    def start(shared_disk: bool = False, **extra):
        env = {**s3.env(s3_proxy.url), "GATEWAY_REDIS_URL": redis_url,
               "GATEWAY_ADMIN_TOKEN": TOKEN, "GATEWAY_SERVER_ACCESS_LOG": "false",
               "GATEWAY_ORIGIN_READ_TIMEOUT": "2", **extra}
        if shared_disk:
            env["GATEWAY_DISK_PATH"] = str(tmp_path / "shared-cache")
        return spawn_gateway(env), spawn_gateway(env)

    return start


@pytest.fixture
async def session():
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        yield s


@pytest.mark.timeout(60)
async def test_purge_on_one_replica_reaches_the_other(pair, s3, session):
    a, b = pair()
    s3.put("p.png", png(1))
    for gw in (a, b):
        assert sha((await fetch(session, f"{gw.url}/images/p.png"))[2]) == sha(png(1))
    s3.put("p.png", png(2))
    _status, _, body = await fetch(session, f"{b.url}/images/p.png")
    assert sha(body) == sha(png(1))  # still cached, as it should be until purged

    async with session.delete(f"{a.url}/admin/images/p.png", headers=AUTH) as resp:
        assert resp.status == 200
        data = await resp.json()
    assert data["success"] is True and data["propagated"] is True
    assert sha((await fetch(session, f"{a.url}/images/p.png"))[2]) == sha(png(2))

    async def b_has_new_bytes():
        return sha((await fetch(session, f"{b.url}/images/p.png"))[2]) == sha(png(2))

    await eventually(b_has_new_bytes)


@pytest.mark.timeout(60)
async def test_purge_of_a_key_that_reads_like_an_alias_reaches_the_other(pair, s3, session):
    # The object 'user:bob/x' must be purged on B, and the alias of user 'bob' left alone.
    a, b = pair()
    key, path = "user:bob/日本 x.png", "/images/user%3Abob/%E6%97%A5%E6%9C%AC%20x.png"
    s3.put(key, png(60))
    s3.put("bob.png", png(61))
    async with session.put(f"{a.url}/admin/users/bob", json={"image_id": "bob.png"},
                           headers=AUTH) as resp:
        assert resp.status == 200
    for gw in (a, b):
        assert sha((await fetch(session, URL(gw.url + path, encoded=True)))[2]) == sha(png(60))
        assert sha((await fetch(session, f"{gw.url}/images/user/bob"))[2]) == sha(png(61))
    s3.put(key, png(62))
    async with session.delete(URL(f"{a.url}/admin/images/user%3Abob/%E6%97%A5%E6%9C%AC%20x.png",
                                  encoded=True), headers=AUTH) as resp:
        assert resp.status == 200 and (await resp.json())["propagated"] is True

    async def b_has_new_bytes():
        got = await fetch(session, URL(b.url + path, encoded=True))
        return sha(got[2]) == sha(png(62))

    await eventually(b_has_new_bytes)
    _status, headers, body = await fetch(session, f"{b.url}/images/user/bob")
    assert sha(body) == sha(png(61)) and headers["X-Cache"] == "HIT-MEMORY"


@pytest.mark.timeout(60)
async def test_alias_change_reaches_both_and_old_etag_gets_200(pair, s3, session):
    a, b = pair()
    s3.put("one.png", png(3))
    s3.put("two.png", png(4))
    async with session.put(f"{a.url}/admin/users/u1", json={"image_id": "one.png"},
                           headers=AUTH) as resp:
        assert resp.status == 200
    etags = {}
    for gw in (a, b):
        status, headers, body = await fetch(session, f"{gw.url}/images/user/u1")
        assert status == 200 and sha(body) == sha(png(3))
        assert headers["Cache-Control"] == "max-age=30"
        etags[gw.url] = headers["ETag"]
        again = await fetch(session, f"{gw.url}/images/user/u1",
                            {"If-None-Match": headers["ETag"]})
        assert again[0] == 304
    async with session.put(f"{b.url}/admin/users/u1", json={"image_id": "two.png"},
                           headers=AUTH) as resp:
        assert resp.status == 200
    for gw in (a, b):
        async def changed(gw=gw):
            status, _, body = await fetch(session, f"{gw.url}/images/user/u1",
                                          {"If-None-Match": etags[gw.url]})
            return status == 200 and sha(body) == sha(png(4))

        await eventually(changed)
    async with session.delete(f"{a.url}/admin/users/u1", headers=AUTH) as resp:
        assert resp.status == 200

    async def fallback_everywhere():
        results = [await fetch(session, f"{gw.url}/images/user/u1") for gw in (a, b)]
        return all(h["X-Cache"] == "FALLBACK" for _, h, _ in results)

    await eventually(fallback_everywhere)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("shared_disk", [False, True], ids=["separate-disks", "shared-disk"])
async def test_cold_burst_over_both_replicas_is_one_origin_get(pair, s3, s3_proxy, session,
                                                                shared_disk):
    a, b = pair(shared_disk=shared_disk)
    body = png(5)
    s3.put("burst.png", body)
    s3_proxy.delay_first_byte(0.3, match="burst.png")  # the burst overlaps the fetch
    urls = [f"{(a if i % 2 else b).url}/images/burst.png" for i in range(300)]
    results = await asyncio.gather(*(fetch(session, u) for u in urls))
    assert all(status == 200 for status, _, _ in results)
    assert {sha(b) for _, _, b in results} == {sha(body)}
    assert s3_proxy.gets("burst.png") == 1


@pytest.mark.timeout(60)
async def test_redis_killed_mid_run_everything_still_answered(pair, s3, session,
                                                              redis_server):
    a, b = pair(GATEWAY_REDIS_SOCKET_TIMEOUT="0.2", GATEWAY_REDIS_CONNECT_TIMEOUT="0.2")
    for i in range(6):
        s3.put(f"r{i}.png", png(10 + i))
    for i in range(3):  # half cached before the outage, half not
        for gw in (a, b):
            assert (await fetch(session, f"{gw.url}/images/r{i}.png"))[0] == 200
    redis_server.kill()
    try:
        for i in range(6):
            for gw in (a, b):
                status, _headers, body = await fetch(session, f"{gw.url}/images/r{i}.png")
                assert status == 200
                assert sha(body) == sha(png(10 + i))
        async with session.get(f"{a.url}/readyz") as resp:
            assert resp.status == 200
            data = await resp.json()
        assert data["status"] == "degraded" and data["checks"]["redis"] == "failing"
    finally:
        redis_server.start()
    # Reconnected and resubscribed: a purge issued now reaches both.
    s3.put("r0.png", png(99))

    async def purge_propagates():
        async with session.delete(f"{a.url}/admin/images/r0.png", headers=AUTH) as resp:
            return resp.status == 200 and (await resp.json())["propagated"]

    await eventually(purge_propagates, timeout=10, interval=0.2)

    async def b_sees_new():
        return sha((await fetch(session, f"{b.url}/images/r0.png"))[2]) == sha(png(99))

    await eventually(b_sees_new, timeout=10)


@pytest.mark.timeout(60)
async def test_purge_missed_during_outage_applied_on_reconnect(pair, s3, s3_proxy, session,
                                                               redis_server, redis_url):
    from redis.asyncio import Redis

    _a, b = pair(GATEWAY_REDIS_SOCKET_TIMEOUT="0.2", GATEWAY_REDIS_CONNECT_TIMEOUT="0.2")
    s3.put("m.png", png(20))
    assert (await fetch(session, f"{b.url}/images/m.png"))[0] == 200
    s3.put("m.png", png(21))
    # A purge b never heard of (it was disconnected): the version moved, no message
    # reached it. Dropping its subscription makes it reconnect and resync versions.
    redis = Redis.from_url(redis_url)
    try:
        env = {**s3.env(s3_proxy.url), "GATEWAY_REDIS_URL": redis_url}
        await redis.incr(keys_for(load(None, env)).version("m.png"))
        await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    finally:
        await redis.aclose()

    async def b_sees_new():
        return sha((await fetch(session, f"{b.url}/images/m.png"))[2]) == sha(png(21))

    await eventually(b_sees_new, timeout=10, interval=0.1)


async def test_stale_copy_served_when_origin_down_then_refreshed(
        gateway_client, s3_config, s3, s3_proxy):
    client = await gateway_client(s3_config(
        endpoint=s3_proxy.url, disk={"ttl": 1, "ttl_jitter": 0},
        fetch={"refresh_ahead": 0}, origin={"connect_timeout": 0.5, "read_timeout": 0.5}))
    body = png(30)
    s3.put("s.png", body)
    assert (await client.get("/images/s.png")).status == 200
    await asyncio.sleep(1.1)  # the entry expires
    s3_proxy.refuse()
    resp = await client.get("/images/s.png")
    assert resp.status == 200
    assert resp.headers["X-Cache"] == "STALE"
    assert sha(await resp.read()) == sha(body)
    s3_proxy.heal()

    async def refreshed():
        r = await client.get("/images/s.png")
        await r.read()
        return r.headers["X-Cache"] == "HIT-MEMORY"

    await eventually(refreshed, timeout=10, interval=0.1)
    assert s3_proxy.gets("s.png") >= 2  # the background refresh reached the origin


async def test_near_expiry_entry_is_refreshed_in_background(gateway_client, s3_config, s3,
                                                            s3_proxy):
    client = await gateway_client(s3_config(
        endpoint=s3_proxy.url, disk={"ttl": 2, "ttl_jitter": 0},
        fetch={"refresh_ahead": 1}))
    s3.put("w.png", png(31))
    assert (await client.get("/images/w.png")).headers["X-Cache"] == "MISS"
    await asyncio.sleep(1.05)  # now inside the refresh window
    resp = await client.get("/images/w.png")
    assert resp.headers["X-Cache"] == "HIT-MEMORY"  # served at once, not waiting

    async def revalidated():
        return any(r.header("If-None-Match") for r in s3_proxy.requests()
                   if "w.png" in r.path)

    await eventually(revalidated, timeout=5)


async def test_object_deleted_at_origin_is_purged_not_served_stale(
        gateway_client, s3_config, s3, s3_proxy):
    client = await gateway_client(s3_config(endpoint=s3_proxy.url,
                                            disk={"ttl": 1, "ttl_jitter": 0}))
    s3.put("gone.png", png(32))
    assert (await client.get("/images/gone.png")).status == 200
    await asyncio.sleep(1.1)
    s3.delete("gone.png")
    resp = await client.get("/images/gone.png")
    assert resp.headers["X-Cache"] == "FALLBACK"
    resp = await client.get("/images/gone.png")
    assert resp.headers["X-Cache"] == "FALLBACK"


@pytest.fixture
async def admin_client(gateway_client, s3_config, s3_proxy, redis_url):
    return await gateway_client(s3_config(endpoint=s3_proxy.url, redis={"url": redis_url},
                                          admin={"token": TOKEN}))


@pytest.mark.parametrize("header", [None, "Bearer wrong-token-wrong-token!!", "Bearer",
                                    f"Basic {TOKEN}", f"Bearer {TOKEN}x", TOKEN,
                                    f"Bearer {TOKEN[:-1]}"])
async def test_admin_refuses_bad_tokens_and_changes_nothing(admin_client, s3, header):
    s3.put("keep.png", png(40))
    resp = await admin_client.get("/images/keep.png")
    assert resp.headers["X-Cache"] == "MISS"
    headers = {"Authorization": header} if header else {}
    for method, path, body in [("DELETE", "/admin/images/keep.png", None),
                               ("PUT", "/admin/users/u9", {"image_id": "keep.png"}),
                               ("POST", "/admin/prefetch", {"image_ids": ["keep.png"]})]:
        r = await admin_client.request(method, path, json=body, headers=headers)
        assert r.status == 401, (method, path)
        assert "Bearer" in r.headers["WWW-Authenticate"]
    assert (await admin_client.get("/images/keep.png")).headers["X-Cache"] == "HIT-MEMORY"
    assert (await admin_client.get("/images/user/u9")).headers["X-Cache"] == "FALLBACK"


async def test_admin_absent_without_token(gateway_client, s3_config):
    client = await gateway_client(s3_config())
    assert (await client.delete("/admin/images/x.png")).status == 404


async def test_admin_bad_json_and_bad_ids(admin_client):
    r = await admin_client.put("/admin/users/u1", data=b"{not json", headers=AUTH)
    assert r.status == 400
    r = await admin_client.put("/admin/users/u1", json={"image_id": "../x"}, headers=AUTH)
    assert r.status == 400
    r = await admin_client.put("/admin/users/u1", json=["x"], headers=AUTH)
    assert r.status == 400
    r = await admin_client.post("/admin/prefetch", json={"image_ids": "a.png"}, headers=AUTH)
    assert r.status == 400
    r = await admin_client.delete(URL("/admin/images/a%2F..%2Fx", encoded=True), headers=AUTH)
    assert r.status == 400


async def test_prefetch_counts_and_bounds(admin_client, s3, s3_proxy):
    s3.put("f1.png", png(50))
    s3.put("f2.png", png(51))
    await admin_client.get("/images/f1.png")
    r = await admin_client.post("/admin/prefetch", headers=AUTH,
                                json={"image_ids": ["f1.png", "f2.png", "nope.png", "f2.png"]})
    data = await r.json()
    assert r.status == 200
    assert (data["requested"], data["fetched"], data["already_cached"], data["missing"]) \
        == (3, 1, 1, 1)
    resp = await admin_client.get("/images/f2.png")
    assert resp.headers["X-Cache"] == "HIT-MEMORY"
    r = await admin_client.post("/admin/prefetch", headers=AUTH,
                                json={"image_ids": [f"x{i}.png" for i in range(501)]})
    assert r.status == 400
    assert s3_proxy.gets("x0.png") == 0


async def test_unknown_user_gets_fallback(admin_client):
    resp = await admin_client.get("/images/user/nobody")
    assert resp.status == 200
    assert resp.headers["X-Cache"] == "FALLBACK"
    assert (await admin_client.get("/images/user/..%2fx")).status in (400, 404)


async def test_versions_never_go_back_when_redis_loses_its_data(admin_client, redis_url):
    # Found by the soak: after a Redis restart without persistence, INCR started again
    # at 1, a purge kept the old cache key, and pre-purge bytes left in the cluster
    # fill key were served again. A version must never repeat.
    from redis.asyncio import Redis

    async def purge():
        resp = await admin_client.delete("/admin/images/v.png", headers=AUTH)
        assert resp.status == 200
        return (await resp.json())["version"]

    versions = [await purge() for _ in range(3)]
    redis = Redis.from_url(redis_url)
    try:
        await redis.flushall()  # what a restart without persistence leaves
    finally:
        await redis.aclose()
    versions.append(await purge())
    assert versions == sorted(versions) and len(set(versions)) == 4


async def test_a_purge_always_moves_to_a_new_key(admin_client):
    from gateway.web.keys import PARTS

    service = admin_client.app[PARTS].service
    service.cache.versions["k.png"] = 50
    await service.purge_local("k.png", 7)  # an older number (another replica's Redis)
    assert service.cache.versions["k.png"] == 51
    await service.purge_local("k.png", None)  # version unknown (Redis unreachable)
    assert service.cache.versions["k.png"] == 52
    await service.purge_local("k.png", 900)
    assert service.cache.versions["k.png"] == 900
    await service.purge_local("k.png", 900)  # our own purge's message coming back
    assert service.cache.versions["k.png"] == 900
