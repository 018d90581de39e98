"""A variant is trusted exactly when its original is: it carries the original's
``stored_at``, not the moment it was rendered, so a variant made after a missed
purge from an original confirmed before it is revalidated with that original."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from multidict import MultiDict

from gateway.config import PresetsConfig, TransformConfig, VariantsConfig
from gateway.errors import BadRequest
from gateway.model import Layer
from gateway.service import ImageService
from gateway.variants.service import VariantService
from gateway.variants.spec import VariantRules, VariantSpec
from gateway.variants.transform import TransformPool
from tests.support.fakes import FakeClock, FakeOrigin
from tests.support.images import make_image

from .conftest import MakeService


@pytest.fixture
async def variants(make_service: MakeService) -> AsyncIterator[VariantService]:
    service: ImageService = await make_service()
    rules = VariantRules(TransformConfig(), VariantsConfig(), PresetsConfig(),
                         frozenset({"png", "webp"}))
    made = VariantService(service, service.cache, TransformPool(1, 4), rules,
                          lock_timeout=5.0)
    yield made
    await made.close()


def small(variants: VariantService) -> VariantSpec:
    # WebP: small enough for the memory layer of these tests (OBJECT_CAP)
    return variants.negotiate(variants.parse(MultiDict(w="32", format="webp"), {}), None)


async def test_a_variant_is_trusted_only_as_long_as_its_original(
        variants: VariantService, origin: FakeOrigin, clock: FakeClock) -> None:
    etag = origin.put("a.png", make_image(size=(48, 48)))  # small: kept in memory
    confirmed = clock()
    assert (await variants.service.get("a.png")).layer is Layer.MISS
    clock.advance(10)  # the variant is made later, from the cached original
    made = await variants.get("a.png", small(variants))
    assert made.layer is Layer.MISS and made.entry.meta.stored_at == confirmed
    variants.cache.distrust(confirmed + 5)  # a purge may have been missed before this

    renewed = await variants.get("a.png", small(variants))
    assert renewed.layer is Layer.MISS  # the original was asked again...
    assert origin.fetches == [("a.png", None), ("a.png", etag)]  # ...with a 304
    assert (variants.stats.transforms, variants.stats.refreshed) == (1, 1)  # not re-encoded
    again = await variants.get("a.png", small(variants))
    assert again.layer is Layer.MEMORY and origin.fetch_count == 2


# -- spec_for: the request -> variant decision, remembered ------------------------------


def _query(text: str) -> MultiDict[str]:
    return MultiDict(pair.split("=", 1) for pair in text.split("&") if pair)


async def test_a_hot_variant_is_parsed_once(variants: VariantService,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[str] = []
    parse = variants.rules.parse

    def counting(query: MultiDict[str], headers: dict[str, str]) -> VariantSpec:
        parsed.append(str(query))
        return parse(query, headers)

    monkeypatch.setattr(variants.rules, "parse", counting)
    asked = [variants.spec_for("w=32&format=auto", lambda: _query("w=32&format=auto"),
                               {"Accept": "image/webp"}) for _ in range(3)]
    assert asked[0] is not None and asked[0].format == "webp"
    assert asked[0] is asked[1] is asked[2] and len(parsed) == 1


async def test_what_decides_a_variant_is_all_in_its_memo(variants: VariantService) -> None:
    def ask(query: str, **headers: str) -> VariantSpec | None:
        return variants.spec_for(query, lambda: _query(query), headers)

    webp = ask("w=32&format=auto", Accept="image/webp")
    other = ask("w=32&format=auto", Accept="image/png")  # same query, other Accept
    assert webp is not None and other is not None
    assert (webp.format, other.format) == ("webp", "original")
    assert ask("v=3") is None and ask("v=3") is None  # a cache-buster: the original
    assert ask("w=32&format=webp") == ask("format=webp&w=32")  # same variant, two spellings


async def test_refused_queries_are_not_remembered(variants: VariantService) -> None:
    before = len(variants._specs)
    for _ in range(2):
        with pytest.raises(BadRequest):
            variants.spec_for("w=33", lambda: _query("w=33"), {})
    assert len(variants._specs) == before
