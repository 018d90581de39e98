"""A subscription that hears nothing because the network drops packets is no
subscription: the bus pings on it, and an unanswered ping is a gap (found by
tests/integration/test_ha_partitions.py: a silent partition breaks no socket)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.cluster.bus import InvalidationBus
from tests.support.fakes import until
from tests.support.redis_server import RedisServer

from .conftest import MakeLink
from .test_bus import BOUND, subscribed


@pytest.fixture
async def bus(make_link: MakeLink) -> AsyncIterator[InvalidationBus]:
    bus = InvalidationBus(make_link(), retry_interval=0.05)
    yield bus
    await bus.close()


async def test_a_subscription_that_goes_silent_is_a_gap(bus: InvalidationBus,
                                                        redis_server: RedisServer) -> None:
    bus.identity_interval, bus.pong_timeout = 0.1, 0.3
    heard = await subscribed(bus)
    assert heard.gaps == 1
    redis_server.pause()  # connections stay open, nothing answers: like dropped packets
    try:
        await until(lambda: not bus.subscribed.is_set(), timeout=BOUND)
    finally:
        redis_server.resume()
    await asyncio.wait_for(bus.subscribed.wait(), BOUND)
    assert heard.gaps == 2 and len(heard.resyncs) == 2  # cached copies are revalidated


async def test_an_answered_ping_keeps_the_subscription(bus: InvalidationBus) -> None:
    bus.identity_interval, bus.pong_timeout = 0.05, 0.5
    heard = await subscribed(bus)
    await asyncio.sleep(1.0)  # twenty pings, each answered
    assert heard.gaps == 1 and bus.subscribed.is_set()
