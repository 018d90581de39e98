"""What only the disk layer promises: layout, verification, atomic writes, restarts."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import struct
import threading
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path

import pytest

from gateway import files as files_module
from gateway.cache.disk import DiskCache, jobs as jobs_module
from gateway.cache.disk.files import key_hash
from gateway.cache.disk.format import HEADER_SIZE, MAGIC, encode_header, read_meta
from gateway.cache.disk.jobs import TOUCH_INTERVAL, DiskJobs
from gateway.files import TEMP_PREFIX
from gateway.model import Blob, FileBlob, ObjectMeta
from gateway.observe.counters import LayerCounters
from tests.support import fakes
from tests.support.fakes import T0, FakeClock

TTL = 3600.0
MAX_STALE = 600.0
INLINE = 1000  # bodies above this come back as FileBlob


blob = partial(fakes.blob, ttl=TTL, origin_etag='"o1"')


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def temps_under(root: Path) -> list[Path]:
    return [p for p in files_under(root) if p.name.startswith(TEMP_PREFIX)]


MakeCache = Callable[..., Awaitable[DiskCache]]
#: The modules whose code opens cache files: the jobs, and the atomic write they use.
FILE_OPENERS = [jobs_module, files_module]


@pytest.fixture
async def make_cache(tmp_path: Path) -> AsyncIterator[MakeCache]:
    made: list[DiskCache] = []

    async def make(root: Path | None = None, *, scan: bool = True, start: bool = True,
                   **kwargs: object) -> DiskCache:
        options: dict[str, object] = dict(max_bytes=1_000_000, max_stale=MAX_STALE,
                                          inline_max_bytes=INLINE, counters=LayerCounters(),
                                          clock=FakeClock())
        options.update(kwargs)
        cache = DiskCache(root or tmp_path / "cache", **options)  # type: ignore[arg-type]
        made.append(cache)
        if start:
            await cache.start()
            if scan:
                await cache.wait_scanned()
        return cache

    yield make
    for cache in made:
        await cache.close()


@pytest.fixture
async def cache(make_cache: MakeCache) -> DiskCache:
    return await make_cache()


# -- layout ----------------------------------------------------------------


@pytest.mark.parametrize("key", ["0::abc.png", "3:w64:abc.png", "../../etc/passwd/0/",
                                 "/etc/passwd", "0::a\x00b", "..", "0::ünï"])
async def test_file_path_is_the_sharded_hash_of_the_key(cache: DiskCache, tmp_path: Path,
                                                        key: str) -> None:
    await cache.put(key, blob(b"pixels"))
    h = hashlib.sha256(key.encode()).hexdigest()
    expected = tmp_path / "cache" / h[0:2] / h[2:4] / h
    assert files_under(tmp_path) == [expected]
    assert cache.path_for(key) == expected
    assert await cache.get(key) == blob(b"pixels")


async def test_file_format_is_header_json_body(cache: DiskCache) -> None:
    stored = blob(b"the body")
    await cache.put("0::a.png", stored)
    raw = cache.path_for("0::a.png").read_bytes()
    magic, version, _reserved, meta_len, crc = struct.unpack(">4sHHII", raw[:HEADER_SIZE])
    assert (magic, version) == (MAGIC, 1)
    block = raw[HEADER_SIZE:HEADER_SIZE + meta_len]
    assert zlib.crc32(block) == crc
    assert b'"key":"0::a.png"' in block and b'"origin_etag":"\\"o1\\""' in block
    assert raw[HEADER_SIZE + meta_len:] == b"the body"


# -- verification ------------------------------------------------------------


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size - 3)


def _truncate_header(path: Path) -> None:
    os.truncate(path, 7)


def _empty(path: Path) -> None:
    os.truncate(path, 0)


def _zero_fill(path: Path) -> None:
    path.write_bytes(bytes(path.stat().st_size))


def _flip_body_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01
    path.write_bytes(bytes(raw))


def _flip_meta_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[HEADER_SIZE + 5] ^= 0x01
    path.write_bytes(bytes(raw))


def _tamper_meta_value(path: Path) -> None:
    """Still valid JSON, still the right sizes: only the metadata checksum can tell."""
    raw = path.read_bytes()
    assert raw.count(b"image/png") == 1
    path.write_bytes(raw.replace(b"image/png", b"image/svg"))


def _garbage(path: Path) -> None:
    path.write_bytes(b"GIF89a this is not a cache entry at all" * 40)


def _append(path: Path) -> None:
    with path.open("ab") as f:
        f.write(b"extra")


def _not_json(path: Path) -> None:
    block = b"{not json"
    body = path.read_bytes()[-1:]
    path.write_bytes(struct.pack(">4sHHII", MAGIC, 1, 0, len(block), zlib.crc32(block))
                     + block + body)


def _old_version(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[4:6] = b"\x00\x00"
    path.write_bytes(bytes(raw))


def _body_and_meta_consistently_swapped(path: Path) -> None:
    """Other bytes with a header claiming the original digest (tampering)."""
    raw = path.read_bytes()
    meta_len = struct.unpack(">I", raw[8:12])[0]
    body = raw[HEADER_SIZE + meta_len:]
    path.write_bytes(raw[:HEADER_SIZE + meta_len] + bytes(reversed(body)))


CORRUPTIONS = [_truncate, _truncate_header, _empty, _zero_fill, _flip_body_byte,
               _flip_meta_byte, _tamper_meta_value, _garbage, _append, _not_json, _old_version,
               _body_and_meta_consistently_swapped]


@pytest.mark.parametrize("size", [500, 5000], ids=["inline", "file"])
@pytest.mark.parametrize("damage", CORRUPTIONS, ids=lambda f: f.__name__.strip("_"))
async def test_damaged_file_is_dropped_not_served(cache: DiskCache,
                                                  caplog: pytest.LogCaptureFixture,
                                                  damage: Callable[[Path], None],
                                                  size: int) -> None:
    body = bytes(range(256)) * (size // 256) + b"tail"
    await cache.put("0::a.png", blob(body))
    path = cache.path_for("0::a.png")
    damage(path)
    with caplog.at_level(logging.WARNING, logger="gateway.cache.disk"):
        assert await cache.get("0::a.png") is None
    assert not path.exists()
    assert cache.counters.corrupt_dropped == 1
    assert cache.entry_count == 0 and cache.size_bytes == 0
    assert len(caplog.records) == 1


async def test_file_of_another_key_is_dropped(cache: DiskCache) -> None:
    await cache.put("0::b.png", blob(b"b's bytes"))
    wrong = cache.path_for("0::a.png")
    wrong.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cache.path_for("0::b.png"), wrong)  # what a hash collision would look like
    assert await cache.get("0::a.png") is None
    assert not wrong.exists()
    assert cache.counters.corrupt_dropped == 1
    assert await cache.get("0::b.png") == blob(b"b's bytes")


async def test_newer_format_version_is_a_miss_but_kept(cache: DiskCache) -> None:
    """During a rolling upgrade an old replica must not destroy the new one's files."""
    await cache.put("0::a.png", blob(b"pixels"))
    path = cache.path_for("0::a.png")
    raw = bytearray(path.read_bytes())
    raw[4:6] = b"\x00\x02"
    path.write_bytes(bytes(raw))
    assert await cache.get("0::a.png") is None
    assert path.exists()
    assert cache.counters.corrupt_dropped == 0


# -- large entries: FileBlob ------------------------------------------------


async def test_inline_limit_decides_blob_or_file(cache: DiskCache) -> None:
    await cache.put("0::small", blob(bytes(INLINE)))
    await cache.put("0::large", blob(bytes(INLINE + 1)))
    small = await cache.get("0::small")
    large = await cache.get("0::large")
    assert type(small) is Blob
    assert isinstance(large, FileBlob)
    large.file.close()


async def test_file_blob_serves_the_verified_bytes_even_after_replacement(
        cache: DiskCache) -> None:
    old = os.urandom(300_000)
    await cache.put("0::a.png", blob(old))
    got = await cache.get("0::a.png")
    assert isinstance(got, FileBlob)
    try:
        assert got.meta == blob(old).meta
        assert got.file.tell() == got.offset
        await cache.put("0::a.png", blob(os.urandom(300_000)))  # replaced on disk
        await cache.delete("0::a.png")  # and then removed
        assert not cache.path_for("0::a.png").exists()
        assert os.pread(got.file.fileno(), got.meta.size, got.offset) == old
        assert got.file.read() == old
    finally:
        got.file.close()


async def test_cancelled_get_does_not_leak_the_file(cache: DiskCache) -> None:
    await cache.put("0::a.png", blob(os.urandom(50_000)))
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        task = asyncio.create_task(cache.get("0::a.png"))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await cache.close()  # lets the executor finish the jobs whose callers went away
    cache._executor.shutdown(wait=True)
    assert len(os.listdir("/proc/self/fd")) <= fds


# -- expiry ---------------------------------------------------------------------


async def test_entry_past_max_stale_is_deleted_from_disk(make_cache: MakeCache) -> None:
    clock = FakeClock()
    cache = await make_cache(clock=clock)
    await cache.put("0::a.png", blob(b"x"))
    clock.now = T0 + TTL + MAX_STALE + 0.5
    assert await cache.get("0::a.png") is None
    assert not cache.path_for("0::a.png").exists()
    assert cache.counters.corrupt_dropped == 0


# -- writes ---------------------------------------------------------------------


async def test_put_leaves_no_temp_file_and_bound_holds_on_disk(make_cache: MakeCache,
                                                               tmp_path: Path) -> None:
    cache = await make_cache(max_bytes=50_000)
    for i in range(40):
        await cache.put(f"0::img{i}.png", blob(os.urandom(1000 + 300 * i % 9000)))
        on_disk = sum(p.stat().st_size for p in files_under(tmp_path))
        assert on_disk == cache.size_bytes <= 50_000
    assert temps_under(tmp_path) == []
    assert cache.counters.evictions > 0


async def test_write_error_where_a_file_blocks_the_shard(cache: DiskCache, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    key = "0::a.png"
    h = key_hash(key)
    (tmp_path / "cache" / h[0:2]).write_bytes(b"I am a file, not a folder")
    with caplog.at_level(logging.WARNING, logger="gateway.cache.disk"):
        await cache.put(key, blob(b"pixels"))
    assert cache.counters.write_errors == 1
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert await cache.get(key) is None
    assert cache.size_bytes == 0
    assert temps_under(tmp_path) == []


@pytest.mark.parametrize("failing", ["replace", "fsync", "open"])
async def test_write_error_no_space(cache: DiskCache, tmp_path: Path, failing: str,
                                    monkeypatch: pytest.MonkeyPatch,
                                    caplog: pytest.LogCaptureFixture) -> None:
    await cache.put("0::old.png", blob(b"old"))

    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    if failing == "open":
        for module in FILE_OPENERS:
            monkeypatch.setattr(module, "open", no_space, raising=False)
    else:
        monkeypatch.setattr(os, failing, no_space)
    with caplog.at_level(logging.WARNING, logger="gateway.cache.disk"):
        await cache.put("0::a.png", blob(b"pixels"))
        await cache.refresh("0::old.png", blob(b"old").meta.revalidated(T0 + 5, TTL))
    monkeypatch.undo()
    assert cache.counters.write_errors == 2
    assert len(caplog.records) == 2
    assert "No space left" in caplog.records[0].getMessage()
    assert temps_under(tmp_path) == []
    assert await cache.get("0::a.png") is None
    assert await cache.get("0::old.png") == blob(b"old")  # the old entry is untouched
    assert cache.entry_count == 1


async def test_cancelled_put_still_completes_and_is_indexed(cache: DiskCache,
                                                            tmp_path: Path) -> None:
    task = asyncio.create_task(cache.put("0::a.png", blob(os.urandom(100_000))))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await cache.close()  # waits for the write it shielded
    assert temps_under(tmp_path) == []
    assert cache.path_for("0::a.png").exists()
    assert cache.entry_count == 1
    assert cache.size_bytes == cache.path_for("0::a.png").stat().st_size


async def test_all_file_io_runs_in_the_executor_one_job_per_operation(
        cache: DiskCache, monkeypatch: pytest.MonkeyPatch) -> None:
    opened_on: list[int] = []
    real_open = open

    def spy_open(*args: object, **kwargs: object) -> object:
        opened_on.append(threading.get_ident())
        return real_open(*args, **kwargs)  # type: ignore[call-overload]

    submitted: list[object] = []
    real_submit = cache._executor.submit

    def spy_submit(fn: object, /, *args: object, **kwargs: object) -> object:
        submitted.append(fn)
        return real_submit(fn, *args, **kwargs)  # type: ignore[arg-type]

    for module in FILE_OPENERS:
        monkeypatch.setattr(module, "open", spy_open, raising=False)
    monkeypatch.setattr(cache._executor, "submit", spy_submit)
    await cache.put("0::a.png", blob(os.urandom(5000)))
    assert len(submitted) == 1
    got = await cache.get("0::a.png")
    assert isinstance(got, FileBlob)
    got.file.close()
    assert len(submitted) == 2
    assert await cache.get("0::small") is None
    assert len(submitted) == 3
    assert opened_on and threading.get_ident() not in opened_on


# -- refresh ------------------------------------------------------------------


async def test_refresh_replaces_metadata_and_keeps_body(cache: DiskCache, tmp_path: Path) -> None:
    body = os.urandom(3000)
    await cache.put("0::a.png", blob(body))
    inode = cache.path_for("0::a.png").stat().st_ino
    new_meta = blob(body).meta.revalidated(T0 + 7200, TTL)
    await cache.refresh("0::a.png", new_meta)
    got = await cache.get("0::a.png")
    assert isinstance(got, FileBlob)
    with got.file:
        assert got.meta == new_meta
        assert got.file.read() == body
    assert cache.path_for("0::a.png").stat().st_ino != inode  # a new file, renamed in place
    assert temps_under(tmp_path) == []
    assert cache.entry_count == 1


async def test_refresh_of_a_missing_entry_is_a_no_op(cache: DiskCache, tmp_path: Path) -> None:
    await cache.refresh("0::a.png", blob(b"x").meta)
    assert files_under(tmp_path) == []
    assert cache.entry_count == 0


async def test_refresh_with_other_bytes_is_ignored(cache: DiskCache) -> None:
    await cache.put("0::a.png", blob(b"old"))
    await cache.refresh("0::a.png", blob(b"new").meta)
    assert await cache.get("0::a.png") == blob(b"old")


async def test_refresh_of_a_corrupt_entry_drops_it(cache: DiskCache) -> None:
    await cache.put("0::a.png", blob(b"pixels"))
    _flip_body_byte(cache.path_for("0::a.png"))
    await cache.refresh("0::a.png", blob(b"pixels").meta.revalidated(T0 + 1, TTL))
    assert not cache.path_for("0::a.png").exists()
    assert cache.counters.corrupt_dropped == 1


# -- start-up -----------------------------------------------------------------


async def test_start_removes_temp_files_of_dead_writers_only(make_cache: MakeCache,
                                                             tmp_path: Path) -> None:
    root = tmp_path / "cache"
    shard = root / "ab" / "cd"
    shard.mkdir(parents=True)
    dead = [shard / f"{TEMP_PREFIX}dead", root / f"{TEMP_PREFIX}probe"]
    live = shard / f"{TEMP_PREFIX}live"
    foreign = [root / "README", shard / "notes.txt"]
    for path in [*dead, live, *foreign]:
        path.write_bytes(b"partial")
    # A writer in another process or replica holds an exclusive flock on its temp
    # file until it renames it; a crashed writer's lock is gone with it.
    with open(live, "rb") as writer:
        fcntl.flock(writer.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        cache = await make_cache(root, scan=False)
        # removed by start() itself, before the background scan, whatever their age
        assert [p for p in [*dead, live, *foreign] if p.exists()] == [live, *foreign]
    await cache.wait_scanned()
    assert cache.entry_count == 0


async def test_start_with_zero_grace_removes_every_temp(make_cache: MakeCache,
                                                        tmp_path: Path) -> None:
    shard = tmp_path / "cache" / "00" / "11"
    shard.mkdir(parents=True)
    (shard / f"{TEMP_PREFIX}x").write_bytes(b"partial")
    await make_cache(temp_grace=-1.0)
    assert temps_under(tmp_path) == []


async def test_restart_is_warm(make_cache: MakeCache, tmp_path: Path) -> None:
    first = await make_cache()
    keys = [f"0:w{i}:img{i}.png" for i in range(30)]
    for key in keys:
        await first.put(key, blob(key.encode() * 10))
    size = first.size_bytes
    await first.close()

    second = await make_cache()
    assert second.entry_count == 30
    assert second.size_bytes == size == sum(p.stat().st_size for p in files_under(tmp_path))
    assert await second.purge("img3.png") == 1
    assert await second.get("0:w4:img4.png") == blob(b"0:w4:img4.png" * 10)


async def test_scan_orders_recency_by_mtime(make_cache: MakeCache) -> None:
    first = await make_cache()
    keys = ["0::a", "0::b", "0::c", "0::d"]
    for key in keys:
        await first.put(key, blob(os.urandom(20_000)))
    entry_size = first.path_for("0::a").stat().st_size
    await first.close()
    base = os.stat(first.path_for("0::a")).st_mtime
    for age, key in zip([10, 40, 20, 30], keys, strict=True):  # oldest: b, then d, c, a
        os.utime(first.path_for(key), (base - age, base - age))

    second = await make_cache(max_bytes=entry_size * 4 + 100)
    await second.put("0::e", blob(os.urandom(20_000)))
    assert not second.path_for("0::b").exists()
    await second.put("0::f", blob(os.urandom(20_000)))
    assert not second.path_for("0::d").exists()
    assert {k for k in keys if second.path_for(k).exists()} == {"0::a", "0::c"}
    assert second.counters.evictions == 2


async def test_hit_refreshes_mtime_for_the_next_scan(cache: DiskCache) -> None:
    await cache.put("0::a", blob(b"x"))
    path = cache.path_for("0::a")
    old = path.stat().st_mtime - TOUCH_INTERVAL - 10
    os.utime(path, (old, old))
    assert await cache.get("0::a") is not None
    assert path.stat().st_mtime > old + TOUCH_INTERVAL


async def test_scan_shrinks_to_a_lowered_bound(make_cache: MakeCache) -> None:
    first = await make_cache()
    for i in range(10):
        await first.put(f"0::img{i}", blob(os.urandom(10_000)))
    await first.close()
    second = await make_cache(max_bytes=35_000)
    assert second.entry_count == 3
    assert second.counters.evictions == 7
    await second.close()  # waits for the evictions it started
    assert len(files_under(second.root)) == 3


async def test_namespaces_on_one_root_never_read_each_other(make_cache: MakeCache,
                                                           tmp_path: Path) -> None:
    """Two deployments, or this one before the namespace existed: the other's file of
    the same key is no hit and no purge of ours removes it, yet the scan counts it and
    the bound evicts it."""
    before = await make_cache()  # the layout without a namespace
    await before.put("0::a.png", blob(b"old layout" * 100))
    mine = await make_cache(namespace="d1")
    theirs = await make_cache(namespace="d2")
    await mine.put("0::a.png", blob(b"mine" * 100))
    await theirs.put("0::a.png", blob(b"theirs" * 100))
    assert await mine.get("0::a.png") == blob(b"mine" * 100)
    assert await theirs.get("0::a.png") == blob(b"theirs" * 100)
    assert len({before.path_for("0::a.png"), mine.path_for("0::a.png"),
                theirs.path_for("0::a.png")}) == 3
    for cache in (before, mine, theirs):
        await cache.close()
    on_disk = sum(p.stat().st_size for p in files_under(tmp_path))
    third = await make_cache(namespace="d3")
    assert await third.get("0::a.png") is None
    assert (third.entry_count, third.size_bytes) == (3, on_disk)
    # Its purge takes the layout before's copy, never another deployment's.
    assert await third.purge("a.png") == 1
    assert sorted(files_under(tmp_path)) == sorted([mine.path_for("0::a.png"),
                                                    theirs.path_for("0::a.png")])
    for namespace in ("", "d1", "d2"):  # the three files again
        again = await make_cache(namespace=namespace)
        await again.put("0::a.png", blob(b"x" * 400))
        await again.close()
    largest = max(p.stat().st_size for p in files_under(tmp_path))
    shrunk = await make_cache(namespace="d3", max_bytes=2 * largest + 1)
    assert shrunk.entry_count == 2 and shrunk.counters.evictions == 1


async def test_clear_removes_only_its_own_namespace(make_cache: MakeCache,
                                                    tmp_path: Path) -> None:
    """An operator's "clear the cache" on one deployment must not empty another's
    entries on a shared root (the layout before namespaces goes with it)."""
    before = await make_cache()
    await before.put("0::a.png", blob(b"old layout" * 100))
    await before.close()
    theirs = await make_cache(namespace="d2")
    await theirs.put("0::a.png", blob(b"theirs" * 100))
    await theirs.close()
    mine = await make_cache(namespace="d1")
    await mine.put("0::a.png", blob(b"mine" * 100))
    await mine.put("0::b.png", blob(b"mine too" * 100))
    await mine.clear()
    assert await mine.get("0::a.png") is None and mine.entry_count == 0
    assert files_under(tmp_path) == [theirs.path_for("0::a.png")]
    await mine.close()
    again = await make_cache(namespace="d2")
    assert await again.get("0::a.png") == blob(b"theirs" * 100)


def test_a_namespace_holds_no_separator() -> None:
    for bad in ("a/b", "a:b"):
        with pytest.raises(ValueError, match="namespace"):
            DiskCache(Path("/nonexistent"), max_bytes=1, max_stale=0, inline_max_bytes=0,
                      namespace=bad)


async def test_scan_drops_corrupt_and_long_expired_files(make_cache: MakeCache) -> None:
    first = await make_cache()
    await first.put("0::good", blob(b"good"))
    await first.put("0::bad", blob(b"bad"))
    await first.put("0::old", blob(b"old", now=T0 - TTL - MAX_STALE - 10))
    await first.put("0::moved", blob(b"moved"))
    await first.close()
    _flip_meta_byte(first.path_for("0::bad"))
    elsewhere = first.path_for("0::elsewhere")
    elsewhere.parent.mkdir(parents=True, exist_ok=True)
    first.path_for("0::moved").rename(elsewhere)

    second = await make_cache()
    assert second.entry_count == 1
    assert second.counters.corrupt_dropped == 2  # bad, and moved (its name is not its key's)
    assert files_under(second.root) == [second.path_for("0::good")]


@pytest.fixture
def scan_held(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """The start-up scan's job waits until the returned event is set."""
    release = threading.Event()
    real_scan_job = DiskJobs.scan

    def slow_scan_job(self: DiskJobs, *args: object) -> object:
        assert release.wait(timeout=10)
        return real_scan_job(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(DiskJobs, "scan", slow_scan_job)
    return release


async def test_start_does_not_wait_for_the_scan(make_cache: MakeCache,
                                                scan_held: threading.Event) -> None:
    first = await make_cache()
    await first.put("0::a.png", blob(b"a"))
    await first.put("0:w64:a.png", blob(b"a64"))
    await first.put("0::b.png", blob(b"b"))
    await first.close()

    second = await make_cache(scan=False)  # returns although the scan is blocked
    assert second.entry_count == 0
    assert await second.get("0::b.png") == blob(b"b")  # unscanned files are served
    assert second.entry_count == 1
    # A purge does not wait for the scan (it runs on the request path after an
    # origin 404); files of the image that the scan has not reached are still purged.
    assert await second.purge("a.png") == 0  # no a.png file known yet
    assert await second.get("0::a.png") is None
    assert not second.path_for("0::a.png").exists()
    stored_after = blob(b"a, new")
    await second.put("1::a.png", stored_after)  # stored after the purge: kept
    scan_held.set()
    await second.wait_scanned()
    assert await second.get("1::a.png") == stored_after
    await second.close()  # waits for the removals the scan started
    assert files_under(second.root) == sorted([second.path_for("1::a.png"),
                                               second.path_for("0::b.png")])
    assert second.entry_count == 2


async def test_a_purge_during_the_scan_spares_another_namespace(
        make_cache: MakeCache, scan_held: threading.Event) -> None:
    theirs = await make_cache(namespace="d2")
    await theirs.put("0::a.png", blob(b"theirs"))
    await theirs.close()

    mine = await make_cache(namespace="d1", scan=False)
    assert await mine.purge("a.png") == 0  # before the scan reached their file
    scan_held.set()
    await mine.wait_scanned()
    await mine.close()
    assert files_under(mine.root) == [theirs.path_for("0::a.png")]
    assert mine.entry_count == 1  # counted against the bound all the same


async def test_entry_deleted_during_the_scan_does_not_come_back(
        make_cache: MakeCache, monkeypatch: pytest.MonkeyPatch) -> None:
    first = await make_cache()
    for key in ("0::a", "0::b", "0::c"):
        await first.put(key, blob(key.encode()))
    await first.close()

    headers_read, release = threading.Event(), threading.Event()
    real_scan_job = DiskJobs.scan

    def slow_scan_job(self: DiskJobs, *args: object) -> object:
        result = real_scan_job(self, *args)  # type: ignore[arg-type]
        headers_read.set()
        assert release.wait(timeout=10)
        return result

    monkeypatch.setattr(DiskJobs, "scan", slow_scan_job)
    second = await make_cache(scan=False)
    assert await asyncio.to_thread(headers_read.wait, 10)  # the scan has seen a, b and c
    await second.delete("0::a")
    release.set()
    await second.wait_scanned()
    assert second.entry_count == 2
    assert second.size_bytes == sum(p.stat().st_size for p in files_under(second.root))


async def test_start_fails_when_root_cannot_be_created(make_cache: MakeCache,
                                                       tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(OSError):
        await make_cache(tmp_path / "file" / "cache")


async def test_writable(make_cache: MakeCache, tmp_path: Path) -> None:
    cache = await make_cache()
    assert await cache.writable()
    assert files_under(tmp_path) == []
    (tmp_path / "file").write_bytes(b"")
    broken = await make_cache(tmp_path / "file", start=False)
    assert not await broken.writable()


# -- other removals -----------------------------------------------------------


async def test_delete_purge_and_clear_remove_files(cache: DiskCache, tmp_path: Path) -> None:
    for key in ["0::a", "0:w1:a", "0::b", "0::c"]:
        await cache.put(key, blob(key.encode()))
    (tmp_path / "cache" / "keep-me.txt").write_bytes(b"not ours")
    await cache.delete("0::c")
    assert not cache.path_for("0::c").exists()
    assert await cache.purge("a") == 2
    assert files_under(tmp_path) == sorted([cache.path_for("0::b"),
                                            tmp_path / "cache" / "keep-me.txt"])
    await cache.clear()
    assert files_under(tmp_path) == [tmp_path / "cache" / "keep-me.txt"]
    assert cache.entry_count == 0 and cache.size_bytes == 0


async def test_closed_cache_is_inert(cache: DiskCache) -> None:
    await cache.put("0::a", blob(b"x"))
    await cache.close()
    assert await cache.get("0::a") is None
    await cache.put("0::b", blob(b"y"))
    assert not cache.path_for("0::b").exists()
    assert not await cache.writable()


async def test_put_rejects_a_body_that_does_not_match_its_meta(cache: DiskCache) -> None:
    meta = blob(b"abc").meta
    with pytest.raises(ValueError, match=r"meta\.size"):
        await cache.put("0::a", Blob(meta, b"abcd"))


# -- concurrency --------------------------------------------------------------


@pytest.mark.parametrize("size", [500, 20_000], ids=["inline", "file"])
async def test_concurrent_puts_and_gets_of_one_key_never_read_corrupt(make_cache: MakeCache,
                                                                      size: int) -> None:
    cache = await make_cache(executor_threads=8)
    bodies = [bytes([i]) * size + os.urandom(16) for i in range(12)]
    blobs = {b.meta.digest: b for b in map(blob, bodies)}
    seen: list[ObjectMeta] = []

    async def writer(b: Blob) -> None:
        for _ in range(5):
            await cache.put("0::hot.png", b)

    async def reader() -> None:
        for _ in range(20):
            got = await cache.get("0::hot.png")
            if got is None:
                continue
            if isinstance(got, FileBlob):
                with got.file:
                    body = os.pread(got.file.fileno(), got.meta.size, got.offset)
            else:
                body = got.body
            assert hashlib.sha256(body).hexdigest() == got.meta.digest
            assert blobs[got.meta.digest].body == body
            seen.append(got.meta)

    await asyncio.gather(*(writer(b) for b in blobs.values()), *(reader() for _ in range(12)))
    assert seen
    assert cache.counters.corrupt_dropped == 0
    assert cache.counters.write_errors == 0
    assert cache.entry_count == 1
    assert cache.size_bytes == cache.path_for("0::hot.png").stat().st_size
    assert temps_under(cache.root) == []


def test_encode_header_round_trips_through_the_reader(tmp_path: Path) -> None:
    meta = blob(b"body").meta
    path = tmp_path / "f"
    path.write_bytes(encode_header("0::k", meta) + b"body")
    with path.open("rb") as f:
        assert read_meta(f, path.stat().st_size)[:2] == ("0::k", meta)


def _flip_a_byte_in_place(path: Path) -> None:
    """Corrupt a file where it is (same inode), moving its mtime as a write does."""
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    st = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


async def test_verified_file_changed_in_place_is_verified_again(make_cache: MakeCache) -> None:
    # A file is hashed once per process while unchanged; any change to it (here a
    # flipped byte written in place, which moves its mtime) is checked again.
    cache = await make_cache()
    await cache.put("0::img.png", blob(b"x" * 500))
    assert await cache.get("0::img.png") is not None  # verified and remembered
    _flip_a_byte_in_place(cache.path_for("0::img.png"))
    assert await cache.get("0::img.png") is None
    assert cache.counters.corrupt_dropped == 1


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the bodies the read and refresh jobs hash, in order."""
    sizes: list[int] = []
    real_digest_of, real_hash_body = jobs_module.digest_of, jobs_module.hash_body

    def digest_of(body: bytes) -> str:
        sizes.append(len(body))
        return real_digest_of(body)

    def hash_body(f: object, size: int, sink: object = None) -> str:
        sizes.append(size)
        return real_hash_body(f, size, sink)  # type: ignore[arg-type]

    monkeypatch.setattr(jobs_module, "digest_of", digest_of)
    monkeypatch.setattr(jobs_module, "hash_body", hash_body)
    return sizes


async def got(cache: DiskCache, key: str) -> bytes | None:
    entry = await cache.get(key)
    if entry is None:
        return None
    if isinstance(entry, FileBlob):
        with entry.file:
            return entry.file.read()
    return entry.body


@pytest.mark.parametrize("size", [500, 5000], ids=["inline", "file"])
async def test_unchanged_file_is_hashed_once(cache: DiskCache, hashed: list[int],
                                             size: int) -> None:
    body = os.urandom(size)
    await cache.put("0::a.png", blob(body))
    assert hashed == []  # a write does not vouch for what is on disk
    for _ in range(3):
        assert await got(cache, "0::a.png") == body
    assert hashed == [size]
    path = cache.path_for("0::a.png")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched: checked again
    assert await got(cache, "0::a.png") == body
    assert await got(cache, "0::a.png") == body
    assert hashed == [size, size]


async def test_marks_go_with_the_files_they_vouch_for(make_cache: MakeCache,
                                                      hashed: list[int]) -> None:
    """Replacing, evicting, deleting, refreshing, purging, rejecting or clearing a
    file drops its mark: none may vouch for whatever takes its place."""
    def body(tag: str) -> bytes:
        return bytes(500) + tag.encode()

    entry_size = len(encode_header("0::a", blob(body("0::a")).meta)) + len(body("0::a"))
    cache = await make_cache(max_bytes=3 * entry_size)
    marks = cache._jobs.verified
    for key in ["0::a", "0::b", "0::c"]:
        await cache.put(key, blob(body(key)))
        assert await got(cache, key) == body(key)
    assert set(marks) == {key_hash(k) for k in ["0::a", "0::b", "0::c"]}
    assert len(hashed) == 3

    await cache.put("0::a", blob(body("0::A")))  # replaced
    assert set(marks) == {key_hash("0::b"), key_hash("0::c")}
    assert await got(cache, "0::a") == body("0::A")
    assert len(hashed) == 4

    await cache.put("0::d", blob(body("0::d")))  # evicts b, the least recently used
    assert cache.counters.evictions == 1 and not cache.path_for("0::b").exists()
    await cache.delete("0::c")
    assert set(marks) == {key_hash("0::a")}

    await cache.refresh("0::a", blob(body("0::A")).meta.revalidated(T0 + 1, TTL))
    assert marks == {}  # a new file: hashed on its next read
    assert await got(cache, "0::a") == body("0::A")
    assert len(hashed) == 6  # the refresh's copy, then that read
    assert await cache.purge("a") == 1
    assert marks == {}

    await cache.put("0::e", blob(b"e"))
    assert await got(cache, "0::e") == b"e"
    _flip_body_byte(cache.path_for("0::e"))
    assert await got(cache, "0::e") is None  # its mtime moved: checked, and rejected
    assert marks == {}
    await cache.put("0::e", blob(b"e"))
    assert await got(cache, "0::e") == b"e"
    await cache.clear()
    assert marks == {}


# -- reads on the event loop (page-cache hits) ------------------------------------


@pytest.fixture
def executor_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys whose get went to the executor's read job."""
    keys: list[str] = []
    original = DiskJobs.read

    def read(self: DiskJobs, key: str, h: str, now: float) -> jobs_module.Read:
        keys.append(key)
        return original(self, key, h, now)

    monkeypatch.setattr(DiskJobs, "read", read)
    return keys


def _evict_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages cannot be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


async def test_a_verified_cached_file_is_read_without_a_thread_hop(
        make_cache: MakeCache, executor_reads: list[str]) -> None:
    cache = await make_cache()
    await cache.put("0::img.png", blob(b"x" * 500))
    first = await cache.get("0::img.png")  # not yet verified: the job hashes it
    second = await cache.get("0::img.png")
    assert isinstance(first, Blob) and isinstance(second, Blob)
    assert second.body == first.body == b"x" * 500 and second.meta == first.meta
    assert executor_reads == ["0::img.png"]


async def test_what_the_page_cache_lacks_goes_to_the_executor(
        make_cache: MakeCache, executor_reads: list[str]) -> None:
    cache = await make_cache()
    await cache.put("0::img.png", blob(b"y" * 500))
    assert await cache.get("0::img.png") is not None
    _evict_from_page_cache(cache.path_for("0::img.png"))
    got_back = await cache.get("0::img.png")
    assert isinstance(got_back, Blob) and got_back.body == b"y" * 500
    # RWF_NOWAIT said EAGAIN (it does on ext4, xfs, btrfs; a filesystem that cannot
    # tell switches the loop reads off, which is the same outcome): the job read it.
    assert executor_reads == ["0::img.png", "0::img.png"]


async def test_large_and_unverified_files_are_read_by_the_job(
        make_cache: MakeCache, executor_reads: list[str]) -> None:
    cache = await make_cache()
    await cache.put("0::big.png", blob(b"z" * (INLINE + 1)))  # a FileBlob: sendfile
    for _ in range(2):
        entry = await cache.get("0::big.png")
        assert isinstance(entry, FileBlob)
        entry.close()
    assert executor_reads == ["0::big.png", "0::big.png"]


async def test_a_file_changed_in_place_is_not_read_on_the_loop(
        make_cache: MakeCache, executor_reads: list[str]) -> None:
    cache = await make_cache()
    await cache.put("0::img.png", blob(b"x" * 500))
    assert await cache.get("0::img.png") is not None
    _flip_a_byte_in_place(cache.path_for("0::img.png"))
    assert await cache.get("0::img.png") is None  # its mark no longer matches: hashed
    assert executor_reads == ["0::img.png", "0::img.png"]
