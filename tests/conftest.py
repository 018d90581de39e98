"""Fixtures shared by every test: real Redis, real S3 (moto), a fault proxy,
gateway subprocesses and picture bytes. The machinery is in tests/support/.

    redis_server   session  RedisServer: .url .port stop() start() kill() pause() resume()
    redis_url      function "redis://127.0.0.1:N/0" of an empty, running redis_server
    redis          function an asyncio redis client of redis_url
    s3_server      session  S3Server: .endpoint; AWS_* set to the dummy "testing" keys
    s3             function S3Bucket, a fresh bucket: .bucket .endpoint .put() .delete()
                            .get() .presign() .env()
    s3_proxy       function FaultProxy in front of s3_server: .url .count() .gets()
                            fail_with() refuse() delay_first_byte() slow_body() ... heal()
    spawn_gateway  function spawn_gateway(env, **kw) -> started GatewayProcess, stopped after
    make_image     function the tests.support.images.make_image function
    png_bytes      function a 32x32 PNG
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.support.gateway_process import GatewayProcess
from tests.support.images import make_image as _make_image
from tests.support.proxy import FaultProxy
from tests.support.redis_server import RedisServer
from tests.support.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Bucket, S3Server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session (free port, no persistence)."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """An asyncio client of that empty Redis, for tests that read or write it directly."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The URL of an empty, running Redis: restarted/resumed if a test stopped it."""
    redis_server.ensure_running()
    redis_server.flushall()
    yield redis_server.url
    redis_server.resume()  # never leave it SIGSTOPped for the next test


AWS_ENV = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 on a free port; for the session, AWS_* hold the dummy credentials."""
    aws_dir = tmp_path_factory.mktemp("aws")
    env = {
        **AWS_ENV,
        # no developer's ~/.aws profile, region or endpoint leaks into the tests
        "AWS_CONFIG_FILE": str(aws_dir / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(aws_dir / "credentials"),
    }
    saved = {name: os.environ.get(name) for name in [*env, "AWS_PROFILE", "AWS_SESSION_TOKEN"]}
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.update(env)
    server = S3Server()
    try:
        yield server
    finally:
        server.close()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def s3(s3_server: S3Server) -> Iterator[S3Bucket]:
    """A fresh, uniquely named bucket on the moto server; emptied and deleted after."""
    bucket = s3_server.bucket()
    yield bucket
    bucket.destroy()


@pytest.fixture
def s3_proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    """A counting, fault-injecting proxy in front of s3_server (its own thread)."""
    proxy = FaultProxy(s3_server.endpoint)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def spawn_gateway() -> Iterator[Callable[..., GatewayProcess]]:
    """spawn_gateway(env, **GatewayProcess kwargs): a started gateway, stopped after."""
    started: list[GatewayProcess] = []

    def spawn(env: Mapping[str, str] | None = None, **kwargs: Any) -> GatewayProcess:
        process = GatewayProcess(env, **kwargs)
        started.append(process)
        return process.start()

    yield spawn
    for process in started:
        process.close()


@pytest.fixture
def make_image() -> Callable[..., bytes]:
    """make_image(fmt="PNG", size=(32, 32), color=None, seed=0) -> bytes."""
    return _make_image


@pytest.fixture
def png_bytes() -> bytes:
    return _make_image("PNG")
