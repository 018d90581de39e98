"""What a variant query asks for (docs/variants.md).

``parse_spec`` turns the query (``w``, ``h``, ``fit``, ``format``, ``q``) into a
``VariantSpec`` checked against the ``[transform]`` allowlists; ``negotiate``
resolves ``format=auto`` from ``Accept``. A resolved spec has one canonical
``token``, so equivalent queries (parameter order, ``format=jpg`` vs ``jpeg``,
``fit`` without both sides, ``q`` for PNG, ``format=auto`` vs the format it
resolved to) share one cache entry and one ETag.

``VariantRules`` (one per app) adds what is decided before the allowlists: named
presets (``?preset=avatar``, ``variants.presets_only``), ``dpr`` and the client
hints ``Sec-CH-DPR`` / ``Sec-CH-Width`` (which multiply or choose ``w`` / ``h``,
still within the allowlists), and ``?placeholder=blurhash|lqip``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final
from urllib.parse import parse_qsl

from multidict import MultiDict, MultiMapping

from gateway.config import Config, ConfigError, PresetsConfig, TransformConfig, VariantsConfig
from gateway.errors import BadRequest
from gateway.variants.shapes import FITS, LOSSY, Geometry, Output

#: Bump when rendering changes (resampling, encoder settings): old variants in
#: disk caches then sit under keys nobody asks for and age out.
RENDER_VERSION: Final = "r1"
SIZE_PARAMS: Final = ("w", "h", "fit", "format", "q")
PARAMS: Final = (*SIZE_PARAMS, "dpr", "preset", "placeholder")
DPRS: Final = (1, 2, 3)
PLACEHOLDERS: Final = ("blurhash", "lqip")
HINTS_VARY: Final = "Sec-CH-DPR, Sec-CH-Width"
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
    placeholder: str | None = None  # "blurhash" | "lqip": a placeholder of this size
    #: What the answer depends on besides the URL (Accept, client hints): not in the key.
    vary: str | None = None

    @property
    def negotiated(self) -> bool:
        return self.format != "auto"

    @property
    def identity(self) -> bool:
        """No size and the original's format: the original itself is the answer."""
        return (self.width is None and self.height is None and self.format == "original"
                and self.placeholder is None)

    @property
    def token(self) -> str:
        """The canonical variant part of the cache key (after negotiation)."""
        assert self.negotiated
        size = f"{self.width or 0}x{self.height or 0}"
        if self.placeholder is not None:  # format and quality mean nothing to it
            return f"{RENDER_VERSION}.{size}.{self.fit}.ph-{self.placeholder}"
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
        format=fmt, quality=quality if quality is not None else config.default_quality,
        vary=None if fmt != "auto" else "Accept")


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


def preset_specs(presets: PresetsConfig, config: TransformConfig,
                 formats: frozenset[str]) -> dict[str, MultiDict[str]]:
    """name -> its query, each checked as a request would be (BadRequest names it)."""
    found: dict[str, MultiDict[str]] = {}
    for name, text in presets.named:
        try:
            query = MultiDict(parse_qsl(text, keep_blank_values=True, strict_parsing=True))
        except ValueError:
            raise BadRequest(f"presets.{name}: {text!r} is not a query string") from None
        if unknown := [p for p in query if p not in PARAMS or p in ("preset", "dpr")]:
            raise BadRequest(f"presets.{name}: {unknown[0]!r} is not one of "
                             f"{', '.join(SIZE_PARAMS)}, placeholder")
        try:
            parse_spec(query, config, formats)
            _placeholder(query)
        except BadRequest as exc:
            raise BadRequest(f"presets.{name}: {exc.detail}") from None
        found[name] = query
    return found


def check_presets(config: Config) -> None:
    """Each preset's query as a request would give it, at start-up (ConfigError names
    it): for config_load, which sits below the variant rules and is handed this."""
    try:
        preset_specs(config.presets, config.transform, frozenset(config.transform.formats))
    except BadRequest as exc:
        raise ConfigError(str(exc)) from None


def _placeholder(query: MultiMapping[str]) -> str | None:
    kind = _one(query, "placeholder")
    if kind is not None and kind not in PLACEHOLDERS:
        raise BadRequest(f"placeholder must be one of {', '.join(PLACEHOLDERS)}")
    return kind


class VariantRules:
    """Presets, dpr, client hints and placeholders on top of ``parse_spec``; built
    once per app (the presets parsed at start, so a request only looks them up)."""

    def __init__(self, config: TransformConfig, variants: VariantsConfig,
                 presets: PresetsConfig, formats: frozenset[str]) -> None:
        self.config = config
        self.formats = formats
        self.presets = preset_specs(presets, config, formats)
        self.presets_only = variants.presets_only
        self.client_hints = variants.client_hints
        self._names = ", ".join(sorted(self.presets)) or "none"

    def parse(self, query: MultiMapping[str], headers: Mapping[str, str]) -> VariantSpec:
        """The variant a request asks for (400 for anything outside the rules)."""
        name = _one(query, "preset")
        source: MultiMapping[str] = query
        if name is not None:
            if any(p in query for p in SIZE_PARAMS):
                raise BadRequest(f"preset cannot be combined with {', '.join(SIZE_PARAMS)}")
            if name not in self.presets:
                raise BadRequest(f"preset must be one of {self._names}")
            source = self.presets[name]
        elif self.presets_only and any(p in query for p in SIZE_PARAMS):
            raise BadRequest(f"only presets are allowed (variants.presets_only): "
                             f"preset={self._names}")
        spec = parse_spec(source, self.config, self.formats)
        placeholder = _placeholder(query) or _placeholder(source)
        if placeholder is not None:  # the picture's blur: no density to speak of
            return replace(spec, placeholder=placeholder, format="original",
                           quality=self.config.default_quality, vary=None)
        dpr = _one(query, "dpr")
        if dpr is not None:
            if dpr not in ("1", "2", "3"):
                raise BadRequest("dpr must be one of 1, 2, 3")
            scaled = self._scaled(spec, int(dpr), strict=True)
            assert scaled is not None  # strict: refused, not None
            return scaled
        if not self.client_hints:
            return spec
        vary = f"{spec.vary}, {HINTS_VARY}" if spec.vary else HINTS_VARY
        spec = replace(spec, vary=vary)
        if spec.width is None and spec.height is None:
            return self._from_width_hint(spec, headers.get("Sec-CH-Width"))
        hint = _number(headers.get("Sec-CH-DPR"))
        for density in sorted((d for d in DPRS if d <= (hint or 1)), reverse=True):
            scaled = self._scaled(spec, density, strict=False)
            if scaled is not None:
                return scaled
        return spec

    def _scaled(self, spec: VariantSpec, density: int, *,
                strict: bool) -> VariantSpec | None:
        if density == 1:
            return spec
        sizes: dict[str, int | None] = {}
        for name, side, allowed, setting in (
                ("w", spec.width, self.config.widths, "transform.widths"),
                ("h", spec.height, self.config.heights, "transform.heights")):
            if side is not None and side * density not in allowed:
                if not strict:
                    return None
                raise BadRequest(f"{name}={side} at dpr={density} is {side * density}, not "
                                 f"one of {', '.join(map(str, allowed))} ({setting})")
            sizes[name] = None if side is None else side * density
        return replace(spec, width=sizes["w"], height=sizes["h"])

    def _from_width_hint(self, spec: VariantSpec, header: str | None) -> VariantSpec:
        """Sec-CH-Width is the layout width in device pixels: the smallest allowed
        width that covers it (the largest when none does)."""
        hint = _number(header)
        if hint is None or not self.config.widths:
            return spec
        widths = sorted(self.config.widths)
        return replace(spec, width=next((w for w in widths if w >= hint), widths[-1]))


def _number(header: str | None) -> float | None:
    """A client hint's value; None when absent or not a plain positive number."""
    if not header or len(header) > 12:
        return None
    try:
        value = float(header)
    except ValueError:
        return None
    return value if 0 < value < 1e6 else None
