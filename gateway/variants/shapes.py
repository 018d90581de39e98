"""What a variant is made into, as plain values: no Pillow here, so the settings
check (variants.spec.check_presets, run by the CLI) can judge presets without it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

LOSSY: Final = frozenset({"jpeg", "webp", "avif"})
FITS: Final = ("cover", "contain")


@dataclass(frozen=True, slots=True)
class Geometry:
    """Target box. One side alone scales proportionally; both use ``fit``."""

    width: int | None = None
    height: int | None = None
    fit: str = "cover"  # cover: fill the box, crop the overflow; contain: fit inside
    enlarge: bool = False  # False: never more pixels than the source has


@dataclass(frozen=True, slots=True)
class Output:
    format: str = "original"  # original (the source's own) | jpeg | png | webp | avif | gif
    quality: int = 80
