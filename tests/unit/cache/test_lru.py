"""ByteLRU: the book-keeping both cache layers share; BoundedLRU: the small maps'."""

from __future__ import annotations

from gateway.cache.lru import BoundedLRU, ByteLRU


def lru(max_bytes: int = 10) -> ByteLRU[str, bytes]:
    """Keys are ``image/variant``; a value weighs its length."""
    return ByteLRU(max_bytes, size_of=len, image_of=lambda key, _value: key.split("/")[0])


def eviction_order(cache: ByteLRU[str, bytes]) -> list[str]:
    """Every key, in the order ``evict`` takes them (least recently used first); the
    map is emptied one victim at a time, by lowering its bound below its size."""
    order = []
    while len(cache):
        cache.max_bytes = cache.size - 1
        order.extend(key for key, _ in cache.evict())
    return order


def test_eviction_takes_the_least_recently_used_first() -> None:
    cache = lru(9)
    for key in ("a/0", "b/0", "c/0"):
        cache.add(key, b"123")
    cache.touch("a/0")
    assert cache.get("b/0") == b"123"  # get alone does not count as a use
    cache.add("d/0", b"123")
    assert cache.evict() == [("b/0", b"123")]
    assert eviction_order(cache) == ["c/0", "a/0", "d/0"]


def test_evict_stops_within_the_bound() -> None:
    cache = lru(10)
    for i, size in enumerate([4, 4, 4, 4]):
        cache.add(f"img{i}/0", bytes(size))
    assert cache.size == 16
    assert [key for key, _ in cache.evict()] == ["img0/0", "img1/0"]
    assert cache.size == 8 <= cache.max_bytes
    assert len(cache) == 2
    assert cache.evict() == []


def test_replacing_a_key_updates_the_size_and_the_recency() -> None:
    cache = lru(100)
    cache.add("a/0", bytes(30))
    cache.add("b/0", bytes(5))
    cache.add("a/0", bytes(7))
    assert cache.size == 12
    assert len(cache) == 2
    assert cache.get("a/0") == bytes(7)
    assert eviction_order(cache) == ["b/0", "a/0"]


def test_pop_and_clear_keep_the_books() -> None:
    cache = lru(100)
    cache.add("a/0", b"xx")
    cache.add("a/1", b"yyy")
    assert cache.pop("a/0") == b"xx"
    assert cache.pop("a/0") is None
    assert cache.size == 3 and "a/0" not in cache and "a/1" in cache
    assert cache.keys_of("a") == ["a/1"]
    cache.clear()
    assert cache.size == 0 and len(cache) == 0 and cache.keys_of("a") == []


def test_keys_of_one_image_only() -> None:
    cache = lru(100)
    for key in ("abc/0", "abc/1", "abcd/0", "xyz/0"):
        cache.add(key, b"x")
    mine = cache.keys_of("abc")
    assert sorted(mine) == ["abc/0", "abc/1"]
    for key in mine:  # a copy: popping while walking it is fine
        cache.pop(key)
    assert cache.keys_of("abc") == []
    assert sorted(cache.keys_of("abcd") + cache.keys_of("xyz")) == ["abcd/0", "xyz/0"]
    assert cache.size == 2


def test_evicted_entries_leave_the_image_index() -> None:
    cache = lru(2)
    cache.add("a/0", b"x")
    cache.add("a/1", b"x")
    cache.add("b/0", b"x")
    assert cache.evict() == [("a/0", b"x")]
    assert cache.keys_of("a") == ["a/1"]


def test_add_older_puts_the_items_before_everything_present() -> None:
    cache = lru(100)
    cache.add("new/0", b"n")
    cache.add("used/0", b"u")
    cache.add_older([("old1/0", b"1"), ("used/0", b"stale"), ("old2/0", b"22"),
                     ("old1/0", b"again")])
    assert cache.get("used/0") == b"u"  # what was used since keeps its value
    assert cache.get("old1/0") == b"1"  # of repeated keys, the first wins
    assert cache.size == 1 + 1 + 1 + 2
    assert sorted(cache.keys_of("old1") + cache.keys_of("old2")) == ["old1/0", "old2/0"]
    assert eviction_order(cache) == ["old1/0", "old2/0", "new/0", "used/0"]


def test_add_older_into_an_empty_map_keeps_the_given_order() -> None:
    cache = lru(100)
    cache.add_older([("c/0", b"c"), ("a/0", b"a"), ("b/0", b"b")])
    assert eviction_order(cache) == ["c/0", "a/0", "b/0"]


# -- BoundedLRU ------------------------------------------------------------------------


def test_bounded_lru_drops_the_least_recently_used_when_over_its_count() -> None:
    seen: BoundedLRU[str, str] = BoundedLRU(2)
    seen.put("a", "1")
    seen.put("b", "2")
    assert seen.get("a") == "1"  # used: b is now the oldest
    seen.put("c", "3")
    assert (seen.peek("a"), seen.peek("b"), seen.peek("c")) == ("1", None, "3")
    assert len(seen) == seen.size == 2


def test_bounded_lru_peek_leaves_the_order_alone() -> None:
    fifo: BoundedLRU[str, float] = BoundedLRU(2)
    fifo.put("a", 0.0)
    fifo.put("b", 1.0)
    assert fifo.peek("a") == 0.0
    fifo.put("c", 2.0)
    assert fifo.peek("a") is None and fifo.peek("b") == 1.0
    fifo.put("b", 3.0)  # a store makes it the newest
    fifo.put("d", 4.0)
    assert fifo.peek("c") is None and fifo.peek("b") == 3.0


def test_bounded_lru_weighs_entries_with_size_of() -> None:
    sized: BoundedLRU[str, str] = BoundedLRU(10, lambda key, value: len(key) + len(value))
    assert not sized.put("k", "x" * 10)  # alone over the bound: not stored
    assert len(sized) == 0 and sized.size == 0
    assert sized.put("a", "1234") and sized.put("b", "1234")
    assert sized.size == 10
    sized.put("c", "1")
    assert sized.peek("a") is None and sized.size == 7
    assert sized.pop("b") == "1234" and sized.size == 2
    sized.clear()
    assert len(sized) == 0 and sized.size == 0
