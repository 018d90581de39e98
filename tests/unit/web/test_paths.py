"""gateway.web.paths: every /images/ URL has exactly one meaning (the README's table)."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import given, strategies as st

from gateway.errors import BadRequest
from gateway.model import validate_key
from gateway.web.paths import ImagePath, Route, admin_key, image_path, raw_tail, route_of

# One row per rule of the README's route table, in its order.
ROUTES = [
    ("a.png/url", ImagePath(Route.URL, "a.png")),  # two segments, second "url"
    ("a%2Fb.png/url", ImagePath(Route.URL, "a/b.png")),  # the URL API for a nested key
    ("user%2F42/url", ImagePath(Route.URL, "user/42")),
    ("user/url", ImagePath(Route.URL, "user")),  # ... before the alias, as before keys
    ("user/42", ImagePath(Route.USER, "42")),  # two segments, first "user": the alias
    ("%75ser/42", ImagePath(Route.USER, "42")),  # compared after decoding
    ("a.png", ImagePath(Route.OBJECT, "a.png")),  # everything else: the object key
    ("a/b/url", ImagePath(Route.OBJECT, "a/b/url")),  # three segments
    ("user/a/b", ImagePath(Route.OBJECT, "user/a/b")),
    ("user%2F42", ImagePath(Route.OBJECT, "user/42")),  # one segment
    ("a%2Furl", ImagePath(Route.OBJECT, "a/url")),
    ("user", ImagePath(Route.OBJECT, "user")),
    ("url", ImagePath(Route.OBJECT, "url")),
    ("url/a.png", ImagePath(Route.OBJECT, "url/a.png")),
    ("a/user", ImagePath(Route.OBJECT, "a/user")),
]


@pytest.mark.parametrize(("raw", "meaning"), ROUTES)
def test_route_table(raw, meaning):
    assert route_of(raw) == meaning


@pytest.mark.parametrize("raw", [
    "user/a%2Fb",  # the alias route, and user ids are one flat segment
    "user/..", "user/", "a%2F..%2Fb/url", "/url", "a/../url", "a/%2e%2e/b.png", "a//b.png",
    "x/../user/bob", "a%zz",
])
def test_refused(raw):
    with pytest.raises(BadRequest):
        route_of(raw)


@given(st.text(min_size=1, max_size=60, alphabet=st.sampled_from("ab/:.%+#?u rl\u3000é")))
def test_image_path_names_exactly_its_key(text):
    try:
        key = validate_key(text)
    except BadRequest:
        return
    path = image_path(key)
    assert path.startswith("/images/")
    assert route_of(path.removeprefix("/images/")) == ImagePath(Route.OBJECT, key)


@pytest.mark.parametrize(("key", "path"), [
    ("user/42", "/images/user%2F42"),
    ("a/url", "/images/a%2Furl"),
    ("a/b/url", "/images/a/b/url"),
    ("a b+c.png", "/images/a%20b%2Bc.png"),
])
def test_image_path_escapes_only_what_would_read_as_another_route(key, path):
    assert image_path(key) == path


@pytest.mark.parametrize(("target", "tail"), [
    ("/images/a/b.png?w=64&x=%2F", "a/b.png"),
    ("/images/a%2Fb", "a%2Fb"),
    ("http://example.com/images/a/../b?q", "a/../b"),  # absolute-form, nothing normalised
])
def test_raw_tail_is_the_path_as_sent(target, tail):
    assert raw_tail(make_mocked_request("GET", target), "/images/") == tail


def test_raw_tail_refuses_another_spelling_of_the_prefix():
    with pytest.raises(BadRequest):
        raw_tail(make_mocked_request("GET", "/%69mages/a.png"), "/images/")


def test_admin_key():
    request = make_mocked_request("DELETE", "/admin/images/user/a%2Fb/url")
    assert admin_key(request) == "user/a/b/url"  # no alias or URL route under /admin
    with pytest.raises(BadRequest):
        admin_key(make_mocked_request("DELETE", "/admin/images/a/../b"))
