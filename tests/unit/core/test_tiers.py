"""TieredCache on a real MemoryCache over a real DiskCache (and over NoDisk)."""

from __future__ import annotations

import pytest

from gateway.cache.disk import DiskCache
from gateway.cache.tiers import TieredCache
from gateway.model import Blob, Entry, FileBlob, Layer
from tests.support.fakes import FakeClock, blob, body_of, record_handed_out

from .conftest import MEMORY_BYTES, MakeTiers

K = "0::a.png"
BIG = bytes(range(256)) * 20  # over OBJECT_CAP: memory refuses it, the disk hands a FileBlob


@pytest.fixture
def handed_out(tiers: TieredCache, monkeypatch: pytest.MonkeyPatch) -> list[Entry]:
    """Every entry the disk layer hands to the TieredCache, to check it closes them."""
    return record_handed_out(tiers.disk, monkeypatch)


def closed(entry: Entry) -> bool:
    assert isinstance(entry, FileBlob)
    return entry.file.closed


async def on_disk(tiers: TieredCache, key: str) -> bytes | None:
    entry = await tiers.disk.get(key)
    if entry is None:
        return None
    try:
        return body_of(entry)
    finally:
        entry.close()


# -- lookup ----------------------------------------------------------------------


async def test_lookup_asks_memory_before_disk(tiers: TieredCache, clock: FakeClock) -> None:
    tiers.memory.put_nowait(K, blob(b"memory"))
    await tiers.disk.put(K, blob(b"disk"))
    found = await tiers.lookup(K, clock())
    assert found.hit is not None and found.stale is None
    assert found.hit.layer is Layer.MEMORY and body_of(found.hit.entry) == b"memory"


async def test_disk_hit_is_promoted_into_memory(tiers: TieredCache, clock: FakeClock) -> None:
    await tiers.disk.put(K, blob(b"disk"))
    found = await tiers.lookup(K, clock())
    assert found.hit is not None and found.hit.layer is Layer.DISK
    assert body_of(found.hit.entry) == b"disk"
    assert body_of(tiers.in_memory(K)) == b"disk"
    again = await tiers.lookup(K, clock())
    assert again.hit is not None and again.hit.layer is Layer.MEMORY


async def test_a_lookup_says_whether_a_disk_missed(make_tiers: MakeTiers,
                                                  clock: FakeClock) -> None:
    """The service counts disk misses from this: never without a disk."""
    with_disk, without = await make_tiers(disk=True), await make_tiers(disk=False)
    for tiers, missed in ((with_disk, True), (without, False)):
        assert (await tiers.lookup(K, clock())).disk_missed is missed
        await tiers.store(K, blob(b"pixels", ttl=10, now=clock()))
        assert not (await tiers.lookup(K, clock())).disk_missed  # a hit
        expired = await tiers.lookup(K, clock() + 11)
        assert expired.hit is None and expired.disk_missed is missed
        assert expired.stale is not None
        expired.stale.close()


async def test_the_disk_is_a_readiness_check_when_there_is_one(make_tiers: MakeTiers) -> None:
    tiers = await make_tiers(disk=True)
    checks = tiers.checks()
    assert list(checks) == ["disk"] and await checks["disk"]()
    assert (await make_tiers(disk=False)).checks() == {}


async def test_fresh_disk_copy_beats_an_expired_memory_copy(tiers: TieredCache,
                                                            clock: FakeClock) -> None:
    tiers.memory.put_nowait(K, blob(b"old", ttl=10))
    await tiers.disk.put(K, blob(b"new", now=clock() + 20))
    clock.advance(15)
    found = await tiers.lookup(K, clock())
    assert found.hit is not None and found.hit.layer is Layer.DISK
    assert body_of(found.hit.entry) == b"new" and body_of(tiers.in_memory(K)) == b"new"


async def test_entry_over_the_memory_cap_is_served_from_disk_as_an_open_file(
        tiers: TieredCache, clock: FakeClock) -> None:
    await tiers.store(K, blob(BIG))
    assert tiers.in_memory(K) is None
    found = await tiers.lookup(K, clock())
    assert found.hit is not None and found.hit.layer is Layer.DISK
    entry = found.hit.entry
    assert isinstance(entry, FileBlob) and not entry.file.closed
    assert body_of(entry) == BIG
    entry.close()
    assert tiers.in_memory(K) is None  # never promoted


async def test_nothing_anywhere(tiers: TieredCache, clock: FakeClock) -> None:
    found = await tiers.lookup(K, clock())
    assert found.hit is None and found.stale is None


async def test_expired_copies_memory_one_is_stale_disk_one_closed(
        tiers: TieredCache, clock: FakeClock, handed_out: list[Entry]) -> None:
    tiers.memory.put_nowait(K, blob(b"memory", ttl=10))
    await tiers.disk.put(K, blob(BIG, ttl=10))
    clock.advance(11)
    found = await tiers.lookup(K, clock())
    assert found.hit is None
    assert isinstance(found.stale, Blob) and found.stale.body == b"memory"
    assert len(handed_out) == 1 and closed(handed_out[0])


async def test_expired_copy_only_on_disk_is_stale_and_left_open(
        tiers: TieredCache, clock: FakeClock) -> None:
    await tiers.disk.put(K, blob(BIG, ttl=10))
    clock.advance(11)
    found = await tiers.lookup(K, clock())
    assert found.hit is None and isinstance(found.stale, FileBlob)
    assert not found.stale.file.closed and body_of(found.stale) == BIG  # the caller closes it
    found.stale.close()


async def test_expired_disk_copy_is_not_promoted(tiers: TieredCache, clock: FakeClock) -> None:
    await tiers.disk.put(K, blob(b"old", ttl=10))
    clock.advance(11)
    found = await tiers.lookup(K, clock())
    assert found.hit is None and body_of(found.stale) == b"old"
    assert tiers.in_memory(K) is None


# -- fresh_on_disk, has_fresh, any_copy ----------------------------------------------


async def test_fresh_on_disk(tiers: TieredCache, clock: FakeClock,
                             handed_out: list[Entry]) -> None:
    assert await tiers.fresh_on_disk(K) is None
    await tiers.disk.put(K, blob(b"disk", ttl=10))
    assert body_of(await tiers.fresh_on_disk(K)) == b"disk"
    assert tiers.in_memory(K) is None
    clock.advance(11)
    assert await tiers.fresh_on_disk(K) is None


async def test_fresh_on_disk_closes_a_file_it_does_not_hand_out(
        tiers: TieredCache, handed_out: list[Entry]) -> None:
    await tiers.disk.put(K, blob(BIG))
    assert await tiers.fresh_on_disk(K) is None
    assert len(handed_out) == 1 and closed(handed_out[0])


async def test_has_fresh_in_memory(tiers: TieredCache, clock: FakeClock) -> None:
    tiers.memory.put_nowait(K, blob(b"memory", ttl=10))
    assert await tiers.has_fresh(K)
    clock.advance(11)
    assert not await tiers.has_fresh(K)


@pytest.mark.parametrize("body", [b"small", BIG], ids=["blob", "file"])
async def test_has_fresh_on_disk_promotes_nothing_and_closes(
        tiers: TieredCache, clock: FakeClock, handed_out: list[Entry], body: bytes) -> None:
    await tiers.disk.put(K, blob(body, ttl=10))
    assert await tiers.has_fresh(K)
    assert tiers.in_memory(K) is None
    clock.advance(11)
    assert not await tiers.has_fresh(K)
    if body is BIG:
        assert len(handed_out) == 2 and all(closed(e) for e in handed_out)


async def test_any_copy_returns_expired_copies_without_promoting(
        tiers: TieredCache, clock: FakeClock) -> None:
    assert await tiers.any_copy(K) is None
    await tiers.disk.put(K, blob(b"disk", ttl=10))
    clock.advance(11)
    assert body_of(await tiers.any_copy(K)) == b"disk"
    assert tiers.in_memory(K) is None
    tiers.memory.put_nowait(K, blob(b"memory", ttl=1, now=clock() - 5))
    assert body_of(await tiers.any_copy(K)) == b"memory"


# -- writes ------------------------------------------------------------------------


async def test_store_writes_both_layers(tiers: TieredCache) -> None:
    await tiers.store(K, blob(b"pixels"))
    assert body_of(tiers.in_memory(K)) == b"pixels"
    assert await on_disk(tiers, K) == b"pixels"


async def test_store_of_a_large_entry_goes_to_disk_only(tiers: TieredCache) -> None:
    await tiers.store(K, blob(BIG))
    assert tiers.in_memory(K) is None and len(tiers.memory) == 0
    assert await on_disk(tiers, K) == BIG


async def test_remember_is_memory_only(tiers: TieredCache) -> None:
    tiers.remember(K, blob(b"variant"))
    assert body_of(tiers.in_memory(K)) == b"variant"
    assert await on_disk(tiers, K) is None


async def test_adopt_writes_disk_when_missing(tiers: TieredCache) -> None:
    await tiers.adopt(K, blob(b"theirs"))
    assert body_of(tiers.in_memory(K)) == b"theirs"
    assert await on_disk(tiers, K) == b"theirs"


async def test_adopt_keeps_a_copy_already_on_disk(tiers: TieredCache,
                                                  handed_out: list[Entry]) -> None:
    await tiers.disk.put(K, blob(BIG))  # written by a process sharing the folder
    await tiers.adopt(K, blob(b"theirs"))
    assert body_of(tiers.in_memory(K)) == b"theirs"
    assert len(handed_out) == 1 and closed(handed_out[0])
    assert await on_disk(tiers, K) == BIG


async def test_renew_gives_both_layers_the_new_freshness(tiers: TieredCache,
                                                         clock: FakeClock) -> None:
    held = blob(b"pixels", ttl=10)
    await tiers.store(K, held)
    clock.advance(20)
    meta = held.meta.revalidated(clock(), 60)
    renewed = await tiers.renew(K, held, meta)
    assert isinstance(renewed, Blob) and renewed.body == b"pixels" and renewed.meta == meta
    memory = tiers.in_memory(K)
    assert memory is not None and memory.meta == meta
    disk = await tiers.disk.get(K)
    assert disk is not None and disk.meta == meta


async def test_renew_of_an_open_file_keeps_the_file(tiers: TieredCache,
                                                    clock: FakeClock) -> None:
    await tiers.store(K, blob(BIG, ttl=10))
    clock.advance(20)
    held = (await tiers.lookup(K, clock())).stale
    assert isinstance(held, FileBlob)
    meta = held.meta.revalidated(clock(), 60)
    renewed = await tiers.renew(K, held, meta)
    assert isinstance(renewed, FileBlob) and renewed.meta == meta
    assert renewed.file is held.file and renewed.offset == held.offset
    assert tiers.in_memory(K) is None
    found = await tiers.lookup(K, clock())
    assert found.hit is not None and found.hit.layer is Layer.DISK
    assert found.hit.entry.meta == meta
    found.hit.entry.close()
    held.close()


# -- purge, clear, gauges -----------------------------------------------------------


async def test_purge_moves_the_version_forward(tiers: TieredCache) -> None:
    assert tiers.key_for("a.png") == "0::a.png"
    assert await tiers.purge("a.png") is True
    assert tiers.version_of("a.png") == 1 and tiers.key_for("a.png", "w64") == "1:w64:a.png"
    assert await tiers.purge("a.png", 40) is True  # another replica's newer version
    assert tiers.version_of("a.png") == 40
    assert await tiers.purge("a.png", 12) is True  # an older one: still a new key
    assert tiers.version_of("a.png") == 41
    assert tiers.version_of("b.png") == 0


async def test_purge_drops_every_variant_from_both_layers(tiers: TieredCache) -> None:
    keys = [tiers.key_for("a.png"), tiers.key_for("a.png", "w64"), tiers.key_for("a.png", "x")]
    for key in keys:
        await tiers.store(key, blob(key.encode()))
    await tiers.disk.put("0:big:a.png", blob(BIG))
    other = tiers.key_for("b.png")
    await tiers.store(other, blob(b"other"))
    assert await tiers.purge("a.png")
    for key in [*keys, "0:big:a.png"]:
        assert tiers.in_memory(key) is None and await on_disk(tiers, key) is None
    assert body_of(tiers.in_memory(other)) == b"other" and await on_disk(tiers, other) == b"other"


async def test_purge_with_the_current_version_is_a_no_op(tiers: TieredCache) -> None:
    assert await tiers.purge("a.png", 7)
    key = tiers.key_for("a.png")
    await tiers.store(key, blob(b"pixels"))
    assert await tiers.purge("a.png", 7) is False  # our own purge coming back
    assert tiers.version_of("a.png") == 7
    assert tiers.in_memory(key) is not None and await on_disk(tiers, key) == b"pixels"


async def test_clear_empties_both_layers_and_counts(tiers: TieredCache,
                                                    clock: FakeClock) -> None:
    await tiers.store("0::a.png", blob(b"a"))
    await tiers.store("0::b.png", blob(b"b"))
    await tiers.store("0::c.png", blob(BIG))
    assert await tiers.clear() == (2, 3)
    assert len(tiers.memory) == 0 and tiers.memory.size_bytes == 0
    assert isinstance(tiers.disk, DiskCache) and tiers.disk.entry_count == 0
    for key in ("0::a.png", "0::b.png", "0::c.png"):
        found = await tiers.lookup(key, clock())
        assert found.hit is None and found.stale is None


async def test_gauges_with_disk(tiers: TieredCache) -> None:
    await tiers.store("0::a.png", blob(b"abc"))
    await tiers.store("0::b.png", blob(BIG))
    gauges = tiers.gauges()
    assert isinstance(tiers.disk, DiskCache)
    assert gauges == {"memory.bytes": 3, "memory.entries": 1, "memory.limit": MEMORY_BYTES,
                      "disk.bytes": tiers.disk.size_bytes, "disk.entries": 2,
                      "disk.limit": 10_000_000}
    assert gauges["disk.bytes"] > len(BIG) + 3  # bodies plus headers


# -- without a disk ------------------------------------------------------------------


async def test_without_disk_memory_is_the_only_layer(make_tiers: MakeTiers,
                                                     clock: FakeClock) -> None:
    tiers = await make_tiers(disk=False)
    assert tiers.checks() == {}
    await tiers.store(K, blob(b"pixels", ttl=10))
    await tiers.store("0::big.png", blob(BIG))
    found = await tiers.lookup(K, clock())
    assert found.hit is not None and found.hit.layer is Layer.MEMORY
    assert (await tiers.lookup("0::big.png", clock())).hit is None  # kept nowhere
    assert await tiers.has_fresh(K) and await tiers.fresh_on_disk(K) is None
    clock.advance(11)
    stale = await tiers.lookup(K, clock())
    assert stale.hit is None and body_of(stale.stale) == b"pixels"
    assert tiers.gauges() == {"memory.bytes": 6, "memory.entries": 1,
                              "memory.limit": MEMORY_BYTES}
    assert await tiers.purge("a.png") and tiers.in_memory(K) is None
    await tiers.store(K, blob(b"again"))
    assert await tiers.clear() == (1, 0)
