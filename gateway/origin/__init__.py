"""Where the bytes live: one small async protocol, one module an origin kind."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from gateway.origin.presign import SignedUrl


@dataclass(frozen=True, slots=True)
class Fetched:
    """A complete, checked object from the origin: an allowed image type, within size."""

    body: bytes
    content_type: str
    last_modified: int
    origin_etag: str | None


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    size: int
    last_modified: int
    origin_etag: str | None
    content_type: str = ""  # as checked by its first bytes; "" where not kept


class NotModified:
    """The origin confirmed the validator we sent: the cached bytes are current."""


NOT_MODIFIED = NotModified()


class Origin(Protocol):
    kind: str

    async def fetch(self, image_id: str, if_none_match: str | None = None
                    ) -> Fetched | NotModified:
        """The object's bytes; raises NotFound, OriginError or OriginTimeout."""
        ...

    async def probe(self, image_id: str) -> ObjectInfo:
        """The object's size and validators, refused as ``fetch`` would refuse it (type
        by its first bytes and label, size over the limit) without reading all of it;
        raises NotFound, UnsupportedMedia, TooLarge, OriginError."""
        ...

    async def url(self, image_id: str) -> SignedUrl | None:
        """A direct URL to the object (presigned), or None when the origin has none."""
        ...

    async def ping(self) -> bool:
        """Whether the origin is reachable, for /readyz."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class Uploadable(Protocol):
    """An origin that can store objects (PUT /admin/images/{id})."""

    async def store(self, image_id: str, body: bytes, content_type: str) -> None:
        """Store ``body`` as ``image_id``, replacing it; raises OriginError."""
        ...


class OriginWrapper:
    """Base of origins that wrap another one (retries, timing): everything they do
    not change is passed through to ``inner``."""

    def __init__(self, inner: Origin) -> None:
        self.inner = inner
        self.kind = inner.kind

    async def fetch(self, image_id: str, if_none_match: str | None = None
                    ) -> Fetched | NotModified:
        return await self.inner.fetch(image_id, if_none_match)

    async def probe(self, image_id: str) -> ObjectInfo:
        return await self.inner.probe(image_id)

    async def url(self, image_id: str) -> SignedUrl | None:
        return await self.inner.url(image_id)

    async def ping(self) -> bool:
        return await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()
