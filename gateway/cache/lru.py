"""A least-recently-used map bounded by bytes, with an index of its keys by image.

Both cache layers keep one: the memory layer of its blobs, the disk layer of
records describing its files. Each layer measures its values in its own way
(body bytes, whole file bytes) and finds an entry's image in its own way (in
the cache key, in the record); a purge then drops one image's entries without
walking the whole map. The map only keeps books: the caller decides when to
evict and what to do with the victims.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class _Ordered(Generic[K, V]):
    """Entries least recently used first, and what they weigh together."""

    def __init__(self) -> None:
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._size = 0

    @property
    def size(self) -> int:
        """What every entry weighs, as the map's ``size_of`` measures them."""
        return self._size

    def __len__(self) -> int:
        return len(self._entries)


class ByteLRU(_Ordered[K, V]):
    def __init__(self, max_bytes: int, *, size_of: Callable[[V], int],
                 image_of: Callable[[K, V], str]) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._image_of = image_of
        self._keys_by_image: dict[str, set[K]] = {}

    def __contains__(self, key: K) -> bool:
        return key in self._entries

    def get(self, key: K) -> V | None:
        """The value of ``key``, without making it more recently used."""
        return self._entries.get(key)

    def used(self, key: K) -> None:
        """Make ``key``, just read with ``get``, the most recently used."""
        self._entries.move_to_end(key)

    def touch(self, key: K) -> None:
        """Make ``key`` the most recently used, if present."""
        if key in self._entries:
            self._entries.move_to_end(key)

    def add(self, key: K, value: V) -> None:
        """Store ``value`` as the most recently used, replacing any value of ``key``.

        The bound is not enforced here: ``evict`` does that, so that the caller
        can count and dispose of the victims.
        """
        self.pop(key)
        self._entries[key] = value
        self._index(key, value)

    def add_older(self, items: Iterable[tuple[K, V]]) -> None:
        """Store ``items`` (least recently used first) as older than every present entry.

        A key already present keeps its value and place: what was used since
        ``items`` were collected is the more recent news. Of repeated keys in
        ``items``, the first wins.
        """
        older: dict[K, V] = {}
        for key, value in items:
            if key not in self._entries and key not in older:
                older[key] = value
        for key, value in reversed(older.items()):
            self._entries[key] = value
            self._entries.move_to_end(key, last=False)
            self._index(key, value)

    def pop(self, key: K) -> V | None:
        value = self._entries.pop(key, None)
        if value is None:
            return None
        self._size -= self._size_of(value)
        image_id = self._image_of(key, value)
        keys = self._keys_by_image.get(image_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._keys_by_image[image_id]
        return value

    def keys_of(self, image_id: str) -> list[K]:
        """Every key of one image (a copy: the caller may pop them)."""
        return list(self._keys_by_image.get(image_id, ()))

    def evict(self) -> list[tuple[K, V]]:
        """Drop least recently used entries until the size is within the bound."""
        victims: list[tuple[K, V]] = []
        while self._size > self.max_bytes and self._entries:
            key = next(iter(self._entries))
            value = self.pop(key)
            assert value is not None
            victims.append((key, value))
        return victims

    def clear(self) -> None:
        self._entries.clear()
        self._keys_by_image.clear()
        self._size = 0

    def _index(self, key: K, value: V) -> None:
        self._size += self._size_of(value)
        self._keys_by_image.setdefault(self._image_of(key, value), set()).add(key)


class BoundedLRU(_Ordered[K, V]):
    """A least-recently-used map that keeps itself within ``max_size``: each entry
    weighs ``size_of(key, value)`` (1 by default: a bound on the count), and a store
    drops the least recently used until the rest fits. ``get`` makes an entry the
    most recently used, ``peek`` does not (a map read only with ``peek`` is a FIFO by
    the last store). For small in-process maps (aliases, remembered misses); the
    cache layers use ByteLRU, whose per-image index and caller-driven eviction
    they need."""

    def __init__(self, max_size: int, size_of: Callable[[K, V], int] | None = None) -> None:
        super().__init__()
        self.max_size = max_size
        self._size_of = size_of

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def peek(self, key: K) -> V | None:
        return self._entries.get(key)

    def put(self, key: K, value: V) -> bool:
        """Store ``value`` as the most recently used; False (nothing stored) when it
        alone weighs more than ``max_size``."""
        weight = 1 if self._size_of is None else self._size_of(key, value)
        if weight > self.max_size:
            return False
        self.pop(key)
        self._entries[key] = value
        self._size += weight
        while self._size > self.max_size:
            self._drop(*self._entries.popitem(last=False))
        return True

    def pop(self, key: K) -> V | None:
        value = self._entries.pop(key, None)
        if value is not None:
            self._drop(key, value)
        return value

    def clear(self) -> None:
        self._entries.clear()
        self._size = 0

    def _drop(self, key: K, value: V) -> None:
        self._size -= 1 if self._size_of is None else self._size_of(key, value)
