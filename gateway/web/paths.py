"""Image URLs: which route a ``/images/...`` path names, and the path of a key.

Every URL has exactly one meaning (the README's API table). The raw path is
split on a literal '/' and each segment decoded once (model.decode_segments):

    two segments, the second "url"   -> the presigned-URL API for the first
    two segments, the first "user"   -> the user's picture (alias)
    anything else                    -> the object key (segments joined by '/')

The first two are in the order aiohttp's router tried them before object keys
existed, so ``/images/user/url`` still means what it meant: the URL of ``user``.

A '/' inside a segment (``%2F``) is data, not a separator, so an object whose key
would read as one of the first two routes is named with ``%2F``:
``/images/user%2F42`` is the object ``user/42``. aiohttp's ``match_info`` and
``request.path`` are never used for this: they are decoded, and would give
``%2F`` and ``/`` one meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from aiohttp import web

from gateway.errors import BadRequest
from gateway.model import (
    decode_segments,
    encode_key,
    encode_segment,
    key_from_path,
    validate_key,
    validate_user_id,
)

IMAGES = "/images/"
ADMIN_IMAGES = "/admin/images/"  # purge and upload: the rest of the path is the key


class Route(StrEnum):
    """What an image path names; the value is its metrics label."""

    OBJECT = "/images/{image_id}"
    URL = "/images/{image_id}/url"
    USER = "/images/user/{user_id}"


@dataclass(frozen=True, slots=True)
class ImagePath:
    route: Route
    name: str  # the object key (OBJECT, URL) or the user id (USER), validated


def route_of(raw_tail: str) -> ImagePath:
    """The meaning of ``/images/{raw_tail}`` (percent-encoded, no query); BadRequest
    for a key or user id outside the rules."""
    segments = decode_segments(raw_tail)
    if len(segments) == 2 and segments[1] == "url":
        return ImagePath(Route.URL, validate_key(segments[0]))
    if len(segments) == 2 and segments[0] == "user":
        return ImagePath(Route.USER, validate_user_id(segments[1]))
    return ImagePath(Route.OBJECT, validate_key("/".join(segments)))


def image_path(key: str) -> str:
    """The one path that names the object ``key`` (route_of gives it back)."""
    segments = key.split("/")
    if len(segments) == 2 and (segments[0] == "user" or segments[1] == "url"):
        return IMAGES + encode_segment(key)
    return IMAGES + encode_key(key)


def raw_tail(request: web.BaseRequest, prefix: str) -> str:
    """What follows ``prefix`` in the request target as the client sent it (still
    percent-encoded, without the query)."""
    return _tail(request.raw_path, prefix)


def _tail(raw_path: str, prefix: str) -> str:
    target = raw_path.partition("?")[0]
    if not target.startswith("/"):  # absolute-form (RFC 9112 3.2.2): drop scheme://host
        target = "/" + target.partition("://")[2].partition("/")[2]
    if not target.startswith(prefix):  # e.g. /%69mages/...: one spelling per URL
        raise BadRequest(f"invalid path: must start with {prefix}")
    return target[len(prefix):]


_by_target: dict[str, ImagePath] = {}
_BY_TARGET_MAX = 4096


def image_route(raw_path: str) -> ImagePath:
    """``route_of`` the tail of an ``/images/`` request target, found by the target
    as sent (query included) in one dict lookup when it was seen before: hot pictures
    are asked for by the same targets over and over. Only answers are kept (a refused
    target raises each time), 4096 of them (~1-2 MB at most); emptied when full,
    which costs a re-parse per target."""
    found = _by_target.get(raw_path)
    if found is None:
        found = route_of(_tail(raw_path, IMAGES))
        if len(_by_target) >= _BY_TARGET_MAX:
            _by_target.clear()
        _by_target[raw_path] = found
    return found


def admin_key(request: web.BaseRequest) -> str:
    """The object key of ``/admin/images/{key}``: no other route shares that prefix."""
    return key_from_path(raw_tail(request, ADMIN_IMAGES))
