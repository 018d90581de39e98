"""The Redis client create_app builds makes one attempt per call: RedisLink's back-off
is the retry policy, so a call is bounded by redis.socket_timeout while Redis is down."""

from __future__ import annotations

import contextlib

import pytest

from gateway.config_load import from_mapping
from gateway.web.app import _redis


async def test_one_attempt_per_call() -> None:
    config = from_mapping({}, {"GATEWAY_REDIS_URL": "redis://127.0.0.1:9/0",
                               "GATEWAY_CLUSTER_SECRET": "x" * 40})
    async with contextlib.AsyncExitStack() as stack:
        link = _redis(config, stack)
        assert link.client is not None
        retry = link.client.get_retry()
        assert retry is not None and retry.get_retries() == 0


async def test_a_refused_call_fails_once(monkeypatch: pytest.MonkeyPatch) -> None:
    config = from_mapping({}, {"GATEWAY_REDIS_URL": "redis://127.0.0.1:9/0",
                               "GATEWAY_CLUSTER_SECRET": "x" * 40})
    attempts = 0
    async with contextlib.AsyncExitStack() as stack:
        link = _redis(config, stack)
        assert link.client is not None
        pool = link.client.connection_pool
        original = pool.connection_class._connect

        async def counting(self: object) -> None:
            nonlocal attempts
            attempts += 1
            await original(self)  # type: ignore[arg-type]

        monkeypatch.setattr(pool.connection_class, "_connect", counting)
        assert await link.guarded(lambda r: r.get("k"), "down") == "down"
        assert attempts == 1
        assert link.health.state == "down"
