"""Refusals remembered like misses: per kind, for the TTL, never across a distrust."""

from __future__ import annotations

from gateway.cache.refusals import Refusals
from gateway.errors import NotFound, OriginError, OriginTimeout, TooLarge, UnsupportedMedia


def test_each_kind_comes_back_as_itself_quietly() -> None:
    refusals = Refusals(30, 10_000)
    assert refusals.remember("0::a.png", 100, UnsupportedMedia("html"))
    assert refusals.remember("0::b.png", 100, TooLarge("big"))
    a, b = refusals.refusal("0::a.png", 110, 0), refusals.refusal("0::b.png", 110, 0)
    assert type(a) is UnsupportedMedia and type(b) is TooLarge
    assert a.quiet and b.quiet and a.answer == UnsupportedMedia.public_message
    assert refusals.refusal("1::a.png", 110, 0) is None  # purged: another version


def test_failures_of_the_origin_are_no_refusal() -> None:
    refusals = Refusals(30, 10_000)
    for error in (OriginError("503", retryable=True), OriginTimeout(), NotFound()):
        assert not refusals.remember("0::a.png", 100, error)
    assert refusals.refusal("0::a.png", 101, 0) is None


def test_a_refusal_ends_with_its_ttl_or_a_distrust() -> None:
    refusals = Refusals(30, 10_000)
    refusals.remember("0::a.png", 100, UnsupportedMedia())
    assert refusals.refusal("0::a.png", 129, 100) is not None
    assert refusals.refusal("0::a.png", 129, 101) is None  # purges may have been missed
    assert refusals.refusal("0::a.png", 130, 0) is None


def test_ttl_zero_remembers_nothing() -> None:
    refusals = Refusals(0, 10_000)
    refusals.remember("0::a.png", 100, UnsupportedMedia())
    assert refusals.refusal("0::a.png", 100, 0) is None
