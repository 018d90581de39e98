"""A variant is trusted exactly when its original is: it carries the original's
``stored_at``, not the moment it was rendered, so a variant made after a missed
purge from an original confirmed before it is revalidated with that original."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from multidict import MultiDict

from gateway.config import PresetsConfig, TransformConfig, VariantsConfig
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
