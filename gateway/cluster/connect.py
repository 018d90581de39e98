"""The one place that builds Redis clients: a plain URL, Sentinel, TLS.

Every client makes one attempt per call (``Retry(NoBackoff(), 0)``): redis-py's
default retries, with back-off up to a second, would stretch a call far past
``redis.socket_timeout`` while Redis is down; RedisLink's back-off is the retry policy.

With Sentinel, everything (commands, pub/sub, the lease) goes to the master that the
sentinels name, found again on every new connection, so a failover is followed by
the next connection after it. Nothing is read from replicas: a replica lags its
master, and a purge's version read back from one could be the version before the
purge (read-your-purge would break).
"""

from __future__ import annotations

import contextlib
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from gateway.config import RedisConfig


def tls_options(redis: RedisConfig) -> dict[str, Any]:
    """redis-py's TLS arguments: the server's certificate is always verified (by the
    system's CAs, or ``ssl_ca_file``), its host name too."""
    options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if redis.ssl_ca_file:
        options["ssl_ca_certs"] = redis.ssl_ca_file
    if redis.ssl_cert_file:
        options["ssl_certfile"] = redis.ssl_cert_file
        options["ssl_keyfile"] = redis.ssl_key_file
    return options


def _timeouts(redis: RedisConfig, socket_timeout: float | None) -> dict[str, Any]:
    return {"socket_timeout": socket_timeout or redis.socket_timeout,
            "socket_connect_timeout": redis.connect_timeout,
            "retry": Retry(NoBackoff(), 0)}


def open_redis(redis: RedisConfig, stack: contextlib.AsyncExitStack,
               socket_timeout: float | None = None) -> Redis | None:
    """The client for ``redis`` (None: no Redis configured), closed with ``stack``."""
    if not redis.configured:
        return None
    common = _timeouts(redis, socket_timeout)
    tls = tls_options(redis) if redis.url.startswith("rediss://") else {}
    if not redis.sentinels:
        client = Redis.from_url(redis.url, **common, **tls)
        stack.push_async_callback(client.aclose)
        return client
    # The URL gives what the master needs besides its address: user, password, db.
    from_url = parse_url(redis.url) if redis.url else {}
    auth: dict[str, Any] = {name: from_url[name] for name in ("username", "password", "db")
                            if name in from_url}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        [_address(item) for item in redis.sentinels],
        # The sentinels answer in the same time budget and, with rediss://, over TLS;
        # they have no password of their own here (sentinel's requirepass is rare).
        sentinel_kwargs={**common, **({"ssl": True, **tls} if tls else {})},
        **common)
    master: Redis = sentinel.master_for(redis.sentinel_master, **auth,
                                        **({"ssl": True, **tls} if tls else {}))
    stack.push_async_callback(sentinel.aclose)
    stack.push_async_callback(master.aclose)
    return master


def _address(item: str) -> tuple[str, int]:
    host, _, port = item.rpartition(":")
    return host.strip("[]"), int(port)
