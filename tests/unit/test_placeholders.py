"""Placeholders: our BlurHash encoder against the `blurhash` package (the published
algorithm's Python port, a test dependency only), and the LQIP's size bound."""

from __future__ import annotations

import io
import json
import random

import blurhash as reference
import pytest
from PIL import Image

from gateway.variants.placeholder import LQIP_MAX_BYTES, blurhash, components, render_placeholder
from gateway.variants.transform import Geometry


def noisy(size: tuple[int, int], seed: int) -> Image.Image:
    rng = random.Random(seed)
    image = Image.new("RGB", size)
    image.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256))
                   for _ in range(size[0] * size[1])])
    return image.resize((size[0] * 2, size[1] * 2), Image.Resampling.BILINEAR)


@pytest.mark.parametrize(("size", "comps", "seed"), [
    ((16, 16), (4, 4), 1), ((16, 9), (4, 3), 2), ((9, 16), (3, 4), 3), ((12, 12), (1, 1), 4),
    ((10, 14), (9, 9), 5), ((16, 16), (5, 2), 6)])
def test_blurhash_matches_the_reference(size: tuple[int, int], comps: tuple[int, int],
                                        seed: int) -> None:
    image = noisy(size, seed)
    rows = [[list(image.getpixel((x, y))) for x in range(image.width)]
            for y in range(image.height)]
    expected = reference.encode(rows, components_x=comps[0], components_y=comps[1])
    assert blurhash(image, *comps) == expected


def test_solid_colour_round_trips() -> None:
    image = Image.new("RGB", (8, 8), (255, 0, 0))
    hashed = blurhash(image, 4, 3)
    assert len(hashed) == 4 + 2 + 2 * (4 * 3 - 1)
    assert reference.decode(hashed, 2, 2)[0][0][:3] == [255, 0, 0]


def test_components_follow_the_aspect_ratio() -> None:
    assert components(100, 100) == (4, 4)
    assert components(160, 90) == (4, 2)
    assert components(90, 160) == (2, 4)
    assert components(1000, 10) == (4, 1)


def png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    noisy((size[0] // 2, size[1] // 2), 9).convert(mode).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["webp", "jpeg"])
def test_lqip_is_tiny(fmt: str) -> None:
    made = render_placeholder(png((800, 600)), Geometry(), "lqip", 10**8, fmt)
    assert made.content_type == f"image/{fmt}"
    assert len(made.body) <= LQIP_MAX_BYTES
    assert Image.open(io.BytesIO(made.body)).size == (16, 12)


def test_blurhash_answer_names_the_sized_picture() -> None:
    made = render_placeholder(png((800, 600), "RGBA"), Geometry(64, 64, "cover"), "blurhash",
                              10**8, "webp")
    answer = json.loads(made.body)
    assert (answer["width"], answer["height"]) == (64, 64)
    assert made.content_type == "application/json"
    assert len(answer["blurhash"]) == 4 + 2 + 2 * 15  # 4x4 components
