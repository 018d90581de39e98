"""The HA settings of Redis: Sentinel (redis.sentinels, redis.sentinel_master) and TLS
(redis.ssl_*), checked at start-up, and the clients cluster/connect.py builds from them."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedSSLConnection

from gateway.cluster.connect import open_redis
from gateway.config import ConfigError, RedisConfig
from gateway.config_load import load

SECRET = {"GATEWAY_CLUSTER_SECRET": "c" * 32}
SENTINEL = {"GATEWAY_REDIS_SENTINELS": "10.0.0.1:26379, 10.0.0.2:26379,[::1]:26380",
            "GATEWAY_REDIS_SENTINEL_MASTER": "mymaster", **SECRET}


def error_for(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load(None, environ=environ)
    return str(info.value)


def test_sentinels_are_a_comma_separated_list_and_count_as_redis() -> None:
    config = load(None, environ={**SENTINEL, "GATEWAY_SERVER_WORKERS": "2"})
    assert config.redis.sentinels == ("10.0.0.1:26379", "10.0.0.2:26379", "[::1]:26380")
    assert config.redis.configured and not config.redis.url
    # Replicas sign what they share through Redis: Sentinel needs the secret too.
    assert error_for({k: v for k, v in SENTINEL.items() if k not in SECRET}).startswith(
        "cluster.secret: required")


@pytest.mark.parametrize(("environ", "start"), [
    ({**SENTINEL, "GATEWAY_REDIS_SENTINELS": "10.0.0.1"}, "redis.sentinels: '10.0.0.1'"),
    ({**SENTINEL, "GATEWAY_REDIS_SENTINELS": "a b:1"}, "redis.sentinels: 'a b:1'"),
    ({**SENTINEL, "GATEWAY_REDIS_SENTINEL_MASTER": "my master"},
     "redis.sentinel_master: 'my master'"),
    ({"GATEWAY_REDIS_SENTINEL_MASTER": "mymaster", **SECRET}, "redis.sentinel_master: set with"),
    ({"GATEWAY_REDIS_SENTINELS": "h:1", **SECRET}, "redis.sentinel_master: set with"),
    ({"GATEWAY_REDIS_SSL_CA_FILE": "/nonexistent.pem"}, "redis.ssl_ca_file: '/nonexistent.pem'"),
    ({**SENTINEL, "GATEWAY_CLUSTER_LEASE_TTL": "10"}, "cluster.lease_ttl: 10.0 must be below"),
    ({**SENTINEL, "GATEWAY_FETCH_LOCK_TIMEOUT": "5"}, "cluster.lease_ttl: 8.0 must be below"),
])
def test_bad_ha_settings_stop_the_start(environ: dict[str, str], start: str) -> None:
    assert error_for(environ).startswith(start)


def test_without_redis_there_is_no_lease_to_bound() -> None:
    load(None, environ={"GATEWAY_FETCH_LOCK_TIMEOUT": "0.5"})


def test_tls_files_need_rediss_and_a_certificate_needs_its_key(tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    pem.write_text("x")
    plain = {"GATEWAY_REDIS_URL": "redis://r:6379/0", **SECRET}
    assert error_for({**plain, "GATEWAY_REDIS_SSL_CA_FILE": str(pem)}).startswith(
        "redis.ssl_ca_file: the redis.ssl_* files need a rediss://")
    tls = {"GATEWAY_REDIS_URL": "rediss://r:6379/0", **SECRET}
    assert error_for({**tls, "GATEWAY_REDIS_SSL_CERT_FILE": str(pem)}).startswith(
        "redis.ssl_cert_file: needs redis.ssl_key_file")
    load(None, environ={**tls, "GATEWAY_REDIS_SSL_CA_FILE": str(pem),
                        "GATEWAY_REDIS_SSL_CERT_FILE": str(pem),
                        "GATEWAY_REDIS_SSL_KEY_FILE": str(pem)})


async def test_no_redis_no_client() -> None:
    async with contextlib.AsyncExitStack() as stack:
        assert open_redis(RedisConfig(), stack) is None


async def test_a_rediss_url_verifies_the_server() -> None:
    async with contextlib.AsyncExitStack() as stack:
        client = open_redis(RedisConfig(url="rediss://r.example:6380/2"), stack)
        assert client is not None
        pool = client.connection_pool
        assert pool.connection_class is SSLConnection
        assert pool.connection_kwargs["ssl_cert_reqs"] == "required"
        assert pool.connection_kwargs["ssl_check_hostname"] is True
        assert pool.connection_kwargs["db"] == 2


async def test_sentinel_takes_password_db_and_tls_from_the_url() -> None:
    redis = RedisConfig(url="rediss://:s3cret@ignored:1/3", sentinels=("10.0.0.1:26379",),
                        sentinel_master="mymaster", socket_timeout=0.5)
    async with contextlib.AsyncExitStack() as stack:
        client = open_redis(redis, stack)
        assert client is not None
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool) and pool.is_master
        assert pool.service_name == "mymaster"
        assert pool.connection_class is SentinelManagedSSLConnection
        kwargs = pool.connection_kwargs
        assert (kwargs["password"], kwargs["db"], kwargs["socket_timeout"]) == ("s3cret", 3, 0.5)
        # One attempt per call: RedisLink's back-off is the retry policy.
        assert kwargs["retry"].get_retries() == 0
        sentinels = pool.sentinel_manager.sentinels
        assert [(s.connection_pool.connection_kwargs["host"],
                 s.connection_pool.connection_kwargs["port"]) for s in sentinels] == [
            ("10.0.0.1", 26379)]
