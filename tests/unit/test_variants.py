"""gateway.variants.service: query parsing against the allowlists, canonical tokens, negotiation."""

from __future__ import annotations

import pytest
from multidict import MultiDict

from gateway.config import ConfigError, PresetsConfig, TransformConfig, VariantsConfig
from gateway.config_load import from_mapping, load
from gateway.errors import BadRequest
from gateway.variants.spec import (
    VariantRules,
    VariantSpec,
    negotiate,
    parse_spec,
    wants_variant,
)

CONFIG = TransformConfig()
ALL = frozenset({"webp", "avif", "jpeg", "png"})


def spec(query: str, formats: frozenset[str] = ALL, config: TransformConfig = CONFIG,
         accept: str | None = None) -> VariantSpec:
    pairs = [tuple(p.split("=", 1)) for p in query.split("&") if p]
    parsed = parse_spec(MultiDict(pairs), config, formats)
    return negotiate(parsed, accept, formats)


def test_only_known_parameters_make_a_variant() -> None:
    assert not wants_variant(MultiDict())
    assert not wants_variant(MultiDict(v="123", utm_source="x"))  # cache-busters: original
    for name in ("w", "h", "fit", "format", "q"):
        assert wants_variant(MultiDict({name: "1", "v": "2"}))


def test_defaults() -> None:
    s = spec("w=64")
    assert (s.width, s.height, s.fit, s.format, s.quality) == (64, None, "-", "original", 80)
    assert not s.identity


@pytest.mark.parametrize("query", [
    "w=100", "h=1000", "w=-64", "w=64.0", "w=0x40", "w=", "w=%C2%B2",
    "w=\uff16\uff14",  # fullwidth digits
    "q=55", "q=101", "fit=stretch", "fit=", "format=bmp", "format=gif", "format=",
    "w=64&w=128", "format=webp&format=png",
])
def test_values_outside_the_allowlists_are_400(query) -> None:
    with pytest.raises(BadRequest):
        spec(query)


def test_disallowed_message_names_the_choices() -> None:
    with pytest.raises(BadRequest) as info:
        spec("w=100")
    assert "32, 48, 64" in info.value.detail and "transform.widths" in info.value.detail


def test_allowlists_come_from_config() -> None:
    config = TransformConfig(widths=(100,), qualities=(80, 33), formats=("png",))
    assert spec("w=100&q=33&format=jpg", ALL, config).width == 100
    with pytest.raises(BadRequest):
        spec("w=64", ALL, config)


def test_unavailable_format_is_400_and_negotiated_away() -> None:
    no_avif = frozenset({"webp", "jpeg", "png"})
    with pytest.raises(BadRequest):
        spec("format=avif", no_avif)
    assert spec("format=auto", no_avif, accept="image/avif,image/webp").format == "webp"


@pytest.mark.parametrize(("a", "b"), [
    ("w=64&h=64", "h=64&w=64"),
    ("w=64&h=64", "w=64&h=64&fit=cover"),
    ("w=64&fit=contain", "w=64"),  # fit means nothing with one side
    ("w=064", "w=64"),
    ("format=png&q=50", "format=png&q=90"),  # PNG is lossless
    ("format=jpg", "format=jpeg"),
    ("w=64&format=webp&q=80", "w=64&format=webp"),  # the default quality
])
def test_equivalent_queries_share_one_token(a, b) -> None:
    assert spec(a).token == spec(b).token


@pytest.mark.parametrize(("a", "b"), [
    ("w=64&h=64", "w=64&h=64&fit=contain"),
    ("w=64", "h=64"),
    ("format=webp&q=50", "format=webp&q=90"),
    ("w=64&format=webp", "w=64&format=avif"),
    ("w=64", "w=64&format=jpeg"),  # the original's own format is not known up front
])
def test_different_variants_have_different_tokens(a, b) -> None:
    assert spec(a).token != spec(b).token


def test_token_is_a_safe_key_part() -> None:
    token = spec("w=64&h=48&fit=contain&format=avif&q=50").token
    assert token == "r1.64x48.contain.avif.q50"
    assert "/" not in token


@pytest.mark.parametrize(("accept", "expected"), [
    ("image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8", "avif"),  # Chrome
    ("image/webp,*/*", "webp"),
    ("image/avif;q=0,image/webp", "webp"),
    ("image/webp;q=1, image/avif;q=0.5", "webp"),  # the client's preference counts
    ("image/webp;q=0.5, image/avif;q=0.5", "avif"),  # ties: AVIF
    ("IMAGE/WEBP", "webp"),
    ("image/*,*/*;q=0.8", "original"),  # wildcards promise nothing
    ("image/avif;q=oops", "original"),
    ("", "original"),
    (None, "original"),
])
def test_auto_negotiation(accept, expected) -> None:
    assert spec("w=64&format=auto", accept=accept).format == expected


def test_auto_shares_the_token_of_the_explicit_format() -> None:
    assert (spec("w=64&format=auto", accept="image/webp").token
            == spec("w=64&format=webp").token)


def test_identity_when_nothing_changes() -> None:
    assert spec("format=auto", accept="*/*").identity
    assert spec("q=80").identity
    assert not spec("format=webp").identity
    assert not spec("h=32").identity


# -- the [transform] settings ---------------------------------------------------------------


def test_transform_settings_from_environment() -> None:
    config = load(None, environ={"GATEWAY_TRANSFORM_WIDTHS": "64, 128",
                                 "GATEWAY_TRANSFORM_FORMATS": "webp,png",
                                 "GATEWAY_TRANSFORM_MAX_PIXELS": "1_000_000"})
    assert config.transform.widths == (64, 128)
    assert config.transform.formats == ("webp", "png")
    assert config.transform.max_pixels == 1_000_000


@pytest.mark.parametrize(("section", "message"), [
    ({"widths": ["64"]}, "transform.widths: ['64'] is not a list of whole numbers"),
    ({"widths": [0]}, "transform.widths: 0 must be in 1-8192"),
    ({"qualities": [101]}, "transform.qualities"),
    ({"default_quality": 55}, "transform.default_quality: 55 must be one of"),
    ({"formats": ["gif"]}, "transform.formats: 'gif' is not one of"),
    ({"workers": 0}, "transform.workers"),
    ({"upload_format": "bmp"}, "transform.upload_format"),
])
def test_bad_transform_settings_stop_the_start(section, message) -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping({"transform": section}, {})
    assert message in str(info.value)


def test_bad_transform_environment_value() -> None:
    with pytest.raises(ConfigError, match=r"transform\.heights: 'x' is not a whole number"):
        load(None, environ={"GATEWAY_TRANSFORM_HEIGHTS": "64,x"})


# --- presets, dpr, client hints, placeholders (VariantRules) ---------------------------


def rules(hints: bool = False, presets_only: bool = False, **named: str) -> VariantRules:
    presets = PresetsConfig(tuple(named.items())) if named else PresetsConfig()
    return VariantRules(TransformConfig(), VariantsConfig(hints, presets_only), presets,
                        frozenset({"webp", "png", "jpeg"}))


def test_new_parameters_make_a_variant() -> None:
    for name in ("dpr", "preset", "placeholder"):
        assert wants_variant(MultiDict({name: "1"}))


def test_a_preset_is_its_query() -> None:
    r = rules(avatar="w=64&h=64&fit=cover&format=webp")
    by_name = r.parse(MultiDict(preset="avatar"), {})
    spelled = r.parse(MultiDict(w="64", h="64", format="webp"), {})
    assert by_name.token == spelled.token
    assert r.parse(MultiDict(preset="avatar", dpr="2"), {}).width == 128


def test_dpr_multiplies_within_the_allowlists() -> None:
    r = rules()
    assert r.parse(MultiDict(w="32", h="48", dpr="2"), {}).token == \
        r.parse(MultiDict(w="64", h="96"), {}).token
    assert r.parse(MultiDict(w="32", dpr="1"), {}).width == 32
    with pytest.raises(BadRequest, match="h=256 at dpr=3 is 768"):
        r.parse(MultiDict(w="32", h="256", dpr="3"), {})
    for bad in ("0", "4", "2.0", "", "x"):
        with pytest.raises(BadRequest, match="dpr must be one of 1, 2, 3"):
            r.parse(MultiDict(w="32", dpr=bad), {})


def test_hints_only_when_enabled_and_never_a_400() -> None:
    assert rules().parse(MultiDict(w="64"), {"Sec-CH-DPR": "2"}).width == 64
    r = rules(hints=True)
    assert r.parse(MultiDict(w="64"), {"Sec-CH-DPR": "2"}).width == 128
    assert r.parse(MultiDict(w="64"), {"Sec-CH-DPR": "2.6"}).width == 128  # not above
    assert r.parse(MultiDict(w="512"), {"Sec-CH-DPR": "3"}).width == 512
    assert r.parse(MultiDict(w="64", dpr="1"), {"Sec-CH-DPR": "3"}).width == 64  # query wins
    assert r.parse(MultiDict(format="webp"), {"Sec-CH-Width": "33"}).width == 48
    assert r.parse(MultiDict(format="webp"), {"Sec-CH-Width": "9000"}).width == 512
    assert r.parse(MultiDict(format="auto"), {}).vary == "Accept, Sec-CH-DPR, Sec-CH-Width"


def test_presets_only() -> None:
    r = rules(presets_only=True, avatar="w=64")
    assert r.parse(MultiDict(preset="avatar"), {}).width == 64
    with pytest.raises(BadRequest, match="only presets are allowed"):
        r.parse(MultiDict(w="64"), {})
    with pytest.raises(BadRequest, match="preset must be one of avatar"):
        r.parse(MultiDict(preset="huge"), {})
    with pytest.raises(BadRequest, match="cannot be combined"):
        r.parse(MultiDict(preset="avatar", q="50"), {})


def test_placeholders_have_their_own_token() -> None:
    r = rules(avatar="w=64&h=64&format=webp&q=50")
    blur = r.parse(MultiDict(placeholder="blurhash", preset="avatar"), {})
    assert blur.token == "r1.64x64.cover.ph-blurhash"
    assert not blur.identity and blur.vary is None
    assert r.parse(MultiDict(placeholder="lqip"), {}).token == "r1.0x0.-.ph-lqip"
    with pytest.raises(BadRequest, match="placeholder must be one of blurhash, lqip"):
        r.parse(MultiDict(placeholder="webp"), {})


def test_preset_queries_are_checked() -> None:
    with pytest.raises(BadRequest, match=r"presets\.big: w must be one of"):
        rules(big="w=4000")
    with pytest.raises(BadRequest, match=r"presets\.x: .dpr. is not one of"):
        rules(x="w=64&dpr=2")
