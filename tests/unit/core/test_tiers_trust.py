"""TieredCache's trust instant and remembered misses, on a real memory + disk pair.

After ``distrust(since)`` no copy the origin confirmed before ``since`` is fresh, in
either layer, for any reader (lookup, has_fresh, fresh_on_disk); renewed copies
are. A remembered miss belongs to one version of the image and to the trusted era.
"""

from __future__ import annotations

from dataclasses import replace

from gateway.cache.negative import NegativeCache
from gateway.cache.tiers import TieredCache
from gateway.model import Blob
from tests.support.fakes import FakeClock, blob, body_of

from .conftest import MakeTiers

K = "0::a.png"


async def test_distrust_makes_older_copies_stale_in_both_layers(
        make_tiers: MakeTiers, clock: FakeClock) -> None:
    tiers = await make_tiers()
    await tiers.store(K, blob(b"pixels", now=clock()))
    await tiers.disk.put("0::b.png", blob(b"disk only", now=clock()))
    clock.advance(1)
    tiers.distrust(clock())
    for key, body in ((K, b"pixels"), ("0::b.png", b"disk only")):
        found = await tiers.lookup(key, clock())
        assert found.hit is None and body_of(found.stale) == body, key
        assert found.stale is not None and not tiers.trusted(found.stale.meta)
        found.stale.close()
        assert not await tiers.has_fresh(key)
        assert await tiers.fresh_on_disk(key) is None


async def test_a_renewed_copy_is_trusted_again(tiers: TieredCache, clock: FakeClock) -> None:
    old = blob(b"pixels", now=clock())
    await tiers.store(K, old)
    clock.advance(1)
    tiers.distrust(clock())
    clock.advance(1)
    await tiers.renew(K, old, old.meta.revalidated(clock(), 60))
    found = await tiers.lookup(K, clock())
    assert found.hit is not None and body_of(found.hit.entry) == b"pixels"
    await tiers.memory.clear()
    found = await tiers.lookup(K, clock())  # the disk copy got the new freshness too
    assert found.hit is not None and found.hit.entry.meta.stored_at == clock()


async def test_copies_confirmed_at_or_after_the_instant_stay_trusted(
        tiers: TieredCache, clock: FakeClock) -> None:
    tiers.distrust(clock())
    await tiers.store(K, blob(b"pixels", now=clock()))
    assert (await tiers.lookup(K, clock())).hit is not None


async def test_the_instant_never_moves_back(tiers: TieredCache, clock: FakeClock) -> None:
    tiers.distrust(clock() + 10)
    tiers.distrust(clock())
    assert tiers.trusted_since == clock() + 10


async def test_nothing_is_distrusted_by_default(tiers: TieredCache, clock: FakeClock) -> None:
    await tiers.store(K, Blob(replace(blob(b"old").meta, stored_at=0.0), b"old"))
    assert (await tiers.lookup(K, clock())).hit is not None


# -- remembered misses --------------------------------------------------------------------


async def with_negative(make_tiers: MakeTiers) -> TieredCache:
    tiers = await make_tiers()
    tiers.negative = NegativeCache(ttl=30, max_bytes=100_000)
    return tiers


async def test_a_miss_is_known_until_its_ttl(make_tiers: MakeTiers, clock: FakeClock) -> None:
    tiers = await with_negative(make_tiers)
    tiers.remember_missing(tiers.key_for("a.png"), clock())
    assert tiers.known_missing(tiers.key_for("a.png"), clock())
    assert not tiers.known_missing(tiers.key_for("b.png"), clock())
    assert not tiers.known_missing(tiers.key_for("a.png"), clock() + 30)


async def test_a_purge_ends_the_miss(make_tiers: MakeTiers, clock: FakeClock) -> None:
    tiers = await with_negative(make_tiers)
    tiers.remember_missing(tiers.key_for("a.png"), clock())
    await tiers.purge("a.png")
    assert not tiers.known_missing(tiers.key_for("a.png"), clock())
    assert len(tiers.negative) == 0  # forgotten, not just out of reach


async def test_a_miss_learned_under_an_older_version_is_not_known(
        make_tiers: MakeTiers, clock: FakeClock) -> None:
    tiers = await with_negative(make_tiers)
    key_before = tiers.key_for("a.png")
    await tiers.purge("a.png")  # e.g. an upload, while the origin's 404 was on its way
    tiers.remember_missing(key_before, clock())
    assert not tiers.known_missing(tiers.key_for("a.png"), clock())


async def test_distrust_ends_older_misses(make_tiers: MakeTiers, clock: FakeClock) -> None:
    tiers = await with_negative(make_tiers)
    tiers.remember_missing(tiers.key_for("a.png"), clock())
    clock.advance(1)
    tiers.distrust(clock())
    assert not tiers.known_missing(tiers.key_for("a.png"), clock())


async def test_clear_forgets_misses_and_gauges_show_them(make_tiers: MakeTiers,
                                                         clock: FakeClock) -> None:
    tiers = await with_negative(make_tiers)
    tiers.remember_missing(tiers.key_for("a.png"), clock())
    gauges = tiers.gauges()
    assert gauges["negative.entries"] == 1 and gauges["negative.limit"] == 100_000
    assert gauges["negative.bytes"] == tiers.negative.size_bytes > 0
    await tiers.clear()
    assert not tiers.known_missing(tiers.key_for("a.png"), clock())
    assert tiers.gauges()["negative.entries"] == 0
