"""What a variant query asks for (docs/variants.md).

``parse_spec`` turns the query (``w``, ``h``, ``fit``, ``format``, ``q``) into a
``VariantSpec`` checked against the ``[transform]`` allowlists; ``negotiate``
resolves ``format=auto`` from ``Accept``. A resolved spec has one canonical
``token``, so equivalent queries (parameter order, ``format=jpg`` vs ``jpeg``,
``fit`` without both sides, ``q`` for PNG, ``format=auto`` vs the format it
resolved to) share one cache entry and one ETag.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from multidict import MultiMapping

from gateway.config import TransformConfig
from gateway.errors import BadRequest
from gateway.variants.transform import FITS, LOSSY, Geometry, Output

#: Bump when rendering changes (resampling, encoder settings): old variants in
#: disk caches then sit under keys nobody asks for and age out.
RENDER_VERSION: Final = "r1"
PARAMS: Final = ("w", "h", "fit", "format", "q")
_FORMAT_ALIASES: Final = {"jpg": "jpeg"}


def wants_variant(query: MultiMapping[str]) -> bool:
    """Whether the query names any variant parameter (others, like ``?v=3``, don't count)."""
    return any(name in query for name in PARAMS)


@dataclass(frozen=True, slots=True)
class VariantSpec:
    width: int | None
    height: int | None
    fit: str  # "cover" | "contain"; "-" when it cannot matter (fewer than two sides)
    format: str  # "auto" until negotiated, then "original" | "webp" | "avif" | "jpeg" | "png"
    quality: int

    @property
    def negotiated(self) -> bool:
        return self.format != "auto"

    @property
    def identity(self) -> bool:
        """No size and the original's format: the original itself is the answer."""
        return self.width is None and self.height is None and self.format == "original"

    @property
    def token(self) -> str:
        """The canonical variant part of the cache key (after negotiation)."""
        assert self.negotiated
        size = f"{self.width or 0}x{self.height or 0}"
        # PNG is lossless: the quality cannot change its bytes.
        quality = f"q{self.quality}" if self.format in LOSSY or self.format == "original" \
            else "q-"
        return f"{RENDER_VERSION}.{size}.{self.fit}.{self.format}.{quality}"

    def geometry(self, enlarge: bool) -> Geometry:
        return Geometry(self.width, self.height,
                        self.fit if self.fit != "-" else "cover", enlarge)

    def output(self) -> Output:
        return Output(self.format, self.quality)


def _one(query: MultiMapping[str], name: str) -> str | None:
    values = query.getall(name, [])
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(f"{name} given more than once")
    return values[0]


def _allowed_int(query: MultiMapping[str], name: str, allowed: tuple[int, ...],
                 setting: str) -> int | None:
    raw = _one(query, name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 5) or int(raw) not in allowed:
        choices = ", ".join(map(str, allowed)) or "none"
        raise BadRequest(f"{name} must be one of {choices} ({setting})")
    return int(raw)


def parse_spec(query: MultiMapping[str], config: TransformConfig,
               formats: frozenset[str]) -> VariantSpec:
    """The variant a query asks for; 400 for any value outside the allowlists."""
    width = _allowed_int(query, "w", config.widths, "transform.widths")
    height = _allowed_int(query, "h", config.heights, "transform.heights")
    quality = _allowed_int(query, "q", config.qualities, "transform.qualities")
    fit = _one(query, "fit")
    if fit is not None and fit not in FITS:
        raise BadRequest(f"fit must be one of {', '.join(FITS)}")
    raw_format = _one(query, "format")
    fmt = "original" if raw_format is None else _FORMAT_ALIASES.get(raw_format, raw_format)
    if fmt not in ("auto", "original") and fmt not in formats:
        choices = ", ".join(["auto", "original", *sorted(formats)])
        raise BadRequest(f"format must be one of {choices}")
    return VariantSpec(
        width=width, height=height,
        fit=(fit or "cover") if width is not None and height is not None else "-",
        format=fmt, quality=quality if quality is not None else config.default_quality)


def _accept_weights(accept: str) -> dict[str, float]:
    weights: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = part.split(";")
        media = media.strip().lower()
        weight = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(value.strip())
                except ValueError:
                    weight = 0.0
        if media:
            weights[media] = max(weights.get(media, 0.0), weight)
    return weights


def negotiate(spec: VariantSpec, accept: str | None, formats: frozenset[str]) -> VariantSpec:
    """``format=auto``: AVIF, else WebP, else the original's format, by what ``Accept``
    names explicitly (``image/*`` and ``*/*`` promise nothing); a higher q wins."""
    if spec.negotiated:
        return spec
    weights = _accept_weights(accept or "")
    ranked = [(weights.get(f"image/{fmt}", 0.0), preference, fmt)
              for preference, fmt in ((2, "avif"), (1, "webp")) if fmt in formats]
    best = max((r for r in ranked if r[0] > 0), default=None)
    return replace(spec, format=best[2] if best else "original")
