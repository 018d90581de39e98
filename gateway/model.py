"""Value types shared by every layer."""

from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import IO

from gateway.errors import BadRequest

_IMAGE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}")


def cache_key(image_id: str, version: int, variant: str = "") -> str:
    """Key of one cached object version; '/' cannot occur in an image id."""
    return f"{image_id}/{version}/{variant}"


def image_of(key: str) -> str:
    return key.split("/", 1)[0]


def validate_image_id(image_id: str) -> str:
    """One path segment of [A-Za-z0-9._-], 1-255 chars, not starting with '.'."""
    if not _IMAGE_ID.fullmatch(image_id):
        raise BadRequest("invalid image id")
    return image_id


def validate_user_id(user_id: str) -> str:
    """User ids follow the image id rule: one safe path segment."""
    if not _IMAGE_ID.fullmatch(user_id):
        raise BadRequest("invalid user id")
    return user_id


def digest_of(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def etag_for(digest: str) -> str:
    """Strong ETag from the content digest: equal on every replica and restart."""
    return f'"{digest[:32]}"'


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """What we know of one stored object version.

    ``etag`` is ours (content digest), ``origin_etag`` is the origin's own
    validator, sent back as If-None-Match when the cached copy has expired.
    """

    etag: str
    digest: str
    content_type: str
    size: int
    last_modified: int  # epoch seconds, what Last-Modified says
    stored_at: float  # when the origin last confirmed these bytes
    expires_at: float  # fresh until then; stale (servable on origin failure) after
    origin_etag: str | None = None

    def fresh(self, now: float) -> bool:
        return now < self.expires_at

    def revalidated(self, now: float, ttl: float) -> ObjectMeta:
        return replace(self, stored_at=now, expires_at=now + ttl)


@dataclass(frozen=True, slots=True)
class Blob:
    """An object's bytes with their metadata."""

    meta: ObjectMeta
    body: bytes

    def close(self) -> None:
        """Nothing to release: the bytes are in memory (see FileBlob.close)."""


@dataclass(frozen=True, slots=True)
class FileBlob:
    """A verified on-disk object too large to hold in memory: sent with sendfile.

    The file is already open, so an eviction or replacement after the check
    cannot change what is sent. Whoever sends it closes it.
    """

    meta: ObjectMeta
    file: IO[bytes]
    offset: int  # where the body starts in the file

    def close(self) -> None:
        """Release the open file; safe to call more than once."""
        with contextlib.suppress(OSError):
            self.file.close()


Entry = Blob | FileBlob


class Layer(StrEnum):
    """Which layer produced an answer: the value of ``X-Cache``."""

    MEMORY = "HIT-MEMORY"
    DISK = "HIT-DISK"
    MISS = "MISS"
    REVALIDATED = "REVALIDATED"  # the origin confirmed our expired copy (304): no download
    COALESCED = "COALESCED"
    STALE = "STALE"
    FALLBACK = "FALLBACK"
    ERROR = "ERROR"  # an error answer (set by the web layer, never by the service)


@dataclass(frozen=True, slots=True)
class Served:
    """An answer of the service: the entry and the layer it came from."""

    layer: Layer
    entry: Entry


def make_meta(body: bytes, content_type: str, last_modified: int, now: float, ttl: float,
              origin_etag: str | None = None) -> ObjectMeta:
    digest = digest_of(body)
    return ObjectMeta(etag=etag_for(digest), digest=digest, content_type=content_type,
                      size=len(body), last_modified=last_modified, stored_at=now,
                      expires_at=now + ttl, origin_etag=origin_etag)
