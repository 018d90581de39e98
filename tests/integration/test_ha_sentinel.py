"""Redis Sentinel, for real: a redis-server master and replica, three ``redis-server
--sentinel``, two gateway processes that find the master through the sentinels, S3
(moto) behind the counting proxy. The master is SIGKILLed; the sentinels promote the
replica; purges, alias changes, the cross-replica lease and presigned-URL storage must
work on the new master, and nothing purged may be served again (sha256 of bodies).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aiohttp
import pytest
from redis.asyncio import Redis

from gateway.cluster.redis import keys_for
from gateway.config_load import load
from tests.support.fakes import until
from tests.support.images import noise_png as png, sha
from tests.support.sentinel import MASTER_NAME, SentinelSet

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KEYS = [f"k{i}.png" for i in range(5)]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def sentinel_set() -> Iterator[SentinelSet]:
    with SentinelSet() as ha:
        yield ha


async def fetch(session: aiohttp.ClientSession, url: str) -> tuple[int, str, bytes]:
    async with session.get(url) as resp:
        return resp.status, resp.headers.get("X-Cache", ""), await resp.read()


async def purge(session: aiohttp.ClientSession, url: str) -> dict[str, object]:
    async with session.delete(url, headers=AUTH) as resp:
        assert resp.status == 200
        data: dict[str, object] = await resp.json()
        return data


async def numsub(port: int, channel: str) -> int:
    client = Redis(port=port, socket_timeout=1)
    try:
        reply = await client.pubsub_numsub(channel)
        return int(reply[0][1])
    finally:
        await client.aclose()


async def test_sentinel_failover_keeps_purges_aliases_lease_and_urls(
        sentinel_set: SentinelSet, spawn_gateway, s3, s3_proxy) -> None:
    env = {**s3.env(s3_proxy.url), "GATEWAY_REDIS_SENTINELS": ",".join(sentinel_set.sentinels),
           "GATEWAY_REDIS_SENTINEL_MASTER": MASTER_NAME, "GATEWAY_ADMIN_TOKEN": TOKEN,
           "GATEWAY_SERVER_ACCESS_LOG": "false"}
    keys = keys_for(load(None, env))
    a, b = spawn_gateway(env), spawn_gateway(env)
    served: dict[str, set[str]] = {}  # key -> sha256 of every body either gateway served
    purged: dict[str, set[str]] = {}  # key -> bodies that a returned purge replaced

    async def get(session: aiohttp.ClientSession, gw, key: str) -> tuple[str, str]:
        status, layer, body = await fetch(session, f"{gw.url}/images/{key}")
        assert status == 200, (key, status, layer)
        digest = sha(body)
        assert digest not in purged.get(key, set()), f"{key}: purged bytes served ({layer})"
        served.setdefault(key, set()).add(digest)
        return digest, layer

    async with aiohttp.ClientSession() as session:
        for i, key in enumerate(KEYS):
            s3.put(key, png(i))
        for key in KEYS:
            for gw in (a, b):
                await get(session, gw, key)
        master = sentinel_set.master_port()
        # Both gateways are subscribed on the master the sentinels named.
        assert await numsub(master, keys.invalidate) == 2

        # Before the failover: a purge with new bytes reaches both.
        s3.put("k0.png", png(100))
        assert (await purge(session, f"{a.url}/admin/images/k0.png"))["propagated"] is True
        purged["k0.png"] = {sha(png(0))}
        for gw in (a, b):
            assert (await get(session, gw, "k0.png"))[0] == sha(png(100))

        # A purge right before the master dies: its version may never reach the replica.
        s3.put("k1.png", png(101))
        assert (await purge(session, f"{a.url}/admin/images/k1.png"))["propagated"] is True
        purged["k1.png"] = {sha(png(1))}
        killed_at = time.monotonic()
        old = sentinel_set.kill_master()

        # During the outage: pictures keep being served; a purge cannot propagate.
        s3.put("k2.png", png(102))
        for key in KEYS:
            await get(session, b, key)
        promoted = sentinel_set.wait_for_failover(old)
        promoted_at = time.monotonic()

        async def purge_propagates() -> bool:
            return (await purge(session, f"{a.url}/admin/images/k2.png"))["propagated"] is True

        await until(purge_propagates, timeout=30, interval=0.1)
        purge_ok_at = time.monotonic()
        purged["k2.png"] = {sha(png(2))}

        async def both_subscribed() -> bool:
            return await numsub(promoted, keys.invalidate) == 2

        await until(both_subscribed, timeout=30, interval=0.1)
        subscribed_at = time.monotonic()
        print(f"\nsentinel failover: promoted after {promoted_at - killed_at:.1f} s, "
              f"first propagated purge after {purge_ok_at - killed_at:.1f} s, both "
              f"gateways subscribed after {subscribed_at - killed_at:.1f} s")

        # Nothing purged comes back, on either gateway, whatever it cached before.
        for key, body in (("k0.png", png(100)), ("k1.png", png(101)), ("k2.png", png(102))):
            for gw in (a, b):
                assert (await get(session, gw, key))[0] == sha(body)
        # The new master is a new Redis identity: what b cached before is revalidated
        # (a conditional GET: 304), not served as it was.
        assert (await get(session, b, "k3.png"))[1] == "REVALIDATED"

        # A purge after the failover reaches both.
        s3.put("k3.png", png(103))
        assert (await purge(session, f"{b.url}/admin/images/k3.png"))["propagated"] is True
        purged["k3.png"] = {sha(png(3))}
        for gw in (a, b):
            assert (await get(session, gw, "k3.png"))[0] == sha(png(103))

        # Alias changes, through either gateway, reach both.
        for through, image, body_now in ((a, "k4.png", png(4)), (b, "k3.png", png(103))):
            async with session.put(f"{through.url}/admin/users/u1", json={"image_id": image},
                                   headers=AUTH) as resp:
                assert resp.status == 200 and (await resp.json())["propagated"] is True
            for gw in (a, b):
                status, _, body = await fetch(session, f"{gw.url}/images/user/u1")
                assert status == 200 and sha(body) == sha(body_now)

        # The cross-replica lease: a cold burst over both gateways is one S3 GET.
        s3.put("burst.png", png(200))
        s3_proxy.delay_first_byte(0.3, match="burst.png")
        results = await asyncio.gather(*(
            fetch(session, f"{(a if i % 2 else b).url}/images/burst.png") for i in range(40)))
        assert {(status, sha(body)) for status, _, body in results} == {(200, sha(png(200)))}
        assert s3_proxy.gets("burst.png") == 1

        # Presigned-URL storage: on the new master.
        client = Redis(port=promoted, socket_timeout=1)
        try:
            assert await client.exists(keys.url("burst.png")) == 1
            assert (await client.get(keys.version("k3.png"))) is not None
        finally:
            await client.aclose()

    # Every purged key was served both ways over the run: its old bytes before the
    # purge returned, only its new bytes after (checked on every GET above).
    assert all(len(served[key]) == 2 for key in purged)
