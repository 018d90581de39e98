"""The cache layers end to end: memory -> disk -> single-flight -> S3 (moto over HTTP).

Every origin request is counted by the FaultProxy between the gateway and moto
(the gateway's s3.endpoint is the proxy), so "0 origin GETs" means the proxy saw
none. Bodies are compared by sha256 with what was uploaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.cache.disk import DiskCache
from gateway.config import Config
from gateway.observe.counters import Stats
from gateway.service import ImageService
from gateway.web.app import create_app
from gateway.web.keys import PARTS
from tests.support.fakes import until
from tests.support.images import noise_png as png, sha

TIMEOUT = aiohttp.ClientTimeout(total=30)
TEMP_PREFIX = ".tmp-"  # gateway/cache/disk.py names its temp files like this


def origin_gets(proxy: Any, image_id: str) -> list[Any]:
    """The GETs the proxy forwarded for one object, oldest first."""
    return [r for r in proxy.requests() if r.method == "GET" and r.path.endswith(f"/{image_id}")]


def disk_files(root: Path) -> list[Path]:
    """Every regular file under the disk cache root (entries and temp files)."""
    return sorted(p for p in root.rglob("*") if p.is_file())


def temp_files(root: Path) -> list[Path]:
    return [p for p in disk_files(root) if p.name.startswith(TEMP_PREFIX)]


Start = Callable[..., Awaitable[tuple[web.Application, str]]]


@pytest.fixture
async def serve() -> AsyncIterator[Start]:
    """serve(config) -> (app, base_url): create_app on a real listening socket.

    A listen backlog of 1024 (aiohttp's TestServer keeps the default 128), so a
    burst of hundreds of connects is accepted at once instead of some waiting
    for a SYN retransmit (1 s) and arriving after the burst is over.
    """
    runners: list[web.AppRunner] = []

    async def start(config: Config, *, handler_cancellation: bool = False
                    ) -> tuple[web.Application, str]:
        app = await create_app(config)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=handler_cancellation)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        host, port = runner.addresses[0][:2]
        return app, f"http://{host}:{port}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


async def get(session: aiohttp.ClientSession, url: str,
              **kwargs: Any) -> tuple[int, str, str, bytes]:
    """(status, X-Cache, ETag, body) of one GET."""
    async with session.get(url, **kwargs) as resp:
        body = await resp.read()
        return resp.status, resp.headers.get("X-Cache", ""), resp.headers.get("ETag", ""), body


def service_of(client: Any) -> ImageService:
    return client.app[PARTS].service  # type: ignore[no-any-return]


def stats_of(client: Any) -> Stats:
    return client.app[PARTS].stats  # type: ignore[no-any-return]


# --- single-flight: a cold burst ---------------------------------------------------


@pytest.mark.timeout(30)
async def test_500_cold_requests_make_one_origin_get(serve, s3_config, s3, s3_proxy):
    body = png(1, (64, 64))
    s3.put("burst.png", body)
    app, base = await serve(s3_config(endpoint=s3_proxy.url))
    url = f"{base}/images/burst.png"
    # Hold the origin's answer so every request of the burst is waiting on the
    # one fetch before it completes.
    s3_proxy.delay_first_byte(1.5)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=TIMEOUT) as session:
        cold = await asyncio.gather(*(get(session, url) for _ in range(500)))
        assert len(origin_gets(s3_proxy, "burst.png")) == 1
        assert Counter(status for status, *_ in cold) == {200: 500}
        assert {sha(b) for *_, b in cold} == {sha(body)}
        assert len({etag for _, _, etag, _ in cold}) == 1
        assert Counter(layer for _, layer, _, _ in cold) == {"MISS": 1, "COALESCED": 499}
        assert app[PARTS].stats.origin_fetches == 1
        assert app[PARTS].stats.coalesced == 499

        s3_proxy.heal()
        warm = await asyncio.gather(*(get(session, url) for _ in range(500)))
    assert len(origin_gets(s3_proxy, "burst.png")) == 1  # 0 more
    assert Counter(status for status, *_ in warm) == {200: 500}
    assert {sha(b) for *_, b in warm} == {sha(body)}
    assert Counter(layer for _, layer, _, _ in warm) == {"HIT-MEMORY": 500}


# --- memory -> disk ----------------------------------------------------------------


async def test_after_memory_eviction_disk_answers_and_promotes(gateway_client, s3_config, s3,
                                                               s3_proxy):
    a, b = png(2, (40, 40)), png(3, (40, 40))
    s3.put("a.png", a)
    s3.put("b.png", b)
    room = max(len(a), len(b)) + 64  # one picture fits in memory, two do not
    assert room < len(a) + len(b)
    client = await gateway_client(s3_config(endpoint=s3_proxy.url, memory={"max_bytes": room}))
    stats = stats_of(client)

    async def fetch(image_id: str) -> tuple[str, str]:
        resp = await client.get(f"/images/{image_id}")
        assert resp.status == 200
        return resp.headers["X-Cache"], sha(await resp.read())

    assert await fetch("a.png") == ("MISS", sha(a))
    assert await fetch("b.png") == ("MISS", sha(b))  # evicts a from memory
    assert stats.memory.evictions == 1
    assert await fetch("a.png") == ("HIT-DISK", sha(a))  # promoted, evicting b
    assert await fetch("a.png") == ("HIT-MEMORY", sha(a))
    assert await fetch("b.png") == ("HIT-DISK", sha(b))
    assert await fetch("b.png") == ("HIT-MEMORY", sha(b))
    assert len(origin_gets(s3_proxy, "a.png")) == 1
    assert len(origin_gets(s3_proxy, "b.png")) == 1
    assert stats.disk.hits == 2
    assert service_of(client).cache.memory.size_bytes <= room


@pytest.mark.parametrize("memory", [{"max_object_bytes": 4096}, {"max_bytes": 0}],
                         ids=["over-object-cap", "memory-off"])
async def test_large_object_served_from_disk_with_sendfile(gateway_client, s3_config, s3,
                                                           s3_proxy, monkeypatch, memory):
    body = png(4, (120, 120))  # ~43 KB, over the 4 KiB per-object cap
    s3.put("large.png", body)
    client = await gateway_client(s3_config(endpoint=s3_proxy.url, memory=memory))

    loop = asyncio.get_running_loop()
    real_sendfile = loop.sendfile
    sent: list[int | None] = []

    async def spy(transport: Any, file: Any, offset: int = 0, count: int | None = None,
                  *, fallback: bool = True) -> int:
        sent.append(count)
        return await real_sendfile(transport, file, offset, count, fallback=fallback)

    monkeypatch.setattr(loop, "sendfile", spy)

    first = await client.get("/images/large.png")
    assert first.status == 200 and first.headers["X-Cache"] == "MISS"
    assert sha(await first.read()) == sha(body)
    etag = first.headers["ETag"]
    assert len(service_of(client).cache.memory) == 0  # too large to keep in memory

    hit = await client.get("/images/large.png")
    assert hit.status == 200
    assert hit.headers["X-Cache"] == "HIT-DISK"
    assert hit.headers["Content-Length"] == str(len(body))
    assert hit.headers["ETag"] == etag
    assert hit.headers["Content-Type"] == "image/png"
    assert sha(await hit.read()) == sha(body)
    assert sent == [len(body)], "a disk hit over the memory cap must go out with sendfile"

    head = await client.head("/images/large.png")
    assert head.status == 200
    assert head.headers["X-Cache"] == "HIT-DISK"
    assert head.headers["Content-Length"] == str(len(body))
    assert head.headers["ETag"] == etag
    assert await head.read() == b""

    not_modified = await client.get("/images/large.png", headers={"If-None-Match": etag})
    assert not_modified.status == 304
    assert not_modified.headers["X-Cache"] == "HIT-DISK"
    assert not_modified.headers["ETag"] == etag
    assert await not_modified.read() == b""

    assert sent == [len(body)]  # neither HEAD nor the 304 sent a body
    assert len(origin_gets(s3_proxy, "large.png")) == 1
    assert len(service_of(client).cache.memory) == 0


# --- restarts ----------------------------------------------------------------------


async def test_new_app_on_same_disk_answers_without_origin(gateway_client, s3_config, s3,
                                                           s3_proxy):
    small, large = png(5), png(6, (120, 120))
    s3.put("small.png", small)
    s3.put("large.png", large)
    config = s3_config(endpoint=s3_proxy.url, memory={"max_object_bytes": 8192})

    before = await gateway_client(config)
    seen: dict[str, tuple[str, str]] = {}
    for image_id in ("small.png", "large.png"):
        resp = await before.get(f"/images/{image_id}")
        assert resp.status == 200 and resp.headers["X-Cache"] == "MISS"
        await resp.read()
        seen[image_id] = (resp.headers["ETag"], resp.headers["Last-Modified"])
    await before.close()  # the app's cleanup runs: the disk cache is closed

    after = await gateway_client(config)
    for image_id, body in (("small.png", small), ("large.png", large)):
        resp = await after.get(f"/images/{image_id}")
        assert resp.status == 200
        assert resp.headers["X-Cache"] == "HIT-DISK"
        assert (resp.headers["ETag"], resp.headers["Last-Modified"]) == seen[image_id]
        assert sha(await resp.read()) == sha(body)
        assert len(origin_gets(s3_proxy, image_id)) == 1


async def test_deployments_sharing_one_disk_path_serve_their_own_bytes(gateway_client,
                                                                      gateway_config,
                                                                      tmp_path):
    """Two deployments (two origins) given one disk.path: same key, other bytes. Each
    serves its own; neither takes the other's file for a hit."""
    shared = str(tmp_path / "shared-cache")
    clients, bodies = [], []
    for n in (1, 2):
        root = tmp_path / f"origin{n}"
        root.mkdir()
        bodies.append(png(40 + n))
        (root / "pic.png").write_bytes(bodies[-1])
        clients.append(await gateway_client(gateway_config(
            origin={"kind": "local", "root": str(root)}, disk={"path": shared},
            memory={"max_object_bytes": 1})))  # every hit comes from the disk
    for client, body in zip(clients, bodies, strict=True):
        first = await client.get("/images/pic.png")
        assert (first.status, first.headers["X-Cache"]) == (200, "MISS")
        assert sha(await first.read()) == sha(body)
    for client, body in zip(clients, bodies, strict=True):
        again = await client.get("/images/pic.png")
        assert (again.status, again.headers["X-Cache"]) == (200, "HIT-DISK")
        assert sha(await again.read()) == sha(body)


@pytest.mark.timeout(60)
async def test_restarted_process_answers_from_disk(spawn_gateway, s3, s3_proxy, tmp_path):
    body = png(7, (80, 80))
    s3.put("proc.png", body)
    gw = await asyncio.to_thread(spawn_gateway, {
        **s3.env(s3_proxy.url),
        "GATEWAY_DISK_PATH": str(tmp_path / "disk"),
        "GATEWAY_SERVER_ACCESS_LOG": "false",
    })
    url = f"{gw.url}/images/proc.png"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        status, layer, etag, got = await get(session, url)
        assert (status, layer, sha(got)) == (200, "MISS", sha(body))

        # graceful restart (SIGTERM), then a crash (SIGKILL) and a start
        for stop in (gw.terminate, gw.kill):
            await asyncio.to_thread(stop)
            await gw.astart()
            status, layer, again, got = await get(session, url)
            assert (status, layer, sha(got)) == (200, "HIT-DISK", sha(body)), gw.stderr_text()
            assert again == etag
    assert len(origin_gets(s3_proxy, "proc.png")) == 1


# --- TTL and revalidation ----------------------------------------------------------


@pytest.mark.timeout(20)
@pytest.mark.parametrize("memory", [{}, {"max_object_bytes": 0}], ids=["memory", "disk-only"])
async def test_expired_entry_revalidated_with_if_none_match(gateway_client, s3_config, s3,
                                                            s3_proxy, memory):
    body = png(8, (60, 60))
    origin_etag = s3.put("rv.png", body)
    # refresh_ahead 0: no background revalidation of fresh hits, only of expired copies
    client = await gateway_client(s3_config(endpoint=s3_proxy.url, memory=memory,
                                            disk={"ttl": 1, "ttl_jitter": 0.0},
                                            fetch={"refresh_ahead": 0}))
    stats = stats_of(client)
    service = service_of(client)

    first = await client.get("/images/rv.png")
    assert first.status == 200 and first.headers["X-Cache"] == "MISS"
    assert sha(await first.read()) == sha(body)
    assert origin_gets(s3_proxy, "rv.png")[0].header("If-None-Match") is None
    assert stats.bytes_from_origin == len(body)

    await asyncio.sleep(1.3)  # past disk.ttl: the copy is stale

    second = await client.get("/images/rv.png")
    assert second.status == 200
    # The origin confirmed the expired copy: named apart from a download (MISS).
    assert second.headers["X-Cache"] == "REVALIDATED"
    assert second.headers["ETag"] == first.headers["ETag"]
    assert sha(await second.read()) == sha(body)
    gets = origin_gets(s3_proxy, "rv.png")
    assert len(gets) == 2
    assert gets[1].header("If-None-Match") == origin_etag
    assert stats.origin_not_modified == 1  # moto answered 304
    assert stats.bytes_from_origin == len(body)  # the body was not downloaded again

    # The 304 made both copies fresh again: no origin request for the next ones.
    third = await client.get("/images/rv.png")
    assert third.headers["X-Cache"] == ("HIT-DISK" if memory else "HIT-MEMORY")
    assert sha(await third.read()) == sha(body)
    await service.cache.memory.clear()
    fourth = await client.get("/images/rv.png")
    assert fourth.headers["X-Cache"] == "HIT-DISK"
    assert sha(await fourth.read()) == sha(body)
    assert len(origin_gets(s3_proxy, "rv.png")) == 2


# --- corruption --------------------------------------------------------------------


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "body-byte-flipped": lambda data: _flip(data, len(data) - 100),
    "metadata-byte-flipped": lambda data: _flip(data, 20),
    "truncated": lambda data: data[:len(data) // 2],
    "one-byte-short": lambda data: data[:-1],
    "zero-filled": lambda data: bytes(len(data)),
    "empty": lambda data: b"",
}


@pytest.mark.parametrize("memory", [{}, {"max_object_bytes": 0}], ids=["inline", "sendfile"])
@pytest.mark.parametrize("corrupt", list(CORRUPTIONS))
async def test_corrupt_disk_entry_is_refetched(gateway_client, s3_config, s3, s3_proxy,
                                               memory, corrupt):
    body = png(9, (60, 60))
    s3.put("c.png", body)
    client = await gateway_client(s3_config(endpoint=s3_proxy.url, memory=memory))
    service = service_of(client)
    stats = stats_of(client)

    assert (await client.get("/images/c.png")).status == 200
    disk = service.cache.disk
    assert isinstance(disk, DiskCache)
    path = disk.path_for(service.cache.key_for("c.png"))
    assert path.is_file()
    path.write_bytes(CORRUPTIONS[corrupt](path.read_bytes()))
    await service.cache.memory.clear()

    resp = await client.get("/images/c.png")
    assert resp.status == 200
    assert resp.headers["X-Cache"] == "MISS"
    assert sha(await resp.read()) == sha(body)
    assert len(origin_gets(s3_proxy, "c.png")) == 2
    assert stats.disk.corrupt_dropped == 1

    # The refetch stored a good copy again.
    await service.cache.memory.clear()
    again = await client.get("/images/c.png")
    assert again.headers["X-Cache"] == "HIT-DISK"
    assert sha(await again.read()) == sha(body)
    assert len(origin_gets(s3_proxy, "c.png")) == 2
    assert temp_files(disk.root) == []


# --- disk write failures -----------------------------------------------------------


async def test_unusable_disk_folder_still_answers(gateway_client, s3_config, s3, s3_proxy,
                                                  tmp_path):
    body = png(10, (40, 40))
    s3.put("w.png", body)
    root = tmp_path / "unusable"
    client = await gateway_client(s3_config(endpoint=s3_proxy.url, disk={"path": str(root)}))
    stats = stats_of(client)
    # The folder goes away under the running gateway and a file takes its place.
    root.rmdir()
    root.write_bytes(b"not a folder")

    resp = await client.get("/images/w.png")
    assert resp.status == 200 and resp.headers["X-Cache"] == "MISS"
    assert sha(await resp.read()) == sha(body)
    assert stats.disk.write_errors == 1
    again = await client.get("/images/w.png")
    assert again.status == 200 and again.headers["X-Cache"] == "HIT-MEMORY"
    assert sha(await again.read()) == sha(body)
    assert len(origin_gets(s3_proxy, "w.png")) == 1
    assert root.read_bytes() == b"not a folder"
    ready = await (await client.get("/readyz")).json()
    assert ready["checks"]["disk"] == "failing"


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Writes past ``limit`` bytes fail with EFBIG in this process, as on a full disk."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)


async def test_write_failing_midway_leaves_nothing_behind(gateway_client, s3_config, s3,
                                                          s3_proxy, tmp_path):
    body = png(11, (120, 120))  # ~43 KB; the write fails after 16 KiB
    s3.put("full.png", body)
    root = tmp_path / "disk"
    # memory off: every request below that is not a disk hit goes to the origin
    client = await gateway_client(s3_config(endpoint=s3_proxy.url, disk={"path": str(root)},
                                            memory={"max_bytes": 0}))
    stats = stats_of(client)

    with file_size_limit(16 * 1024):
        resp = await client.get("/images/full.png")
        assert resp.status == 200 and resp.headers["X-Cache"] == "MISS"
        assert sha(await resp.read()) == sha(body)
    assert stats.disk.write_errors == 1
    assert disk_files(root) == []  # neither a torn entry nor a temp file

    # With room again, the next fetch is stored and the disk answers after it.
    resp = await client.get("/images/full.png")
    assert resp.status == 200 and resp.headers["X-Cache"] == "MISS"
    assert sha(await resp.read()) == sha(body)
    hit = await client.get("/images/full.png")
    assert hit.headers["X-Cache"] == "HIT-DISK"
    assert sha(await hit.read()) == sha(body)
    assert len(origin_gets(s3_proxy, "full.png")) == 2
    assert stats.disk.write_errors == 1


# --- single-flight: cancellation, failures, lock timeout ----------------------------


@pytest.mark.timeout(20)
async def test_leader_client_disconnect_does_not_fail_waiters(serve, s3_config, s3, s3_proxy):
    body = png(12, (40, 40))
    s3.put("dc.png", body)
    # handler_cancellation: a disconnect cancels the leader's handler outright
    app, base = await serve(s3_config(endpoint=s3_proxy.url), handler_cancellation=True)
    url = f"{base}/images/dc.png"
    s3_proxy.delay_first_byte(1.0)
    async with (aiohttp.ClientSession(timeout=TIMEOUT) as leader_session,
                aiohttp.ClientSession(timeout=TIMEOUT) as others):
        leader = asyncio.create_task(get(leader_session, url))
        await until(lambda: len(origin_gets(s3_proxy, "dc.png")) == 1)
        waiters = [asyncio.create_task(get(others, url)) for _ in range(5)]
        await until(lambda: app[PARTS].stats.disk.misses == 6)  # all of them reached the flight
        await asyncio.sleep(0.05)
        leader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await leader
        await leader_session.close()  # the leader's connection is gone
        results = await asyncio.gather(*waiters)
        assert [(status, layer) for status, layer, _, _ in results] == [(200, "COALESCED")] * 5
        assert {sha(b) for *_, b in results} == {sha(body)}
        status, layer, _, got = await get(others, url)
        assert (status, layer, sha(got)) == (200, "HIT-MEMORY", sha(body))
    assert len(origin_gets(s3_proxy, "dc.png")) == 1


@pytest.mark.timeout(20)
async def test_cancelled_or_impatient_callers_do_not_cancel_the_fetch(gateway_client, s3_config,
                                                                      s3, s3_proxy):
    body = png(13, (40, 40))
    s3.put("cx.png", body)
    client = await gateway_client(s3_config(endpoint=s3_proxy.url))
    service = service_of(client)
    s3_proxy.delay_first_byte(0.8)

    leader = asyncio.create_task(service.get("cx.png"))
    await until(lambda: len(origin_gets(s3_proxy, "cx.png")) == 1)
    joiner = asyncio.create_task(service.get("cx.png"))
    with pytest.raises(TimeoutError):  # a waiter that gives up
        await asyncio.wait_for(service.get("cx.png"), 0.1)
    leader.cancel()  # the caller that started the fetch goes away
    with contextlib.suppress(asyncio.CancelledError):
        await leader
    served = await joiner
    assert served.layer.value == "COALESCED"
    assert sha(served.entry.body) == sha(body)  # type: ignore[union-attr]
    assert len(origin_gets(s3_proxy, "cx.png")) == 1

    # A lone caller cancelled mid-fetch: the fetch still completes and is cached.
    s3.put("lone.png", body)
    lone = asyncio.create_task(service.get("lone.png"))
    await until(lambda: len(origin_gets(s3_proxy, "lone.png")) == 1)
    lone.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await lone
    await until(lambda: not service.flights.in_flight(service.cache.key_for("lone.png")))
    resp = await client.get("/images/lone.png")
    assert resp.headers["X-Cache"] == "HIT-MEMORY"
    assert sha(await resp.read()) == sha(body)
    assert len(origin_gets(s3_proxy, "lone.png")) == 1


@pytest.mark.timeout(20)
@pytest.mark.parametrize("retries", [0, 2])
async def test_failed_fetch_reaches_every_waiter_and_is_not_cached(gateway_client, s3_config,
                                                                   s3, s3_proxy, retries):
    body = png(14, (40, 40))
    s3.put("fail.png", body)
    client = await gateway_client(s3_config(endpoint=s3_proxy.url,
                                            origin={"retries": retries}))
    s3_proxy.fail_with(500, b"<Error><Code>InternalError</Code></Error>")
    s3_proxy.delay_first_byte(0.3)  # the burst joins the one failing fetch

    async def status() -> int:
        resp = await client.get("/images/fail.png")
        await resp.read()
        return resp.status

    statuses = await asyncio.gather(*(status() for _ in range(20)))
    assert statuses == [502] * 20
    # one flight for the burst: its first attempt and the origin's own retries
    assert len(origin_gets(s3_proxy, "fail.png")) == 1 + retries
    assert stats_of(client).origin_fetches == 1
    assert stats_of(client).origin_errors == 1

    s3_proxy.heal()
    resp = await client.get("/images/fail.png")
    assert resp.status == 200 and resp.headers["X-Cache"] == "MISS"
    assert sha(await resp.read()) == sha(body)
    assert len(origin_gets(s3_proxy, "fail.png")) == 2 + retries


@pytest.mark.timeout(20)
async def test_hung_fetch_releases_waiters_after_lock_timeout(gateway_client, s3_config, s3,
                                                              s3_proxy):
    body = png(15, (40, 40))
    s3.put("hang.png", body)
    client = await gateway_client(s3_config(endpoint=s3_proxy.url,
                                            fetch={"lock_timeout": 0.5},
                                            origin={"read_timeout": 5}))
    s3_proxy.delay_first_byte(3)

    async def timed() -> tuple[int, float]:
        started = time.monotonic()
        resp = await client.get("/images/hang.png")
        await resp.read()
        return resp.status, time.monotonic() - started

    results = await asyncio.gather(*(timed() for _ in range(5)))
    assert [status for status, _ in results] == [504] * 5
    # a bound for "nobody hangs until the origin answers (3 s)", not a speed claim
    assert max(elapsed for _, elapsed in results) < 2.5
    assert len(origin_gets(s3_proxy, "hang.png")) == 1

    s3_proxy.heal()
    resp = await client.get("/images/hang.png")
    assert resp.status == 200
    assert sha(await resp.read()) == sha(body)
    assert len(origin_gets(s3_proxy, "hang.png")) == 2  # a fresh flight, not the hung one
