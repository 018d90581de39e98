"""What a probe learned about an object (it exists; its size, type, ETag, date), kept
beside its presigned URL so that the old API (``GET /images/{key}/url``) costs at
most one origin request per object per URL lifetime instead of one per call.

Written as a short JSON object. Read back from Redis it is input like any other
value there: :class:`KnownCheck` refuses whatever this gateway would not have
written (a size out of bounds, a type it does not serve, an ETag S3 would not send),
and the caller probes the origin as if nothing were stored.
"""

from __future__ import annotations

import json

from gateway.origin import ObjectInfo
from gateway.origin.headers import END_OF_DATES, ENTITY_TAG

_FIELDS = frozenset({"size", "modified", "type", "etag"})


def encode(info: ObjectInfo) -> str:
    return json.dumps({"size": info.size, "modified": info.last_modified,
                       "type": info.content_type, "etag": info.origin_etag},
                      separators=(",", ":"))


class KnownCheck:
    """Turns a stored value back into ObjectInfo, or raises ValueError saying why not."""

    def __init__(self, max_bytes: int, allowed_types: frozenset[str]) -> None:
        self._max_bytes = max_bytes
        self._allowed = allowed_types

    def __call__(self, text: str) -> ObjectInfo:
        if len(text) > 512:
            raise ValueError("too long")
        try:
            value = json.loads(text)
        except ValueError:
            raise ValueError("not JSON") from None
        if not isinstance(value, dict) or set(value) != _FIELDS:
            raise ValueError("not the known fields")
        size, modified, kind, etag = (value["size"], value["modified"], value["type"],
                                      value["etag"])
        if type(size) is not int or not 0 < size <= self._max_bytes:
            raise ValueError("size out of bounds")
        if type(modified) is not int or not 0 <= modified < END_OF_DATES:
            raise ValueError("date out of bounds")
        if kind not in self._allowed:
            raise ValueError("not an allowed type")
        if etag is not None and not (isinstance(etag, str) and ENTITY_TAG.fullmatch(etag)):
            raise ValueError("not an entity tag")
        return ObjectInfo(size, modified, etag, kind)
