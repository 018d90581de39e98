"""Placeholders a page can inline while the picture loads (docs/variants.md).

``?placeholder=blurhash`` is the BlurHash (https://blurha.sh, the published
algorithm, encoded here: a few dozen lines do not warrant a dependency) as JSON,
``?placeholder=lqip`` a tiny blurred WebP (JPEG when WebP cannot be encoded) of at
most ``LQIP_MAX_BYTES``. Both are made from the picture as the other parameters
size it (``?preset=avatar&placeholder=blurhash`` is the avatar's), in the
transform pool, and cached like any variant.
"""

from __future__ import annotations

import io
import json
import math
from typing import Final

from PIL import Image, ImageFilter

from gateway.variants.shapes import Geometry
from gateway.variants.transform import Rendered, resized

LQIP_MAX_BYTES: Final = 1024
#: Longest side of the picture the hash is computed over: the hash keeps 4x4 cosine
#: components, which 32 pixels a side determine as well as the full picture does.
_HASH_SIDE: Final = 32
_LQIP_SIDE: Final = 16
_CHARS: Final = ("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                 "#$%*+,-.:;=?@[]^_{|}~")


def render_placeholder(data: bytes, geometry: Geometry, kind: str, max_pixels: int,
                       lqip_format: str) -> Rendered:
    picture, _ = resized(data, geometry, max_pixels)
    try:
        width, height = picture.size
        flat = _flatten(picture)
    finally:
        picture.close()
    if kind == "blurhash":
        small = flat.copy()
        small.thumbnail((_HASH_SIDE, _HASH_SIDE), Image.Resampling.BOX)
        x, y = components(width, height)
        body = json.dumps({"blurhash": blurhash(small, x, y), "width": width,
                           "height": height}, separators=(",", ":")).encode()
        return Rendered(body, "application/json", width, height)
    return _lqip(flat, lqip_format)


def components(width: int, height: int) -> tuple[int, int]:
    """4 along the longer side, proportionally fewer (at least 1) along the other."""
    if width >= height:
        return 4, max(1, min(9, round(4 * height / width)))
    return max(1, min(9, round(4 * width / height))), 4


def _flatten(picture: Image.Image) -> Image.Image:
    """RGB; transparency onto white, as a page's background most often is."""
    if picture.mode == "RGBA":
        flat = Image.new("RGB", picture.size, (255, 255, 255))
        flat.paste(picture, mask=picture.getchannel("A"))
        return flat
    return picture.convert("RGB")


def _lqip(flat: Image.Image, fmt: str) -> Rendered:
    small = flat.copy()
    small.thumbnail((_LQIP_SIDE, _LQIP_SIDE), Image.Resampling.LANCZOS)
    small = small.filter(ImageFilter.GaussianBlur(0.6))
    for quality in (50, 35, 20, 5):
        out = io.BytesIO()
        if fmt == "webp":
            small.save(out, "WEBP", quality=quality, method=6)
        else:
            small.save(out, "JPEG", quality=quality, optimize=True)
        if out.tell() <= LQIP_MAX_BYTES:
            break
    return Rendered(out.getvalue(), f"image/{fmt}", small.size[0], small.size[1])


# -- BlurHash (https://github.com/woltapp/blurhash/blob/master/Algorithm.md) ------------


def blurhash(image: Image.Image, components_x: int, components_y: int) -> str:
    """The BlurHash of an RGB picture."""
    width, height = image.size
    lut = [_to_linear(v) for v in range(256)]
    data = image.tobytes()
    # Separable: sum each row against the x cosines first, then the rows against y's.
    cos_x = [[math.cos(math.pi * i * x / width) for x in range(width)]
             for i in range(components_x)]
    cos_y = [[math.cos(math.pi * j * y / height) for y in range(height)]
             for j in range(components_y)]
    rows: list[list[tuple[float, float, float]]] = []
    for y in range(height):
        base = y * width * 3
        row = [(lut[data[base + 3 * x]], lut[data[base + 3 * x + 1]],
                lut[data[base + 3 * x + 2]]) for x in range(width)]
        rows.append([(sum(c * p[0] for c, p in zip(cx, row, strict=True)),
                      sum(c * p[1] for c, p in zip(cx, row, strict=True)),
                      sum(c * p[2] for c, p in zip(cx, row, strict=True)))
                     for cx in cos_x])
    factors: list[tuple[float, float, float]] = []
    for j in range(components_y):
        for i in range(components_x):
            scale = (1 if i == 0 and j == 0 else 2) / (width * height)
            r = g = b = 0.0
            for y in range(height):
                weight = cos_y[j][y]
                r += weight * rows[y][i][0]
                g += weight * rows[y][i][1]
                b += weight * rows[y][i][2]
            factors.append((r * scale, g * scale, b * scale))
    dc, ac = factors[0], factors[1:]
    out = _base83((components_x - 1) + (components_y - 1) * 9, 1)
    if ac:
        actual = max(abs(v) for f in ac for v in f)
        quantised = int(max(0, min(82, math.floor(actual * 166 - 0.5))))
        maximum = (quantised + 1) / 166
        out += _base83(quantised, 1)
    else:
        maximum = 1.0
        out += _base83(0, 1)
    out += _base83((_to_srgb(dc[0]) << 16) + (_to_srgb(dc[1]) << 8) + _to_srgb(dc[2]), 4)
    for r, g, b in ac:
        out += _base83(_quantise(r, maximum) * 361 + _quantise(g, maximum) * 19
                       + _quantise(b, maximum), 2)
    return out


def _to_linear(value: int) -> float:
    v = value / 255
    return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4


def _to_srgb(value: float) -> int:
    v = max(0.0, min(1.0, value))
    if v <= 0.0031308:
        return int(v * 12.92 * 255 + 0.5)
    return int((1.055 * v ** (1 / 2.4) - 0.055) * 255 + 0.5)


def _quantise(value: float, maximum: float) -> int:
    scaled = value / maximum
    signed = math.copysign(abs(scaled) ** 0.5, scaled)
    return int(max(0, min(18, math.floor(signed * 9 + 9.5))))


def _base83(value: int, length: int) -> str:
    return "".join(_CHARS[(value // 83 ** (length - i)) % 83] for i in range(1, length + 1))
