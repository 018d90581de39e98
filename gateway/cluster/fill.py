"""The ``fill`` value: one replica's origin result, handed to the others through Redis.

Anyone who can write to Redis could leave a value there, so a fill is authenticated
and then checked again as if it came from the origin:

    raw = tag (32 bytes) + payload
    payload = b"M"                                       the object is missing
            | b"F" + status (3 digits)                     the holder's fetch failed
            | b"B" + len(meta) (4 bytes) + meta JSON + body
    tag = HMAC-SHA256(key, deployment, cache key, payload), each length-prefixed

The cache key holds the image id and its version, so a fill cannot be replayed for
another image, another version or another deployment. A fill whose tag verifies is
still only served if its bytes are what its metadata says (size, sha256, ETag) and
what the origin checks would accept (``origin.max_bytes``, magic numbers against
the allowed types): a replica with a bug, or an older version, must not be able to
hand over what the origin path would have refused.

The key comes from ``cluster.secret``, or is derived from the S3 secret access key
(every replica of one deployment holds it; whoever can only write Redis does not).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import asdict, dataclass
from typing import Any

from gateway.errors import UnsupportedMedia
from gateway.model import Blob, ObjectMeta, digest_of, etag_for
from gateway.origin.content import checked_type

_LABEL = b"image-gateway cluster fill key v1"
_TAG = 32
_MISSING = b"M"
_FAILED = b"F"
_BLOB = b"B"
_META_TYPES: dict[str, type | tuple[type, ...]] = {
    "etag": str, "digest": str, "content_type": str, "size": int, "last_modified": int,
    "stored_at": (int, float), "expires_at": (int, float), "origin_etag": (str, type(None)),
}


def fill_key(secret: str) -> bytes:
    """The HMAC key for fills, derived from a secret with a fixed label: the S3 secret
    access key itself never signs anything but S3 requests."""
    return hmac.new(secret.encode(), _LABEL, hashlib.sha256).digest()


class RejectedFill(ValueError):
    """A fill that must not be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Failed:
    """The holder's origin fetch failed just now, answered with ``status`` (502, 504)."""

    status: int


class FillCodec:
    def __init__(self, key: bytes, deployment: str, *, allowed_types: frozenset[str],
                 max_bytes: int) -> None:
        self._key = key
        self._deployment = deployment.encode()
        self.allowed_types = allowed_types
        self.max_bytes = max_bytes

    def pack(self, cache_key: str, blob: Blob | None) -> bytes:
        """The fill for ``blob``, or for "missing" when it is None."""
        if blob is None:
            payload = _MISSING
        else:
            header = json.dumps(asdict(blob.meta), separators=(",", ":")).encode()
            payload = _BLOB + len(header).to_bytes(4, "big") + header + blob.body
        return self._tag(cache_key, payload) + payload

    def pack_failed(self, cache_key: str, status: int) -> bytes:
        payload = _FAILED + b"%03d" % status
        return self._tag(cache_key, payload) + payload

    def unpack(self, cache_key: str, raw: bytes) -> Blob | Failed | None:
        """The blob (None: the object is missing); raises RejectedFill."""
        tag, payload = raw[:_TAG], raw[_TAG:]
        if not hmac.compare_digest(tag, self._tag(cache_key, payload)):
            raise RejectedFill("not signed with this deployment's cluster key")
        if payload == _MISSING:
            return None
        if payload[:1] == _FAILED:
            # Only a status the gateway itself answers for a failed fetch is repeated.
            return Failed(504 if payload[1:] == b"504" else 502)
        if payload[:1] != _BLOB:
            raise RejectedFill("unknown kind of fill")
        size = int.from_bytes(payload[1:5], "big")
        try:
            fields: Any = json.loads(payload[5:5 + size])
        except ValueError:
            raise RejectedFill("unreadable metadata") from None
        if not (isinstance(fields, dict) and fields.keys() == _META_TYPES.keys()
                and all(isinstance(fields[k], t) for k, t in _META_TYPES.items())):
            raise RejectedFill("unreadable metadata")
        meta = ObjectMeta(**fields)
        body = payload[5 + size:]
        self._check(meta, body)
        return Blob(meta, body)

    def _check(self, meta: ObjectMeta, body: bytes) -> None:
        if len(body) > self.max_bytes:
            raise RejectedFill("larger than origin.max_bytes")
        digest = digest_of(body)
        if len(body) != meta.size or digest != meta.digest or meta.etag != etag_for(digest):
            raise RejectedFill("bytes differ from their metadata")
        try:
            proven = checked_type(body, meta.content_type, self.allowed_types)
        except UnsupportedMedia as exc:
            raise RejectedFill(exc.detail) from None
        if proven != meta.content_type:
            raise RejectedFill(f"bytes are {proven}, metadata says {meta.content_type!r}")

    def _tag(self, cache_key: str, payload: bytes) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in (self._deployment, cache_key.encode(), payload):
            mac.update(len(part).to_bytes(8, "big"))
            mac.update(part)
        return mac.digest()
