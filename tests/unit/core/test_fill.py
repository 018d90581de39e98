"""FillCodec: the result one replica hands the others through Redis is authenticated
(HMAC over deployment, cache key, metadata and bytes) and checked again like origin
bytes before anyone uses it."""

from __future__ import annotations

import dataclasses
import json

import pytest

from gateway.cluster.fill import FillCodec, RejectedFill, fill_key
from gateway.config import IMAGE_TYPES
from gateway.model import Blob
from tests.support.fakes import blob
from tests.support.images import make_image

K = "a.png/3/"
KEY = fill_key("a-cluster-secret-of-enough-length-0123")
PNG = make_image("PNG")


def codec(key: bytes = KEY, deployment: str = "dep", max_bytes: int = 100_000,
          allowed: frozenset[str] = frozenset(IMAGE_TYPES)) -> FillCodec:
    return FillCodec(key, deployment, allowed_types=allowed, max_bytes=max_bytes)


def rejected(raw: bytes, reader: FillCodec | None = None, key: str = K) -> str:
    with pytest.raises(RejectedFill) as info:
        (reader or codec()).unpack(key, raw)
    return str(info.value)


def test_a_result_and_a_missing_marker_survive_the_trip() -> None:
    original = blob(PNG, origin_etag='"o1"')
    assert codec().unpack(K, codec().pack(K, original)) == original
    assert codec().unpack(K, codec().pack(K, None)) is None


def test_any_changed_byte_is_refused() -> None:
    raw = codec().pack(K, blob(PNG))
    for i in range(0, len(raw), 7):
        changed = raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1:]
        assert "not signed" in rejected(changed)
    assert "not signed" in rejected(raw[:-1])
    assert "not signed" in rejected(raw + b"\x00")
    assert "not signed" in rejected(b"")


@pytest.mark.parametrize("writer", [codec(key=fill_key("another-secret-of-enough-length-000")),
                                    codec(deployment="other")],
                         ids=["other-key", "other-deployment"])
def test_a_result_of_another_key_or_deployment_is_refused(writer: FillCodec) -> None:
    assert "not signed" in rejected(writer.pack(K, blob(PNG)))
    assert "not signed" in rejected(writer.pack(K, None))


def test_a_result_is_bound_to_its_cache_key() -> None:
    raw = codec().pack(K, blob(PNG))
    for other in ("b.png/3/", "a.png/4/", "a.png/3/r1.64x64.cover.webp.q80"):
        assert "not signed" in rejected(raw, key=other)


def signed(meta_fields: dict[str, object], body: bytes) -> bytes:
    """A fill made by someone holding the key (a buggy or older replica)."""
    header = json.dumps(meta_fields).encode()
    payload = b"B" + len(header).to_bytes(4, "big") + header + body
    return codec()._tag(K, payload) + payload


def fields_of(entry: Blob) -> dict[str, object]:
    return dataclasses.asdict(entry.meta)


@pytest.mark.parametrize("change", [
    {"size": "12"}, {"expires_at": None}, {"etag": 5}, {"extra": 1},
], ids=["size-text", "expiry-null", "etag-number", "extra-field"])
def test_metadata_of_the_wrong_shape_is_refused(change: dict[str, object]) -> None:
    fields = {**fields_of(blob(PNG)), **change}
    assert rejected(signed(fields, PNG)) == "unreadable metadata"


def test_bytes_that_differ_from_their_metadata_are_refused() -> None:
    fields = fields_of(blob(PNG))
    assert "differ" in rejected(signed(fields, PNG[:-1] + b"\x00"))
    assert "differ" in rejected(signed({**fields, "etag": '"0000"'}, PNG))


def test_only_allowed_images_of_the_labelled_type_are_used() -> None:
    html = b"<html><body>hi</body></html>"
    assert "not an image" in rejected(codec().pack(K, blob(html)))
    assert "text/html" in rejected(codec().pack(K, blob(html, content_type="text/html")))
    assert "image/png" in rejected(codec().pack(K, blob(PNG, content_type="image/jpeg")))
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"></svg>'
    assert "svg" in rejected(codec().pack(K, blob(svg, content_type="image/svg+xml")))


def test_a_result_over_origin_max_bytes_is_refused() -> None:
    raw = codec().pack(K, blob(PNG))
    assert "max_bytes" in rejected(raw, codec(max_bytes=len(PNG) - 1))
    assert codec(max_bytes=len(PNG)).unpack(K, raw) is not None


def test_the_key_is_derived_not_the_secret_itself() -> None:
    assert fill_key("s" * 40) == fill_key("s" * 40)
    assert fill_key("s" * 40) != fill_key("t" * 40)
    assert len(fill_key("s" * 40)) == 32 and b"s" * 32 not in fill_key("s" * 40)
