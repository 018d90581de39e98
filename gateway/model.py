"""Value types shared by every layer."""

from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import IO
from urllib.parse import quote, unquote_to_bytes

from gateway.errors import BadRequest

_USER_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}")
#: What S3 itself allows: 1 to 1024 bytes of UTF-8.
MAX_KEY_BYTES = 1024
# A '%' that does not start an escape: the URL was not encoded as RFC 3986 says.
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Unicode control characters (category Cc): C0, DEL and C1.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Where '.' and '..' are refused: between '/' and also '\\', which some origins
# (MinIO on Windows, a folder on Windows) take for a separator.
_DOT_SEPARATORS = re.compile(r"[/\\]")
# Only these stay literal in a URL path we build (RFC 3986 unreserved): '/' is added
# back per segment, so every other character is percent-encoded.
_UNRESERVED = "-._~"


def cache_key(image_key: str, version: int, variant: str = "") -> str:
    """Key of one cached object version: ``{version}:{variant}:{key}``. Versions are
    integers and variant tokens have no ':', so the key is all after the second ':'
    whatever it contains."""
    return f"{version}:{variant}:{image_key}"


def image_of(cache_key: str) -> str:
    parts = cache_key.split(":", 2)
    # An entry of an older layout (on disk from before): its own image, never asked for.
    return parts[2] if len(parts) == 3 else cache_key


def decode_segments(raw_path: str) -> list[str]:
    """The segments of a percent-encoded path (split on a literal '/'), each decoded
    exactly once as strict UTF-8. A decoded segment may contain '/' (from ``%2F``).
    BadRequest for a malformed escape, a literal '#' or bytes that are not UTF-8."""
    if "#" in raw_path or _BAD_ESCAPE.search(raw_path):
        raise BadRequest("invalid key: '%' and '#' must be percent-encoded")
    try:
        return [unquote_to_bytes(s).decode() for s in raw_path.split("/")]
    except UnicodeDecodeError:
        raise BadRequest("invalid key: not UTF-8") from None


def validate_key(key: str) -> str:
    """An S3 object key as the gateway serves it: 1-1024 bytes of UTF-8, no control
    character, no leading '/', no empty, '.' or '..' segment, and no '.' or '..'
    between backslashes either. Everything else is refused before any I/O."""
    try:
        size = len(key.encode())
    except UnicodeEncodeError:  # a lone surrogate: not text any S3 key can hold
        raise BadRequest("invalid key: not UTF-8") from None
    if not 1 <= size <= MAX_KEY_BYTES:
        raise BadRequest(f"invalid key: must be 1-{MAX_KEY_BYTES} bytes of UTF-8")
    if _CONTROL.search(key):
        raise BadRequest("invalid key: control character")
    if "" in key.split("/") or any(s in (".", "..") for s in _DOT_SEPARATORS.split(key)):
        raise BadRequest("invalid key: empty, '.' or '..' segment")
    return key


def key_from_path(raw_path: str) -> str:
    """The object key a percent-encoded URL path names (what follows ``/images/``,
    without the query): the one place a key is read from a URL."""
    return validate_key("/".join(decode_segments(raw_path)))


def encode_segment(text: str) -> str:
    """RFC 3986 percent-encoding of one path segment (a '/' in it becomes %2F)."""
    return quote(text, safe=_UNRESERVED)


def encode_key(key: str) -> str:
    """A key as a URL path: each segment encoded, joined by a literal '/'."""
    return "/".join(encode_segment(s) for s in key.split("/"))


def validate_user_id(user_id: str) -> str:
    """User ids stay one flat, safe path segment (the alias route's second segment)."""
    if not _USER_ID.fullmatch(user_id):
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
