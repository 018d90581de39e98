"""One contract, every cache layer: the same cases run against each of them."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from gateway.cache.disk import DiskCache
from gateway.cache.memory import MemoryCache
from gateway.model import Blob, cache_key
from gateway.observe.counters import LayerCounters
from tests.support import fakes
from tests.support.fakes import T0, FakeClock

MAX_BYTES = 100_000
MAX_STALE = 100.0
TTL = 10.0
# Bodies this big dwarf the disk layer's per-file header (a few hundred bytes),
# so both layers keep the same number of them under MAX_BYTES: three fit, four do not.
BODY = 30_000


blob = partial(fakes.blob, ttl=TTL)


def body_of(tag: str, size: int = BODY) -> bytes:
    return (tag.encode() * size)[:size]


Layer = Any  # MemoryCache | DiskCache: the same get/put/delete/purge/clear + size_bytes
MakeLayer = Callable[..., Awaitable[Layer]]


@pytest.fixture(params=["memory", "disk"])
async def make_layer(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeLayer]:
    made: list[Layer] = []

    async def make(clock: Callable[[], float] | None = None, max_bytes: int = MAX_BYTES,
                   max_stale: float = MAX_STALE) -> Layer:
        clock = clock or FakeClock()
        counters = LayerCounters()
        layer: Layer
        if request.param == "memory":
            layer = MemoryCache(max_bytes, max_bytes, max_stale, counters=counters, clock=clock)
        else:
            layer = DiskCache(tmp_path / f"cache{len(made)}", max_bytes=max_bytes,
                              max_stale=max_stale, inline_max_bytes=max_bytes,
                              counters=counters, clock=clock)
            await layer.start()
            await layer.wait_scanned()
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.close()


async def present(layer: Layer, *keys: str) -> set[str]:
    return {key for key in keys if await layer.get(key) is not None}


async def test_put_get_delete_round_trip(make_layer: MakeLayer) -> None:
    layer = await make_layer()
    stored = blob(b"\x89PNG pixels")
    assert await layer.get("0::a.png") is None
    await layer.put("0::a.png", stored)
    got = await layer.get("0::a.png")
    assert type(got) is Blob
    assert got == stored
    assert layer.size_bytes >= len(stored.body)
    await layer.delete("0::a.png")
    assert await layer.get("0::a.png") is None
    assert layer.size_bytes == 0
    await layer.delete("0::a.png")  # deleting a missing key is fine


async def test_put_replaces_an_existing_entry(make_layer: MakeLayer) -> None:
    layer = await make_layer()
    await layer.put("0::a.png", blob(b"old"))
    new = blob(b"new bytes")
    await layer.put("0::a.png", new)
    assert await layer.get("0::a.png") == new
    assert len(await present(layer, "0::a.png")) == 1


async def test_purge_removes_every_variant_of_one_image_only(make_layer: MakeLayer) -> None:
    layer = await make_layer()
    mine = ["0::abc.png", "0:w64:abc.png", "3:w128:abc.png"]
    others = ["0::abc.png.bak", "0::abcd.png", "0:w64:xyz.png"]
    for key in mine + others:
        await layer.put(key, blob(key.encode()))
    assert await layer.purge("abc.png") == 3
    assert await present(layer, *mine, *others) == set(others)
    assert await layer.purge("abc.png") == 0
    assert await layer.purge("nothing.png") == 0


async def test_purge_of_a_key_holding_slashes_and_colons(make_layer: MakeLayer) -> None:
    layer = await make_layer()
    mine = [cache_key("a/b:c.png", 0), cache_key("a/b:c.png", 7, "w64")]
    others = [cache_key("a", 0), cache_key("a/b", 0), cache_key("b:c.png", 0),
              cache_key("a/b:c.png/d", 0), cache_key("0:a/b:c.png", 0)]
    for key in mine + others:
        await layer.put(key, blob(key.encode()))
    assert await layer.purge("a/b:c.png") == 2
    assert await present(layer, *mine, *others) == set(others)


async def test_eviction_is_least_recently_used(make_layer: MakeLayer) -> None:
    layer = await make_layer()
    for key in ("0::a", "0::b", "0::c"):
        await layer.put(key, blob(body_of(key)))
    assert await layer.get("0::a") is not None  # a is now the most recently used
    await layer.put("0::d", blob(body_of("d")))
    assert await present(layer, "0::a", "0::c", "0::d") == {"0::a", "0::c", "0::d"}
    assert await layer.get("0::b") is None
    assert layer.counters.evictions == 1


async def test_size_bound_holds_after_every_put(make_layer: MakeLayer) -> None:
    layer = await make_layer()
    rng = random.Random(7)
    for i in range(60):
        key = f"img{rng.randrange(20)}.png/0/w{i % 3}"
        await layer.put(key, blob(rng.randbytes(rng.randrange(1, 40_000))))
        assert 0 < layer.size_bytes <= MAX_BYTES
    assert layer.counters.evictions > 0


async def test_entry_over_the_bound_is_not_stored(make_layer: MakeLayer) -> None:
    layer = await make_layer()
    await layer.put("0::small", blob(b"small"))
    await layer.put("0::big", blob(body_of("b")))
    await layer.put("0::big", blob(bytes(MAX_BYTES + 1)))
    assert await layer.get("0::big") is None  # and the old copy of that key is gone too
    assert await layer.get("0::small") is not None  # nothing else was evicted for it
    assert layer.counters.evictions == 0
    assert layer.size_bytes <= MAX_BYTES


async def test_expired_entries_served_until_max_stale(make_layer: MakeLayer) -> None:
    clock = FakeClock()
    layer = await make_layer(clock=clock)
    stored = blob(b"pixels")  # expires at T0 + TTL
    await layer.put("0::a", stored)
    clock.now = T0 + TTL + MAX_STALE - 1  # expired, still within max-stale
    got = await layer.get("0::a")
    assert got == stored
    assert not got.meta.fresh(clock.now)
    clock.now = T0 + TTL + MAX_STALE + 1  # past max-stale: gone
    assert await layer.get("0::a") is None
    assert layer.size_bytes == 0
    clock.now = T0  # and gone for good, not merely hidden
    assert await layer.get("0::a") is None


async def test_clear(make_layer: MakeLayer) -> None:
    layer = await make_layer()
    keys = [f"0::k{i}.png" for i in range(5)]
    for key in keys:
        await layer.put(key, blob(key.encode()))
    await layer.clear()
    assert await present(layer, *keys) == set()
    assert layer.size_bytes == 0
    await layer.put("0::again", blob(b"x"))
    assert await layer.get("0::again") is not None
