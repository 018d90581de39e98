"""NegativeCache: misses remembered for a TTL from when the origin was asked, bounded
by bytes (oldest first), and an accounting that never undercounts the real memory."""

from __future__ import annotations

import sys
import tracemalloc

import pytest

from gateway.cache.negative import ENTRY_OVERHEAD, NegativeCache

T0 = 1_700_000_000.0


def test_a_miss_is_remembered_for_the_ttl_from_when_the_origin_was_asked() -> None:
    cache = NegativeCache(ttl=30, max_bytes=10_000)
    cache.remember("0::a.png", T0)
    assert cache.since("0::a.png", T0 + 29.9) == T0
    assert cache.since("0::b.png", T0) is None
    assert cache.since("0::a.png", T0 + 30) is None
    assert len(cache) == 0 and cache.size_bytes == 0  # an expired entry is dropped


def test_another_version_is_another_key() -> None:
    cache = NegativeCache(ttl=30, max_bytes=10_000)
    cache.remember("0::a.png", T0)
    assert cache.since("1::a.png", T0) is None


def test_forget_and_clear_give_the_bytes_back() -> None:
    cache = NegativeCache(ttl=30, max_bytes=10_000)
    cache.remember("0::a.png", T0)
    cache.remember("0::b.png", T0)
    cache.remember("0::b.png", T0 + 1)  # again: replaced, not counted twice
    assert len(cache) == 2
    cache.forget("0::a.png")
    cache.forget("0::never.png")
    assert cache.since("0::a.png", T0) is None and cache.since("0::b.png", T0) == T0 + 1
    assert cache.size_bytes == sys.getsizeof("0::b.png") + ENTRY_OVERHEAD
    cache.clear()
    assert len(cache) == 0 and cache.size_bytes == 0


@pytest.mark.parametrize(("ttl", "max_bytes"), [(0, 10_000), (30, 0)])
def test_zero_ttl_or_zero_bytes_turns_it_off(ttl: float, max_bytes: int) -> None:
    cache = NegativeCache(ttl=ttl, max_bytes=max_bytes)
    assert not cache.enabled
    cache.remember("0::a.png", T0)
    assert cache.since("0::a.png", T0) is None and len(cache) == 0


def test_the_bound_drops_the_oldest_first() -> None:
    one = sys.getsizeof("0::k0000.png") + ENTRY_OVERHEAD
    cache = NegativeCache(ttl=30, max_bytes=10 * one)
    for i in range(25):
        cache.remember(f"0::k{i:04}.png", T0 + i)
        assert cache.size_bytes <= cache.max_bytes
    assert len(cache) == 10
    assert cache.since("0::k0014.png", T0 + 24) is None
    assert cache.since("0::k0015.png", T0 + 24) == T0 + 15


def test_a_key_bigger_than_the_bound_is_not_kept() -> None:
    cache = NegativeCache(ttl=30, max_bytes=ENTRY_OVERHEAD + 10)
    cache.remember("x" * 100, T0)
    assert len(cache) == 0 and cache.size_bytes == 0


@pytest.mark.parametrize("key_length", [8, 60, 600])
def test_the_accounting_covers_the_memory_really_used(key_length: int) -> None:
    cache = NegativeCache(ttl=30, max_bytes=1 << 30)
    keys = [f"0::{i:0{key_length}}" for i in range(5000)]  # made before measuring...
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for key in keys:
            cache.remember(key, T0)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # ...so the strings' own bytes, which the cache keeps alive, are added here.
    used += sum(sys.getsizeof(k) for k in keys)
    assert cache.size_bytes >= used
