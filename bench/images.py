"""The benchmark's picture set: seeded, deterministic avatar-sized images.

``generate(folder, count, seed)`` writes ``count`` pictures of 10-20 KB (each
within ``MIN_BYTES``..``MAX_BYTES``) and a ``manifest.json`` naming them. Each
picture is a colour gradient blended with seeded noise; the blend strength is
bisected until the encoded size is close to a per-image target drawn from the
same seed, so sizes spread over the whole range. 70 % are 160x160 JPEG
(quality 85), 30 % 128x128 PNG whose noise comes in 2x2 blocks (full-resolution
noise makes PNG jump straight past 20 KB).

The same (count, seed) always gives the same bytes (Pillow's encoders are
deterministic for a given version); a folder whose manifest already matches is
reused as it is.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

MIN_BYTES = 10 * 1024      # 10 KiB
MAX_BYTES = 20 * 1000      # 20 kB: inside "10-20 KB" whichever KB is meant
TARGET_LOW, TARGET_HIGH = 11_000, 19_000
MANIFEST = "manifest.json"
GENERATOR_VERSION = 1

CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png"}


@dataclass(frozen=True)
class Picture:
    image_id: str      # also the file name and the S3 key
    content_type: str
    size: int
    sha256: str


def _gradient(rng: random.Random, side: int) -> Image.Image:
    gray = Image.linear_gradient("L").resize((side, side)).rotate(
        rng.uniform(0, 360), resample=Image.Resampling.BILINEAR, fillcolor=rng.randrange(256))
    dark = (rng.randrange(128), rng.randrange(128), rng.randrange(128))
    light = (rng.randrange(128, 256), rng.randrange(128, 256), rng.randrange(128, 256))
    return ImageOps.colorize(gray, dark, light)


def _encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "jpg":
        image.save(out, "JPEG", quality=85)
    else:
        image.save(out, "PNG")
    return out.getvalue()


def make_picture(index: int, seed: int) -> tuple[str, bytes]:
    """(extension, bytes) of picture ``index``; deterministic in (index, seed)."""
    rng = random.Random(f"{seed}:{index}")
    fmt = "jpg" if rng.random() < 0.7 else "png"
    target = rng.uniform(TARGET_LOW, TARGET_HIGH)
    if fmt == "jpg":
        side, block, lo, hi = 160, 1, 0.0, 1.0
    else:
        side, block, lo, hi = 128, 2, 0.0, 0.25
    base = _gradient(rng, side)
    small = side // block
    noise = Image.frombytes("RGB", (small, small), rng.randbytes(small * small * 3))
    if block > 1:
        noise = noise.resize((side, side), Image.Resampling.NEAREST)
    best: bytes | None = None
    for _ in range(14):  # size grows with the noise share: bisect towards the target
        mid = (lo + hi) / 2
        data = _encode(Image.blend(base, noise, mid), fmt)
        if MIN_BYTES <= len(data) <= MAX_BYTES and (
                best is None or abs(len(data) - target) < abs(len(best) - target)):
            best = data
        if best is not None and abs(len(best) - target) < 300:
            break
        if len(data) < target:
            lo = mid
        else:
            hi = mid
    if best is None:
        raise RuntimeError(f"picture {index} (seed {seed}): no size within "
                           f"{MIN_BYTES}-{MAX_BYTES} bytes")
    return fmt, best


def _manifest_ok(folder: Path, count: int, seed: int) -> list[Picture] | None:
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if (data.get("count"), data.get("seed"), data.get("version")) != (
            count, seed, GENERATOR_VERSION):
        return None
    pictures = [Picture(**p) for p in data["pictures"]]
    for p in pictures:
        path = folder / p.image_id
        if not path.is_file() or path.stat().st_size != p.size:
            return None
    return pictures


def generate(folder: Path, count: int = 1000, seed: int = 2024) -> list[Picture]:
    """Write the set into ``folder`` (reused when its manifest matches)."""
    existing = _manifest_ok(folder, count, seed)
    if existing is not None:
        return existing
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if old.is_file():
            old.unlink()
    pictures = []
    for index in range(count):
        fmt, data = make_picture(index, seed)
        image_id = f"avatar-{index:04d}.{fmt}"
        (folder / image_id).write_bytes(data)
        pictures.append(Picture(image_id, CONTENT_TYPES[fmt], len(data),
                                hashlib.sha256(data).hexdigest()))
    manifest = {"version": GENERATOR_VERSION, "count": count, "seed": seed,
                "pictures": [vars(p) for p in pictures]}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return pictures


def summary(pictures: list[Picture]) -> dict[str, float]:
    sizes = sorted(p.size for p in pictures)
    return {
        "count": len(sizes),
        "min": sizes[0],
        "max": sizes[-1],
        "median": sizes[len(sizes) // 2],
        "total": sum(sizes),
        "jpeg": sum(1 for p in pictures if p.content_type == "image/jpeg"),
        "png": sum(1 for p in pictures if p.content_type == "image/png"),
    }
