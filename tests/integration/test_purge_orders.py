"""Purges are never lost (issue 12, part 3), with real processes.

Replica R caches two pictures, p and q. Then, in every order (R must go away
before it comes back):

    away   R is cut off from Redis (a TCP partition) or stopped (SIGTERM)
    purge  p changes in S3 and is purged through replica A
    flush  Redis restarts empty (no persistence): every version key is gone
    back   R is reconnected, or started again on its old disk

Afterwards R never serves p's old bytes (compared by sha256), and what R pays for
not knowing what it missed is one conditional GET, answered 304, for q: counted at
the S3 proxy.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest

from gateway.web.keys import PARTS
from tests.support import free_port
from tests.support.fakes import until
from tests.support.gateway_process import GatewayProcess
from tests.support.images import noise_png as png, sha
from tests.support.proxy import FaultProxy
from tests.support.redis_server import RedisServer
from tests.support.s3_server import S3Bucket
from tests.support.tcp_proxy import TcpProxy

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EVENTS = ("away", "purge", "flush", "back")
ORDERS = [order for order in itertools.permutations(EVENTS)
          if order.index("away") < order.index("back")]
BOUND = 20.0  # how long a wait may take before the test calls it hung


async def fetch(session: aiohttp.ClientSession, url: str,
                headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    async with session.get(url, headers=headers or {}) as resp:
        return resp.status, resp.headers.get("X-Cache", ""), await resp.read()


async def resyncs(session: aiohttp.ClientSession, gateway: GatewayProcess) -> int:
    """How often ``gateway`` has (re)subscribed and distrusted what it had cached."""
    async with session.get(f"{gateway.url}/metrics") as resp:
        text = await resp.text()
    found = re.search(r"^gateway_resyncs_total (\S+)$", text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


@pytest.fixture
def redis_proxy(redis_server: RedisServer, redis_url: str) -> Iterator[TcpProxy]:
    proxy = TcpProxy(redis_server.port)
    yield proxy
    proxy.close()


@pytest.fixture
async def session() -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND)) as s:
        yield s


class Scenario:
    """R (through ``redis_proxy``) and A (straight to Redis), and the four events."""

    def __init__(self, mode: str, spawn: Callable[..., GatewayProcess], s3: S3Bucket,
                 s3_proxy: FaultProxy, redis_server: RedisServer, redis_url: str,
                 redis_proxy: TcpProxy, session: aiohttp.ClientSession) -> None:
        base = {**s3.env(s3_proxy.url), "GATEWAY_ADMIN_TOKEN": TOKEN,
                "GATEWAY_SERVER_ACCESS_LOG": "false",
                "GATEWAY_REDIS_SOCKET_TIMEOUT": "0.2", "GATEWAY_REDIS_CONNECT_TIMEOUT": "0.2"}
        self.mode = mode
        self.s3 = s3
        self.redis_server = redis_server
        self.redis_proxy = redis_proxy
        self.session = session
        self.env_a = {**base, "GATEWAY_REDIS_URL": redis_url}
        self.env_r = {**base, "GATEWAY_REDIS_URL": f"redis://127.0.0.1:{redis_proxy.port}/0"}
        self.spawn = spawn
        self.away = False
        self.expected_resyncs = 1  # R's first subscription

    async def start(self) -> None:
        self.a, self.r = await asyncio.gather(asyncio.to_thread(self.spawn, self.env_a),
                                              asyncio.to_thread(self.spawn, self.env_r))
        await self.r_resynced()

    async def r_resynced(self) -> None:
        async def caught_up() -> bool:
            return await resyncs(self.session, self.r) >= self.expected_resyncs

        await until(caught_up, timeout=BOUND, interval=0.05,
                    what=f"R resynced {self.expected_resyncs} times")

    async def run(self, event: str) -> None:
        await getattr(self, event)()

    async def away_(self) -> None:
        self.away = True
        if self.mode == "partition":
            self.redis_proxy.cut()
        else:
            self.r.terminate()

    async def purge(self) -> None:
        self.s3.put("p.png", png(101))

        async def propagated() -> bool:
            async with self.session.delete(f"{self.a.url}/admin/images/p.png",
                                           headers=AUTH) as resp:
                return resp.status == 200 and bool((await resp.json())["propagated"])

        # Right after a Redis restart A's first call may meet a dead connection.
        await until(propagated, timeout=BOUND, interval=0.1, what="purge reached Redis")

    async def flush(self) -> None:
        self.redis_server.stop()
        self.redis_server.start()  # empty: no persistence
        if not self.away:  # R hears the restart: it must subscribe again
            self.expected_resyncs += 1
            await self.r_resynced()

    async def back(self) -> None:
        self.away = False
        if self.mode == "partition":
            self.redis_proxy.heal()
            self.expected_resyncs += 1
        else:
            await self.r.astart()  # a new process on the old disk folder
            self.expected_resyncs = 1
        await self.r_resynced()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["partition", "stop"])
@pytest.mark.parametrize("order", ORDERS, ids="-".join)
async def test_a_missed_purge_is_never_served(order: tuple[str, ...], mode: str,
                                              spawn_gateway: Callable[..., GatewayProcess],
                                              s3: S3Bucket, s3_proxy: FaultProxy,
                                              redis_server: RedisServer, redis_url: str,
                                              redis_proxy: TcpProxy,
                                              session: aiohttp.ClientSession) -> None:
    world = Scenario(mode, spawn_gateway, s3, s3_proxy, redis_server, redis_url, redis_proxy,
                     session)
    await world.start()
    s3.put("p.png", png(100))
    s3.put("q.png", png(200))
    for name, body in (("p.png", png(100)), ("q.png", png(200))):
        status, layer, got = await fetch(session, f"{world.r.url}/images/{name}")
        assert (status, layer, sha(got)) == (200, "MISS", sha(body))

    for event in order:
        await world.run("away_" if event == "away" else event)

    s3_proxy.reset()
    for _ in range(2):
        status, _layer, got = await fetch(session, f"{world.r.url}/images/p.png")
        assert status == 200 and sha(got) == sha(png(101)), "R served purged bytes"
    status, layer, got = await fetch(session, f"{world.r.url}/images/q.png")
    assert (status, layer, sha(got)) == (200, "REVALIDATED", sha(png(200)))
    conditional = [seen for seen in s3_proxy.requests()
                   if "q.png" in seen.path and seen.header("If-None-Match")]
    assert len(conditional) == s3_proxy.gets("q.png") == 1
    status, layer, _ = await fetch(session, f"{world.r.url}/images/q.png")
    assert (status, layer) == (200, "HIT-MEMORY") and s3_proxy.gets("q.png") == 1


@pytest.mark.timeout(120)
async def test_a_purge_taken_while_cut_off_reaches_the_others(
        spawn_gateway: Callable[..., GatewayProcess], s3: S3Bucket, s3_proxy: FaultProxy,
        redis_server: RedisServer, redis_url: str, redis_proxy: TcpProxy,
        session: aiohttp.ClientSession) -> None:
    """The other way round: R is cut off and takes the purge, A keeps listening and
    cached p. A has missed nothing (no gap, no revalidation), so only R can tell it:
    R sends its purge once Redis takes calls again."""
    world = Scenario("partition", spawn_gateway, s3, s3_proxy, redis_server, redis_url,
                     redis_proxy, session)
    await world.start()
    s3.put("p.png", png(100))
    for _ in range(2):
        status, _layer, got = await fetch(session, f"{world.a.url}/images/p.png")
        assert status == 200 and sha(got) == sha(png(100))

    redis_proxy.cut()
    s3.put("p.png", png(101))
    async with session.delete(f"{world.r.url}/admin/images/p.png", headers=AUTH) as resp:
        assert resp.status == 200 and (await resp.json())["propagated"] is False
    status, layer, got = await fetch(session, f"{world.a.url}/images/p.png")
    assert (status, layer, sha(got)) == (200, "HIT-MEMORY", sha(png(100)))  # not told yet

    redis_proxy.heal()

    async def a_dropped_it() -> bool:
        _status, _layer, got = await fetch(session, f"{world.a.url}/images/p.png")
        return sha(got) == sha(png(101))

    await until(a_dropped_it, timeout=BOUND, interval=0.1, what="A heard R's purge")
    async with session.get(f"{world.r.url}/metrics") as resp:
        text = await resp.text()
    assert re.search(r"^gateway_purges_resent_total 1(\.0)?$", text, re.MULTILINE)
    assert re.search(r"^gateway_purges_unsent 0(\.0)?$", text, re.MULTILINE)


# -- the start ------------------------------------------------------------------------------


async def test_with_redis_the_gateway_serves_once_subscribed(
        gateway_client: Any, s3_config: Any, s3: S3Bucket, s3_proxy: FaultProxy,
        redis_url: str) -> None:
    """A copy fetched before the first subscription would be revalidated when it
    comes: the start waits for it, so the first pictures are fetched once."""
    client = await gateway_client(s3_config(endpoint=s3_proxy.url, redis={"url": redis_url}))
    assert client.app[PARTS].stats.resyncs == 1
    s3.put("first.png", png(1))
    layers = [(await client.get("/images/first.png")).headers["X-Cache"] for _ in range(2)]
    assert layers == ["MISS", "HIT-MEMORY"] and s3_proxy.gets("first.png") == 1


async def test_with_redis_down_the_gateway_still_starts(
        gateway_client: Any, s3_config: Any, s3: S3Bucket, s3_proxy: FaultProxy) -> None:
    client = await gateway_client(s3_config(
        endpoint=s3_proxy.url, redis={"url": f"redis://127.0.0.1:{free_port()}/0"}))
    s3.put("first.png", png(1))
    resp = await client.get("/images/first.png")
    assert resp.status == 200 and resp.headers["X-Cache"] == "MISS"
    assert client.app[PARTS].stats.resyncs == 0
