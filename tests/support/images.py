"""Picture bytes for tests, drawn with Pillow (a test dependency)."""

from __future__ import annotations

import hashlib
import io
import random

from PIL import Image

# Pillow format name -> Content-Type
CONTENT_TYPES = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "WEBP": "image/webp",
}


def make_image(fmt: str = "PNG", size: tuple[int, int] = (32, 32),
               color: tuple[int, int, int] | None = None, seed: int = 0) -> bytes:
    """A small picture; the same arguments give the same bytes, another seed other bytes.

    ``color`` is the background (derived from ``seed`` when None); ``seed`` also
    scatters a few pixels, so two seeds differ even with one colour.
    """
    fmt = fmt.upper()
    rng = random.Random(seed)
    background = color or (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    image = Image.new("RGB", size, background)
    width, height = size
    for _ in range(max(4, width * height // 64)):
        xy = (rng.randrange(width), rng.randrange(height))
        image.putpixel(xy, (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    # a seed-dependent corner pixel makes any two seeds differ, whatever the scatter
    image.putpixel((0, 0), (seed % 256, (seed >> 8) % 256, (seed >> 16) % 256))
    out = io.BytesIO()
    if fmt == "JPEG":
        image.save(out, "JPEG", quality=90)
    elif fmt == "GIF":
        image.convert("P").save(out, "GIF")
    elif fmt == "WEBP":
        image.save(out, "WEBP", lossless=True)
    else:
        image.save(out, fmt)
    return out.getvalue()


def noise_png(seed: int = 0, size: tuple[int, int] = (24, 24)) -> bytes:
    """A PNG of noise: distinct per seed and about 3 bytes a pixel (noise won't compress),
    so its size can be chosen through ``size``."""
    pixels = random.Random(seed).randbytes(size[0] * size[1] * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", size, pixels).save(out, "PNG")
    return out.getvalue()


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()
