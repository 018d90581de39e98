import pytest
from hypothesis import given, strategies as st

from gateway.errors import BadRequest
from gateway.model import (
    MAX_KEY_BYTES,
    cache_key,
    decode_segments,
    encode_key,
    etag_for,
    image_of,
    key_from_path,
    make_meta,
    validate_key,
    validate_user_id,
)

# The classes nginx-s3-gateway's own suite serves, and the edges of each rule.
GOOD_KEYS = [
    "a", "abc.png", "a/b/c.png", "a..b", "...", ".hidden", "a/.b/c", "-dash", "sp ace.png",
    "x+y%z?q#f.png", "plus+", "percent%25", "eq=", "'quotes\"", "(paren)", "hash#", "amp&",
    "pipe|", "caret^", "dollar$", "bang!", "star*", "日本語.png", "Кириллица.png",
    "עברית.png", "full\u3000width.png", "a/b/c/d/e/f/g.png", "user:42", "user/42", "a/url",
    "a\\b", "a\\", "\\a", "a\\\\b", "a\\/b", "\u202e.png", "x" * MAX_KEY_BYTES,
    "é" * (MAX_KEY_BYTES // 2),
]
BAD_KEYS = [
    "", "x" * (MAX_KEY_BYTES + 1), "é" * (MAX_KEY_BYTES // 2) + "x", "/a", "a/", "a//b",
    ".", "..", "a/./b", "a/../b", "../x", "a/..", "a\x00b", "a\nb", "a\tb", "a\x7fb",
    "a\x85b", "..\\..\\win.ini", "a\\..\\b", "a\\.", "..\\a", "\ud800.png",
]


@pytest.mark.parametrize("key", GOOD_KEYS)
def test_good_keys(key):
    assert validate_key(key) == key


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys(key):
    with pytest.raises(BadRequest):
        validate_key(key)


@given(st.text(max_size=300))
def test_accepted_keys_cannot_climb_or_hide(text):
    try:
        validate_key(text)
    except BadRequest:
        return
    assert 1 <= len(text.encode()) <= MAX_KEY_BYTES
    assert not text.startswith("/")
    assert "" not in text.split("/")
    for segment in text.replace("\\", "/").split("/"):
        assert segment not in (".", "..")
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)


@pytest.mark.parametrize(("raw", "segments"), [
    ("a/b", ["a", "b"]),
    ("a%2Fb", ["a/b"]),
    ("a%2fb/c", ["a/b", "c"]),
    ("%252e", ["%2e"]),  # decoded once: the three characters '%2e'
    ("a+b", ["a+b"]),  # '+' is a plus in a path, never a space
    ("%20", [" "]),
    ("%C3%A9", ["é"]),
    ("%e6%97%a5", ["日"]),
    ("", [""]),
])
def test_decode_segments(raw, segments):
    assert decode_segments(raw) == segments


@pytest.mark.parametrize("raw", ["%", "a%", "%2", "%zz", "%%41", "%ff", "%C3", "%C0%AF",
                                 "%ED%A0%80", "a#b"])
def test_decode_segments_refuses_what_is_not_encoded_as_rfc_3986_says(raw):
    with pytest.raises(BadRequest):
        decode_segments(raw)


@pytest.mark.parametrize(("raw", "key"), [
    ("a/b.png", "a/b.png"),
    ("a%2Fb.png", "a/b.png"),
    ("%252e%252e", "%2e%2e"),
    ("a%2B%25%3F%23.png", "a+%?#.png"),
    ("%E3%80%80", "\u3000"),
])
def test_key_from_path(raw, key):
    assert key_from_path(raw) == key


@pytest.mark.parametrize("raw", [
    "a/%2e%2e/b.png", "a/%2E/b.png", "a//b.png", "%2Fa", "a%2F%2Fb", "a%2F..%2Fb", "..",
    "a/", "/a", "a%00b", "a%0Ab", "a%C2%85b", "..%5C..%5Cwin.ini", "x" * 1025,
])
def test_key_from_path_refuses(raw):
    with pytest.raises(BadRequest):
        key_from_path(raw)


@given(st.text(min_size=1, max_size=100))
def test_encode_key_round_trips(text):
    try:
        key = validate_key(text)
    except BadRequest:
        return
    encoded = encode_key(key)
    assert encoded.isascii() and "#" not in encoded and "?" not in encoded
    assert key_from_path(encoded) == key


@pytest.mark.parametrize("user_id", ["bob", "42", "a.b", "A-b_c"])
def test_good_user_ids(user_id):
    assert validate_user_id(user_id) == user_id


@pytest.mark.parametrize("user_id", ["", ".x", "a/b", "a b", "é", "x" * 256, "a:b"])
def test_bad_user_ids(user_id):
    with pytest.raises(BadRequest):
        validate_user_id(user_id)


def test_etag_depends_only_on_bytes():
    a = make_meta(b"same", "image/png", 1, now=0, ttl=1)
    b = make_meta(b"same", "image/png", 99, now=50, ttl=7)
    assert a.etag == b.etag == etag_for(a.digest)
    assert a.etag.startswith('"') and a.etag.endswith('"')
    assert make_meta(b"other", "image/png", 1, 0, 1).etag != a.etag


@pytest.mark.parametrize("key", ["abc.png", "a:b/c:d", "0:r1.64x64:x", "user:42", ":"])
def test_cache_key_round_trip(key):
    for variant in ("", "r1.64x64.cover.webp.q80"):
        assert image_of(cache_key(key, 3, variant)) == key


def test_cache_keys_of_different_keys_differ():
    # '/' no longer separates the parts: keys hold it. ':' after the variant does.
    assert cache_key("a", 1, "b") != cache_key("b", 1, "a")
    assert cache_key("1:x", 0) != cache_key("x", 1)


def test_image_of_an_older_layout_is_harmless():
    assert image_of("abc.png/0/") == "abc.png/0/"  # a file from before: never asked for


@given(st.text(max_size=50), st.integers(min_value=0),
       st.from_regex(r"[a-z0-9.]*", fullmatch=True))
def test_image_of_inverts_cache_key(key, version, variant):
    assert image_of(cache_key(key, version, variant)) == key
