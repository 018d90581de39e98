"""In-process stand-ins for unit tests: a clock, cache entries, an origin, a waiter.

    clock = FakeClock()              # clock() -> T0; clock.advance(5); clock.now = ...
    blob(b"pixels", ttl=60)          # a Blob whose meta is gateway.model.make_meta's
    body_of(entry_or_served)         # its bytes, also from a FileBlob's open file
    record_handed_out(disk, monkeypatch)  # the entries disk.get hands out from now on
    origin = FakeOrigin(); origin.put("a.png", body)   # counts fetches, see the class
    await until(lambda: origin.fetch_count == 1)      # poll the event loop, bounded
    await until(async_check, timeout=10, interval=0.1)  # an async check works too
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.errors import NotFound
from gateway.model import Blob, Entry, Served, make_meta
from gateway.origin import NOT_MODIFIED, Fetched, NotModified, ObjectInfo
from gateway.origin.presign import SignedUrl

T0 = 1_700_000_000.0
LAST_MODIFIED = 1_600_000_000


class FakeClock:
    """A wall clock that moves only when told: ``clock()``, ``clock.advance(s)``."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def blob(body: bytes = b"pixels", *, ttl: float = 60.0, now: float = T0,
         content_type: str = "image/png", origin_etag: str | None = None) -> Blob:
    """A cache entry for ``body``, stored at ``now``, fresh for ``ttl`` seconds."""
    return Blob(make_meta(body, content_type, LAST_MODIFIED, now, ttl, origin_etag), body)


def body_of(found: Entry | Served | None) -> bytes:
    """The bytes of an entry (read from its open file for a FileBlob, left open)."""
    assert found is not None
    entry = found.entry if isinstance(found, Served) else found
    if isinstance(entry, Blob):
        return entry.body
    entry.file.seek(entry.offset)
    return entry.file.read(entry.meta.size)


def record_handed_out(layer: Any, monkeypatch: pytest.MonkeyPatch) -> list[Entry]:
    """Every entry ``layer.get`` hands out from now on (to check its FileBlobs get
    closed by whoever received them)."""
    entries: list[Entry] = []
    real = layer.get

    async def get(key: str) -> Entry | None:
        entry = await real(key)
        if entry is not None:
            entries.append(entry)
        return entry

    monkeypatch.setattr(layer, "get", get)
    return entries


class FakeOrigin:
    """An origin in memory that records every fetch.

    * ``put(id, body)``: fetches answer the bytes, with an origin ETag per version;
      a fetch whose If-None-Match is the current ETag answers NotModified.
    * an id never put (or ``remove``d) raises NotFound.
    * ``fail(exc)``: every fetch raises ``exc`` until ``fail(None)``.
    * ``hold()``: fetches wait until ``release()`` (``started`` is set meanwhile);
      ``cancelled`` counts the fetches cancelled while they waited.
    """

    kind = "fake"

    def __init__(self) -> None:
        self.objects: dict[str, Fetched] = {}
        self.fetches: list[tuple[str, str | None]] = []  # (image_id, if_none_match)
        self.error: BaseException | None = None
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()
        self.cancelled = 0
        self._versions = 0

    @property
    def fetch_count(self) -> int:
        return len(self.fetches)

    def put(self, image_id: str, body: bytes, content_type: str = "image/png") -> str:
        """Store ``body``; returns its origin ETag (new on every put)."""
        self._versions += 1
        etag = f'"o{self._versions}"'
        self.objects[image_id] = Fetched(body, content_type, LAST_MODIFIED, etag)
        return etag

    def remove(self, image_id: str) -> None:
        self.objects.pop(image_id, None)

    def fail(self, error: BaseException | None) -> None:
        self.error = error

    def hold(self) -> asyncio.Event:
        self.gate = asyncio.Event()
        self.started.clear()
        return self.gate

    def release(self) -> None:
        if self.gate is not None:
            self.gate.set()
        self.gate = None

    async def fetch(self, image_id: str, if_none_match: str | None = None
                    ) -> Fetched | NotModified:
        self.fetches.append((image_id, if_none_match))
        self.started.set()
        if self.gate is not None:
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if self.error is not None:
            raise self.error
        found = self.objects.get(image_id)
        if found is None:
            raise NotFound()
        if if_none_match is not None and if_none_match == found.origin_etag:
            return NOT_MODIFIED
        return found

    async def probe(self, image_id: str) -> ObjectInfo:
        found = self.objects.get(image_id)
        if found is None:
            raise NotFound()
        return ObjectInfo(len(found.body), found.last_modified, found.origin_etag)

    async def url(self, image_id: str) -> SignedUrl | None:
        return None

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


async def until(predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0,
                interval: float = 0.005, what: str = "condition") -> None:
    """Let the event loop run until ``predicate()`` (a plain or an async function) is
    true, checking every ``interval`` seconds; TimeoutError after ``timeout`` seconds
    (a bound for broken code, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout} s")
        await asyncio.sleep(interval)
