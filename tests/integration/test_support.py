"""The test support pieces do what they say: real Redis, moto, the fault proxy."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiobotocore.session import get_session
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tests.support import free_port
from tests.support.gateway_process import GatewayProcess
from tests.support.proxy import FaultProxy
from tests.support.redis_server import RedisServer
from tests.support.s3_server import BOTO_CONFIG, S3Bucket
from tests.support.tcp_proxy import TcpProxy
from tools.make_samples import write_samples

TIMEOUT = aiohttp.ClientTimeout(total=10)


async def fetch(url: str, **kwargs: object) -> tuple[int, bytes]:
    async with (aiohttp.ClientSession(timeout=TIMEOUT) as session,
                session.get(url, **kwargs) as resp):  # type: ignore[arg-type]
        return resp.status, await resp.read()


# --- Redis ----------------------------------------------------------------


async def test_redis_answers_ping(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        assert await client.ping() is True
        await client.set("k", "v")
        assert await client.get("k") == b"v"
    finally:
        await client.aclose()


async def test_redis_url_starts_empty(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        assert await client.dbsize() == 0
    finally:
        await client.aclose()


async def test_redis_restarts_on_the_same_port(redis_server: RedisServer,
                                               redis_url: str) -> None:
    port = redis_server.port
    redis_server.stop()
    assert not redis_server.ping()
    client = aioredis.from_url(redis_url, socket_connect_timeout=0.5)
    try:
        with pytest.raises(aioredis.ConnectionError):
            await client.ping()
        redis_server.start()
        assert redis_server.port == port
        assert await client.ping() is True  # the same URL works again
    finally:
        await client.aclose()


async def test_redis_kill_then_fixture_brings_it_back(redis_server: RedisServer) -> None:
    redis_server.kill()
    assert not redis_server.running
    redis_server.ensure_running()
    assert redis_server.ping()


async def test_redis_pause_blackholes_then_resume(redis_server: RedisServer,
                                                  redis_url: str) -> None:
    client = aioredis.from_url(redis_url, socket_timeout=0.3, socket_connect_timeout=0.3)
    try:
        redis_server.pause()
        started = time.monotonic()
        with pytest.raises((aioredis.TimeoutError, aioredis.ConnectionError)):
            await client.ping()
        assert time.monotonic() - started < 3
        redis_server.resume()
        assert await client.ping() is True
    finally:
        redis_server.resume()
        await client.aclose()


async def test_tcp_proxy_cuts_a_client_off_and_heals(redis_server: RedisServer,
                                                     redis_url: str) -> None:
    proxy = TcpProxy(redis_server.port)
    client = aioredis.from_url(f"redis://127.0.0.1:{proxy.port}/0", socket_timeout=0.5,
                               socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    try:
        assert await client.ping() is True
        proxy.cut()
        for _ in range(2):  # the open connection is dropped, a new one refused
            with pytest.raises(aioredis.ConnectionError):
                await client.ping()
        assert redis_server.ping()  # only this client was cut off
        proxy.heal()
        assert await client.ping() is True
    finally:
        await client.aclose()
        proxy.close()


def test_missing_redis_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support import redis_server as module

    monkeypatch.setattr(module.shutil, "which", lambda name: None)
    monkeypatch.setattr(module, "SEARCH_DIRS", ())
    with pytest.raises(RuntimeError, match="make system-deps"):
        RedisServer()


# --- S3 through the proxy ---------------------------------------------------


async def test_put_then_get_through_the_proxy(s3: S3Bucket, s3_proxy: FaultProxy,
                                              png_bytes: bytes) -> None:
    s3.put("a.png", png_bytes)
    # objects are private: anonymous GETs get 403 from moto, presigned ones pass
    status, body = await fetch(s3.presign("a.png", endpoint=s3_proxy.url))
    assert (status, body) == (200, png_bytes)
    assert s3_proxy.count("GET", f"/{s3.bucket}/a.png") == 1
    assert s3_proxy.gets("a.png") == 1
    s3_proxy.reset()
    assert s3_proxy.count() == 0


async def test_aiobotocore_through_the_proxy(s3: S3Bucket, s3_proxy: FaultProxy,
                                             make_image) -> None:  # type: ignore[no-untyped-def]
    data = make_image("JPEG", seed=3)
    session = get_session()
    async with session.create_client(
        "s3", endpoint_url=s3_proxy.url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing", config=BOTO_CONFIG,
    ) as client:
        await client.put_object(Bucket=s3.bucket, Key="dir/b c.jpg", Body=data,
                                ContentType="image/jpeg")
        head = await client.head_object(Bucket=s3.bucket, Key="dir/b c.jpg")
        assert head["ContentLength"] == len(data)
        assert head["ContentType"] == "image/jpeg"
        reply = await client.get_object(Bucket=s3.bucket, Key="dir/b c.jpg")
        async with reply["Body"] as stream:
            assert await stream.read() == data
    assert s3.get("dir/b c.jpg") == data
    # counted under the decoded path
    assert s3_proxy.count("PUT", f"/{s3.bucket}/dir/b c.jpg") == 1
    assert s3_proxy.count("HEAD", f"/{s3.bucket}/dir/b c.jpg") == 1
    assert s3_proxy.gets("b c.jpg") == 1


async def test_presigned_url_for_the_proxy_downloads_through_it(
        s3: S3Bucket, s3_proxy: FaultProxy, png_bytes: bytes) -> None:
    s3.put("signed.png", png_bytes)
    session = get_session()
    async with session.create_client(
        "s3", endpoint_url=s3_proxy.url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing", config=BOTO_CONFIG,
    ) as client:
        url = await client.generate_presigned_url(
            "get_object", Params={"Bucket": s3.bucket, "Key": "signed.png"}, ExpiresIn=300)
    assert url.startswith(f"{s3_proxy.url}/{s3.bucket}/signed.png?")
    assert "X-Amz-Signature=" in url  # SigV4
    status, body = await fetch(url)
    assert (status, body) == (200, png_bytes)
    seen = s3_proxy.requests()[-1]
    assert seen.header("Host") == f"127.0.0.1:{s3_proxy.port}"  # signed host, kept as is
    assert "X-Amz-Signature=" in seen.query
    # the sync helper signs the same way
    status, body = await fetch(s3.presign("signed.png", endpoint=s3_proxy.url))
    assert (status, body) == (200, png_bytes)


async def test_moto_answers_304_to_if_none_match(s3: S3Bucket, s3_proxy: FaultProxy,
                                                 png_bytes: bytes) -> None:
    """What the gateway's revalidation relies on; moto's limits documented here."""
    etag = s3.put("c.png", png_bytes)
    url = s3.presign("c.png", endpoint=s3_proxy.url)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        for header in (etag, etag.strip('"')):
            async with session.get(url, headers={"If-None-Match": header}) as resp:
                assert resp.status == 304
                assert resp.headers["ETag"] == etag
                assert await resp.read() == b""
        async with session.get(url, headers={"If-None-Match": '"other"'}) as resp:
            assert resp.status == 200
        # moto only matches one exact strong tag: no lists, no W/, no "*"
        for header in (f'"other", {etag}', f"W/{etag}", "*"):
            async with session.get(url, headers={"If-None-Match": header}) as resp:
                assert resp.status == 200, header
    assert s3_proxy.requests()[0].header("If-None-Match") == etag


# --- fault modes ------------------------------------------------------------


class Stored(NamedTuple):
    url: str  # presigned for the proxy
    path: str
    data: bytes


@pytest.fixture
def stored(s3: S3Bucket, s3_proxy: FaultProxy, make_image) -> Stored:  # type: ignore[no-untyped-def]
    data = make_image(size=(128, 128), seed=7)  # big enough to cut in half
    s3.put("f.png", data)
    return Stored(s3.presign("f.png", endpoint=s3_proxy.url), f"/{s3.bucket}/f.png", data)


async def test_fail_with_status_then_heal(s3_proxy: FaultProxy,
                                          stored: Stored) -> None:
    s3_proxy.fail_with(503, b"<Error><Code>SlowDown</Code></Error>")
    assert await fetch(stored.url) == (503, b"<Error><Code>SlowDown</Code></Error>")
    assert (await fetch(stored.url))[0] == 503
    s3_proxy.heal()
    assert await fetch(stored.url) == (200, stored.data)
    assert s3_proxy.count("GET", stored.path) == 3  # failed requests are counted too


async def test_fail_with_times_wears_off(s3_proxy: FaultProxy,
                                         stored: Stored) -> None:
    s3_proxy.fail_with(500, times=2)
    statuses = [(await fetch(stored.url))[0] for _ in range(3)]
    assert statuses == [500, 500, 200]


async def test_fail_with_match_hits_only_that_path(s3: S3Bucket, s3_proxy: FaultProxy,
                                                   stored: Stored) -> None:
    s3.put("other.png", b"x")
    s3_proxy.fail_with(503, match="f.png")
    assert (await fetch(stored.url))[0] == 503
    assert await fetch(s3.presign("other.png", endpoint=s3_proxy.url)) == (200, b"x")


async def test_refuse_makes_connect_fail_then_heal(s3_proxy: FaultProxy,
                                                   stored: Stored) -> None:
    port = s3_proxy.port
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        async with session.get(stored.url) as resp:  # a pooled keep-alive conn
            assert await resp.read() == stored.data
        s3_proxy.refuse()
        with pytest.raises(aiohttp.ClientConnectionError):
            async with session.get(stored.url) as resp:
                await resp.read()
    with pytest.raises(aiohttp.ClientConnectorError):
        await fetch(stored.url)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    s3_proxy.heal()
    assert s3_proxy.port == port
    assert await fetch(stored.url) == (200, stored.data)


async def test_delay_first_byte(s3_proxy: FaultProxy, stored: Stored) -> None:
    s3_proxy.delay_first_byte(0.5)
    started = time.monotonic()
    assert await fetch(stored.url) == (200, stored.data)
    assert time.monotonic() - started >= 0.5
    s3_proxy.delay_first_byte(5)
    with pytest.raises(asyncio.TimeoutError):
        await fetch(stored.url, timeout=aiohttp.ClientTimeout(total=0.3))
    s3_proxy.heal()
    started = time.monotonic()
    assert await fetch(stored.url) == (200, stored.data)
    assert time.monotonic() - started < 0.5


async def test_slow_body(s3_proxy: FaultProxy, stored: Stored) -> None:
    rate = len(stored.data) * 2  # the whole body in about half a second
    s3_proxy.slow_body(rate)
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        started = time.monotonic()
        async with session.get(stored.url) as resp:
            headers_after = time.monotonic() - started
            assert resp.status == 200
            assert await resp.read() == stored.data
        total = time.monotonic() - started
    assert headers_after < 0.3
    assert total >= 0.4


async def test_reset_mid_body(s3_proxy: FaultProxy, stored: Stored) -> None:
    s3_proxy.reset_mid_body()
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(stored.url) as resp:
        assert resp.status == 200
        assert resp.content_length == len(stored.data)
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    s3_proxy.heal()
    assert await fetch(stored.url) == (200, stored.data)


async def test_truncate_body(s3_proxy: FaultProxy, stored: Stored) -> None:
    s3_proxy.truncate_body()
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(stored.url) as resp:
        assert resp.status == 200
        assert resp.content_length == len(stored.data)
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    s3_proxy.heal()
    assert await fetch(stored.url) == (200, stored.data)


async def test_set_header_replaces_the_upstreams(s3_proxy: FaultProxy, stored: Stored) -> None:
    s3_proxy.set_header("Last-Modified", "Sun, 06 Nov 99999999999 08:49:37 GMT")
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(stored.url) as resp:
        assert resp.headers.getall("Last-Modified") == ["Sun, 06 Nov 99999999999 08:49:37 GMT"]
        assert await resp.read() == stored.data
    s3_proxy.heal()
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(stored.url) as resp:
        assert resp.headers["Last-Modified"].endswith(" GMT")
        assert "99999999999" not in resp.headers["Last-Modified"]


async def test_head_and_missing_objects_pass_through(s3: S3Bucket, s3_proxy: FaultProxy,
                                                     stored: Stored) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        async with session.head(stored.url) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Length"] == str(len(stored.data))
        async with session.get(s3.presign("nope.png", endpoint=s3_proxy.url)) as resp:
            assert resp.status == 404
            assert b"NoSuchKey" in await resp.read()


async def test_upstream_down_is_502(stored: Stored) -> None:
    with FaultProxy(f"http://127.0.0.1:{free_port()}") as proxy:
        status, body = await fetch(proxy.url + stored.path)
    assert status == 502
    assert b"upstream failed" in body


# --- the gateway as a process -------------------------------------------------


@pytest.fixture
def samples_dir(tmp_path: Path) -> Path:
    write_samples(tmp_path / "samples")
    return tmp_path / "samples"


async def test_gateway_process_serves_restarts_and_stops(
        spawn_gateway: Callable[..., GatewayProcess], samples_dir: Path) -> None:
    gateway = await asyncio.to_thread(
        spawn_gateway, {"GATEWAY_ORIGIN_ROOT": str(samples_dir)})
    assert gateway.running
    assert (await fetch(f"{gateway.url}/healthz"))[0] == 200
    status, body = await fetch(f"{gateway.url}/images/alice.png")
    assert (status, body) == (200, (samples_dir / "alice.png").read_bytes())
    port, pid = gateway.port, gateway.pid
    await asyncio.to_thread(gateway.restart)
    assert (gateway.port, gateway.running) == (port, True)
    assert gateway.pid != pid
    assert (await fetch(f"{gateway.url}/healthz"))[0] == 200
    assert await asyncio.to_thread(gateway.terminate) == 0
    assert not gateway.running
    assert str(port) in gateway.stderr_text()  # its log went to the file
    await gateway.astart()
    assert gateway.kill() == -9
    with pytest.raises(aiohttp.ClientConnectorError):
        await fetch(f"{gateway.url}/healthz")


def test_gateway_process_that_cannot_start_shows_its_stderr() -> None:
    gateway = GatewayProcess({"GATEWAY_MEMORY_MAX_BYTES": "-1"})
    try:
        with pytest.raises(RuntimeError, match=r"exited with \d+.*\n.*memory\.max_bytes"):
            gateway.start()
    finally:
        gateway.close()


async def test_everything_together(spawn_gateway: Callable[..., GatewayProcess],
                                   redis_url: str, s3: S3Bucket, s3_proxy: FaultProxy,
                                   png_bytes: bytes) -> None:
    """A gateway process on S3 via the proxy, with Redis: one origin GET per image."""
    s3.put("together.png", png_bytes)
    gateway = await asyncio.to_thread(
        spawn_gateway, {**s3.env(s3_proxy.url), "GATEWAY_REDIS_URL": redis_url})
    for _ in range(3):
        assert await fetch(f"{gateway.url}/images/together.png") == (200, png_bytes)
    assert s3_proxy.gets("together.png") == 1
