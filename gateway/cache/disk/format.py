"""The disk cache's file format: a checked header, JSON metadata, then the body.

File format (integers big-endian)
    ======  ====  ==============================================
    0       4s    magic ``b"IGWB"``
    4       H     format version (1)
    6       H     reserved, 0
    8       I     length n of the JSON metadata block
    12      I     CRC-32 of the JSON metadata block
    16      n     JSON: every ``ObjectMeta`` field plus ``"key"``
    16 + n        body: ``meta.size`` bytes whose sha256 is ``meta.digest``
    ======  ====  ==============================================

    A reader trusts nothing it has not checked: magic, version, metadata CRC and
    JSON, stored key == requested key, file size == header + body, and the
    sha256 of the body. A file failing any check is ``Corrupt``; one of a newer
    format version is ``Foreign``: during a rolling upgrade an old replica must
    neither judge nor delete the new one's files.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import fields
from typing import IO, Any, Final

from gateway.model import ObjectMeta

MAGIC: Final = b"IGWB"
FORMAT_VERSION: Final = 1
_HEADER: Final = struct.Struct(">4sHHII")
HEADER_SIZE: Final = _HEADER.size
MAX_META_BYTES: Final = 64 * 1024
_CHUNK: Final = 1 << 20
HEX: Final = frozenset("0123456789abcdef")


class Corrupt(Exception):
    """The file is not a whole, well-formed entry."""


class Foreign(Exception):
    """A well-formed header of a newer format version: not ours to judge or delete."""


def encode_header(key: str, meta: ObjectMeta) -> bytes:
    """Fixed header + JSON metadata block, everything that precedes the body."""
    doc: dict[str, Any] = {f.name: getattr(meta, f.name) for f in fields(meta)}
    doc["key"] = key
    block = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    return _HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(block), zlib.crc32(block)) + block


def storable(header: bytes) -> bool:
    """Whether a reader would accept a metadata block this long."""
    return len(header) <= HEADER_SIZE + MAX_META_BYTES


def read_meta(f: IO[bytes], file_size: int) -> tuple[str, ObjectMeta, int]:
    """Check the header of an open entry file; returns (key, meta, body offset).

    Leaves ``f`` positioned at the body.
    """
    raw = f.read(HEADER_SIZE)
    if len(raw) < HEADER_SIZE:
        raise Corrupt("truncated header")
    magic, version, _reserved, meta_len, crc = _HEADER.unpack(raw)
    if magic != MAGIC:
        raise Corrupt("bad magic")
    if version > FORMAT_VERSION:
        raise Foreign(f"format version {version}")
    if version != FORMAT_VERSION:
        raise Corrupt(f"bad format version {version}")
    if not 0 < meta_len <= MAX_META_BYTES:
        raise Corrupt(f"bad metadata length {meta_len}")
    block = f.read(meta_len)
    if len(block) != meta_len:
        raise Corrupt("truncated metadata")
    if zlib.crc32(block) != crc:
        raise Corrupt("metadata checksum mismatch")
    key, meta = _decode_meta(block)
    offset = HEADER_SIZE + meta_len
    if file_size != offset + meta.size:
        raise Corrupt(f"file is {file_size} bytes, header says {offset + meta.size}")
    return key, meta, offset


def read_meta_of(key: str, f: IO[bytes], file_size: int) -> tuple[ObjectMeta, int]:
    """``read_meta`` of the file named for ``key``; one holding another key is corrupt
    (what a hash collision or a misplaced file would look like)."""
    stored_key, meta, offset = read_meta(f, file_size)
    if stored_key != key:
        raise Corrupt(f"file holds key {stored_key!r}")
    return meta, offset


def hash_body(f: IO[bytes], size: int, sink: IO[bytes] | None = None) -> str:
    """sha256 of the next ``size`` bytes of ``f``, read in chunks (copied to ``sink``)."""
    hasher = hashlib.sha256()
    remaining = size
    while remaining:
        chunk = f.read(min(_CHUNK, remaining))
        if not chunk:
            raise Corrupt("body shorter than its header says")
        hasher.update(chunk)
        if sink is not None:
            sink.write(chunk)
        remaining -= len(chunk)
    return hasher.hexdigest()


def _decode_meta(block: bytes) -> tuple[str, ObjectMeta]:
    try:
        doc = json.loads(block)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise Corrupt("metadata is not JSON") from exc
    if not isinstance(doc, dict):
        raise Corrupt("metadata is not an object")
    try:
        key = _want_str(doc, "key")
        origin_etag = doc.get("origin_etag")
        if origin_etag is not None and not isinstance(origin_etag, str):
            raise TypeError("origin_etag")
        meta = ObjectMeta(
            etag=_want_str(doc, "etag"), digest=_want_str(doc, "digest"),
            content_type=_want_str(doc, "content_type"), size=_want_int(doc, "size"),
            last_modified=_want_int(doc, "last_modified"),
            stored_at=_want_num(doc, "stored_at"), expires_at=_want_num(doc, "expires_at"),
            origin_etag=origin_etag)
    except (KeyError, TypeError) as exc:
        raise Corrupt(f"metadata field {exc} missing or mistyped") from exc
    if meta.size < 0 or len(meta.digest) != 64 or not set(meta.digest) <= HEX:
        raise Corrupt("metadata size or digest invalid")
    return key, meta


def _want_str(doc: dict[str, Any], name: str) -> str:
    value = doc[name]
    if not isinstance(value, str):
        raise TypeError(name)
    return value


def _want_int(doc: dict[str, Any], name: str) -> int:
    value = doc[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(name)
    return value


def _want_num(doc: dict[str, Any], name: str) -> float:
    value = doc[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(name)
    return value
