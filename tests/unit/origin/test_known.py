"""What a probe learned, written for the URL store and read back (origin/known.py)."""

from __future__ import annotations

import pytest

from gateway.origin import ObjectInfo
from gateway.origin.known import KnownCheck, encode

CHECK = KnownCheck(1000, frozenset({"image/png", "image/jpeg"}))


@pytest.mark.parametrize("info", [
    ObjectInfo(10, 1_700_000_000, '"abc"', "image/png"),
    ObjectInfo(1000, 0, None, "image/jpeg"),
    ObjectInfo(5, 1, 'W/"x-1"', "image/png"),
])
def test_reads_back_what_it_wrote(info: ObjectInfo) -> None:
    assert CHECK(encode(info)) == info


@pytest.mark.parametrize("info, why", [
    (ObjectInfo(1001, 1, None, "image/png"), "size"),
    (ObjectInfo(0, 1, None, "image/png"), "size"),
    (ObjectInfo(10, 1, None, "image/gif"), "type"),
    (ObjectInfo(10, 1, None, ""), "type"),
    (ObjectInfo(10, 2**41, None, "image/png"), "date"),
    (ObjectInfo(10, 1, '"a b"', "image/png"), "entity tag"),
    (ObjectInfo(10, 1, '""', "image/png"), "entity tag"),
])
def test_refuses_what_this_gateway_would_not_write(info: ObjectInfo, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        CHECK(encode(info))


@pytest.mark.parametrize("text", ["", "null", "{}", "1", '{"size": 1}', "x" * 600])
def test_refuses_other_shapes(text: str) -> None:
    with pytest.raises(ValueError):
        CHECK(text)
