import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import BadRequest
from gateway.model import cache_key, etag_for, image_of, make_meta, validate_image_id

GOOD = ["a", "abc.png", "A-b_c.9.jpeg", "x" * 255, "-dash", "_under", "a..b"]
BAD = ["", ".", "..", ".hidden", "a/b", "../etc", "a b", "x" * 256, "a\x00b", "é.png",
       "a%2fb", "a\\b", "..%2f", "a\nb", "%252e%252e"]


@pytest.mark.parametrize("image_id", GOOD)
def test_good_ids(image_id):
    assert validate_image_id(image_id) == image_id


@pytest.mark.parametrize("image_id", BAD)
def test_bad_ids(image_id):
    with pytest.raises(BadRequest):
        validate_image_id(image_id)


@given(st.text(max_size=300))
def test_accepted_ids_are_safe_single_segments(text):
    try:
        validate_image_id(text)
    except BadRequest:
        return
    assert 1 <= len(text) <= 255
    assert not text.startswith(".")
    assert "/" not in text and "\\" not in text and "\x00" not in text
    assert text.isascii()


def test_etag_depends_only_on_bytes():
    a = make_meta(b"same", "image/png", 1, now=0, ttl=1)
    b = make_meta(b"same", "image/png", 99, now=50, ttl=7)
    assert a.etag == b.etag == etag_for(a.digest)
    assert a.etag.startswith('"') and a.etag.endswith('"')
    assert make_meta(b"other", "image/png", 1, 0, 1).etag != a.etag


def test_cache_key_round_trip():
    assert image_of(cache_key("abc.png", 3, "w64")) == "abc.png"
