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
from gateway.model import Blob
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
    assert await layer.get("a.png/0/") is None
    await layer.put("a.png/0/", stored)
    got = await layer.get("a.png/0/")
    assert type(got) is Blob
    assert got == stored
    assert layer.size_bytes >= len(stored.body)
    await layer.delete("a.png/0/")
    assert await layer.get("a.png/0/") is None
    assert layer.size_bytes == 0
    await layer.delete("a.png/0/")  # deleting a missing key is fine


async def test_put_replaces_an_existing_entry(make_layer: MakeLayer) -> None:
    layer = await make_layer()
    await layer.put("a.png/0/", blob(b"old"))
    new = blob(b"new bytes")
    await layer.put("a.png/0/", new)
    assert await layer.get("a.png/0/") == new
    assert len(await present(layer, "a.png/0/")) == 1


async def test_purge_removes_every_variant_of_one_image_only(make_layer: MakeLayer) -> None:
    layer = await make_layer()
    mine = ["abc.png/0/", "abc.png/0/w64", "abc.png/3/w128"]
    others = ["abc.png.bak/0/", "abcd.png/0/", "xyz.png/0/w64"]
    for key in mine + others:
        await layer.put(key, blob(key.encode()))
    assert await layer.purge("abc.png") == 3
    assert await present(layer, *mine, *others) == set(others)
    assert await layer.purge("abc.png") == 0
    assert await layer.purge("nothing.png") == 0


async def test_eviction_is_least_recently_used(make_layer: MakeLayer) -> None:
    layer = await make_layer()
    for key in ("a/0/", "b/0/", "c/0/"):
        await layer.put(key, blob(body_of(key)))
    assert await layer.get("a/0/") is not None  # a is now the most recently used
    await layer.put("d/0/", blob(body_of("d")))
    assert await present(layer, "a/0/", "c/0/", "d/0/") == {"a/0/", "c/0/", "d/0/"}
    assert await layer.get("b/0/") is None
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
    await layer.put("small/0/", blob(b"small"))
    await layer.put("big/0/", blob(body_of("b")))
    await layer.put("big/0/", blob(bytes(MAX_BYTES + 1)))
    assert await layer.get("big/0/") is None  # and the old copy of that key is gone too
    assert await layer.get("small/0/") is not None  # nothing else was evicted for it
    assert layer.counters.evictions == 0
    assert layer.size_bytes <= MAX_BYTES


async def test_expired_entries_served_until_max_stale(make_layer: MakeLayer) -> None:
    clock = FakeClock()
    layer = await make_layer(clock=clock)
    stored = blob(b"pixels")  # expires at T0 + TTL
    await layer.put("a/0/", stored)
    clock.now = T0 + TTL + MAX_STALE - 1  # expired, still within max-stale
    got = await layer.get("a/0/")
    assert got == stored
    assert not got.meta.fresh(clock.now)
    clock.now = T0 + TTL + MAX_STALE + 1  # past max-stale: gone
    assert await layer.get("a/0/") is None
    assert layer.size_bytes == 0
    clock.now = T0  # and gone for good, not merely hidden
    assert await layer.get("a/0/") is None


async def test_clear(make_layer: MakeLayer) -> None:
    layer = await make_layer()
    keys = [f"k{i}.png/0/" for i in range(5)]
    for key in keys:
        await layer.put(key, blob(key.encode()))
    await layer.clear()
    assert await present(layer, *keys) == set()
    assert layer.size_bytes == 0
    await layer.put("again/0/", blob(b"x"))
    assert await layer.get("again/0/") is not None
