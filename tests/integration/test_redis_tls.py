"""TLS to Redis (``rediss://``) against redis-server's own TLS port, with a throwaway CA
made here: the server's certificate is verified against ``redis.ssl_ca_file``, and a
client certificate (``redis.ssl_cert_file`` / ``ssl_key_file``) is presented to a
server that asks for one (``tls-auth-clients yes``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.cluster.connect import open_redis
from gateway.cluster.redis import keys_for
from gateway.config import RedisConfig
from gateway.config_load import load
from tests.support import free_port
from tests.support.fakes import until
from tests.support.images import noise_png as png, sha
from tests.support.redis_server import RedisServer
from tests.support.tls import Issued, ThrowawayCA

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class TlsRedis:
    server: RedisServer  # its plain port, for the test's own checks
    tls_port: int
    ca: ThrowawayCA
    client: Issued

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.tls_port}/0"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    folder: Path = tmp_path_factory.mktemp("redis-tls")
    ca = ThrowawayCA(folder)
    server_cert = ca.issue("redis-server", hosts=["127.0.0.1", "localhost"])
    tls_port = free_port()
    server = RedisServer(args=[
        "--tls-port", str(tls_port), "--tls-cert-file", str(server_cert.cert_file),
        "--tls-key-file", str(server_cert.key_file), "--tls-ca-cert-file", str(ca.cert_file),
        "--tls-auth-clients", "yes"])
    try:
        yield TlsRedis(server, tls_port, ca, ca.issue("gateway"))
    finally:
        server.close()


async def ping(config: RedisConfig) -> bool:
    async with contextlib.AsyncExitStack() as stack:
        client = open_redis(config, stack)
        assert client is not None
        return bool(await client.ping())


async def test_with_the_ca_and_a_client_certificate_redis_answers(tls_redis: TlsRedis) -> None:
    assert await ping(RedisConfig(url=tls_redis.url, ssl_ca_file=str(tls_redis.ca.cert_file),
                                  ssl_cert_file=str(tls_redis.client.cert_file),
                                  ssl_key_file=str(tls_redis.client.key_file)))


@pytest.mark.parametrize("case", ["no client certificate", "another CA", "plain text",
                                  "a certificate of another CA"])
async def test_what_tls_must_refuse_is_refused(tls_redis: TlsRedis, tmp_path: Path,
                                               case: str) -> None:
    other = ThrowawayCA(tmp_path, "another CA")
    client, ca = tls_redis.client, tls_redis.ca
    settings: dict[str, str] = {"url": tls_redis.url, "ssl_ca_file": str(ca.cert_file),
                "ssl_cert_file": str(client.cert_file), "ssl_key_file": str(client.key_file)}
    if case == "no client certificate":
        settings.update(ssl_cert_file="", ssl_key_file="")
    elif case == "another CA":  # the server's certificate is not trusted
        settings["ssl_ca_file"] = str(other.cert_file)
    elif case == "plain text":
        settings = {"url": f"redis://127.0.0.1:{tls_redis.tls_port}/0"}
    else:  # the server does not trust the client's certificate
        stranger = other.issue("stranger")
        settings.update(ssl_cert_file=str(stranger.cert_file),
                        ssl_key_file=str(stranger.key_file))
    # Time enough for a handshake on a loaded machine: a refusal, not a timeout.
    with pytest.raises((RedisConnectionError, OSError)):
        await ping(RedisConfig(**settings, connect_timeout=10.0, socket_timeout=10.0))


async def test_a_gateway_over_tls_purges_through_redis(tls_redis: TlsRedis, spawn_gateway,
                                                       s3, s3_proxy) -> None:
    env = {**s3.env(s3_proxy.url), "GATEWAY_REDIS_URL": tls_redis.url,
           "GATEWAY_REDIS_SSL_CA_FILE": str(tls_redis.ca.cert_file),
           "GATEWAY_REDIS_SSL_CERT_FILE": str(tls_redis.client.cert_file),
           "GATEWAY_REDIS_SSL_KEY_FILE": str(tls_redis.client.key_file),
           "GATEWAY_ADMIN_TOKEN": TOKEN, "GATEWAY_SERVER_ACCESS_LOG": "false"}
    a, b = spawn_gateway(env), spawn_gateway(env)
    s3.put("t.png", png(1))
    async with aiohttp.ClientSession() as session:
        for gw in (a, b):
            async with session.get(f"{gw.url}/images/t.png") as resp:
                assert resp.status == 200 and sha(await resp.read()) == sha(png(1))
            async with session.get(f"{gw.url}/readyz") as resp:
                assert (await resp.json())["checks"]["redis"] == "ok"
        s3.put("t.png", png(2))
        async with session.delete(f"{a.url}/admin/images/t.png", headers=AUTH) as resp:
            assert (await resp.json())["propagated"] is True

        async def b_has_it() -> bool:
            async with session.get(f"{b.url}/images/t.png") as resp:
                return sha(await resp.read()) == sha(png(2))

        await until(b_has_it, timeout=5)
    # It went through this Redis (its TLS port is the only one the gateways were given).
    plain = Redis(port=tls_redis.server.port)
    try:
        assert await plain.exists(keys_for(load(None, env)).version("t.png")) == 1
    finally:
        await plain.aclose()
